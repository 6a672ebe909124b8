"""``/healthz``: database, broker, blob store and key provider, each checked for real.

The same checks of the blob store and the key providers run at start-up in
``manage.py check --deploy`` (``services_check``): a misconfigured S3 bucket or
KMS key stops the deployment with a message naming what is wrong.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

from django.core.checks import CheckMessage, Error
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from common.blobs import blob_store

BROKER_TIMEOUT_SECONDS = 2


def _check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def _check_folder_writable(folder: Path) -> None:
    """:raises OSError: the folder is missing or a probe file cannot be written and removed."""
    if not folder.is_dir():
        raise FileNotFoundError(f"broker folder {folder} is missing")
    probe = folder / f".health-{uuid.uuid4().hex}"
    probe.write_bytes(b"ok")
    probe.unlink()


def _check_broker() -> None:
    from celery import current_app as app

    options = app.conf.broker_transport_options or {}
    if str(app.conf.broker_url).startswith("filesystem"):
        # The filesystem transport "connects" without looking at its folders:
        # what it needs is to write messages into them and take them out.
        folders = {options.get("data_folder_in"), options.get("data_folder_out")}
        if options.get("store_processed"):
            folders.add(options.get("processed_folder"))
        for folder in sorted(str(f) for f in folders if f):
            _check_folder_writable(Path(folder))
        return
    with app.connection_for_write(
        # Bounded, so that a broker that drops packets makes /healthz slow, not hung.
        connect_timeout=BROKER_TIMEOUT_SECONDS,
        transport_options={
            "socket_connect_timeout": BROKER_TIMEOUT_SECONDS,
            "socket_timeout": BROKER_TIMEOUT_SECONDS,
        },
    ) as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, timeout=BROKER_TIMEOUT_SECONDS)
        channel = conn.default_channel
        client = getattr(channel, "client", None)
        if client is not None and hasattr(client, "ping"):
            client.ping()  # Redis: a round trip, not just an open socket


def _check_blobs() -> None:
    blob_store().check()


# Key providers of the apps above (custody's KEK provider) register here from their
# AppConfig.ready(): common may not import them.
KEY_CHECKS: list[Callable[[], None]] = []


def register_key_check(check: Callable[[], None]) -> None:
    if check not in KEY_CHECKS:
        KEY_CHECKS.append(check)


def _check_keys() -> None:
    from common.signing import signing_key_provider

    signing_key_provider().check()
    for check in KEY_CHECKS:
        check()


CHECKS: dict[str, Callable[[], None]] = {
    "database": _check_database,
    "broker": _check_broker,
    "blob_store": _check_blobs,
    "key_provider": _check_keys,
}


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """200 with each component ``ok``, or 503 naming the one that failed and why."""
    report: dict[str, dict[str, object]] = {}
    for name, check in CHECKS.items():
        started = time.perf_counter()
        try:
            check()
        except Exception as exc:  # noqa: BLE001 - health reports any failure, by name
            report[name] = {"status": "error", "error": f"{type(exc).__name__}: {exc}"[:300]}
        else:
            report[name] = {"status": "ok"}
        report[name]["ms"] = round((time.perf_counter() - started) * 1000, 1)
    healthy = all(item["status"] == "ok" for item in report.values())
    return JsonResponse(
        {"status": "ok" if healthy else "error", "checks": report}, status=200 if healthy else 503
    )


def services_check(app_configs: object = None, **kwargs: object) -> list[CheckMessage]:
    """Django system check (deploy): the blob store and the key providers answer for real."""
    from django.conf import settings

    # The local store and keys are made by `make run` on first start and checked by
    # /healthz; probing them here would create them wherever `check` happens to run.
    remote = (
        ("blob_store", _check_blobs, settings.BLOB_BACKEND != "local"),
        ("key_provider", _check_keys, settings.KEY_PROVIDER != "local"),
    )
    errors: list[CheckMessage] = []
    for number, (name, check, wanted) in enumerate(remote, 1):
        if not wanted:
            continue
        try:
            check()
        except Exception as exc:  # noqa: BLE001 - reported by name, never as a traceback
            errors.append(Error(f"{name}: {type(exc).__name__}: {exc}"[:500], id=f"sealroom.E00{number}"))
    return errors
