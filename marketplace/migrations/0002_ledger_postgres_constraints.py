"""On Postgres, the database itself keeps the ledger double-entry and append-only.

- A deferred constraint trigger checks, at commit, that each transaction's
  postings sum to zero per currency (so several INSERTs may build one
  transaction) and that a transaction has postings at all.
- Row triggers refuse UPDATE and DELETE of transactions and postings, and
  TRUNCATE of a non-empty table: money is moved back by a reversal, never by
  rewriting history. The database owner can bypass them on purpose with
  ``SET session_replication_role = replica`` (tests do, to tamper and to clean).

SQLite has no such triggers: there ``marketplace.ledger`` and ``ledger_check``
alone keep the rules.
"""

from django.db import migrations

INSTALL = """
CREATE OR REPLACE FUNCTION marketplace_ledger_check_balanced() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    txn_id bigint;
    bad_currency text;
BEGIN
    IF TG_TABLE_NAME = 'marketplace_posting' THEN
        txn_id := NEW.transaction_id;
    ELSE
        txn_id := NEW.id;
        IF NOT EXISTS (SELECT 1 FROM marketplace_posting WHERE transaction_id = txn_id) THEN
            RAISE EXCEPTION 'ledger transaction % has no postings', txn_id
                USING ERRCODE = 'check_violation';
        END IF;
    END IF;
    SELECT a.currency INTO bad_currency
        FROM marketplace_posting p JOIN marketplace_ledgeraccount a ON a.id = p.account_id
        WHERE p.transaction_id = txn_id
        GROUP BY a.currency
        HAVING SUM(p.amount) <> 0
        LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger transaction % is unbalanced in %', txn_id, bad_currency
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END;
$$;
CREATE CONSTRAINT TRIGGER marketplace_posting_balanced
    AFTER INSERT ON marketplace_posting
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION marketplace_ledger_check_balanced();
CREATE CONSTRAINT TRIGGER marketplace_ledgertransaction_has_postings
    AFTER INSERT ON marketplace_ledgertransaction
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION marketplace_ledger_check_balanced();

CREATE OR REPLACE FUNCTION marketplace_ledger_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- Emptying an empty table changes nothing: allowed, so a test database
    -- that holds no ledger rows can still be flushed.
    IF TG_OP = 'TRUNCATE' THEN
        IF TG_TABLE_NAME = 'marketplace_posting'
                AND NOT EXISTS (SELECT 1 FROM marketplace_posting) THEN
            RETURN NULL;
        END IF;
        IF TG_TABLE_NAME = 'marketplace_ledgertransaction'
                AND NOT EXISTS (SELECT 1 FROM marketplace_ledgertransaction) THEN
            RETURN NULL;
        END IF;
    END IF;
    RAISE EXCEPTION 'the ledger is append-only: % on % is refused', TG_OP, TG_TABLE_NAME
        USING HINT = 'Undo a ledger transaction by posting its reversal.';
END;
$$;
CREATE TRIGGER marketplace_posting_append_only
    BEFORE UPDATE OR DELETE ON marketplace_posting
    FOR EACH ROW EXECUTE FUNCTION marketplace_ledger_refuse_change();
CREATE TRIGGER marketplace_posting_no_truncate
    BEFORE TRUNCATE ON marketplace_posting
    FOR EACH STATEMENT EXECUTE FUNCTION marketplace_ledger_refuse_change();
CREATE TRIGGER marketplace_ledgertransaction_append_only
    BEFORE UPDATE OR DELETE ON marketplace_ledgertransaction
    FOR EACH ROW EXECUTE FUNCTION marketplace_ledger_refuse_change();
CREATE TRIGGER marketplace_ledgertransaction_no_truncate
    BEFORE TRUNCATE ON marketplace_ledgertransaction
    FOR EACH STATEMENT EXECUTE FUNCTION marketplace_ledger_refuse_change();
"""

UNINSTALL = """
DROP TRIGGER IF EXISTS marketplace_ledgertransaction_no_truncate ON marketplace_ledgertransaction;
DROP TRIGGER IF EXISTS marketplace_ledgertransaction_append_only ON marketplace_ledgertransaction;
DROP TRIGGER IF EXISTS marketplace_posting_no_truncate ON marketplace_posting;
DROP TRIGGER IF EXISTS marketplace_posting_append_only ON marketplace_posting;
DROP FUNCTION IF EXISTS marketplace_ledger_refuse_change();
DROP TRIGGER IF EXISTS marketplace_ledgertransaction_has_postings ON marketplace_ledgertransaction;
DROP TRIGGER IF EXISTS marketplace_posting_balanced ON marketplace_posting;
DROP FUNCTION IF EXISTS marketplace_ledger_check_balanced();
"""


def _execute_on_postgres(schema_editor, sql):
    if schema_editor.connection.vendor != "postgresql":
        return
    # No parameters: the '%' in the statement is plpgsql's, not a placeholder.
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(sql)


def install_triggers(apps, schema_editor):
    _execute_on_postgres(schema_editor, INSTALL)


def remove_triggers(apps, schema_editor):
    _execute_on_postgres(schema_editor, UNINSTALL)


class Migration(migrations.Migration):
    dependencies = [
        ("marketplace", "0001_ledger"),
    ]

    operations = [
        migrations.RunPython(install_triggers, remove_triggers),
    ]
