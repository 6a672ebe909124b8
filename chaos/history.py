"""A drill's history: what was asked, what was acknowledged, and when each fault struck.

Every crash drill writes one JSON Lines file as it runs, one event a line,
flushed and fsynced as it is written so that the history survives whatever
the drill kills. Offline checkers read it back (:func:`read_history`) and
compare it with what the database holds afterwards: the history says what
the platform *acknowledged*; the checker proves none of it was lost and
nothing ran twice.

Event kinds, by convention:

- ``schedule``: the seed and the planned faults, written first;
- ``invoke`` / ``ok`` / ``fail`` / ``info``: an operation was sent, was
  acknowledged (2xx, or a task reported done), was refused, or its outcome
  is unknown (the connection died with the process);
- ``fault``: a kill or restart, with its target and pid;
- ``recovered``: the platform answered again after a fault;
- ``checked``: the checker's verdict, appended by the checker.

Each event carries ``t`` (seconds since the drill started, monotonic) and
``seq`` (its line number), so a history replays in order.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Event:
    seq: int
    t: float
    kind: str
    fields: dict[str, Any]

    def __getitem__(self, name: str) -> Any:
        return self.fields[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self.fields.get(name, default)


class History:
    """Append-only, durable JSON Lines history of one drill run (safe to share between threads)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", encoding="utf-8")
        self._started = time.monotonic()
        self._seq = sum(1 for _ in path.open(encoding="utf-8")) if path.stat().st_size else 0
        self._lock = threading.Lock()

    def record(self, kind: str, **fields: Any) -> Event:
        with self._lock:
            event = Event(
                seq=self._seq, t=round(time.monotonic() - self._started, 4), kind=kind, fields=fields
            )
            line = json.dumps(
                {"seq": event.seq, "t": event.t, "kind": kind, **fields}, sort_keys=True, default=str
            )
            self._file.write(line + "\n")
            self._file.flush()
            os.fsync(self._file.fileno())
            self._seq += 1
        return event

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_history(path: Path) -> list[Event]:
    """The events of a history file, in order; a torn last line (the writer was killed) is dropped."""
    events = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            raw = json.loads(line)
        except json.JSONDecodeError:
            continue
        seq, t, kind = raw.pop("seq"), raw.pop("t"), raw.pop("kind")
        events.append(Event(seq=seq, t=t, kind=kind, fields=raw))
    return events


def of_kind(events: list[Event], kind: str) -> Iterator[Event]:
    return (e for e in events if e.kind == kind)


def fault_schedule(seed: int, faults: int, *, earliest: float, latest: float) -> list[float]:
    """Seeded, sorted moments (seconds into the workload) at which to strike.

    The same seed gives the same schedule, so a failing drill can be replayed
    with ``--seed``; the schedule is printed and written to the history first.
    """
    rng = random.Random(seed)
    return sorted(round(rng.uniform(earliest, latest), 3) for _ in range(faults))
