"""The causal-LM fine-tune: build the base, train on packed blocks, report, save safetensors."""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# Set before transformers is imported anywhere: the runner never reaches a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch
from tokenizers import Tokenizer
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.utils import logging as transformers_logging

from training.runner.data import Blocks, load_tokenizer, pack, special_id, split_records
from training.runner.spec import MAX_SEQ_LEN, Spec

transformers_logging.set_verbosity_error()
transformers_logging.disable_progress_bar()

Emit = Callable[[dict[str, Any]], None]

# (n_layer, n_head, n_embd): tiny for tests, 124m the GPT-2 small sizes.
BASE_SIZES: dict[str, tuple[int, int, int]] = {
    "gpt2-tiny": (2, 2, 64),
    "gpt2-124m": (12, 12, 768),
}


def build_model(base_name: str, tokenizer: Tokenizer, seed: int) -> GPT2LMHeadModel:
    """Create a built-in base from its config (random init, seeded); its vocabulary is the tokenizer's."""
    n_layer, n_head, n_embd = BASE_SIZES[base_name]
    config = GPT2Config(
        vocab_size=tokenizer.get_vocab_size(),
        n_positions=MAX_SEQ_LEN,
        bos_token_id=special_id(tokenizer, "[CLS]"),
        eos_token_id=special_id(tokenizer, "[SEP]"),
        pad_token_id=special_id(tokenizer, "[PAD]"),
        n_layer=n_layer,
        n_head=n_head,
        n_embd=n_embd,
    )
    torch.manual_seed(seed)
    return GPT2LMHeadModel(config)


def pick_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """Mixed precision runs on CUDA only; on CPU every precision trains in fp32."""
    if device.type != "cuda":
        return None
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)


def batches(count: int, batch_size: int, generator: torch.Generator | None) -> Iterator[torch.Tensor]:
    """Yield index tensors over `count` blocks, shuffled by `generator` when one is given."""
    order = torch.randperm(count, generator=generator) if generator is not None else torch.arange(count)
    for start in range(0, count, batch_size):
        yield order[start : start + batch_size]


class DeviceBlocks:
    """Blocks moved to the device once, with labels that ignore the padding.

    Padding only ever trails the last block, so causal attention never lets a real token see it:
    no attention mask is needed, which keeps the fast fused attention path.
    """

    def __init__(self, blocks: Blocks, device: torch.device) -> None:
        mask = torch.arange(blocks.input_ids.shape[1]) < blocks.lengths.unsqueeze(1)
        self.count = blocks.input_ids.shape[0]
        self.lengths = blocks.lengths
        self.input_ids = blocks.input_ids.to(device)
        self.labels = blocks.input_ids.masked_fill(~mask, -100).to(device)
        self.device = device

    def inputs(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        on_device = index.to(self.device)
        return {"input_ids": self.input_ids[on_device], "labels": self.labels[on_device]}


class Trainer:
    """One training job: holds the model, optimizer and counters."""

    def __init__(self, spec: Spec, train: Blocks, validation: Blocks | None, tokenizer: Tokenizer) -> None:
        hp = spec.hyperparameters
        self.spec, self.hp = spec, hp
        self.device = pick_device()
        self.train = DeviceBlocks(train, self.device)
        self.validation = DeviceBlocks(validation, self.device) if validation is not None else None
        self.dtype = autocast_dtype(hp.precision, self.device)
        self.model = build_model(spec.base_name, tokenizer, hp.seed)
        self.model.to(self.device)  # type: ignore[arg-type]  # transformers types .to() for dtypes only
        fused = self.device.type == "cuda"
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=hp.learning_rate, fused=fused)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.dtype == torch.float16)
        self.forward: Callable[..., Any] = torch.compile(self.model) if hp.compile else self.model
        steps_per_epoch = -(-self.train.count // hp.batch_size)
        self.total_steps = steps_per_epoch * hp.epochs
        if hp.max_steps is not None:
            self.total_steps = min(self.total_steps, hp.max_steps)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def _step(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        with self._autocast():
            loss = self.forward(**inputs).loss
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach()

    def run(self, emit: Emit) -> dict[str, Any]:
        """Train for the configured epochs (or max_steps), emitting progress and validation events."""
        generator = torch.Generator().manual_seed(self.hp.seed)
        step, tokens, started = 0, 0, time.perf_counter()
        loss = torch.tensor(float("nan"))
        validation: dict[str, float] = {}
        self.model.train()
        for epoch in range(1, self.hp.epochs + 1):
            for index in batches(self.train.count, self.hp.batch_size, generator):
                loss = self._step(self.train.inputs(index))
                step += 1
                tokens += int(self.train.lengths[index].sum())
                if step % self.hp.log_every == 0 or step == self.total_steps:
                    emit(self._progress(step, epoch, float(loss), tokens, started))
                if step == self.total_steps:
                    break
            if self.validation is not None:
                validation = self.evaluate()
                emit({"event": "validation", "epoch": epoch, **validation})
            if step == self.total_steps:
                break
        return {"train_loss": float(loss), "steps": step, "tokens_seen": tokens, **validation}

    def _progress(self, step: int, epoch: int, loss: float, tokens: int, started: float) -> dict[str, Any]:
        elapsed = time.perf_counter() - started
        rate = tokens / elapsed if elapsed > 0 else 0.0
        eta = (self.total_steps - step) * elapsed / step
        return {
            "event": "progress",
            "step": step,
            "total_steps": self.total_steps,
            "epoch": epoch,
            "loss": round(loss, 6),
            "tokens": tokens,
            "tokens_per_s": round(rate, 1),
            "eta_s": round(eta, 1),
        }

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Token-weighted mean loss over the held-out blocks, and its perplexity."""
        assert self.validation is not None
        self.model.eval()
        total, count = 0.0, 0
        for index in batches(self.validation.count, self.hp.batch_size, None):
            with self._autocast():
                loss = self.model(**self.validation.inputs(index)).loss
            # HF shifts labels by one: each block predicts length - 1 tokens.
            predicted = int((self.validation.lengths[index] - 1).clamp(min=0).sum())
            total += float(loss) * predicted
            count += predicted
        self.model.train()
        mean = total / count if count else float("nan")
        return {"loss": round(mean, 6), "perplexity": round(math.exp(min(mean, 50.0)), 4)}


def train(spec: Spec, texts: list[str], out_dir: Path, emit: Emit) -> dict[str, Any]:
    """Run a causal-LM fine-tune on in-memory records and save the model to out_dir.

    Returns the `done` event. :raises InputError: when the tokenizer is unavailable.
    """
    hp = spec.hyperparameters
    torch.manual_seed(hp.seed)
    tokenizer = load_tokenizer(spec.tokenizer_path)
    train_texts, validation_texts = split_records(texts, hp.validation_fraction, hp.seed)
    train_blocks = pack(tokenizer, train_texts, hp.max_seq_len)
    validation_blocks = pack(tokenizer, validation_texts, hp.max_seq_len) if validation_texts else None
    trainer = Trainer(spec, train_blocks, validation_blocks, tokenizer)
    metrics = trainer.run(emit)
    epochs_done = -(-metrics["steps"] * hp.batch_size // train_blocks.input_ids.shape[0])
    save(trainer.model, tokenizer, out_dir)
    metrics.update(device=trainer.device.type, precision=hp.precision if trainer.dtype else "fp32")
    if "loss" in metrics:
        metrics["validation_loss"] = metrics.pop("loss")
        metrics["validation_perplexity"] = metrics.pop("perplexity")
    # Platform tokens: record tokens x epochs trained (a partial epoch counts in full).
    return {
        "event": "done",
        "tokens_trained": train_blocks.platform_tokens * min(epochs_done, hp.epochs),
        "metrics": metrics,
    }


def save(model: GPT2LMHeadModel, tokenizer: Tokenizer, out_dir: Path) -> None:
    """Write safetensors weights, config.json and tokenizer.json (never a pickle)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save(str(out_dir / "tokenizer.json"))
