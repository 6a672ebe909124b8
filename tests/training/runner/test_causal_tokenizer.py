"""The tokenizer a built-in causal LM ships with: the platform's ids, a causal LM's special tokens."""

from __future__ import annotations

import json

from tokenizers import Tokenizer

from training.runner.causal_tokenizer import causal_tokenizer_files, causal_tokenizer_json
from training.runner.data import load_tokenizer

TEXT = "Please update the shipping address, order 4411."


def test_ordinary_text_keeps_its_ids_and_gets_only_a_bos() -> None:
    platform = load_tokenizer()
    shipped = Tokenizer.from_str(causal_tokenizer_json(platform.to_str()))
    plain = platform.encode(TEXT, add_special_tokens=False).ids
    assert shipped.encode(TEXT, add_special_tokens=False).ids == plain
    separator = platform.token_to_id("[SEP]")
    pad = platform.token_to_id("[PAD]")
    assert separator is not None and pad is not None
    assert shipped.encode(TEXT).ids == [separator, *plain]  # no [CLS] in front, no [SEP] after
    assert shipped.id_to_token(separator) == "<|endoftext|>"
    assert shipped.id_to_token(pad) == "<|pad|>"
    assert shipped.token_to_id("[CLS]") is None and shipped.token_to_id("[SEP]") is None
    decoded = shipped.decode([separator, *plain, separator], skip_special_tokens=False)
    assert "[CLS]" not in decoded and "[SEP]" not in decoded
    assert shipped.decode([separator, *plain, separator]) == platform.decode(plain)


def test_the_config_names_causal_special_tokens() -> None:
    files = causal_tokenizer_files(load_tokenizer().to_str())
    config = json.loads(files["tokenizer_config.json"])
    assert (config["bos_token"], config["eos_token"], config["pad_token"]) == (
        "<|endoftext|>",
        "<|endoftext|>",
        "<|pad|>",
    )
    assert json.loads(files["special_tokens_map.json"])["eos_token"] == "<|endoftext|>"
