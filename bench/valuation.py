"""Data valuation: KNN-Shapley time for N training x M validation embeddings, and embedding throughput.

    .venv/bin/python bench/valuation.py [--train 100000] [--validation 1000] [--k 5] [--embed 512]
                                        [--flags 20000]

1. Valuation, given embeddings: random but structured 384-d unit vectors (a mixture of 20
   clusters, each a class, 5% of labels flipped), exact KNN-Shapley (training/runner/valuation.py),
   and as its reference the floor every exact method pays: the same distance matrix and one
   argsort per validation point, with no valuation around it.
2. Embedding: ``embed`` (tokenize, batch by length, MiniLM forward, mean pooling) in records/s on
   the English dev split of bench/data/devset, against a bare MiniLM forward pass over the same
   records already tokenized and padded to the same batches (the model's own cost).
3. Poison flags: ``label_margins`` (every record's 3 nearest of each side, O(N^2 d)) on N of the
   same structured vectors, against the bare similarity products in the same chunks (its floor).

Prints the load average with every figure: this machine is shared, and timings move with it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.runner.valuation import (
    CHUNK,
    MARGIN_NEIGHBOURS,
    _distances,
    embed,
    knn_shapley,
    label_margins,
    load_encoder,
)

DEVSET = Path(__file__).resolve().parent / "data" / "devset" / "en-dev.jsonl"


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


def structured(n: int, m: int, dims: int, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, dims)).astype(np.float32)

    def draw(count: int) -> tuple[np.ndarray, np.ndarray]:
        cluster = rng.integers(0, 20, size=count)
        x = centres[cluster] + 1.5 * rng.normal(size=(count, dims)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        labels = cluster.copy()
        flip = rng.random(count) < 0.05
        labels[flip] = rng.integers(0, 20, size=int(flip.sum()))
        return x, labels

    train_x, train_y = draw(n)
    val_x, val_y = draw(m)
    return train_x, train_y, val_x, val_y


def sort_floor(train_x: np.ndarray, val_x: np.ndarray, chunk: int = 64) -> float:
    """Seconds for the distances and one sort per validation point, nothing else."""
    train = torch.as_tensor(train_x)
    started = time.perf_counter()
    for start in range(0, len(val_x), chunk):
        torch.sort(_distances(train, torch.as_tensor(val_x[start : start + chunk])), dim=1, stable=True)
    return time.perf_counter() - started


def bench_valuation(args: argparse.Namespace) -> None:
    train_x, train_y, val_x, val_y = structured(args.train, args.validation, 384, seed=7)
    print(f"valuation: {args.train:,} training x {args.validation:,} validation, 384-d, k={args.k}; {load()}")
    floor = sort_floor(train_x, val_x)
    started = time.perf_counter()
    values = knn_shapley(train_x, train_y, val_x, val_y, args.k)
    elapsed = time.perf_counter() - started
    print(f"  KNN-Shapley (exact): {elapsed:.1f} s; {load()}")
    print(f"  reference, distances + argsort only: {floor:.1f} s; ratio {elapsed / floor:.2f}x")
    flipped_share = float((values < 0).mean())
    print(f"  values sum {values.sum():.4f}; share negative {flipped_share:.3f}")


def bench_flags(args: argparse.Namespace) -> None:
    x, y, _, _ = structured(args.flags, 1, 384, seed=11)
    print(f"flags: label margins of {args.flags:,} records, 384-d, {MARGIN_NEIGHBOURS} neighbours; {load()}")
    points = torch.as_tensor(x)
    started = time.perf_counter()
    for start in range(0, len(x), CHUNK):
        points[start : start + CHUNK] @ points.T
    floor = time.perf_counter() - started
    started = time.perf_counter()
    margins = label_margins(x, y, MARGIN_NEIGHBOURS)
    elapsed = time.perf_counter() - started
    print(f"  label_margins: {elapsed:.1f} s; {load()}")
    print(f"  reference, the similarity products only: {floor:.1f} s; ratio {elapsed / floor:.2f}x")
    print(f"  share over the default margin 0.06: {float((margins > 0.06).mean()):.3f}")


def bench_embedding(args: argparse.Namespace) -> None:
    texts = [json.loads(line)["text"] for line in DEVSET.read_text().splitlines()][: args.embed]
    encoder = load_encoder()
    model, tokenizer = encoder
    embed(texts[:16], encoder=encoder)  # warm-up
    print(
        f"embedding: {len(texts)} records of {DEVSET.name}, "
        f"MiniLM on {torch.get_num_threads()} threads; {load()}"
    )
    started = time.perf_counter()
    embed(texts, max_seq_len=128, batch_size=64, encoder=encoder)
    full = time.perf_counter() - started
    # The bare forward pass: the same batches, tokenized and padded beforehand, untimed.
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    batches = []
    for start in range(0, len(order), 64):
        encodings = tokenizer.encode_batch([texts[i] for i in order[start : start + 64]])
        width = max(1, min(128, max(len(e.ids) for e in encodings)))
        ids = torch.zeros((len(encodings), width), dtype=torch.long)
        mask = torch.zeros((len(encodings), width), dtype=torch.long)
        for row, encoding in enumerate(encodings):
            tokens = encoding.ids[:width]
            ids[row, : len(tokens)] = torch.tensor(tokens)
            mask[row, : len(tokens)] = 1
        batches.append((ids, mask))
    started = time.perf_counter()
    with torch.inference_mode():
        for ids, mask in batches:
            model(input_ids=ids, attention_mask=mask)
    bare = time.perf_counter() - started
    print(f"  embed (tokenize + forward + pooling): {len(texts) / full:.1f} records/s; {load()}")
    print(f"  bare MiniLM forward pass: {len(texts) / bare:.1f} records/s; embed/bare {bare / full:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--train", type=int, default=100_000)
    parser.add_argument("--validation", type=int, default=1000)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--embed", type=int, default=512, help="records to embed (0: skip)")
    parser.add_argument("--flags", type=int, default=20_000, help="records for the poison flags (0: skip)")
    args = parser.parse_args()
    if args.train:
        bench_valuation(args)
    if args.flags:
        bench_flags(args)
    if args.embed:
        bench_embedding(args)


if __name__ == "__main__":
    main()
