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


def verbatim(scorer: Scorer, texts: list[str], settings: GateSettings) -> tuple[int, int, int]:
    """(probes reproduced, probes checked, probes too short to check)."""
    prompt_length = 1 + settings.prefix_tokens
    prompts, targets = [], []
    for text in texts:
        ids = scorer.ids(text)
        if len(ids) >= prompt_length + settings.verbatim_tokens:
            prompts.append(ids[:prompt_length])
            targets.append(ids[prompt_length : prompt_length + settings.verbatim_tokens])
    reproduced = 0
    for start in range(0, len(prompts), _BATCH):
        batch = torch.tensor(prompts[start : start + _BATCH], dtype=torch.long)
        expected = torch.tensor(targets[start : start + _BATCH], dtype=torch.long)
        generated = scorer.greedy(batch, settings.verbatim_tokens)
        reproduced += int((generated == expected).all(dim=1).sum())
    return reproduced, len(prompts), len(texts) - len(prompts)


def gate(
    spec: Spec, model_dir: Path, canaries: list[tuple[str, list[str]]], probes: list[str]
) -> dict[str, Any]:
    """The `gate` event for a trained output directory."""
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
        "detail": "",
    }
    if not spec.causal:
        event["detail"] = "exposure and verbatim checks apply to causal language models only"
        return event
    scorer = Scorer(model_dir)
    exposures = [round(exposure(scorer, secret, candidates), 4) for secret, candidates in canaries]
    reproduced, checked, skipped = verbatim(scorer, probes, settings)
    worst = max(exposures, default=0.0)
    event.update(
        exposures=exposures, exposure=worst, verbatim=reproduced, probes=checked, probes_skipped=skipped
    )
    reasons = []
    if worst > settings.max_exposure:
        reasons.append(f"canary exposure {worst:.2f} bits is above the limit of {settings.max_exposure:g}")
    if reproduced > settings.max_verbatim:
        reasons.append(
            f"{reproduced} of {checked} probe records continued verbatim"
            f" for {settings.verbatim_tokens} tokens (limit {settings.max_verbatim})"
        )
    event["passed"] = not reasons
    event["detail"] = "; ".join(reasons) or (
        f"max exposure {worst:.2f} bits over {len(canaries)} canaries;"
        f" {reproduced} of {checked} probes verbatim"
    )
    return event
