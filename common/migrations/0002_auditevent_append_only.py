"""On Postgres, refuse UPDATE, DELETE and TRUNCATE on the audit log (DESIGN.md "Audit log").

The hash chain makes tampering detectable; this trigger makes it refused, so
an application bug or a careless query cannot rewrite history. The database
owner can still bypass it on purpose with ``SET session_replication_role =
replica`` (tests do, to prove tampering is detected). SQLite has no trigger:
there the chain and the signed checkpoints alone protect the log.
"""

from django.db import migrations

INSTALL = """
CREATE OR REPLACE FUNCTION common_auditevent_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- Emptying an empty table changes nothing: allowed, so a test database
    -- that holds no audit events can still be flushed.
    IF TG_OP = 'TRUNCATE' AND NOT EXISTS (SELECT 1 FROM common_auditevent) THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'the audit log is append-only: % on common_auditevent is refused', TG_OP
        USING HINT = 'Audit events are hash-chained and never changed; see docs/audit.md.';
END;
$$;
CREATE TRIGGER common_auditevent_append_only
    BEFORE UPDATE OR DELETE ON common_auditevent
    FOR EACH ROW EXECUTE FUNCTION common_auditevent_refuse_change();
CREATE TRIGGER common_auditevent_no_truncate
    BEFORE TRUNCATE ON common_auditevent
    FOR EACH STATEMENT EXECUTE FUNCTION common_auditevent_refuse_change();
"""

UNINSTALL = """
DROP TRIGGER IF EXISTS common_auditevent_no_truncate ON common_auditevent;
DROP TRIGGER IF EXISTS common_auditevent_append_only ON common_auditevent;
DROP FUNCTION IF EXISTS common_auditevent_refuse_change();
"""


def _execute_on_postgres(schema_editor, sql):
    if schema_editor.connection.vendor != "postgresql":
        return
    # No parameters: the '%' in the statement is plpgsql's, not a placeholder.
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(sql)


def install_trigger(apps, schema_editor):
    _execute_on_postgres(schema_editor, INSTALL)


def remove_trigger(apps, schema_editor):
    _execute_on_postgres(schema_editor, UNINSTALL)


class Migration(migrations.Migration):
    dependencies = [
        ("common", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(install_trigger, remove_trigger),
    ]
