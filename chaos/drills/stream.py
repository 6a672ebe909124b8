"""The drills' workload: a trainer ordering over HTTP, and its jobs recording usage that the worker settles.

Each operation is what a careful client and a training runner do:

1. ``order``: ``POST /api/v1/orders`` with the trainer's API token and a fresh
   ``Idempotency-Key``. After a connection error, a 5xx, a 429 or a 409
   ``idempotency.in_progress`` the outcome is unknown, so it retries *with the
   same key* until it gets a definitive answer (2xx: acknowledged; another
   4xx: refused) or the drill's patience runs out.
2. ``usage``: for an acknowledged order, its job starts: custody's
   ``usage_record(job_started)`` on the license's grant, as the training
   launcher records it. That rings the marketplace's settlement work item,
   which the Celery worker runs: the fixed-price escrow is released once.
   Retried on a database error (the call is idempotent per consumer).

Every attempt and outcome goes to the history (``invoke`` / ``ok`` / ``fail``
/ ``info``), and :attr:`Stream.in_flight` says at any moment which operations
are waiting for an answer, so a fault's event can name what it struck.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from chaos.history import History

# Answers that leave the outcome unknown: ask again with the same key.
RETRY_STATUSES = {429, 500, 502, 503, 504}
RETRY_CODES = {"idempotency.in_progress"}
BACKOFF_SECONDS = (0.1, 0.25, 0.5, 1.0)


@dataclass
class Stream:
    """Client threads running orders (and their usage) until told to stop."""

    base_url: str
    token: str
    offer_id: str
    history: History
    key_prefix: str
    record_usage: Callable[[str, str], int] | None = None
    threads: int = 3
    patience_seconds: float = 60.0
    acknowledged: int = 0
    usage_recorded: int = 0
    unresolved: list[int] = field(default_factory=list)
    in_flight: dict[int, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1), repr=False)
    _workers: list[threading.Thread] = field(default_factory=list, repr=False)
    _give_up_at: float = float("inf")

    def start(self) -> None:
        for n in range(self.threads):
            thread = threading.Thread(target=self._loop, name=f"drill-client-{n}", daemon=True)
            thread.start()
            self._workers.append(thread)

    def stop(self) -> None:
        """Send no new operation; let the ones under way resolve (up to the patience) and join."""
        self._give_up_at = time.monotonic() + self.patience_seconds
        self._stop.set()
        for thread in self._workers:
            thread.join(timeout=self.patience_seconds + 60)

    def in_flight_now(self) -> dict[str, list[int]]:
        """The operations waiting for an answer right now, by kind."""
        with self._lock:
            snapshot = dict(self.in_flight)
        kinds: dict[str, list[int]] = {}
        for op_id, kind in sorted(snapshot.items()):
            kinds.setdefault(kind, []).append(op_id)
        return kinds

    # --- one thread ---------------------------------------------------------------------

    def _loop(self) -> None:
        with httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=httpx.Timeout(30.0, connect=5.0),
        ) as client:
            while not self._stop.is_set():
                op_id = next(self._ids)
                license_ref = self._order(client, op_id)
                if license_ref and self.record_usage is not None:
                    self._usage(op_id, license_ref)

    def _patient(self) -> bool:
        return time.monotonic() < self._give_up_at

    def _pause(self, attempt: int) -> None:
        time.sleep(BACKOFF_SECONDS[min(attempt - 1, len(BACKOFF_SECONDS) - 1)])

    def _track(self, op_id: int, kind: str | None) -> None:
        with self._lock:
            if kind is None:
                self.in_flight.pop(op_id, None)
            else:
                self.in_flight[op_id] = kind

    def _order(self, client: httpx.Client, op_id: int) -> str | None:
        """Place one order until the answer is definitive; the license's ref when acknowledged."""
        key = f"{self.key_prefix}-{op_id:06d}"
        for attempt in itertools.count(1):
            if not self._patient():
                self.history.record("info", op="order", id=op_id, key=key, gave_up=True)
                self.unresolved.append(op_id)
                return None
            self.history.record("invoke", op="order", id=op_id, key=key, attempt=attempt)
            self._track(op_id, "order")
            try:
                response = client.post(
                    "/api/v1/orders", json={"offer_id": self.offer_id}, headers={"Idempotency-Key": key}
                )
            except httpx.HTTPError as exc:
                self.history.record("info", op="order", id=op_id, key=key, error=type(exc).__name__)
                self._pause(attempt)
                continue
            finally:
                self._track(op_id, None)
            outcome = self._order_outcome(op_id, key, response)
            if outcome != "retry":
                return outcome or None
            self._pause(attempt)
        return None  # unreachable: itertools.count never ends

    def _order_outcome(self, op_id: int, key: str, response: httpx.Response) -> str:
        """ "retry", "" (refused) or the license ref (acknowledged); records the answer."""
        body = _json(response)
        code = body.get("code", "") if isinstance(body, dict) else ""
        if response.status_code in RETRY_STATUSES or code in RETRY_CODES:
            self.history.record("info", op="order", id=op_id, key=key, status=response.status_code, code=code)
            return "retry"
        if response.is_success:
            self.history.record(
                "ok", op="order", id=op_id, key=key, status=response.status_code, ref=body.get("ref"),
                license=body.get("license_ref"), state=body.get("state"),
            )  # fmt: skip
            with self._lock:
                self.acknowledged += 1
            return str(body.get("license_ref") or "")
        self.history.record("fail", op="order", id=op_id, key=key, status=response.status_code, code=code)
        return ""

    def _usage(self, op_id: int, license_ref: str) -> None:
        """Record the job's start on the license until it is committed (idempotent per consumer)."""
        assert self.record_usage is not None
        consumer = f"{self.key_prefix}-job-{op_id:06d}"
        for attempt in itertools.count(1):
            if not self._patient():
                self.history.record("info", op="usage", id=op_id, license=license_ref, gave_up=True)
                self.unresolved.append(op_id)
                return
            self.history.record("invoke", op="usage", id=op_id, license=license_ref, consumer=consumer)
            self._track(op_id, "usage")
            try:
                usage_id = self.record_usage(license_ref, consumer)
            except Exception as exc:  # noqa: BLE001 - a database that restarts raises many kinds
                self.history.record(
                    "info", op="usage", id=op_id, license=license_ref, error=type(exc).__name__
                )
                self._pause(attempt)
                continue
            finally:
                self._track(op_id, None)
            self.history.record(
                "ok", op="usage", id=op_id, license=license_ref, consumer=consumer, usage=usage_id
            )
            with self._lock:
                self.usage_recorded += 1
            return


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return {}
