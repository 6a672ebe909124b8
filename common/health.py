"""``/healthz``: database, broker, blob store and key provider, each checked for real."""

from __future__ import annotations

import time
from collections.abc import Callable

from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from common.blobs import blob_store


def _check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def _check_broker() -> None:
    from celery import current_app as app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
        # Opening a channel touches the transport for real (the filesystem
        # transport's ensure_connection alone never looks at its folders).
        conn.default_channel  # noqa: B018


def _check_blobs() -> None:
    blob_store().check()


def _check_keys() -> None:
    from common.signing import signing_key_provider

    signing_key_provider().check()


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
