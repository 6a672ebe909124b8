"""Desensitize a stream of records on several processes, in input order, with bounded memory.

Each worker process builds the engine once (its initializer) and then takes
chunks of records. Only a few chunks per worker are in flight at a time, so
an input of any size streams through without being read ahead into memory.
Workers are spawned, not forked: a parent that already runs threads or
loaded the model (a Celery worker, the bench) forks badly.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from itertools import islice
from typing import Any, Final

from django.conf import settings

from custody.desensitize.core import Desensitized, Desensitizer, Span
from custody.desensitize.policy import Policy

CHUNK_SIZE: Final = 256
CHUNKS_IN_FLIGHT_PER_WORKER: Final = 3

_worker: Desensitizer | None = None
_worker_language = "auto"


def process_count(requested: int | None = None) -> int:
    """Return how many processes to use: ``requested``, else the setting; 0 means every core."""
    count = settings.DESENSITIZE_PROCESSES if requested is None else requested
    return count if count > 0 else (os.cpu_count() or 1)


def _init_worker(policy_data: dict[str, Any], key: bytes, language: str, model_name: str) -> None:
    global _worker, _worker_language  # one desensitizer per worker process
    _worker = Desensitizer(Policy.from_dict(policy_data), key, model_name=model_name)
    _worker_language = language
    _worker.engine  # noqa: B018 - build the engine now, not inside the first chunk


def _run_chunk(texts: list[str]) -> list[tuple[str, tuple[tuple[int, int, str, float], ...], str]]:
    assert _worker is not None, "worker not initialised"
    return [
        (d.text, tuple((s.start, s.end, s.entity_type, s.score) for s in d.spans), d.language)
        for d in _worker.desensitize_batch(texts, _worker_language)
    ]


def _warm_up(_: int) -> int:
    return os.getpid()


class DesensitizerPool:
    """A pool of worker processes, each holding its own engine; use as a context manager."""

    def __init__(
        self,
        policy: Policy,
        pseudonym_key: bytes,
        *,
        processes: int | None = None,
        language: str = "auto",
        chunk_size: int = CHUNK_SIZE,
        model_name: str | None = None,
    ) -> None:
        self.processes = process_count(processes)
        self.chunk_size = chunk_size
        self._executor = ProcessPoolExecutor(
            max_workers=self.processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(policy.to_dict(), pseudonym_key, language, model_name or settings.SPACY_MODEL),
        )

    def __enter__(self) -> DesensitizerPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close(cancel=exc_info[0] is not None)

    def close(self, *, cancel: bool = False) -> None:
        """Stop the workers (dropping queued chunks when ``cancel``)."""
        self._executor.shutdown(wait=True, cancel_futures=cancel)

    def worker_pids(self) -> list[int]:
        """Return the process ids of the workers (for measuring them)."""
        processes = getattr(self._executor, "_processes", None) or {}
        return sorted(processes)

    def warm_up(self) -> None:
        """Wait until every worker has started and built its engine."""
        list(self._executor.map(_warm_up, range(self.processes * 2)))

    def desensitize(self, texts: Iterable[str]) -> Iterator[Desensitized]:
        """Yield the desensitized records in input order, reading the input as it goes."""
        pending: deque[Future[list[tuple[str, tuple[tuple[int, int, str, float], ...], str]]]] = deque()
        limit = self.processes * CHUNKS_IN_FLIGHT_PER_WORKER
        source = iter(texts)
        while True:
            while len(pending) < limit:
                chunk = list(islice(source, self.chunk_size))
                if not chunk:
                    break
                pending.append(self._executor.submit(_run_chunk, chunk))
            if not pending:
                return
            for text, spans, language in pending.popleft().result():
                yield Desensitized(text, tuple(Span(*s) for s in spans), language)


def desensitize_stream(
    texts: Iterable[str],
    policy: Policy,
    pseudonym_key: bytes,
    *,
    language: str = "auto",
    processes: int | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> Iterator[Desensitized]:
    """Yield desensitized records in input order: in this process for one process, else on a pool."""
    if process_count(processes) == 1:
        desensitizer = Desensitizer(policy, pseudonym_key)
        source = iter(texts)
        while chunk := list(islice(source, chunk_size)):
            yield from desensitizer.desensitize_batch(chunk, language)
        return
    with DesensitizerPool(
        policy, pseudonym_key, processes=processes, language=language, chunk_size=chunk_size
    ) as pool:
        yield from pool.desensitize(texts)
