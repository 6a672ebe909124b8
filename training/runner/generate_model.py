"""The generate template's sampling loop (the spec and its bounds: generate.py). Loads torch: it runs
only inside the sandbox, as ``python -m training.runner generate``."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from training.runner.gate import Scorer
from training.runner.generate import Generation


def generate(spec: Generation, emit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Write ``spec.records`` records as ``record`` events; returns the ``done`` event."""
    scorer = Scorer(Path(spec.base_path))
    torch.manual_seed(spec.seed)
    started = time.monotonic()
    written = 0
    tokens = 0
    # Prompts in turn; a batch continues one prompt, so no padding is needed.
    plan: list[tuple[str, int]] = []
    for index in range(len(spec.prompts)):
        count = spec.records // len(spec.prompts) + (1 if index < spec.records % len(spec.prompts) else 0)
        for start in range(0, count, spec.batch_size):
            plan.append((spec.prompts[index], min(spec.batch_size, count - start)))
    for prompt, count in plan:
        ids = torch.tensor([scorer.ids(prompt)], dtype=torch.long, device=scorer.device).repeat(count, 1)
        with torch.no_grad():
            out = scorer.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                do_sample=True,
                temperature=spec.temperature,
                top_k=spec.top_k,
                max_new_tokens=spec.max_new_tokens,
                eos_token_id=scorer.start,
                pad_token_id=scorer.pad,
            )
        for row in out[:, ids.shape[1] :].tolist():
            new = [t for t in row if t not in (scorer.start, scorer.pad)]
            tokens += len(new)
            continuation = scorer.tokenizer.decode(new, skip_special_tokens=True)
            text = " ".join(part for part in (prompt.strip(), continuation.strip()) if part)
            emit({"event": "record", "text": text})
            written += 1
    seconds = time.monotonic() - started
    return {
        "event": "done",
        "template": "generate",
        "records": written,
        "tokens_generated": tokens,
        "seconds": round(seconds, 3),
    }
