from django.apps import AppConfig


class CustodyConfig(AppConfig):
    name = "custody"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from common.health import register_key_check
        from custody.keys import kek_check

        register_key_check(kek_check)
