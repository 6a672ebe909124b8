from django.apps import AppConfig


class CommonConfig(AppConfig):
    name = "common"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.core import checks

        from common.health import services_check

        # Deploy only: `manage.py check --deploy` at start-up probes S3/KMS; plain commands do not.
        checks.register(services_check, "sealroom", deploy=True)
