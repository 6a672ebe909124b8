"""The release gate: canary exposure and verbatim continuation on a trained causal LM."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any

import torch

from training.runner.data import InputError, load_tokenizer
from training.runner.models import load_pretrained
from training.runner.spec import GateSettings, Spec

_BATCH = 64


def _autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    if device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16)


class Scorer:
    """A causal LM and its tokenizer; each text is scored as if it began a record."""

    def __init__(self, model_dir: Path) -> None:
        try:
            model, causal = load_pretrained(model_dir)
        except Exception as error:  # noqa: BLE001 - untrusted files fail in many ways
            raise InputError("model", f"transformers cannot load it: {type(error).__name__}") from None
        if not causal:
            raise InputError("model", f"{type(model).__name__} is not a causal language model")
        if not (model_dir / "tokenizer.json").is_file():
            raise InputError("model", "tokenizer.json is missing")
        self.tokenizer = load_tokenizer(str(model_dir / "tokenizer.json"))
        self.device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
        self.model: Any = model.to(self.device).eval()  # type: ignore[arg-type]
        eos = model.config.eos_token_id
        self.start = eos[0] if isinstance(eos, list) else eos
        if not isinstance(self.start, int):
            raise InputError("model", "config.json names no eos_token_id")
        pad = model.config.pad_token_id
        self.pad = pad if isinstance(pad, int) else self.start

    def ids(self, text: str) -> list[int]:
        """The record separator, then the text's tokens (as the runner packed records)."""
        return [self.start, *self.tokenizer.encode(text, add_special_tokens=False).ids]

    @torch.no_grad()
    def log_perplexities(self, texts: list[str]) -> list[float]:
        """Total negative log-likelihood (nats) of each text's tokens."""
        scores: list[float] = []
        for start in range(0, len(texts), _BATCH):
            rows = [self.ids(text) for text in texts[start : start + _BATCH]]
            width = max(len(row) for row in rows)
            ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.bool)
            for i, row in enumerate(rows):
                ids[i, : len(row)] = torch.tensor(row)
                mask[i, : len(row)] = True
            ids, mask = ids.to(self.device), mask.to(self.device)
            with _autocast(self.device):
                logits = self.model(input_ids=ids).logits
            logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
            picked = logprobs.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
            nll = -(picked * mask[:, 1:]).sum(dim=1)
            scores.extend(float(v) for v in nll.cpu())
        return scores

    @torch.no_grad()
    def greedy(self, prompts: torch.Tensor, count: int) -> torch.Tensor:
        """Greedy continuation of equal-length prompts by `count` tokens."""
        current = prompts.to(self.device)
        for _ in range(count):
            with _autocast(self.device):
                logits = self.model(input_ids=current).logits[:, -1]
            current = torch.cat([current, logits.argmax(dim=-1, keepdim=True)], dim=1)
        return current[:, prompts.shape[1] :].cpu()


def exposure(scorer: Scorer, secret: str, candidates: list[str]) -> float:
    """log2(N) - log2(rank) of the secret's log-perplexity among N = candidates + 1 texts."""
    scores = scorer.log_perplexities([secret, *candidates])
    rank = 1 + sum(1 for score in scores[1:] if score < scores[0])
    return math.log2(len(scores)) - math.log2(rank)


# A short record is still probed when its first half and the rest hold this many tokens each.
MIN_PROBE_TOKENS = 4


def probe_split(length: int, settings: GateSettings) -> tuple[int, int] | None:
    """(prompt tokens, continuation tokens) for a record of ``length`` tokens, None if too short.

    A record long enough keeps the configured prefix and continuation; a shorter one (issue 13:
    short records ran no probe at all) is split in half, each half at least MIN_PROBE_TOKENS.
    """
    if length >= settings.prefix_tokens + settings.verbatim_tokens:
        return settings.prefix_tokens, settings.verbatim_tokens
    prefix = min(settings.prefix_tokens, length // 2)
    continuation = min(settings.verbatim_tokens, length - prefix)
    if prefix < MIN_PROBE_TOKENS or continuation < MIN_PROBE_TOKENS:
        return None
    return prefix, continuation


def verbatim(scorer: Scorer, texts: list[str], settings: GateSettings) -> tuple[int, int, int]:
    """(probes reproduced, probes checked, probes too short to check)."""
    groups: dict[tuple[int, int], tuple[list[list[int]], list[list[int]]]] = {}
    for text in texts:
        ids = scorer.ids(text)
        split = probe_split(len(ids) - 1, settings)
        if split is None:
            continue
        prompt_length, count = 1 + split[0], split[1]
        prompts, targets = groups.setdefault((prompt_length, count), ([], []))
        prompts.append(ids[:prompt_length])
        targets.append(ids[prompt_length : prompt_length + count])
    reproduced = checked = 0
    for (_, count), (prompts, targets) in sorted(groups.items()):
        checked += len(prompts)
        for start in range(0, len(prompts), _BATCH):
            batch = torch.tensor(prompts[start : start + _BATCH], dtype=torch.long)
            expected = torch.tensor(targets[start : start + _BATCH], dtype=torch.long)
            generated = scorer.greedy(batch, count)
            reproduced += int((generated == expected).all(dim=1).sum())
    return reproduced, checked, len(texts) - checked


def weights_check(model_dir: Path, base_dir: Path, spec: Spec) -> tuple[str, float]:
    """Compare trained weights with the uploaded base: ("passed" | "failed", relative update norm).

    A LoRA job may change only the layers its adapters target (merged into them); a change
    anywhere else is an update the loss cannot explain, so a crafted base wrote it: refused.
    Full fine-tunes may change every tensor: on an uploaded base whose weights may leave custody
    they run only under DP, which bounds what any update carries (docs/threat-model.md).
    """
    from safetensors.torch import load_file

    def tensors(directory: Path) -> dict[str, torch.Tensor]:
        loaded: dict[str, torch.Tensor] = {}
        for path in sorted(directory.glob("*.safetensors")):
            loaded.update(load_file(str(path)))
        return loaded

    trained, base = tensors(model_dir), tensors(base_dir)
    if set(trained) - set(base):
        return "failed", float("inf")
    changed, total, update = [], 0.0, 0.0
    for name, tensor in trained.items():
        before = base[name]
        if before.shape != tensor.shape:
            return "failed", float("inf")
        delta = tensor.float() - before.float()
        total += float(before.float().pow(2).sum())
        norm = float(delta.pow(2).sum())
        update += norm
        if norm > 0:
            changed.append(name)
    relative = math.sqrt(update / total) if total > 0 else 0.0
    if spec.template == "causal_lm_lora":
        from training.runner.models import GPT2_LORA_TARGETS

        if any(not any(target in name for target in GPT2_LORA_TARGETS) for name in changed):
            return "failed", relative
    return "passed", relative


def gate(
    spec: Spec,
    model_dir: Path,
    canaries: list[tuple[str, list[str]]],
    probes: list[str],
    *,
    base_dir: Path | None = None,
) -> dict[str, Any]:
    """The `gate` event for a trained output directory.

    ``checks`` says of each check whether it passed, failed, was not run (it could not run: no
    probe long enough, no canary) or does not apply (a classifier). The launcher lets the
    license terms decide whether a check not run withholds the model. ``detail`` is for the
    provider and operators; the trainer sees only pass or fail and ``reason``.
    """
    settings = spec.gate
    assert settings is not None
    event: dict[str, Any] = {
        "event": "gate",
        "passed": True,
        "exposure": 0.0,
        "verbatim": 0,
        "canaries": len(canaries),
        "probes": 0,
        "probes_skipped": 0,
        "exposures": [],
        "max_exposure": settings.max_exposure,
        "max_verbatim": settings.max_verbatim,
        "checks": {"exposure": "not_applicable", "verbatim": "not_applicable"},
        "reason": "",
        "detail": "",
    }
    reasons: list[str] = []
    if base_dir is not None:
        status, relative = weights_check(model_dir, base_dir, spec)
        event["checks"]["weights"] = status
        event["update_norm"] = round(relative, 6)
        if status == "failed":
            reasons.append("the update changed weights the template does not train")
    if not spec.causal:
        event["detail"] = "exposure and verbatim checks apply to causal language models only"
        return _decided(event, reasons)
    scorer = Scorer(model_dir)
    exposures = [round(exposure(scorer, secret, candidates), 4) for secret, candidates in canaries]
    reproduced, checked, skipped = verbatim(scorer, probes, settings)
    worst = max(exposures, default=0.0)
    event.update(
        exposures=exposures, exposure=worst, verbatim=reproduced, probes=checked, probes_skipped=skipped
    )
    event["checks"]["exposure"] = (
        "not_run" if not exposures else "failed" if worst > settings.max_exposure else "passed"
    )
    event["checks"]["verbatim"] = (
        "not_run" if not checked else "failed" if reproduced > settings.max_verbatim else "passed"
    )
    if worst > settings.max_exposure:
        reasons.append("the secret canaries planted in the training data were memorised")
    if reproduced > settings.max_verbatim:
        reasons.append("training records were reproduced verbatim")
    event["detail"] = (
        f"max exposure {worst:.2f} bits over {len(canaries)} canaries (limit {settings.max_exposure:g});"
        f" {reproduced} of {checked} probes verbatim (limit {settings.max_verbatim}), {skipped} too short"
    )
    return _decided(event, reasons)


def _decided(event: dict[str, Any], reasons: list[str]) -> dict[str, Any]:
    event["passed"] = not reasons
    event["reason"] = "; ".join(reasons)
    return event


def gate_refusal(reason: str) -> dict[str, Any]:
    """The `gate` event when the gate itself could not evaluate the model: a refusal, not a crash."""
    return {
        "event": "gate",
        "passed": False,
        "checks": {"exposure": "error", "verbatim": "error"},
        "reason": reason,
        "detail": reason,
    }
