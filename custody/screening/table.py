"""The columns a screener keeps per record, and their safe byte format.

A state is ``MAGIC``, a little-endian u32 header length, a JSON header, then the arrays
of ``SCHEMA`` in order, raw little-endian. The schema, not the header, fixes each array's
type; the header only gives counts, so loading a state runs no code and builds no object
other than numbers and the findings' number-only details. The bytes depend only on the
set of records, not on the order they were added in.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from numpy.typing import NDArray

from custody.screening.types import KIND_ORDER

MAGIC = b"SRSCREEN"
FORMAT = "sealroom-screening-state/1"


class ScreeningStateError(ValueError):
    """A state that is corrupt, or was made under another configuration or key."""


@dataclass(frozen=True)
class Table:
    ids: NDArray[np.int64]
    exact: NDArray[np.uint64]  # (n, 2): the 16-byte keyed hash of the normalized text
    signatures: NDArray[np.uint32]  # (n, num_perm)
    labels: NDArray[np.uint64]  # keyed label hash, 0 = no label
    content: NDArray[np.bool_]  # False for empty records, which take part in nothing else
    ngram_lengths: NDArray[np.int64]
    ngrams: NDArray[np.uint32]
    token_lengths: NDArray[np.int64]
    tokens: NDArray[np.uint32]
    flag_ids: NDArray[np.int64]  # per-record findings made at add time
    flag_kinds: NDArray[np.uint8]
    flag_scores: NDArray[np.float64]  # NaN = no score
    flag_details: tuple[str, ...]

    @property
    def size(self) -> int:
        return int(self.ids.size)

    @classmethod
    def concat(cls, tables: Sequence[Table], num_perm: int) -> Table:
        if len(tables) == 1:
            return tables[0]
        if not tables:
            return _empty(num_perm)
        columns: dict[str, Any] = {}
        for field in fields(cls):
            parts = [getattr(table, field.name) for table in tables]
            if field.name == "flag_details":
                columns[field.name] = tuple(detail for part in parts for detail in part)
            else:
                columns[field.name] = np.concatenate(parts)
        return cls(**columns)

    def sorted(self) -> Table:
        """The same records ordered by id, findings by (id, kind, detail)."""
        order = np.argsort(self.ids, kind="stable")
        flag_order = sorted(
            range(self.flag_ids.size),
            key=lambda i: (int(self.flag_ids[i]), int(self.flag_kinds[i]), self.flag_details[i]),
        )
        return Table(
            ids=self.ids[order],
            exact=self.exact[order],
            signatures=self.signatures[order],
            labels=self.labels[order],
            content=self.content[order],
            ngram_lengths=self.ngram_lengths[order],
            ngrams=_take_ragged(self.ngram_lengths, self.ngrams, order),
            token_lengths=self.token_lengths[order],
            tokens=_take_ragged(self.token_lengths, self.tokens, order),
            flag_ids=self.flag_ids[flag_order],
            flag_kinds=self.flag_kinds[flag_order],
            flag_scores=self.flag_scores[flag_order],
            flag_details=tuple(self.flag_details[i] for i in flag_order),
        )

    def without_repeats(self) -> Table:
        """The sorted table with each record once: a record added again with the same text
        and label (a retried chunk, a state merged twice) counts once.

        :raises ValueError: an id was added with two different texts or labels.
        """
        repeat = np.zeros(self.size, dtype=bool)
        repeat[1:] = self.ids[1:] == self.ids[:-1]
        if not repeat.any():
            return self
        rows = np.flatnonzero(repeat)
        same = (
            (self.exact[rows] == self.exact[rows - 1]).all(axis=1)
            & (self.signatures[rows] == self.signatures[rows - 1]).all(axis=1)
            & (self.labels[rows] == self.labels[rows - 1])
            & (self.content[rows] == self.content[rows - 1])
        )
        if not same.all():
            record_id = int(self.ids[rows[~same][0]])
            raise ValueError(f"record id {record_id} was added twice, with different text or label")
        keep = np.flatnonzero(~repeat)
        flags = sorted(
            {
                (int(self.flag_ids[i]), int(self.flag_kinds[i]), self.flag_details[i]): i
                for i in range(self.flag_ids.size)
            }.values()
        )
        return Table(
            ids=self.ids[keep],
            exact=self.exact[keep],
            signatures=self.signatures[keep],
            labels=self.labels[keep],
            content=self.content[keep],
            ngram_lengths=self.ngram_lengths[keep],
            ngrams=_take_ragged(self.ngram_lengths, self.ngrams, keep),
            token_lengths=self.token_lengths[keep],
            tokens=_take_ragged(self.token_lengths, self.tokens, keep),
            flag_ids=self.flag_ids[flags],
            flag_kinds=self.flag_kinds[flags],
            flag_scores=self.flag_scores[flags],
            flag_details=tuple(self.flag_details[i] for i in flags),
        )


def _empty(num_perm: int) -> Table:
    no_ints = np.empty(0, dtype=np.int64)
    no_hashes = np.empty(0, dtype=np.uint32)
    return Table(
        ids=no_ints,
        exact=np.empty((0, 2), dtype=np.uint64),
        signatures=np.empty((0, num_perm), dtype=np.uint32),
        labels=np.empty(0, dtype=np.uint64),
        content=np.empty(0, dtype=bool),
        ngram_lengths=no_ints,
        ngrams=no_hashes,
        token_lengths=no_ints,
        tokens=no_hashes,
        flag_ids=no_ints,
        flag_kinds=np.empty(0, dtype=np.uint8),
        flag_scores=np.empty(0, dtype=np.float64),
        flag_details=(),
    )


def offsets(lengths: NDArray[np.int64]) -> NDArray[np.int64]:
    result = np.zeros(lengths.size + 1, dtype=np.int64)
    np.cumsum(lengths, out=result[1:])
    return result


def _take_ragged(
    lengths: NDArray[np.int64], values: NDArray[np.uint32], order: NDArray[np.intp]
) -> NDArray[np.uint32]:
    starts = offsets(lengths)[:-1][order]
    taken = lengths[order]
    if taken.sum() == 0:
        return values[:0]
    positions = np.repeat(starts - offsets(taken)[:-1], taken) + np.arange(int(taken.sum()))
    return values[positions]


# name: (stored dtype, how its length is counted, trailing dimension)
SCHEMA: dict[str, tuple[str, str, str | None]] = {
    "ids": ("<i8", "records", None),
    "exact": ("<u8", "records", "two"),
    "signatures": ("<u4", "records", "num_perm"),
    "labels": ("<u8", "records", None),
    "content": ("u1", "records", None),
    "ngram_lengths": ("<u4", "records", None),
    "ngrams": ("<u4", "ngrams", None),
    "token_lengths": ("<u4", "records", None),
    "tokens": ("<u4", "tokens", None),
    "flag_ids": ("<i8", "flags", None),
    "flag_kinds": ("u1", "flags", None),
    "flag_scores": ("<f8", "flags", None),
}
_IN_MEMORY = {"content": np.bool_, "ngram_lengths": np.int64, "token_lengths": np.int64}


def dump(table: Table, *, config: str, key: str) -> bytes:
    header = {
        "format": FORMAT,
        "config": config,
        "key": key,
        "num_perm": int(table.signatures.shape[1]),
        "records": table.size,
        "ngrams": int(table.ngrams.size),
        "tokens": int(table.tokens.size),
        "flags": int(table.flag_ids.size),
        "flag_details": list(table.flag_details),
    }
    encoded = json.dumps(header, sort_keys=True, ensure_ascii=True).encode()
    encoded += b" " * (-len(encoded) % 8)
    parts = [MAGIC, struct.pack("<I", len(encoded)), encoded]
    parts += [
        np.ascontiguousarray(getattr(table, name), dtype=dtype).tobytes()
        for name, (dtype, _, _) in SCHEMA.items()
    ]
    return b"".join(parts)


def load(data: bytes, *, config: str, key: str) -> Table:
    """:raises ScreeningStateError: corrupt, or made under another configuration or key."""
    data = bytes(data)
    header, position = _header(data)
    if header.get("format") != FORMAT:
        raise ScreeningStateError("not a screening state of a known format")
    if header.get("config") != config:
        raise ScreeningStateError("the state was made under another screening configuration")
    if header.get("key") != key:
        raise ScreeningStateError("the state was made under another screening key")
    counts: dict[str, int] = {"two": 2}
    for name in ("records", "ngrams", "tokens", "flags", "num_perm"):
        value = header.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ScreeningStateError("the state's header is malformed")
        counts[name] = value
    columns: dict[str, Any] = {}
    for name, (dtype, length, trailing) in SCHEMA.items():
        shape = (counts[length],) if trailing is None else (counts[length], counts[trailing])
        count = counts[length] * (1 if trailing is None else counts[trailing])
        nbytes = count * np.dtype(dtype).itemsize
        if position + nbytes > len(data):
            raise ScreeningStateError("the state is truncated")
        array = np.frombuffer(data, dtype=dtype, count=count, offset=position).reshape(shape)
        columns[name] = array.astype(_IN_MEMORY.get(name, np.dtype(dtype).newbyteorder("=")))
        position += nbytes
    if position != len(data):
        raise ScreeningStateError("the state has trailing bytes")
    details = header.get("flag_details")
    if (
        not isinstance(details, list)
        or len(details) != counts["flags"]
        or not all(isinstance(d, str) for d in details)
    ):
        raise ScreeningStateError("the state's findings are malformed")
    table = Table(**columns, flag_details=tuple(details))
    if (
        int(table.ngram_lengths.sum()) != table.ngrams.size
        or int(table.token_lengths.sum()) != table.tokens.size
    ):
        raise ScreeningStateError("the state's hash lists do not add up")
    if table.flag_kinds.size and int(table.flag_kinds.max()) >= len(KIND_ORDER):
        raise ScreeningStateError("the state's findings are malformed")
    return table


def _header(data: bytes) -> tuple[dict[str, object], int]:
    if data[: len(MAGIC)] != MAGIC:
        raise ScreeningStateError("not a screening state")
    start = len(MAGIC) + 4
    if len(data) < start:
        raise ScreeningStateError("the state is truncated")
    (length,) = struct.unpack_from("<I", data, len(MAGIC))
    try:
        header = json.loads(bytes(data[start : start + length]))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ScreeningStateError("the state's header is not JSON") from exc
    if not isinstance(header, dict):
        raise ScreeningStateError("the state's header is malformed")
    return header, start + length
