"""The audit log's sequencer (docs/audit.md "Sequencer").

Events are written pending (``seq``, ``prev_hash`` and ``hash`` empty) in the
audited action's transaction, without any shared lock; the sequencer fills
those three in later, in batches. On Postgres the append-only trigger now
allows exactly that one change, once: a pending row may receive its seq,
prev_hash and hash, with every other column unchanged. Every other UPDATE, and
every DELETE or TRUNCATE of a non-empty log, stays refused.
"""

from django.db import migrations, models

ALLOW_SEQUENCING = """
CREATE OR REPLACE FUNCTION common_auditevent_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- Emptying an empty table changes nothing: allowed, so a test database
    -- that holds no audit events can still be flushed.
    IF TG_OP = 'TRUNCATE' AND NOT EXISTS (SELECT 1 FROM common_auditevent) THEN
        RETURN NULL;
    END IF;
    -- The sequencer integrating a pending event: seq, prev_hash and hash go
    -- from empty to set, once; the content the hash covers stays as written.
    IF TG_OP = 'UPDATE' AND OLD.seq IS NULL AND NEW.seq IS NOT NULL
        AND OLD.prev_hash = '' AND OLD.hash = ''
        AND NEW.prev_hash <> '' AND NEW.hash <> ''
        AND (NEW.id, NEW.at, NEW.actor_id, NEW.actor_name, NEW.organisation_id, NEW.organisation_name,
             NEW.action, NEW.object_type, NEW.object_id, NEW.details)
            IS NOT DISTINCT FROM
            (OLD.id, OLD.at, OLD.actor_id, OLD.actor_name, OLD.organisation_id, OLD.organisation_name,
             OLD.action, OLD.object_type, OLD.object_id, OLD.details)
    THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'the audit log is append-only: % on common_auditevent is refused', TG_OP
        USING HINT = 'Audit events are hash-chained and never changed; see docs/audit.md.';
END;
$$;
"""

REFUSE_EVERY_CHANGE = """
CREATE OR REPLACE FUNCTION common_auditevent_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' AND NOT EXISTS (SELECT 1 FROM common_auditevent) THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'the audit log is append-only: % on common_auditevent is refused', TG_OP
        USING HINT = 'Audit events are hash-chained and never changed; see docs/audit.md.';
END;
$$;
"""


def _execute_on_postgres(schema_editor, sql):
    if schema_editor.connection.vendor != "postgresql":
        return
    # No parameters: the '%' in the statement is plpgsql's, not a placeholder.
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(sql)


def allow_sequencing(apps, schema_editor):
    _execute_on_postgres(schema_editor, ALLOW_SEQUENCING)


def refuse_every_change(apps, schema_editor):
    _execute_on_postgres(schema_editor, REFUSE_EVERY_CHANGE)


class Migration(migrations.Migration):
    dependencies = [
        ("common", "0006_organisation_token_webhook_public_ids"),
    ]

    operations = [
        migrations.AlterField(
            model_name="auditevent",
            name="seq",
            field=models.BigIntegerField(blank=True, null=True, unique=True),
        ),
        migrations.AlterField(
            model_name="auditevent",
            name="prev_hash",
            field=models.CharField(blank=True, default="", max_length=64),
        ),
        migrations.AlterField(
            model_name="auditevent",
            name="hash",
            field=models.CharField(blank=True, default="", max_length=64),
        ),
        migrations.AddIndex(
            model_name="auditevent",
            index=models.Index(
                condition=models.Q(("seq__isnull", True)), fields=["id"], name="common_audit_pending"
            ),
        ),
        migrations.RunPython(allow_sequencing, refuse_every_change),
    ]
