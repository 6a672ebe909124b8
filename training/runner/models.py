"""The models a template trains: built-in bases, uploaded bases, LoRA wrapping."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch
from tokenizers import Tokenizer
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedModel,
)
from transformers.utils import logging as transformers_logging

from training.runner.bases import base_files_check
from training.runner.causal_tokenizer import causal_tokenizer_files
from training.runner.data import InputError, bio_tags, load_tokenizer, platform_model_dir, special_id
from training.runner.spec import MAX_SEQ_LEN, Spec

transformers_logging.set_verbosity_error()
transformers_logging.disable_progress_bar()

# (n_layer, n_head, n_embd): tiny for tests, 124m the GPT-2 small sizes.
BASE_SIZES: dict[str, tuple[int, int, int]] = {
    "gpt2-tiny": (2, 2, 64),
    "gpt2-124m": (12, 12, 768),
}
# GPT-2 keeps its projections in transformers' Conv1D (weights stored transposed): LoRA wraps them
# with fan_in_fan_out so its adapters are plain nn.Linear layers, which Opacus supports.
GPT2_LORA_TARGETS = ["c_attn", "c_proj", "c_fc"]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
_LOAD = {"use_safetensors": True, "local_files_only": True, "trust_remote_code": False}


@dataclass
class Base:
    """A model ready to train, its tokenizer (no truncation, no padding) and the files to ship with it."""

    model: PreTrainedModel
    tokenizer: Tokenizer
    separator: int
    pad: int
    tokenizer_files: dict[str, bytes]


def build_model(base_name: str, tokenizer: Tokenizer, seed: int) -> GPT2LMHeadModel:
    """Create a built-in base from its config (random init, seeded); its vocabulary is the tokenizer's."""
    n_layer, n_head, n_embd = BASE_SIZES[base_name]
    config = GPT2Config(
        vocab_size=tokenizer.get_vocab_size(),
        n_positions=MAX_SEQ_LEN,
        # The record separator starts and ends a text, as GPT-2's <|endoftext|> (causal_tokenizer).
        bos_token_id=special_id(tokenizer, "[SEP]"),
        eos_token_id=special_id(tokenizer, "[SEP]"),
        pad_token_id=special_id(tokenizer, "[PAD]"),
        n_layer=n_layer,
        n_head=n_head,
        n_embd=n_embd,
    )
    torch.manual_seed(seed)
    return GPT2LMHeadModel(config)


def load_pretrained(directory: Path, **kwargs: Any) -> tuple[PreTrainedModel, bool]:
    """Load a checked directory with transformers, safetensors only, offline, no custom code.

    Returns the model and whether it is a causal LM (else an encoder with a classification head
    where the config names one, or the bare encoder).
    """
    config = AutoConfig.from_pretrained(directory, local_files_only=True, trust_remote_code=False)
    architectures = [str(a) for a in (getattr(config, "architectures", None) or [])]
    causal = any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures)
    if causal:
        return AutoModelForCausalLM.from_pretrained(directory, **_LOAD, **kwargs), True
    if any(a.endswith("ForSequenceClassification") for a in architectures) or kwargs:
        return AutoModelForSequenceClassification.from_pretrained(directory, **_LOAD, **kwargs), False
    from transformers import AutoModel

    return AutoModel.from_pretrained(directory, **_LOAD), False


def _files(directory: Path) -> dict[str, bytes]:
    return {name: (directory / name).read_bytes() for name in TOKENIZER_FILES if (directory / name).is_file()}


def _uploaded_dir(spec: Spec) -> Path:
    assert spec.base_path is not None
    directory = Path(spec.base_path)
    problems = base_files_check(directory)
    if problems:
        raise InputError("base", "; ".join(problems)[:500])
    return directory


def _check_positions(model: PreTrainedModel, spec: Spec) -> None:
    positions = getattr(model.config, "max_position_embeddings", None) or getattr(
        model.config, "n_positions", None
    )
    if isinstance(positions, int) and spec.hyperparameters.max_seq_len > positions:
        raise InputError("hyperparameters.max_seq_len", f"the base handles at most {positions} positions")


def load_causal(spec: Spec) -> Base:
    """The causal-LM base: built-in (random init, platform tokenizer) or uploaded."""
    hp = spec.hyperparameters
    if spec.base_name is not None:
        tokenizer = load_tokenizer(spec.tokenizer_path)
        model: PreTrainedModel = build_model(spec.base_name, tokenizer, hp.seed)
        # Shipped with a causal LM's special tokens, not the platform's [CLS]/[SEP] (same ids).
        files = causal_tokenizer_files(tokenizer.to_str())
        return Base(model, tokenizer, special_id(tokenizer, "[SEP]"), special_id(tokenizer, "[PAD]"), files)
    directory = _uploaded_dir(spec)
    tokenizer = load_tokenizer(str(directory / "tokenizer.json"))
    torch.manual_seed(hp.seed)
    try:
        model, causal = load_pretrained(directory)
    except Exception as error:  # noqa: BLE001 - untrusted files fail in many ways
        raise InputError("base", f"transformers cannot load it: {type(error).__name__}") from None
    if not causal:
        raise InputError("base", f"{type(model).__name__} is not a causal language model")
    eos = model.config.eos_token_id
    eos = eos[0] if isinstance(eos, list) and eos else eos
    if not isinstance(eos, int):
        raise InputError("base", "config.json names no eos_token_id to separate records")
    pad = model.config.pad_token_id if isinstance(model.config.pad_token_id, int) else eos
    if tokenizer.get_vocab_size() > cast(torch.nn.Embedding, model.get_input_embeddings()).num_embeddings:
        raise InputError("base", "the tokenizer's vocabulary is larger than the model's embeddings")
    _check_positions(model, spec)
    return Base(model, tokenizer, eos, pad, _files(directory))


def load_classifier(spec: Spec) -> Base:
    """The sequence classifier: the bundled all-MiniLM-L6-v2 or an uploaded encoder, new head."""
    directory = platform_model_dir() if spec.base_name is not None else _uploaded_dir(spec)
    tokenizer = load_tokenizer(str(directory / "tokenizer.json"))
    labels = list(spec.labels)
    torch.manual_seed(spec.hyperparameters.seed)
    try:
        model, _ = load_pretrained(
            directory,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
            ignore_mismatched_sizes=True,
        )
    except Exception as error:  # noqa: BLE001 - untrusted files fail in many ways
        raise InputError(
            "base", f"transformers cannot load it as a classifier: {type(error).__name__}"
        ) from None
    pad = model.config.pad_token_id
    if not isinstance(pad, int):
        pad = tokenizer.token_to_id("[PAD]") or 0
    _check_positions(model, spec)
    return Base(model, tokenizer, pad, pad, _files(directory))


# token_classification adapts every linear layer of a BERT-style encoder (attention and MLP).
ENCODER_LORA_TARGETS = ["query", "key", "value", "dense"]


def load_token_classifier(spec: Spec) -> Base:
    """The token classifier: the bundled all-MiniLM-L6-v2 or an uploaded encoder, a new BIO tag head."""
    directory = platform_model_dir() if spec.base_name is not None else _uploaded_dir(spec)
    tokenizer = load_tokenizer(str(directory / "tokenizer.json"))
    tags = bio_tags(spec.labels)
    torch.manual_seed(spec.hyperparameters.seed)
    try:
        model = AutoModelForTokenClassification.from_pretrained(
            directory,
            **_LOAD,
            num_labels=len(tags),
            id2label=dict(enumerate(tags)),
            label2id={tag: i for i, tag in enumerate(tags)},
            ignore_mismatched_sizes=True,
        )
    except Exception as error:  # noqa: BLE001 - untrusted files fail in many ways
        raise InputError(
            "base", f"transformers cannot load it as a token classifier: {type(error).__name__}"
        ) from None
    pad = model.config.pad_token_id
    if not isinstance(pad, int):
        pad = tokenizer.token_to_id("[PAD]") or 0
    _check_positions(model, spec)
    return Base(model, tokenizer, pad, pad, _files(directory))


def apply_encoder_lora(model: PreTrainedModel, spec: Spec) -> Any:
    """Freeze the encoder, add LoRA adapters to its linear layers; the new tag head trains whole."""
    from peft import LoraConfig, TaskType, get_peft_model

    hp = spec.hyperparameters
    config = LoraConfig(
        task_type=TaskType.TOKEN_CLS,
        r=hp.lora_r,
        lora_alpha=hp.lora_alpha,
        lora_dropout=hp.lora_dropout,
        target_modules=ENCODER_LORA_TARGETS,
    )
    torch.manual_seed(hp.seed)
    try:
        return get_peft_model(model, config)
    except ValueError:
        raise InputError(
            "base", f"LoRA finds no {'/'.join(ENCODER_LORA_TARGETS)} layers in {model.config.model_type}"
        ) from None


def apply_lora(model: PreTrainedModel, spec: Spec) -> Any:
    """Freeze the base and add LoRA adapters (r, alpha, dropout from the spec)."""
    from peft import LoraConfig, get_peft_model

    hp = spec.hyperparameters
    gpt2 = model.config.model_type == "gpt2"
    config = LoraConfig(
        r=hp.lora_r,
        lora_alpha=hp.lora_alpha,
        lora_dropout=hp.lora_dropout,
        target_modules=GPT2_LORA_TARGETS if gpt2 else None,
        fan_in_fan_out=gpt2,
    )
    torch.manual_seed(hp.seed)
    try:
        return get_peft_model(model, config)
    except ValueError:
        raise InputError(
            "base", f"LoRA has no default target layers for model_type {model.config.model_type}"
        ) from None
