"""The tokenizer a built-in causal LM ships with: the platform's ids, a causal LM's special tokens.

Built-in causal bases train on the platform tokenizer (DESIGN.md "Platform tokens"), a BERT
WordPiece whose post-processor wraps every text in ``[CLS] … [SEP]``: right for a classifier,
wrong for a licensee who calls ``generate()`` (issue 18: ``'[CLS] please update the shipping
[SEP]…'``). The artifact keeps every id the model was trained on and renames only the special
tokens, GPT-2 style:

- ``[SEP]`` (the record separator the runner packs between records) becomes ``<|endoftext|>``,
  the model's BOS and EOS; ``[PAD]`` becomes ``<|pad|>``, ``[UNK]`` ``<|unk|>``; the unused
  ``[CLS]`` and ``[MASK]`` become ``<|reserved_0|>`` and ``<|reserved_1|>`` (still special, so
  ``skip_special_tokens`` drops them).
- The post-processor puts ``<|endoftext|>`` in front of a text, the context every record began
  in during training (the gate scores texts the same way), and adds nothing after it.

Pure ``json``: no torch, no Django. The ids of ordinary text do not change.
"""

from __future__ import annotations

import json
from typing import Any

from training.runner.spec import MAX_SEQ_LEN

BOS = EOS = "<|endoftext|>"
PAD = "<|pad|>"
UNK = "<|unk|>"
RENAMED = {
    "[SEP]": EOS,
    "[PAD]": PAD,
    "[UNK]": UNK,
    "[CLS]": "<|reserved_0|>",
    "[MASK]": "<|reserved_1|>",
}


def causal_tokenizer_json(platform_json: str) -> str:
    """The artifact's ``tokenizer.json`` from the platform tokenizer's (ids unchanged).

    :raises ValueError: the tokenizer lacks ``[SEP]`` or is not a WordPiece vocabulary.
    """
    doc: dict[str, Any] = json.loads(platform_json)
    model = doc.get("model") or {}
    vocab = model.get("vocab")
    if not isinstance(vocab, dict) or "[SEP]" not in vocab:
        raise ValueError("the platform tokenizer has no [SEP] in a WordPiece vocabulary")
    model["vocab"] = {RENAMED.get(token, token): token_id for token, token_id in vocab.items()}
    if model.get("unk_token") in RENAMED:
        model["unk_token"] = RENAMED[model["unk_token"]]
    for added in doc.get("added_tokens") or []:
        added["content"] = RENAMED.get(added["content"], added["content"])
    eos_id = model["vocab"][EOS]
    special = {EOS: {"id": EOS, "ids": [eos_id], "tokens": [EOS]}}
    doc["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": BOS, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [
            {"SpecialToken": {"id": BOS, "type_id": 0}},
            {"Sequence": {"id": "A", "type_id": 0}},
            {"SpecialToken": {"id": EOS, "type_id": 0}},
            {"Sequence": {"id": "B", "type_id": 0}},
        ],
        "special_tokens": special,
    }
    doc["truncation"] = None
    doc["padding"] = None
    return json.dumps(doc, ensure_ascii=False)


def causal_tokenizer_files(platform_json: str) -> dict[str, bytes]:
    """``tokenizer.json``, ``tokenizer_config.json`` and ``special_tokens_map.json`` for the artifact."""
    special = {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD, "unk_token": UNK}
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": MAX_SEQ_LEN,
        "clean_up_tokenization_spaces": True,
        **special,
    }
    return {
        "tokenizer.json": causal_tokenizer_json(platform_json).encode(),
        "tokenizer_config.json": json.dumps(config, indent=2).encode(),
        "special_tokens_map.json": json.dumps(special, indent=2).encode(),
    }
