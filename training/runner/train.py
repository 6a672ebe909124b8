"""The templates' training loop: causal LM (full or LoRA) and sequence classification, DP optional."""

from __future__ import annotations

import contextlib
import inspect
import math
import os
import secrets
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch
from torch import nn

from training.runner.data import (
    Blocks,
    Encoded,
    InputError,
    Record,
    encode_labelled,
    encode_spans,
    pack,
    split_records,
)
from training.runner.distributed import SINGLE, Rank
from training.runner.models import (
    BASE_SIZES,
    Base,
    apply_encoder_lora,
    apply_lora,
    build_model,
    load_causal,
    load_classifier,
    load_token_classifier,
)
from training.runner.spec import LORA_TEMPLATES, Spec

__all__ = ["BASE_SIZES", "build_model", "train"]

Emit = Callable[[dict[str, Any]], None]
# A record's mean token loss is clipped to this many nats in the DP-noised final metrics.
LOSS_CLIP = 20.0


def pick_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """Mixed precision runs on CUDA only; on CPU every precision trains in fp32."""
    if device.type != "cuda":
        return None
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)


def batches(count: int, batch_size: int, generator: torch.Generator | None) -> Iterator[torch.Tensor]:
    """Yield index tensors over `count` items, shuffled by `generator` when one is given."""
    order = torch.randperm(count, generator=generator) if generator is not None else torch.arange(count)
    for start in range(0, count, batch_size):
        yield order[start : start + batch_size]


def grouped_batches(
    lengths: torch.Tensor, batch_size: int, generator: torch.Generator, group: int = 32
) -> Iterator[torch.Tensor]:
    """Shuffled batches of rows of similar length (rows cut to the batch's longest pay less padding).

    The rows are shuffled, sorted by length inside groups of `group` batches, cut into batches,
    and the batches shuffled again: every row once per epoch, in an order the seed fixes.
    """
    order = torch.randperm(len(lengths), generator=generator)
    chunks: list[torch.Tensor] = []
    span = batch_size * group
    for start in range(0, len(order), span):
        part = order[start : start + span]
        part = part[torch.argsort(lengths[part], stable=True)]
        chunks.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
    for index in torch.randperm(len(chunks), generator=generator).tolist():
        yield chunks[index]


class DeviceBlocks:
    """Causal-LM blocks moved to the device once, with labels that ignore the padding.

    Padding only ever trails a block's real tokens (the last block's, or every block's when records
    are aligned to blocks under DP), so causal attention never lets a real token see it: no
    attention mask is needed, which keeps the fast fused attention path.
    """

    def __init__(self, blocks: Blocks, device: torch.device) -> None:
        mask = torch.arange(blocks.input_ids.shape[1]) < blocks.lengths.unsqueeze(1)
        self.count = blocks.input_ids.shape[0]
        self.tokens = blocks.lengths
        self.platform = _platform(blocks.platform, self.count)
        self.by_source = blocks.by_source
        self.records = (
            blocks.starts if blocks.starts is not None else torch.ones(self.count, dtype=torch.long)
        )
        # HF shifts labels by one: each block predicts length - 1 tokens.
        self.predicted = (blocks.lengths - 1).clamp(min=0)
        self.input_ids = blocks.input_ids.to(device)
        self.labels = blocks.input_ids.masked_fill(~mask, -100).to(device)
        self.device = device

    def inputs(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        on_device = index.to(self.device)
        return {"input_ids": self.input_ids[on_device], "labels": self.labels[on_device]}


class DeviceEncoded:
    """Classification rows on the device; position and segment ids given explicitly (contiguous),
    which Opacus' embedding norm sampler needs."""

    def __init__(self, encoded: Encoded, device: torch.device, explicit_ids: bool) -> None:
        self.count = encoded.input_ids.shape[0]
        self.tokens = encoded.attention_mask.sum(dim=1)
        self.platform = _platform(encoded.platform, self.count)
        self.by_source = encoded.by_source
        self.records = torch.ones(self.count, dtype=torch.long)
        self.predicted = torch.ones(self.count, dtype=torch.long)
        self.input_ids = encoded.input_ids.to(device)
        self.attention_mask = encoded.attention_mask.to(device)
        self.labels = encoded.labels.to(device)
        self.explicit_ids = explicit_ids
        self.device = device

    def inputs(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        on_device = index.to(self.device)
        ids = self.input_ids[on_device]
        inputs = {
            "input_ids": ids,
            "attention_mask": self.attention_mask[on_device],
            "labels": self.labels[on_device],
        }
        if self.explicit_ids:
            inputs["token_type_ids"] = torch.zeros_like(ids)
            inputs["position_ids"] = torch.arange(ids.shape[1], device=self.device).repeat(ids.shape[0], 1)
        return inputs


class DeviceTokens:
    """Token-classification rows on the device: one tag per token (-100 where no loss applies).

    A batch is cut to its longest row, so short records do not pay for the longest one's padding.
    """

    def __init__(self, encoded: Encoded, device: torch.device) -> None:
        self.count = encoded.input_ids.shape[0]
        self.tokens = encoded.attention_mask.sum(dim=1)
        self.platform = _platform(encoded.platform, self.count)
        self.by_source = encoded.by_source
        self.records = torch.ones(self.count, dtype=torch.long)
        # The loss is a mean over the tagged tokens: windows weigh a batch by how many it has.
        self.predicted = (encoded.labels != -100).sum(dim=1)
        self.input_ids = encoded.input_ids.to(device)
        self.attention_mask = encoded.attention_mask.to(device)
        self.labels = encoded.labels.to(device)
        self.device = device

    def inputs(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        width = max(1, int(self.tokens[index].max()))
        on_device = index.to(self.device)
        return {
            "input_ids": self.input_ids[on_device, :width],
            "attention_mask": self.attention_mask[on_device, :width],
            "labels": self.labels[on_device, :width],
        }


Data = DeviceBlocks | DeviceEncoded | DeviceTokens


class Window:
    """Steps' losses pooled until the window holds enough records and platform tokens.

    The mean loss of a full window is all the training loss that leaves the runner (item 2 of
    docs/threat-model.md): a window of at least 32 records cannot be inverted into one record's
    tokens, and windows widen so that a run reports at most `max_points` of them.
    """

    def __init__(self, min_records: int, min_tokens: int) -> None:
        self.min_records, self.min_tokens = min_records, min_tokens
        self.clear()

    def clear(self) -> None:
        self.loss_sum, self.predicted, self.records, self.platform, self.tokens = 0.0, 0, 0, 0, 0
        self.started = time.perf_counter()

    def add(self, loss: float, *, predicted: int, records: int, platform: int, tokens: int) -> None:
        self.loss_sum += loss * max(predicted, 1)
        self.predicted += max(predicted, 1)
        self.records += records
        self.platform += platform
        self.tokens += tokens

    @property
    def full(self) -> bool:
        return self.records >= self.min_records and self.platform >= self.min_tokens

    def take(self) -> dict[str, Any]:
        """The window's report (mean loss, its size, throughput), then start a new window."""
        elapsed = time.perf_counter() - self.started
        report = {
            "loss": round(self.loss_sum / self.predicted, 6),
            "window_records": self.records,
            "window_tokens": self.platform,
            "tokens_per_s": round(self.tokens / elapsed, 1) if elapsed > 0 else 0.0,
        }
        self.clear()
        return report


def laplace(scale: float) -> float:
    """A Laplace draw from the operating system's CSPRNG (the trainer must not know the noise)."""
    rng = secrets.SystemRandom()
    return scale * (rng.expovariate(1.0) - rng.expovariate(1.0))


def _platform(shares: torch.Tensor | None, count: int) -> torch.Tensor:
    """Platform tokens per training unit (block or row), kept on the CPU for the step counter."""
    return shares if shares is not None else torch.zeros(count, dtype=torch.long)


class Trainer:
    """One training job: holds the model, optimizer, privacy engine and counters."""

    def __init__(
        self, spec: Spec, model: nn.Module, train: Data, validation: Data | None, rank: Rank = SINGLE
    ) -> None:
        hp = spec.hyperparameters
        self.spec, self.hp, self.rank = spec, hp, rank
        self.device = train.device
        self.train, self.validation = train, validation
        self.dtype = autocast_dtype(hp.precision, self.device)
        self.model: Any = model.to(self.device)
        self.model.train()  # from_pretrained returns eval mode; Opacus and dropout need train mode
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        fused = self.device.type == "cuda"
        self.optimizer: Any = torch.optim.AdamW(trainable, lr=hp.learning_rate, fused=fused)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.dtype == torch.float16)
        self.forward: Callable[..., Any] = torch.compile(self.model) if hp.compile else self.model
        if rank.distributed:
            self.forward = self._replicated()
        # Per rank: the units it trained (all epochs), and how often each unit came its way in the
        # first epoch (summed over the ranks, every unit once: the shares are disjoint and whole).
        self.units_trained = 0
        self.first_epoch_seen = torch.zeros(train.count, dtype=torch.int32)
        self.engine: Any = None
        self.metrics_spent = 0.0
        self.criterion: Any = None
        self.loader: Any = None
        self.draws = 0  # batches drawn, empty Poisson batches included
        self.noise_multiplier: float | None = None
        # Under DP a share of the target pays for the final validation metrics (Laplace); the rest
        # calibrates DP-SGD. Without validation records (or unprotected), DP-SGD gets it all.
        self.metrics_epsilon = 0.0
        if spec.dp is not None and validation is not None and spec.telemetry.protected:
            self.metrics_epsilon = spec.dp.target_epsilon * spec.telemetry.dp_metrics_share
        self.training_epsilon = spec.dp.target_epsilon - self.metrics_epsilon if spec.dp else 0.0
        self.steps_per_epoch = -(-train.count // hp.batch_size)
        if spec.dp is not None:
            self._make_private()
        self.total_steps = self.steps_per_epoch * hp.epochs
        if hp.max_steps is not None:
            self.total_steps = min(self.total_steps, hp.max_steps)

    def _replicated(self) -> Callable[..., Any]:
        """The model under DDP: gradients all-reduced (averaged) across the ranks in backward."""
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.device.index] if self.device.type == "cuda" else None
        replica = DistributedDataParallel(self.model, device_ids=device_ids)
        return torch.compile(replica) if self.hp.compile else replica

    def _make_private(self) -> None:
        """DP-SGD with Opacus: ghost clipping, Poisson sampling, noise from the PRV accountant."""
        from opacus import PrivacyEngine  # type: ignore[import-untyped]
        from opacus.accountants.utils import get_noise_multiplier  # type: ignore[import-untyped]
        from torch.utils.data import DataLoader, TensorDataset

        dp, hp = self.spec.dp, self.hp
        assert dp is not None
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        if torch.cuda.is_available():
            # Poisson sampling gives every step a new batch size, and cuDNN's attention builds a
            # new plan per shape (4-8 ms of CPU per call): on an H200 that halved DP throughput
            # (bench/runner_device.py: 11% -> 22-27% of non-private). Flash/efficient SDPA do not.
            torch.backends.cuda.enable_cudnn_sdp(False)
        loader = DataLoader(TensorDataset(torch.arange(self.train.count)), batch_size=hp.batch_size)
        self.steps_per_epoch = len(loader)
        sample_rate = 1 / len(loader)
        steps = self.steps_per_epoch * hp.epochs
        if hp.max_steps is not None:
            steps = min(steps, hp.max_steps)
        self.noise_multiplier = get_noise_multiplier(
            target_epsilon=self.training_epsilon,
            target_delta=dp.delta,
            sample_rate=sample_rate,
            steps=steps,
            accountant="prv",
            epsilon_tolerance=0.01,
        )
        self.engine = PrivacyEngine(accountant="prv")
        # Noise and Poisson sampling draw from torch's global generators, reseeded here from the OS
        # CSPRNG: the spec's seed is the trainer's choice, and a known seed would let it subtract
        # the noise. DP runs are therefore not reproducible.
        torch.manual_seed(secrets.randbits(63))
        self.model, self.optimizer, self.criterion, self.loader = self.engine.make_private(
            module=self.model,
            optimizer=self.optimizer,
            data_loader=loader,
            noise_multiplier=self.noise_multiplier,
            max_grad_norm=dp.max_grad_norm,
            criterion=nn.CrossEntropyLoss(),
            grad_sample_mode="ghost",
            poisson_sampling=True,
        )
        self.forward = self.model
        self.sample_rate = sample_rate

    def privacy_event(self) -> dict[str, Any] | None:
        if self.spec.dp is None:
            return None
        return {
            "event": "privacy",
            "noise_multiplier": round(float(self.noise_multiplier or 0.0), 6),
            "sample_rate": round(self.sample_rate, 6),
            "target_epsilon": self.spec.dp.target_epsilon,
            "delta": self.spec.dp.delta,
            "max_grad_norm": self.spec.dp.max_grad_norm,
            "accountant": "prv",
        }

    def epsilon_spent(self) -> float | None:
        """DP-SGD's epsilon (PRV accountant) plus what the noised final metrics spent.

        The metrics' Laplace mechanism is pure epsilon-DP on records disjoint from the training
        records; adding it (basic composition) over-counts, which is the safe side.
        """
        if self.engine is None or self.spec.dp is None:
            return None
        trained = float(self.engine.accountant.get_epsilon(delta=self.spec.dp.delta))
        return round(trained + self.metrics_spent, 6)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def _step(self, inputs: dict[str, torch.Tensor], scale: float = 1.0) -> torch.Tensor:
        if self.engine is not None:
            return self._private_step(inputs)
        with self._autocast():
            if scale == 0.0:
                # A rank with no predicted token in the global batch: a zero loss (no 0/0 in the
                # backward) still joins DDP's gradient all-reduce, which every rank must.
                output = self.forward(**{k: v for k, v in inputs.items() if k != "labels"})
                loss = output.logits.float().sum() * 0.0
            else:
                loss = self.forward(**inputs).loss
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss * scale if scale != 1.0 else loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach()

    def _private_step(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-sample losses into Opacus' ghost-clipping criterion: two backward passes, clipped."""
        labels = inputs.pop("labels")
        with self._autocast():
            logits = self.forward(**inputs).logits
        logits = logits.float()
        if self.spec.causal:
            shifted, targets = logits[:, :-1], labels[:, 1:]
            batch, length, vocab = shifted.shape
            loss = self.criterion(
                shifted.reshape(-1, vocab), targets.reshape(-1), shape=(batch, length, vocab)
            )
        else:
            loss = self.criterion(logits, labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def _global_step(self, index: torch.Tensor, epoch: int) -> float:
        """One optimizer step on the global batch `index`; returns its loss (mean over its tokens).

        Alone, the rank trains the whole batch. Under DDP each rank trains its share, its loss
        weighted by its share of the batch's predicted tokens (times the world size, which DDP's
        averaging divides out): the all-reduced gradient is the one-process gradient of the batch.
        """
        if not self.rank.distributed:
            return float(self._step(self.train.inputs(index)))
        import torch.distributed as dist

        share = index[self.rank.rank :: self.rank.world_size]
        self.units_trained += share.numel()
        if epoch == 1:
            self.first_epoch_seen[share] += 1
        total = int(self.train.predicted[index].sum())
        weight = int(self.train.predicted[share].sum()) / total if total and share.numel() else 0.0
        # A batch smaller than the world leaves a rank without a unit: it steps on a stand-in at
        # weight zero, so that every rank joins every all-reduce.
        inputs = self.train.inputs(share if share.numel() else index[:1])
        loss = self._step(inputs, scale=weight * self.rank.world_size)
        mean = (loss.float() * weight).reshape(1)
        dist.all_reduce(mean)
        return float(mean)

    def rank_report(self) -> dict[str, Any]:
        """Every rank's trained units, first-epoch coverage and whether the replicas agree.

        A collective: every rank calls it at the same point. Identical weights are DDP's contract;
        the replicas' checksums (sums of every trainable parameter) show it held.
        """
        import torch.distributed as dist

        world, rank = self.rank.world_size, self.rank.rank
        figures = torch.zeros(2 * world, dtype=torch.float64, device=self.device)
        figures[rank] = self.units_trained
        with torch.no_grad():
            checksum = sum(p.detach().double().sum() for p in self.model.parameters() if p.requires_grad)
        figures[world + rank] = checksum
        seen = self.first_epoch_seen.to(self.device)
        dist.all_reduce(figures)
        dist.all_reduce(seen)
        sums = figures[world:].tolist()
        return {
            "world_size": world,
            "backend": self.rank.backend,
            "units": self.train.count,
            "units_per_rank": [int(n) for n in figures[:world].tolist()],
            "first_epoch_units_covered": int((seen > 0).sum()),
            "first_epoch_units_repeated": int((seen > 1).sum()),
            "replicas_agree": max(sums) == min(sums),
        }

    def _epoch_batches(self, generator: torch.Generator) -> Iterator[torch.Tensor]:
        if self.loader is None and isinstance(self.train, DeviceTokens):
            yield from grouped_batches(self.train.tokens, self.hp.batch_size, generator)
            return
        if self.loader is None:
            yield from batches(self.train.count, self.hp.batch_size, generator)
            return
        for (index,) in self.loader:
            self.draws += 1
            if index.numel() == 0:
                # An empty Poisson batch is still a step the accountant must count.
                self.engine.accountant.step(
                    noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate
                )
                continue
            yield index

    def platform_tokens_trained(self, consumed: int) -> int:
        """What the run is billed: the platform tokens of the units its steps trained on.

        Without DP that is `consumed`, the sum over the batches. Under DP, Poisson batches are
        random, so the bill is its expectation, the epoch's platform tokens times the epochs' share
        the steps made: a figure that leaves the sandbox must not depend on which records the
        sampling drew, and a full run bills exactly tokens x epochs. Draws count the empty batches
        too (they are steps of the accountant and of the epoch).
        """
        if self.engine is None:
            return consumed
        epoch_tokens = int(self.train.platform.sum())
        return min(epoch_tokens * self.draws // self.steps_per_epoch, epoch_tokens * self.hp.epochs)

    def platform_tokens_by_source(self, read: torch.Tensor | None) -> list[int] | None:
        """What the run read per record source (the launcher's contributions), as the bill counts it.

        Without DP, the sum over the batches' units of each source's share (adding up to the bill);
        under DP, as the bill, the expectation: each source's epoch tokens times the steps' share
        of the epochs, never depending on which records the sampling drew. None: no sources sent.
        """
        table = self.train.by_source
        if table is None or read is None:
            return None
        if self.engine is None:
            return [int(value) for value in read]
        epoch = table.sum(dim=0)
        return [
            min(int(tokens) * self.draws // self.steps_per_epoch, int(tokens) * self.hp.epochs)
            for tokens in epoch
        ]

    def window(self) -> Window:
        """The loss window: the telemetry's minimum, widened to keep a run under max_points."""
        telemetry = self.spec.telemetry
        epochs = self.hp.epochs
        if self.hp.max_steps is not None:
            epochs = min(epochs, -(-self.hp.max_steps // max(self.steps_per_epoch, 1)))
        planned = int(self.train.records.sum()) * epochs
        return Window(
            max(telemetry.window_records, -(-planned // telemetry.max_points)), telemetry.window_tokens
        )

    @property
    def loss_withheld(self) -> bool:
        """Under DP no training loss leaves the runner (only the noised final metrics do)."""
        return self.spec.dp is not None and self.spec.telemetry.protected

    def run(self, emit: Emit) -> dict[str, Any]:
        """Train for the configured epochs (or max_steps), emitting progress and validation metrics."""
        generator = torch.Generator().manual_seed(self.hp.seed)
        step, started, consumed = 0, time.perf_counter(), 0
        by_source = self.train.by_source
        read = None if by_source is None else torch.zeros(by_source.shape[1], dtype=torch.long)
        window = self.window()
        last: dict[str, Any] = {}
        validation: dict[str, float] = {}
        self.model.train()
        for epoch in range(1, self.hp.epochs + 1):
            for index in self._epoch_batches(generator):
                loss = self._global_step(index, epoch)
                step += 1
                consumed += int(self.train.platform[index].sum())
                if read is not None and by_source is not None:
                    read += by_source[index].sum(dim=0)
                window.add(
                    float(loss),
                    predicted=int(self.train.predicted[index].sum()),
                    records=int(self.train.records[index].sum()),
                    platform=int(self.train.platform[index].sum()),
                    tokens=int(self.train.tokens[index].sum()),
                )
                report: dict[str, Any] = {}
                if window.full and not self.loss_withheld:
                    report = last = window.take()
                if report or step % self.hp.log_every == 0 or step == self.total_steps:
                    emit(self._progress(step, epoch, started, report))
                if step == self.total_steps:
                    break
            reportable = self.validation_reportable and self.rank.main  # rank 0 reports for all
            if self.validation is not None and not self.loss_withheld and reportable:
                validation = self.evaluate()
                emit({"event": "metrics", "split": "validation", "epoch": epoch, **validation})
            if step == self.total_steps:
                break
        if self.loss_withheld and self.validation is not None:
            validation = self.evaluate_private()
        elif not self.validation_reportable:
            validation = {}
        final: dict[str, Any] = {
            "steps": step,
            "platform_tokens_trained": self.platform_tokens_trained(consumed),
        }
        if (per_source := self.platform_tokens_by_source(read)) is not None:
            final["platform_tokens_by_source"] = per_source
        if last:
            final["train_loss"] = last["loss"]
        return {**final, **validation}

    @property
    def validation_reportable(self) -> bool:
        """Validation metrics are aggregates only over a split as large as a loss window."""
        if self.validation is None:
            return False
        if self.loss_withheld or not self.spec.telemetry.protected:
            return True  # noised (DP) or unprotected
        telemetry = self.spec.telemetry
        return (
            int(self.validation.records.sum()) >= telemetry.window_records
            and int(self.validation.platform.sum()) >= telemetry.window_tokens
        )

    def _progress(self, step: int, epoch: int, started: float, report: dict[str, Any]) -> dict[str, Any]:
        elapsed = time.perf_counter() - started
        return {
            "event": "progress",
            "step": step,
            "total_steps": self.total_steps,
            "epoch": epoch,
            "eta_s": round((self.total_steps - step) * elapsed / step, 1),
            **report,
        }

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Causal: token-weighted loss and perplexity. Classification: loss, accuracy, macro F1."""
        assert self.validation is not None
        self.model.eval()
        total, count = 0.0, 0
        predictions: list[torch.Tensor] = []
        tagged: list[tuple[torch.Tensor, torch.Tensor]] = []
        for index in batches(self.validation.count, self.hp.batch_size, None):
            inputs = self.validation.inputs(index)
            with self._autocast():
                output = self.model(**inputs)
            predicted = int(self.validation.predicted[index].sum())
            total += float(output.loss) * predicted
            count += predicted
            if isinstance(self.validation, DeviceTokens):
                tagged.append((inputs["labels"].cpu(), output.logits.argmax(dim=-1).cpu()))
            elif not self.spec.causal:
                predictions.append(output.logits.argmax(dim=-1).cpu())
        self.model.train()
        mean = total / count if count else float("nan")
        if self.spec.causal:
            return {"loss": round(mean, 6), "perplexity": round(math.exp(min(mean, 50.0)), 4)}
        if isinstance(self.validation, DeviceTokens):
            return {"loss": round(mean, 6), **token_scores(tagged)}
        assert isinstance(self.validation, DeviceEncoded)
        truth = self.validation.labels.cpu()
        guess = torch.cat(predictions)
        return {
            "loss": round(mean, 6),
            "accuracy": round(float((guess == truth).float().mean()), 6),
            "f1_macro": round(macro_f1(truth, guess), 6),
        }

    @torch.no_grad()
    def evaluate_private(self) -> dict[str, float]:
        """The final validation metrics under DP: per-record values clipped, averaged, Laplace-noised.

        Each record contributes its mean token loss clipped to [0, LOSS_CLIP] (causal) or its
        correctness (classification): replacing one record moves the mean by at most clip / n,
        so noise of scale clip / (n * epsilon) makes it epsilon-DP. Perplexity is post-processing.
        """
        assert self.validation is not None
        self.model.eval()
        losses: list[torch.Tensor] = []
        correct: list[torch.Tensor] = []
        for index in batches(self.validation.count, self.hp.batch_size, None):
            inputs = self.validation.inputs(index)
            labels = inputs.pop("labels")
            with self._autocast():
                logits = self.model(**inputs).logits.float()
            if self.spec.causal:
                shifted, targets = logits[:, :-1], labels[:, 1:]
                nll = nn.functional.cross_entropy(
                    shifted.transpose(1, 2), targets, ignore_index=-100, reduction="none"
                )
                counts = (targets != -100).sum(dim=1).clamp(min=1)
                losses.append((nll.sum(dim=1) / counts).cpu())
            else:
                losses.append(nn.functional.cross_entropy(logits, labels, reduction="none").cpu())
                correct.append((logits.argmax(dim=-1) == labels).float().cpu())
        self.model.train()
        n = self.validation.count
        epsilon = self.metrics_epsilon / (1 if self.spec.causal else 2)
        self.metrics_spent = self.metrics_epsilon
        loss = float(torch.cat(losses).clamp(0, LOSS_CLIP).mean()) + laplace(LOSS_CLIP / (n * epsilon))
        loss = min(max(loss, 0.0), LOSS_CLIP)
        if self.spec.causal:
            return {"loss": round(loss, 6), "perplexity": round(math.exp(min(loss, 50.0)), 4)}
        accuracy = float(torch.cat(correct).mean()) + laplace(1 / (n * epsilon))
        return {"loss": round(loss, 6), "accuracy": round(min(max(accuracy, 0.0), 1.0), 6)}

    def final_model(self) -> Any:
        """The trained model to save: unwrapped from Opacus, LoRA adapters merged into the base."""
        model = self.model
        if self.engine is not None:
            model = model._module
        if self.spec.template in LORA_TEMPLATES:
            model = model.merge_and_unload()
        return model


def tag_spans(tags: list[int]) -> set[tuple[int, int, int]]:
    """The entity runs of a BIO tag row (tag indices of ``bio_tags``): (first, last + 1, type).

    B starts a run, I continues a run of its type (an I without one starts a run), O and -100
    end it.
    """
    spans: set[tuple[int, int, int]] = set()
    start, kind = -1, -1
    for position, tag in enumerate([*tags, 0]):
        current = (tag - 1) // 2 if tag > 0 else -1
        begins = tag > 0 and (tag % 2 == 1 or current != kind)
        if start >= 0 and (current < 0 or begins):
            spans.add((start, position, kind))
            start, kind = -1, -1
        if begins:
            start, kind = position, current
    return spans


def token_scores(rows: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
    """Token accuracy over the tagged tokens and span-level F1 (exact runs, micro-averaged)."""
    correct = total = true_positive = predicted = actual = 0
    for truth, guess in rows:
        keep = truth != -100
        correct += int(((truth == guess) & keep).sum())
        total += int(keep.sum())
        for truth_row, guess_row, keep_row in zip(truth.tolist(), guess.tolist(), keep.tolist(), strict=True):
            wanted = [t if k else 0 for t, k in zip(truth_row, keep_row, strict=True)]
            found = [g if k else 0 for g, k in zip(guess_row, keep_row, strict=True)]
            truth_spans, guess_spans = tag_spans(wanted), tag_spans(found)
            true_positive += len(truth_spans & guess_spans)
            predicted += len(guess_spans)
            actual += len(truth_spans)
    denominator = predicted + actual
    return {
        "accuracy": round(correct / total, 6) if total else 0.0,
        "f1_spans": round(2 * true_positive / denominator, 6) if denominator else 0.0,
    }


def macro_f1(truth: torch.Tensor, guess: torch.Tensor) -> float:
    """Unweighted mean F1 over the labels that occur in the truth or the predictions."""
    scores = []
    for label in torch.unique(torch.cat([truth, guess])):
        true_positive = int(((guess == label) & (truth == label)).sum())
        predicted = int((guess == label).sum())
        actual = int((truth == label).sum())
        denominator = predicted + actual
        scores.append(2 * true_positive / denominator if denominator else 0.0)
    return sum(scores) / len(scores) if scores else 0.0


def _forward_takes(model: nn.Module, *names: str) -> bool:
    parameters = inspect.signature(model.forward).parameters
    return all(name in parameters for name in names)


def _causal_data(
    spec: Spec,
    base: Base,
    train_records: list[Record],
    validation_records: list[Record],
    device: torch.device,
) -> tuple[DeviceBlocks, DeviceBlocks | None]:
    hp = spec.hyperparameters

    def blocks(records: list[Record]) -> Blocks:
        return pack(
            base.tokenizer,
            [r.text for r in records],
            hp.max_seq_len,
            separator=base.separator,
            pad=base.pad,
            counted=[not r.canary for r in records],
            weights=[r.platform_tokens for r in records],
            sources=[r.source for r in records],
            # DP: one record per block, so that the privacy unit is the record (docs/training.md).
            aligned=spec.dp is not None,
        )

    train_blocks = blocks(train_records)
    validation = DeviceBlocks(blocks(validation_records), device) if validation_records else None
    return DeviceBlocks(train_blocks, device), validation


def _classification_data(
    spec: Spec,
    base: Base,
    train_records: list[Record],
    validation_records: list[Record],
    device: torch.device,
) -> tuple[DeviceEncoded, DeviceEncoded | None]:
    hp = spec.hyperparameters
    explicit = spec.dp is not None and _forward_takes(base.model, "token_type_ids", "position_ids")

    def encoded(records: list[Record]) -> Encoded:
        return encode_labelled(base.tokenizer, records, spec.labels, hp.max_seq_len, base.pad)

    train_encoded = encoded(train_records)
    validation = DeviceEncoded(encoded(validation_records), device, explicit) if validation_records else None
    return DeviceEncoded(train_encoded, device, explicit), validation


def _token_data(
    spec: Spec,
    base: Base,
    train_records: list[Record],
    validation_records: list[Record],
    device: torch.device,
) -> tuple[DeviceTokens, DeviceTokens | None]:
    hp = spec.hyperparameters

    def encoded(records: list[Record]) -> Encoded:
        return encode_spans(base.tokenizer, records, spec.labels, hp.max_seq_len, base.pad)

    train_encoded = encoded(train_records)
    validation = DeviceTokens(encoded(validation_records), device) if validation_records else None
    return DeviceTokens(train_encoded, device), validation


def train(
    spec: Spec, records: list[Record], out_dir: Path, emit: Emit, rank: Rank = SINGLE
) -> dict[str, Any]:
    """Run the spec's template on in-memory records and save the model to out_dir.

    Canary records always train and never validate. Returns the `done` event. Under DDP (`rank`
    of several, distributed.py) every rank calls this; only rank 0 saves, and its event counts.
    :raises InputError: when the base, tokenizer or records cannot be used.
    """
    hp = spec.hyperparameters
    torch.manual_seed(hp.seed)
    ordinary = [r for r in records if not r.canary]
    train_records, validation_records = split_records(ordinary, hp.validation_fraction, hp.seed)
    if spec.dp is not None and spec.dp.delta * len(train_records) >= 1:
        # delta is the chance the guarantee fails outright: at 1/n or more, one record may leak whole.
        raise InputError("dp.delta", f"must be below 1/n = 1/{len(train_records)} (the training records)")
    train_records += [r for r in records if r.canary]
    device = torch.device("cuda", rank.rank) if rank.backend == "nccl" else pick_device()
    if spec.template == "token_classification":
        base = load_token_classifier(spec)
    else:
        base = load_causal(spec) if spec.causal else load_classifier(spec)
    model: nn.Module = base.model
    if spec.template == "causal_lm_lora":
        model = apply_lora(base.model, spec)
    elif spec.template == "token_classification":
        model = apply_encoder_lora(base.model, spec)
    train_data: Data
    validation_data: Data | None
    if spec.template == "token_classification":
        train_data, validation_data = _token_data(spec, base, train_records, validation_records, device)
    elif spec.causal:
        train_data, validation_data = _causal_data(spec, base, train_records, validation_records, device)
    else:
        train_data, validation_data = _classification_data(
            spec, base, train_records, validation_records, device
        )
    trainer: Trainer
    if spec.distill is not None:  # the student also learns a teacher's soft labels (distill.py)
        from training.runner.distill import DistillTrainer

        trainer = DistillTrainer(spec, model, train_data, validation_data, rank, base=base)
    else:
        trainer = Trainer(spec, model, train_data, validation_data, rank)
    if (privacy := trainer.privacy_event()) is not None:
        emit(privacy)
    metrics = trainer.run(emit)
    ranks = trainer.rank_report() if rank.distributed else None
    files = save(trainer.final_model(), base, out_dir) if rank.main else []
    metrics.update(device=trainer.device.type, precision=hp.precision if trainer.dtype else "fp32")
    metrics["world_size"] = rank.world_size
    if trainer.engine is not None:
        metrics["epsilon_metrics"] = round(trainer.metrics_spent, 6)
    for name in ("loss", "perplexity", "accuracy", "f1_macro", "f1_spans"):
        if name in metrics:
            metrics[f"validation_{name}"] = metrics.pop(name)
    return {
        "event": "done",
        "template": spec.template,
        "steps": metrics["steps"],
        # Platform tokens of the training records the steps consumed; no canaries, no validation.
        "tokens_trained": metrics["platform_tokens_trained"],
        # The same per record source (the launcher maps sources to contributions); absent: none sent.
        "tokens_by_source": metrics.pop("platform_tokens_by_source", None),
        "epsilon_spent": trainer.epsilon_spent(),
        "files": files,
        "metrics": metrics,
        **({"ranks": ranks} if ranks is not None else {}),
    }


def save(model: Any, base: Base, out_dir: Path) -> list[str]:
    """Write safetensors weights, config json files and the tokenizer json files (never a pickle)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    for name, data in base.tokenizer_files.items():
        (out_dir / name).write_bytes(data)
    files = sorted(p.name for p in out_dir.iterdir())
    stray = [name for name in files if not name.endswith((".safetensors", ".json"))]
    if stray:
        raise RuntimeError(f"unexpected output files: {stray}")
    return files
