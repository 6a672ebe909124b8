# IdempotencyRecord now lives in common (common 0005 took over its table): state only, no SQL.

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("common", "0005_idempotencyrecord_moved_from_marketplace"),
        ("marketplace", "0005_order_terms_accepted_at"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="IdempotencyRecord")],
            database_operations=[],
        ),
    ]
