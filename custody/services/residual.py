"""Review samples and the residual-risk estimate: what desensitization did, and what it may have left.

Per ingest batch (``process_batch`` calls ``batch_review``):

- review samples: up to ``SAMPLES_PER_SHARD`` desensitized text fields, chosen
  so every (language, entity type) of the batch is shown, each with the
  replaced spans' offsets before and after (for highlighting);
- the residual scan: ``RESIDUAL_SAMPLE_PER_BATCH`` records drawn at random
  (seeded by version and shard, so a re-run draws the same) are scanned by the
  strict detector (``custody.desensitize.strict``), ignoring what the
  operators wrote. The counts go to the shard's clear stats
  (``residual_sampled``, ``residual_hits``), a few examples into its
  encrypted samples blob.

At finalize the counts add up into the report; ``residual_estimate`` turns
them into a proportion per entity type with a 95% Wilson score interval, and
says whether sealing needs the provider's confirmation
(``settings.RESIDUAL_RISK_CONFIRM_ABOVE``).
"""

from __future__ import annotations

import logging
import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from django.conf import settings

if TYPE_CHECKING:
    from custody.desensitize import Desensitized, Policy, Span
    from custody.desensitize.operators import Replacer
    from custody.models import DatasetVersion

logger = logging.getLogger(__name__)

SAMPLES_PER_SHARD: Final = 24
SAMPLES_PER_KIND: Final = 3
REPORT_SAMPLES: Final = 600
RESIDUAL_EXAMPLES_PER_SHARD: Final = 5
REPORT_RESIDUAL_EXAMPLES: Final = 60
ANY: Final = "ANY"
Z_95: Final = 1.959964


# --- per batch ----------------------------------------------------------------------------


def replaced_offsets(
    before: str, result: Desensitized, replacer: Replacer, policy: Policy
) -> list[tuple[int, int, str]] | None:
    """Return where each replacement sits in the desensitized text; None if it cannot be rebuilt."""
    out: list[tuple[int, int, str]] = []
    parts: list[str] = []
    cursor = 0
    position = 0
    for span in result.spans:
        kept = before[cursor : span.start]
        parts.append(kept)
        position += len(kept)
        value = replacer.replacement(
            policy.operator_for(span.entity_type), span.entity_type, before[span.start : span.end]
        )
        parts.append(value)
        out.append((position, position + len(value), span.entity_type))
        position += len(value)
        cursor = span.end
    parts.append(before[cursor:])
    if "".join(parts) != result.text:
        # The desensitizer replaced differently from what its operators say: no offsets
        # rather than wrong ones (the residual scan then sees surrogates as hits).
        logger.warning("replacement offsets could not be rebuilt for a sample")
        return None
    return out


@dataclass
class Cell:
    """One desensitized field of one record of the batch."""

    record_id: int
    field: str
    before: str
    result: Desensitized


def _sample(cell: Cell, after_spans: list[tuple[int, int, str]] | None) -> dict[str, Any]:
    return {
        "kind": "sample",
        "record_id": cell.record_id,
        "field": cell.field,
        "language": cell.result.language,
        "entities": sorted({s.entity_type for s in cell.result.spans}),
        "before": cell.before,
        "after": cell.result.text,
        "before_spans": [[s.start, s.end, s.entity_type] for s in cell.result.spans],
        "after_spans": [list(s) for s in after_spans or []],
    }


def _review_samples(
    cells: Sequence[Cell],
    offsets: dict[int, list[tuple[int, int, str]] | None],
    replacer: Replacer,
    policy: Policy,
) -> list[dict[str, Any]]:
    """Pick samples so each (language, entity type) of the batch shows up, then fill up with others."""
    seen: Counter[tuple[str, str]] = Counter()
    with_spans = [i for i, cell in enumerate(cells) if cell.result.spans]
    chosen: list[int] = []
    for index in with_spans:
        result = cells[index].result
        kinds = {(result.language, s.entity_type) for s in result.spans}
        if any(seen[k] < SAMPLES_PER_KIND for k in kinds):
            seen.update(kinds)
            chosen.append(index)
    picked = set(chosen)
    chosen += [i for i in with_spans if i not in picked][: max(0, SAMPLES_PER_SHARD - len(chosen))]
    for i in chosen:
        if i not in offsets:
            offsets[i] = replaced_offsets(cells[i].before, cells[i].result, replacer, policy)
    return [_sample(cells[i], offsets[i]) for i in sorted(chosen)]


def batch_review(
    *,
    version_id: int,
    shard_index: int,
    cells: Sequence[Cell],
    replacer: Replacer,
    policy: Policy,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Return the batch's review samples and residual examples, and its residual counts (clear)."""
    from custody.desensitize.strict import strict_scan

    rng = random.Random(f"residual/{version_id}/{shard_index}")
    record_ids = sorted({c.record_id for c in cells})
    size = min(len(record_ids), settings.RESIDUAL_SAMPLE_PER_BATCH)
    sampled = set(rng.sample(record_ids, size)) if size else set()
    offsets: dict[int, list[tuple[int, int, str]] | None] = {}
    for index, cell in enumerate(cells):
        if cell.result.spans and cell.record_id in sampled:
            offsets[index] = replaced_offsets(cell.before, cell.result, replacer, policy)
    samples = _review_samples(cells, offsets, replacer, policy)
    scanned = [(i, c) for i, c in enumerate(cells) if c.record_id in sampled]
    hits = strict_scan(
        [c.result.text for _, c in scanned],
        ignore=[[(s, e) for s, e, _ in offsets.get(i) or []] for i, _ in scanned],
        entities=policy.entity_set,
    )
    by_record: dict[int, set[str]] = {}
    examples: list[dict[str, Any]] = []
    for (_, cell), found in zip(scanned, hits, strict=True):
        if not found:
            continue
        by_record.setdefault(cell.record_id, set()).update(h.entity_type for h in found)
        if len(examples) < RESIDUAL_EXAMPLES_PER_SHARD:
            examples.append(
                {
                    "kind": "residual",
                    "record_id": cell.record_id,
                    "field": cell.field,
                    "language": cell.result.language,
                    "entities": sorted({h.entity_type for h in found}),
                    "text": cell.result.text,
                    "hits": [[h.start, h.end, h.entity_type] for h in found],
                }
            )
    counts: Counter[str] = Counter()
    for types in by_record.values():
        counts.update(types)
    if by_record:
        counts[ANY] = len(by_record)
    stats = {"residual_sampled": {"records": len(sampled)}, "residual_hits": dict(counts)}
    return samples + examples, stats


# --- the estimate ---------------------------------------------------------------------------


def wilson_interval(hits: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Return the Wilson score interval of a proportion (95% by default)."""
    if n <= 0:
        return (0.0, 1.0)
    p = hits / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # At 0 or n hits the bound is exactly 0 or 1; floating point would miss it by an ulp.
    low = 0.0 if hits == 0 else max(0.0, centre - half)
    high = 1.0 if hits == n else min(1.0, centre + half)
    return (low, high)


@dataclass(frozen=True)
class ResidualRow:
    """One entity type: sampled records with a hit, the proportion, and its 95% Wilson interval."""

    entity_type: str
    hits: int
    rate: float
    low: float
    high: float


@dataclass(frozen=True)
class ResidualEstimate:
    """What the strict detector found in the sample: per type and for any type."""

    sampled: int
    records: int
    rows: tuple[ResidualRow, ...]
    any: ResidualRow
    threshold: float

    @property
    def needs_confirmation(self) -> bool:
        """Say whether sealing must be confirmed: the estimate for any type is above the setting."""
        return self.sampled > 0 and self.any.rate > self.threshold

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form (API)."""

        def row(r: ResidualRow) -> dict[str, Any]:
            return {
                "entity_type": r.entity_type,
                "records": r.hits,
                "rate": r.rate,
                "low": r.low,
                "high": r.high,
            }

        return {
            "sampled_records": self.sampled,
            "records": self.records,
            "interval": "wilson-95",
            "any": row(self.any),
            "by_entity_type": [row(r) for r in self.rows],
            "confirm_above": self.threshold,
            "needs_confirmation": self.needs_confirmation,
        }


def _row(entity_type: str, hits: int, n: int) -> ResidualRow:
    low, high = wilson_interval(hits, n)
    return ResidualRow(entity_type, hits, hits / n if n else 0.0, low, high)


def residual_estimate(counts: dict[str, Any], records: int) -> ResidualEstimate | None:
    """Return the estimate from a report's counts; None when the report has no residual scan."""
    sampled_counts = counts.get("residual_sampled")
    if not isinstance(sampled_counts, dict) or "records" not in sampled_counts:
        return None
    n = int(sampled_counts["records"])
    hits: dict[str, int] = {k: int(v) for k, v in (counts.get("residual_hits") or {}).items()}
    rows = tuple(_row(t, k, n) for t, k in sorted(hits.items(), key=lambda kv: (-kv[1], kv[0])) if t != ANY)
    return ResidualEstimate(
        sampled=n,
        records=records,
        rows=rows,
        any=_row(ANY, hits.get(ANY, 0), n),
        threshold=settings.RESIDUAL_RISK_CONFIRM_ABOVE,
    )


# --- preview records ------------------------------------------------------------------------


def preview_strict_hits(*, version: DatasetVersion, texts: Sequence[str]) -> list[list[Span]]:
    """Run the strict detector over records already desensitized (a listing's preview).

    Hits count for the version policy's entity types, except those it replaces
    with surrogates: a realistic fake cannot be told from a leak without the
    offsets, which a sealed record no longer carries.
    """
    from custody.desensitize import Policy
    from custody.desensitize.strict import strict_scan

    policy = Policy.from_dict(version.dataset.policy)
    entities = {e for e in policy.entity_set if policy.operator_for(e).kind != "surrogate"}
    return strict_scan(texts, entities=entities) if texts else []
