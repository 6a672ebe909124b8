"""Settings from the environment: production mode refuses the dev secret and passes check --deploy.

Each case imports the settings in a fresh interpreter, since they are read
once per process.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from config.celery import app as celery_app

BASE_DIR = Path(settings.BASE_DIR)
DEV_SECRET = "dev-insecure-sealroom-secret-do-not-use-in-production"

# Variables that would make a child see something other than what a case sets.
CLEARED = (
    "DJANGO_DEBUG",
    "DJANGO_SECRET_KEY",
    "DJANGO_SECRET_KEY_FILE",
    "DJANGO_ALLOWED_HOSTS",
    "DJANGO_SETTINGS_MODULE",
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "CACHE_URL",
)


def production_env(**extra: str) -> dict[str, str]:
    return {
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(64),
        "DJANGO_ALLOWED_HOSTS": "sealroom.example",
        **extra,
    }


def run_python(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    child_env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    child_env.update(DJANGO_SETTINGS_MODULE="config.settings", **env)
    return subprocess.run(
        [sys.executable, *args],
        cwd=BASE_DIR,
        env=child_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def load_settings(env: dict[str, str], *names: str) -> subprocess.CompletedProcess[str]:
    code = (
        "import json\nfrom django.conf import settings\n"
        f"print(json.dumps({{n: getattr(settings, n) for n in {list(names)!r}}}, default=str))"
    )
    return run_python(["-c", code], env)


def check_deploy(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_python(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], env)


class TestProductionMode:
    @pytest.mark.parametrize(
        "secret_env",
        [
            pytest.param({}, id="no-secret"),
            pytest.param({"DJANGO_SECRET_KEY": DEV_SECRET}, id="dev-secret"),
            pytest.param({"DJANGO_SECRET_KEY": "short-but-not-the-dev-one"}, id="short-secret"),
        ],
    )
    def test_refuses_to_start_without_a_real_secret(self, secret_env):
        result = load_settings({"DJANGO_DEBUG": "false", **secret_env}, "SECRET_KEY")
        assert result.returncode != 0
        assert "ImproperlyConfigured" in result.stderr
        assert "DJANGO_SECRET_KEY" in result.stderr

    def test_refuses_the_dev_secret_from_a_file_too(self, tmp_path):
        secret_file = tmp_path / "secret"
        secret_file.write_text(DEV_SECRET + "\n")
        result = load_settings({"DJANGO_DEBUG": "false", "DJANGO_SECRET_KEY_FILE": str(secret_file)}, "DEBUG")
        assert result.returncode != 0
        assert "ImproperlyConfigured" in result.stderr

    def test_an_unreadable_secret_file_is_a_configuration_error(self, tmp_path):
        result = load_settings(production_env(DJANGO_SECRET_KEY_FILE=str(tmp_path / "missing")), "DEBUG")
        assert result.returncode != 0
        assert "ImproperlyConfigured: DJANGO_SECRET_KEY_FILE" in result.stderr

    def test_check_deploy_passes_with_no_warnings(self):
        result = check_deploy(production_env())
        assert result.returncode == 0, result.stderr
        assert "System check identified no issues" in result.stdout

    def test_the_secret_can_come_from_a_file(self, tmp_path):
        secret = secrets.token_urlsafe(64)
        secret_file = tmp_path / "secret"
        secret_file.write_text(secret + "\n")
        env = production_env(
            DJANGO_SECRET_KEY="ignored-when-a-file-is-named", DJANGO_SECRET_KEY_FILE=str(secret_file)
        )
        result = load_settings(env, "SECRET_KEY", "DEBUG")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {"SECRET_KEY": secret, "DEBUG": False}
        assert check_deploy(env).returncode == 0

    def test_debug_defaults_on_with_the_dev_secret(self):
        result = load_settings({}, "DEBUG", "SECRET_KEY")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {"DEBUG": True, "SECRET_KEY": DEV_SECRET}


class TestEmbeddedDefaults:
    def test_nothing_set_means_sqlite_wal_and_a_filesystem_broker_under_var(self, tmp_path):
        result = load_settings(
            {"SEALROOM_VAR_DIR": str(tmp_path)},
            "DATABASES",
            "CELERY_BROKER_URL",
            "CELERY_BROKER_TRANSPORT_OPTIONS",
        )
        assert result.returncode == 0, result.stderr
        loaded = json.loads(result.stdout)
        database = loaded["DATABASES"]["default"]
        assert database["ENGINE"] == "django.db.backends.sqlite3"
        assert database["NAME"] == str(tmp_path / "sealroom.sqlite3")
        assert "journal_mode=WAL" in database["OPTIONS"]["init_command"]
        assert database["OPTIONS"]["transaction_mode"] == "IMMEDIATE"
        assert loaded["CELERY_BROKER_URL"] == "filesystem://"
        assert loaded["CELERY_BROKER_TRANSPORT_OPTIONS"]["data_folder_in"].startswith(str(tmp_path))

    def test_a_redis_broker_gets_a_visibility_timeout_longer_than_any_task(self):
        result = load_settings(
            {
                "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
                "DATABASE_URL": "postgres://u@db.example/sealroom",
            },
            "CELERY_BROKER_TRANSPORT_OPTIONS",
            "DATABASES",
        )
        assert result.returncode == 0, result.stderr
        loaded = json.loads(result.stdout)
        assert loaded["CELERY_BROKER_TRANSPORT_OPTIONS"]["visibility_timeout"] >= 6 * 3600
        assert loaded["DATABASES"]["default"]["ENGINE"] == "django.db.backends.postgresql"
        assert loaded["DATABASES"]["default"]["NAME"] == "sealroom"


class TestCelery:
    def test_tasks_ack_late_and_are_requeued_when_their_worker_is_lost(self):
        conf = celery_app.conf
        assert conf.task_acks_late is True
        assert conf.task_reject_on_worker_lost is True
        assert conf.worker_prefetch_multiplier == 1
        assert sorted(q.name for q in conf.task_queues) == ["custody", "default", "serving", "training"]
        # A shared routing key would copy one doorbell into every queue.
        assert all(q.routing_key == q.name for q in conf.task_queues)

    def test_the_beat_schedule_names_registered_tasks_at_their_intervals(self):
        celery_app.loader.import_default_modules()
        schedule = celery_app.conf.beat_schedule
        by_task = {entry["task"]: entry for entry in schedule.values()}
        assert set(by_task) == {
            "common.sweep_work",
            "common.audit_checkpoint_tick",
            "custody.quarantine_retention_sweep",
            "common.webhook_retry_sweep",
            "common.blob_uploads_sweep",
            "marketplace.sweep",
            "training.sweep_jobs",
        }
        assert set(by_task) <= set(celery_app.tasks)
        assert by_task["common.sweep_work"]["schedule"] == settings.SWEEP_INTERVAL_SECONDS
        assert by_task["common.audit_checkpoint_tick"]["schedule"] == settings.AUDIT_CHECKPOINT_SECONDS


class TestEnvExample:
    def test_lists_every_variable_the_settings_read(self):
        source = (BASE_DIR / "config" / "settings.py").read_text()
        read = set(re.findall(r'\benv(?:_bool|_int)?\(\s*"([A-Z0-9_]+)"', source))
        listed = set(re.findall(r"^#? ?([A-Z0-9_]+)=", (BASE_DIR / ".env.example").read_text(), re.MULTILINE))
        assert read, "found no env(...) calls: has the settings module changed how it reads variables?"
        assert sorted(read - listed) == [], "add these to .env.example with their default and a comment"
