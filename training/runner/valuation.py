"""Data valuation inside the sandbox: exact KNN-Shapley on MiniLM sentence embeddings.

records (JSON lines: text, label, optional id, group, split) -> the validation set (the lines
marked ``"split": "validation"``, else a seeded hold-out share of the version) -> embeddings
(the bundled all-MiniLM-L6-v2, mean pooling, unit length) -> ``knn_shapley`` (Jia et al. 2019,
"Efficient task-specific data valuation for nearest neighbor algorithms", Theorem 1: the exact
Shapley values of the K-nearest-neighbour classifier's validation accuracy, by a recursion over
the training points sorted by distance, O(N log N) per validation point) -> the ``done`` event.

Only aggregates leave: per group (a contribution's opaque id) sum, mean and count, a histogram and
a summary, each over at least ``min_group`` records (``aggregates``). Per-record values never
leave the sandbox; the ids of the records flagged as possible poison are written to
``out/flags.json`` for the launcher to keep in custody (the provider's review), never in the event.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.runner.data import InputError, load_tokenizer, platform_model_dir
from training.runner.spec import Spec

Emit = Callable[[dict[str, Any]], None]
FLAGS_FILE = "flags.json"
# Validation points per chunk: chunk x N float32 distances and int64 sort indices stay under
# ~80 MB for N = 100k.
CHUNK = 64
# Nearest records of each side a record's label margin averages over (poison flags): chosen with
# flag_margin on plantings in the train split of bench/data/devset (docs/training.md).
MARGIN_NEIGHBOURS = 3


# --- KNN-Shapley ------------------------------------------------------------------------------


def _distances(train: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances, points x train (on unit vectors: 2 - 2 cos)."""
    return (points * points).sum(1, keepdim=True) - 2 * points @ train.T + (train * train).sum(1)


def knn_shapley(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    k: int,
    *,
    chunk: int = CHUNK,
    exclude: np.ndarray | None = None,
) -> np.ndarray:
    """Exact Shapley values of each training point for the K-NN classifier's validation accuracy.

    The utility of a subset S on one validation point is (1/K) * the number of its min(K, |S|)
    nearest members of S with the validation point's label; a value is the mean over validation
    points, so the values add up to U(all) - U(empty) (the efficiency axiom). Ties in distance
    are broken by training index (a stable sort). `exclude` (leave-self-out, for poison flags:
    the validation points are training points) gives, per validation point, the training index
    that is not a player in its game.

    :raises ValueError: on mismatched shapes, no training or validation points, or k < 1.
    """
    n, m = len(train_x), len(val_x)
    if n == 0 or m == 0 or k < 1 or (exclude is not None and n < 2):
        raise ValueError("knn_shapley needs training and validation points and k >= 1")
    if len(train_y) != n or len(val_y) != m or train_x.shape[1:] != val_x.shape[1:]:
        raise ValueError("knn_shapley: shapes do not match")
    if exclude is not None and len(exclude) != m:
        raise ValueError("knn_shapley: shapes do not match")
    train = torch.as_tensor(np.ascontiguousarray(train_x), dtype=torch.float32)
    labels = torch.as_tensor(np.asarray(train_y), dtype=torch.long)
    totals = torch.zeros(n, dtype=torch.float64)
    for start in range(0, m, chunk):
        points = torch.as_tensor(np.ascontiguousarray(val_x[start : start + chunk]), dtype=torch.float32)
        targets = torch.as_tensor(np.asarray(val_y[start : start + chunk]), dtype=torch.long)
        distances = _distances(train, points)
        if exclude is not None:
            # The excluded point sorts first, whatever ties, and is cut off.
            rows = torch.arange(len(points))
            distances[rows, torch.as_tensor(exclude[start : start + chunk], dtype=torch.long)] = -math.inf
        order = torch.sort(distances, dim=1, stable=True).indices
        if exclude is not None:
            order = order[:, 1:]
        values = _recursion((labels[order] == targets[:, None]).to(torch.float64), k)
        totals.index_add_(0, order.reshape(-1), values.reshape(-1))
    return (totals / m).numpy()


def _recursion(match: torch.Tensor, k: int) -> torch.Tensor:
    """Jia et al.'s recursion over rows of label matches sorted nearest first (Theorem 1).

    s_N = match_N / max(N, K) (the paper states N; with fewer points than K each is always among
    the K nearest, worth match / K), s_i = s_{i+1} + (match_i - match_{i+1}) min(K, i) / (K i).
    """
    n = match.shape[1]
    rank = torch.arange(1, n, dtype=torch.float64)
    step = torch.clamp(rank, max=k) / (k * rank)
    values = torch.empty_like(match)
    last = match[:, -1:] / max(n, k)
    values[:, -1:] = last
    if n > 1:
        values[:, :-1] = last + ((match[:, :-1] - match[:, 1:]) * step).flip(1).cumsum(1).flip(1)
    return values


def self_values(x: np.ndarray, y: np.ndarray, k: int, *, limit: int, seed: int) -> np.ndarray:
    """Leave-self-out values: each of up to `limit` training points (a seeded sample) validates the
    others. Every record is then judged by its own neighbours, not only those near the hold-out.
    Not used for the poison flags any more (``poison_flags`` says why); kept as a measure."""
    count = min(len(x), limit)
    chosen = np.sort(np.random.default_rng(seed).permutation(len(x))[:count])
    return knn_shapley(x, y, x[chosen], y[chosen], k, exclude=chosen)


def knn_utility(
    train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray, k: int
) -> float:
    """The utility of the whole training set: mean over validation points of (1/K) * matches among
    the min(K, N) nearest (what the values add up to)."""
    train = torch.as_tensor(np.ascontiguousarray(train_x), dtype=torch.float32)
    labels = torch.as_tensor(np.asarray(train_y), dtype=torch.long)
    total = 0.0
    for start in range(0, len(val_x), CHUNK):
        points = torch.as_tensor(np.ascontiguousarray(val_x[start : start + CHUNK]), dtype=torch.float32)
        targets = torch.as_tensor(np.asarray(val_y[start : start + CHUNK]), dtype=torch.long)
        order = torch.sort(_distances(train, points), dim=1, stable=True).indices[:, :k]
        total += float((labels[order] == targets[:, None]).sum()) / k
    return total / len(val_x)


# --- what values say --------------------------------------------------------------------------


def label_margins(x: np.ndarray, y: np.ndarray, k: int, *, chunk: int = CHUNK) -> np.ndarray:
    """Per record: the mean cosine similarity of its k nearest records of *other* labels minus that
    of its k nearest of *its own* label (itself left out). Positive: it sits closer to another
    label's records than to its own, as a flipped label does; O(N^2 d) in chunks of rows.

    :raises ValueError: fewer than two records.
    """
    n = len(x)
    if n < 2:
        raise ValueError("label_margins needs at least two records")
    # O(N^2 d): on the worker's GPU where it has one (100k records: 3.8e12 multiply-adds).
    device = "cuda" if torch.cuda.is_available() else "cpu"
    points = torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32).to(device)
    labels = torch.as_tensor(np.asarray(y), dtype=torch.long).to(device)
    out = np.zeros(n, dtype=np.float64)
    for start in range(0, n, chunk):
        rows = torch.arange(start, min(n, start + chunk), device=device)
        similarity = points[rows] @ points.T
        similarity[torch.arange(len(rows), device=device), rows] = -math.inf
        same = labels[rows][:, None] == labels[None, :]
        own = _top_mean(similarity.masked_fill(~same, -math.inf), k)
        other = _top_mean(similarity.masked_fill(same, -math.inf), k)
        out[start : start + len(rows)] = (other - own).cpu().numpy()
    return out


def _top_mean(similarity: torch.Tensor, k: int) -> torch.Tensor:
    """Mean of each row's k largest finite entries; -1 (the least cosine) where a row has none."""
    top = similarity.topk(min(k, similarity.shape[1]), dim=1).values
    finite = torch.isfinite(top)
    count = finite.sum(1)
    total = torch.where(finite, top, torch.zeros_like(top)).sum(1)
    return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, -1.0)).double()


def poison_flags(margins: np.ndarray, *, margin: float) -> np.ndarray:
    """Indices of possible poison: records whose label margin is over ``margin`` (their
    MARGIN_NEIGHBOURS nearest records of another label are that much more cosine-similar than
    their nearest of their own label), as a flipped label's are.

    Not the sign of the leave-self-out KNN-Shapley value (``self_values``), which the first
    version used: far from a record, the recursion's tail pays records of the majority label
    a little from every validator, so a flipped record of the majority label in a minority
    neighbourhood can end up positive (on the train split's plantings the sign missed one planted
    record in ten that the margin finds, and added no precision; docs/training.md)."""
    return np.flatnonzero(margins > margin)


def _round(value: float, digits: int = 4) -> float:
    return float(f"{value:.{digits}g}") if value else 0.0


def histogram(values: np.ndarray, *, bins: int, min_group: int) -> list[dict[str, Any]]:
    """Equal-width bins over the values, neighbours merged until each holds >= min_group values.

    A bin with fewer records would come close to saying where one record's value lies.
    """
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return [{"low": _round(low), "high": _round(high), "count": len(values)}]
    counts, edges = np.histogram(values, bins=bins, range=(low, high))
    merged: list[dict[str, Any]] = []
    pending = 0
    start = edges[0]
    for count, end in zip(counts, edges[1:], strict=True):
        pending += int(count)
        if pending >= min_group:
            merged.append({"low": float(start), "high": float(end), "count": pending})
            pending, start = 0, end
    if pending:
        if merged:
            merged[-1]["high"] = float(edges[-1])
            merged[-1]["count"] += pending
        else:
            merged.append({"low": float(start), "high": float(edges[-1]), "count": pending})
    return [{**b, "low": _round(b["low"]), "high": _round(b["high"])} for b in merged]


def aggregates(values: np.ndarray, groups: list[str], *, min_group: int, bins: int = 20) -> dict[str, Any]:
    """What may leave the sandbox: per group sum, mean and count, a histogram and a summary.

    A group with fewer than `min_group` records is not reported by itself: its records are counted
    under "other" (and "other" itself only when it reaches min_group; below, only in the totals).
    Values are scaled by N (so a record of average worth in a useful set is about U/1) and
    rounded to 4 significant digits.

    :raises InputError: fewer than min_group records in all.
    """
    n = len(values)
    if n < min_group:
        raise InputError("records", f"valuation needs at least {min_group} training records (min_group)")
    scaled = values * n
    by_group: dict[str, list[int]] = {}
    for index, group in enumerate(groups):
        by_group.setdefault(group, []).append(index)
    reported: dict[str, dict[str, Any]] = {}
    other: list[int] = []
    for group, members in sorted(by_group.items()):
        if len(members) < min_group:
            other.extend(members)
            continue
        reported[group] = _group(scaled[members])
    suppressed = 0
    if other and len(other) >= min_group:
        reported["other"] = _group(scaled[other])
    elif other:
        suppressed = len(other)
    return {
        "groups": reported,
        "suppressed_records": suppressed,
        "histogram": histogram(scaled, bins=bins, min_group=min_group),
        "summary": {
            "count": n,
            "sum": _round(float(scaled.sum())),
            "mean": _round(float(scaled.mean())),
            "std": _round(float(scaled.std())),
            "negative_share": _round(float((scaled < 0).mean())),
        },
    }


def _group(values: np.ndarray) -> dict[str, Any]:
    return {"count": len(values), "sum": _round(float(values.sum())), "mean": _round(float(values.mean()))}


# --- embeddings -------------------------------------------------------------------------------


def load_encoder() -> tuple[Any, Any]:
    """The bundled all-MiniLM-L6-v2 encoder (offline, safetensors) and its tokenizer."""
    from transformers import AutoModel

    directory = platform_model_dir()
    model = AutoModel.from_pretrained(directory, local_files_only=True, use_safetensors=True)
    model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
    return model, load_tokenizer(str(directory / "tokenizer.json"))


def embed(
    texts: list[str], *, max_seq_len: int = 128, batch_size: int = 64, encoder: tuple[Any, Any] | None = None
) -> np.ndarray:
    """Sentence embeddings: MiniLM's last hidden states mean-pooled over real tokens, unit length."""
    model, tokenizer = encoder or load_encoder()
    pad = tokenizer.token_to_id("[PAD]") or 0
    device = next(model.parameters()).device
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    # Longest first, so each batch pads little; the rows go back to their places.
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            encodings = tokenizer.encode_batch([texts[i] for i in rows], add_special_tokens=True)
            width = max(1, min(max_seq_len, max(len(e.ids) for e in encodings)))
            ids = torch.full((len(rows), width), pad, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for row, encoding in enumerate(encodings):
                tokens = encoding.ids[:width]
                ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
                mask[row, : len(tokens)] = 1
            ids, mask = ids.to(device), mask.to(device)
            hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
            out[rows] = torch.nn.functional.normalize(pooled, dim=1).float().cpu().numpy()
    return out


# --- the runner's entry -----------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One record to value: text, label, the custody id (for flags), its group, whether validation."""

    text: str
    label: str
    id: str
    group: str
    validation: bool


def read_items(lines: Iterable[bytes]) -> list[Item]:
    """Read the valuation's JSON-lines records; errors name a line, never its text.

    :raises InputError: a malformed line, a missing label, or no records.
    """
    items: list[Item] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise InputError("records", f"line {number} is not valid JSON") from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise InputError("records", f"line {number} has no string field 'text'")
        if not isinstance(record.get("label"), str) or not record["label"]:
            raise InputError("records", f"line {number}: valuation needs a string 'label'")
        split = record.get("split", "train")
        if split not in ("train", "validation"):
            raise InputError("records", f"line {number}: 'split' must be train or validation")
        group, ident = record.get("group", ""), record.get("id", str(number))
        if not isinstance(group, str) or not isinstance(ident, str):
            raise InputError("records", f"line {number}: 'group' and 'id' must be strings")
        items.append(Item(record["text"], record["label"], ident, group, split == "validation"))
    if not items:
        raise InputError("records", "no records on stdin")
    return items


def split_items(items: list[Item], fraction: float, seed: int) -> tuple[list[Item], list[Item]]:
    """Training and validation items: the lines marked validation (a trainer's labelled set), else
    a seeded hold-out share of the version (the provider's hold-out).

    :raises InputError: when either side is empty.
    """
    marked = [item for item in items if item.validation]
    if marked:
        train = [item for item in items if not item.validation]
    else:
        order = list(range(len(items)))
        random.Random(seed).shuffle(order)
        held = max(1, round(len(items) * fraction))
        marked = [items[i] for i in order[:held]]
        train = [items[i] for i in order[held:]]
    if not train or not marked:
        raise InputError("records", "valuation needs training records and validation records")
    return train, marked


def value(spec: Spec, items: list[Item], out_dir: Path, emit: Emit) -> dict[str, Any]:
    """Value the training items against the validation items; write the flags, return `done`."""
    settings = spec.valuation
    assert settings is not None
    hp = spec.hyperparameters
    torch.manual_seed(hp.seed)
    train, validation = split_items(items, settings.holdout_fraction, hp.seed)
    if len(train) < settings.min_group:
        raise InputError("records", f"valuation needs at least {settings.min_group} training records")
    classes = {label: i for i, label in enumerate(sorted({item.label for item in items}))}
    encoder = load_encoder()
    emit({"event": "progress", "step": 0, "total_steps": 2, "epoch": 0})
    vectors = embed(
        [item.text for item in train + validation],
        max_seq_len=hp.max_seq_len,
        batch_size=hp.batch_size,
        encoder=encoder,
    )
    emit({"event": "progress", "step": 1, "total_steps": 2, "epoch": 0})
    train_y = np.array([classes[item.label] for item in train])
    val_y = np.array([classes[item.label] for item in validation])
    train_x, val_x = vectors[: len(train)], vectors[len(train) :]
    values = knn_shapley(train_x, train_y, val_x, val_y, settings.k)
    flagged = poison_flags(label_margins(train_x, train_y, MARGIN_NEIGHBOURS), margin=settings.flag_margin)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / FLAGS_FILE).write_text(json.dumps({"ids": sorted(train[i].id for i in flagged)}))
    result = aggregates(values, [item.group for item in train], min_group=settings.min_group)
    result["summary"].update(
        validation_records=len(validation),
        utility=_round(knn_utility(train_x, train_y, val_x, val_y, settings.k)),
        k=settings.k,
        flagged=len(flagged),
    )
    emit({"event": "progress", "step": 2, "total_steps": 2, "epoch": 1})
    return {
        "event": "done",
        "template": spec.template,
        "steps": 2,
        # Valuation trains nothing: no tokens are billed as trained (the job's usage is its start).
        "tokens_trained": 0,
        "epsilon_spent": None,
        "files": [FLAGS_FILE],
        "metrics": {
            "steps": 2,
            "platform_tokens_trained": 0,
            "device": next(encoder[0].parameters()).device.type,
            "precision": "fp32",
        },
        "valuation": result,
    }
