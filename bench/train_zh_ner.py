"""Train the Chinese character tagger (``custody/recognizers/zh_model.py``) and write its files.

    .venv/bin/python bench/train_zh_ner.py [--gsd PATH/UNER_Chinese-GSDSIMP] [--epochs 30] [--out DIR]

Data: the development set's zh **train** split only (``bench/data/devset/zh-train.jsonl``: Weibo
NER, GSD, synthetic identifiers; its PERSON / LOCATION / ORGANIZATION spans), plus, with
``--gsd``, the rest of GSD's published *training* split (the devset keeps every third document of
it; the other two thirds are the same source, licence and split, and none of dev or test). The
epoch kept is the one with the best span F1 of the tagger alone on the **dev** split; the test split
is never read. CPU, one thread, seeded; the weights are written fp16 with the characters they know,
and the sha256 of both is printed to pin in ``zh_model.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import random
import shutil
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from custody.recognizers import zh_model  # noqa: E402
from custody.recognizers.zh_segmenter import segment  # noqa: E402

DEVSET = ROOT / "bench" / "data" / "devset"
GSD_COMMIT = "1f0307599dece7b83f4cba90ce9b63ef37a7b162"
CHAR_DIM = 64
SEGMENT_DIM = 16
HIDDEN = 128
MAX_CHARS = 160
MIN_CHAR_COUNT = 2

Example = tuple[str, list[tuple[int, int, str]]]


def load_split(split: str) -> list[Example]:
    examples = []
    with (DEVSET / f"zh-{split}.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            spans = [
                (s["start"], s["end"], s["type"]) for s in record["spans"] if s["type"] in zh_model.TYPES
            ]
            examples.append((record["text"], spans))
    return examples


def gsd_rest(repo: Path, known: set[str]) -> list[Example]:
    """GSD's training documents the devset left out (its parser, every document kept)."""
    sys.path.insert(0, str(DEVSET))
    build_zh: Any = importlib.import_module("build_zh")

    build_zh.GSD_TRAIN_EVERY = 1
    extra = []
    for record in build_zh.gsd(repo, "train"):
        if record["id"] in known:
            continue
        spans = [(s["start"], s["end"], s["type"]) for s in record["spans"]]
        extra.append((str(record["text"]), spans))
    return extra


def chunks(example: Example) -> list[Example]:
    """Cut long texts into MAX_CHARS pieces (spans that cross a cut are cut with it)."""
    text, spans = example
    if len(text) <= MAX_CHARS:
        return [example]
    pieces = []
    for begin in range(0, len(text), MAX_CHARS):
        end = min(len(text), begin + MAX_CHARS)
        inside = [
            (max(s, begin) - begin, min(e, end) - begin, t) for s, e, t in spans if s < end and e > begin
        ]
        pieces.append((text[begin:end], inside))
    return pieces


def tag_ids(length: int, spans: list[tuple[int, int, str]]) -> np.ndarray:
    tags = np.zeros(length, dtype=np.int64)
    for start, end, kind in spans:
        b = zh_model.TAGS.index(f"B-{kind}")
        tags[start] = b
        tags[start + 1 : end] = b + 1
    return tags


def featurize(examples: list[Example], vocabulary: dict[str, int]) -> list[tuple[Any, Any, Any]]:
    rows = []
    for text, spans in examples:
        rows.append(
            (
                zh_model.char_ids(text, vocabulary),
                zh_model.segment_features(text, segment(text)),
                tag_ids(len(text), spans),
            )
        )
    return rows


def build_model(torch: Any, vocabulary_size: int, dropout: float) -> Any:
    nn = torch.nn

    class Tagger(nn.Module):  # type: ignore[name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.chars = nn.Embedding(vocabulary_size, CHAR_DIM, padding_idx=0)
            self.segments = nn.Embedding(zh_model.SEGMENT_FEATURES, SEGMENT_DIM, padding_idx=0)
            widths = [CHAR_DIM + SEGMENT_DIM, HIDDEN, HIDDEN]
            self.convs = nn.ModuleList(
                nn.Conv1d(w, HIDDEN, 3, padding=d, dilation=d)
                for w, d in zip(widths, zh_model.DILATIONS, strict=True)
            )
            self.head = nn.Linear(HIDDEN, len(zh_model.TAGS))
            self.dropout = nn.Dropout(dropout)

        def forward(self, chars: Any, segments: Any, mask: Any) -> Any:
            x = self.dropout(torch.cat((self.chars(chars), self.segments(segments)), dim=-1))
            h = x.transpose(1, 2)
            keep = mask.unsqueeze(1).float()
            for i, conv in enumerate(self.convs):
                out = torch.relu(conv(h)) * keep
                h = out if i == 0 else out + h
                h = self.dropout(h)
            return self.head(h.transpose(1, 2))

    return Tagger()


def batches(torch: Any, rows: list[tuple[Any, Any, Any]], size: int, rng: random.Random | None) -> Any:
    order = list(range(len(rows)))
    if rng is not None:
        rng.shuffle(order)
    for begin in range(0, len(order), size):
        chunk = [rows[i] for i in order[begin : begin + size]]
        width = max(len(r[0]) for r in chunk)
        chars = torch.zeros((len(chunk), width), dtype=torch.long)
        segs = torch.zeros((len(chunk), width), dtype=torch.long)
        tags = torch.full((len(chunk), width), -100, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.bool)
        for row, (c, s, t) in enumerate(chunk):
            chars[row, : len(c)] = torch.from_numpy(c)
            segs[row, : len(s)] = torch.from_numpy(s)
            tags[row, : len(t)] = torch.from_numpy(t)
            mask[row, : len(c)] = True
        yield chars, segs, tags, mask


def export(model: Any) -> dict[str, np.ndarray]:
    """The weights in zh_model's layout (convolutions as [3*in, out] matrices), fp16."""
    weights = {
        "chars": model.chars.weight.detach().numpy(),
        "segments": model.segments.weight.detach().numpy(),
        "head.weight": model.head.weight.detach().numpy().T,
        "head.bias": model.head.bias.detach().numpy(),
    }
    for i, conv in enumerate(model.convs):
        w = conv.weight.detach().numpy()  # [out, in, 3]
        weights[f"conv{i}.weight"] = w.transpose(2, 1, 0).reshape(3 * w.shape[1], w.shape[0])
        weights[f"conv{i}.bias"] = conv.bias.detach().numpy()
    return {k: np.ascontiguousarray(v.astype(np.float16)) for k, v in weights.items()}


def span_figures(
    tagger: zh_model.ChineseTagger, examples: list[Example], threshold: float
) -> dict[str, float]:
    """Exact-span precision, recall and F1 of the tagger alone, and recall of spans it overlaps."""
    tp = predicted = gold = touched = 0
    for text, spans in examples:
        found = {(s, e, t) for s, e, t, _ in tagger.tag(text, segment(text), min_probability=threshold)}
        wanted = set(spans)
        tp += len(found & wanted)
        predicted += len(found)
        gold += len(wanted)
        touched += sum(1 for s, e, _ in wanted if any(fs < e and s < fe for fs, fe, _ in found))
    p = tp / predicted if predicted else 0.0
    r = tp / gold if gold else 0.0
    return {
        "precision": round(p, 4),
        "recall": round(r, 4),
        "f1": round(2 * p * r / (p + r) if p + r else 0.0, 4),
        "overlap_recall": round(touched / gold if gold else 0.0, 4),
    }


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gsd", type=Path, help="UniversalNER/UNER_Chinese-GSDSIMP snapshot (bare git dir)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--dropout", type=float, default=0.25)
    parser.add_argument("--entity-weight", type=float, default=2.0, help="loss weight of entity tags over O")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "zh_ner")
    parser.add_argument(
        "--compare",
        nargs="+",
        metavar="VARIANT",
        help="instead of training, score the tagger in --out with the rules on --split: rules, union, "
        "union-wins, union-person, tagger-names (each optionally @PROBABILITY)",
    )
    parser.add_argument(
        "--split", default="dev", choices=("train", "dev"), help="for --compare (default dev)"
    )
    args = parser.parse_args()
    if args.compare:
        compare(args.out, args.split, args.compare)
        return

    import torch
    from safetensors.numpy import save_file

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    started = time.monotonic()

    train = load_split("train")
    ids = set()
    with (DEVSET / "zh-train.jsonl").open(encoding="utf-8") as handle:
        ids = {json.loads(line)["id"] for line in handle}
    extra = gsd_rest(args.gsd, ids) if args.gsd else []
    dev = load_split("dev")
    examples = [piece for example in train + extra for piece in chunks(example)]
    counts = Counter(ch for text, _ in examples for ch in text)
    characters = sorted(
        (
            ch
            for ch, n in counts.items()
            if n >= MIN_CHAR_COUNT and zh_model.char_class(ch) == zh_model.UNKNOWN
        ),
        key=lambda ch: (-counts[ch], ch),
    )
    vocabulary = {ch: zh_model.FIRST_CHAR_ID + i for i, ch in enumerate(characters)}
    rows = featurize(examples, vocabulary)
    print(
        f"train: {len(train)} devset records + {len(extra)} more GSD training sentences; "
        f"{sum(len(r[0]) for r in rows)} characters, vocabulary {len(characters)}",
        flush=True,
    )

    model = build_model(torch, zh_model.FIRST_CHAR_ID + len(characters), args.dropout)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    weight = torch.full((len(zh_model.TAGS),), args.entity_weight)
    weight[0] = 1.0
    loss_fn = torch.nn.CrossEntropyLoss(weight=weight, ignore_index=-100)
    args.out.mkdir(parents=True, exist_ok=True)
    vocab_path = args.out / zh_model.VOCAB_FILE
    vocab_path.write_text(json.dumps({"characters": characters}, ensure_ascii=False), encoding="utf-8")
    best: tuple[float, int, dict[str, float]] = (-1.0, 0, {})
    history = []
    for epoch in range(1, args.epochs + 1):
        model.train()
        total = 0.0
        for chars, segs, tags, mask in batches(torch, rows, args.batch, rng):
            optimizer.zero_grad()
            logits = model(chars, segs, mask)
            loss = loss_fn(logits.reshape(-1, len(zh_model.TAGS)), tags.reshape(-1))
            loss.backward()
            optimizer.step()
            total += loss.item()
        model.eval()
        candidate = args.out / f"epoch-{epoch}.safetensors"
        save_file(export(model), str(candidate))
        tagger = _load(args.out, candidate, vocab_path)
        figures = span_figures(tagger, dev, zh_model.DEFAULT_MIN_PROBABILITY)
        history.append({"epoch": epoch, "loss": round(total, 2), **figures})
        print(
            f"epoch {epoch}: loss {total:.1f} dev {figures} ({time.monotonic() - started:.0f} s)", flush=True
        )
        if figures["f1"] > best[0]:
            best = (figures["f1"], epoch, figures)
    chosen = args.out / f"epoch-{best[1]}.safetensors"
    final = args.out / zh_model.WEIGHTS_FILE
    final.write_bytes(chosen.read_bytes())
    tagger = _load(args.out, final, vocab_path)
    thresholds = {t: span_figures(tagger, dev, t) for t in (0.3, 0.4, 0.5, 0.6)}
    summary = {
        "chosen_epoch": best[1],
        "dev": best[2],
        "dev_by_threshold": thresholds,
        "history": history,
        "train_records": len(train),
        "extra_gsd_sentences": len(extra),
        "vocabulary": len(characters),
        "hyperparameters": {
            "epochs": args.epochs,
            "lr": args.lr,
            "dropout": args.dropout,
            "entity_weight": args.entity_weight,
            "batch": args.batch,
            "seed": args.seed,
            "char_dim": CHAR_DIM,
            "segment_dim": SEGMENT_DIM,
            "hidden": HIDDEN,
            "dilations": list(zh_model.DILATIONS),
        },
        "weights_sha256": sha256(final),
        "vocab_sha256": sha256(vocab_path),
        "seconds": round(time.monotonic() - started),
    }
    (args.out / "training.json").write_text(
        json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8"
    )
    print(json.dumps({k: v for k, v in summary.items() if k != "history"}, indent=2))


def compare(directory: Path, split: str, variants: list[str]) -> None:
    """Score ways of combining the tagger with the rules on a split (``manage.py desensitize_eval``'s
    scoring, default policy): the tagger loaded from ``directory``."""
    import os

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.conf import settings

    from custody.desensitize import Desensitizer, policy_named
    from custody.desensitize.engine import engine_for
    from custody.desensitize.evaluation import devset_path, load_devset_file, score
    from custody.recognizers import names_zh, zh_entities

    zh_model._STATE["tagger"] = _load(
        directory, directory / zh_model.WEIGHTS_FILE, directory / zh_model.VOCAB_FILE
    )
    records = load_devset_file(devset_path(DEVSET, "zh", split))
    engine = engine_for(settings.SPACY_MODEL)
    rules = [r for r in engine.recognizers if not isinstance(r, zh_model.ChineseModelRecognizer)]
    names = (names_zh.ChineseNameRecognizer, zh_entities.ChineseEntityRecognizer)
    for variant in variants:
        head, _, veto = variant.partition("/")
        kind, _, value = head.partition("@")
        # ``@PROBABILITY[:SPAN_SCORE]``: the tagger's per-character and per-span thresholds.
        char_value, _, span_value = value.partition(":")
        probability = float(char_value) if char_value else zh_model.DEFAULT_MIN_PROBABILITY
        span_score = float(span_value) if span_value else zh_model.MIN_SPAN_SCORE
        # ``/VETO``: the tagger vets the rules' PERSON and LOCATION spans (zh_entities); none without.
        entity_rules = zh_entities.ChineseEntityRecognizer(
            vetted=zh_entities.VETTED_TYPES if veto else frozenset(), veto=float(veto or 0)
        )
        base = [entity_rules if isinstance(r, zh_entities.ChineseEntityRecognizer) else r for r in rules]
        if kind == "rules":
            engine.recognizers = base
        elif kind == "union":
            engine.recognizers = [
                *base,
                zh_model.ChineseModelRecognizer(min_probability=probability, min_span_score=span_score),
            ]
        elif kind == "union-wins":
            engine.recognizers = [
                *base,
                zh_model.ChineseModelRecognizer(
                    score=0.62, min_probability=probability, min_span_score=span_score
                ),
            ]
        elif kind == "tagger-names":
            engine.recognizers = [
                *(r for r in base if not isinstance(r, names)),
                zh_model.ChineseModelRecognizer(
                    score=0.6, min_probability=probability, min_span_score=span_score
                ),
            ]
        elif kind == "union-person":
            engine.recognizers = [
                *base,
                zh_model.ChineseModelRecognizer(
                    types=("PERSON",), min_probability=probability, min_span_score=span_score
                ),
            ]
        else:
            raise SystemExit(f"unknown variant {variant}")
        desensitizer = Desensitizer(policy_named("default"), b"desensitize-eval-key-0123456789")
        started = time.process_time()
        predictions = [
            [(s.start, s.end, s.entity_type) for s in result.spans]
            for result in desensitizer.desensitize_batch([r.text for r in records])
        ]
        cpu = time.process_time() - started
        data = score(records, predictions).to_dict()
        overall = data["overall"]
        by_type = {t: f["span_recall"] for t, f in data["types"].items()}
        by_source = {k: f["precision"] for k, f in data["sources"].items()}
        print(
            json.dumps(
                {
                    "variant": variant,
                    "split": split,
                    **{k: overall[k] for k in ("char_recall", "span_recall", "precision", "non_pii_kept")},
                    "span_recall_by_type": by_type,
                    "precision_by_source": by_source,
                    "records_per_cpu_s": round(len(records) / cpu, 1),
                }
            ),
            flush=True,
        )


def _load(directory: Path, weights: Path, vocab: Path) -> zh_model.ChineseTagger:
    """Load a candidate (hashes taken from the files themselves) from a copy in a temporary folder,
    so that nothing is written next to the shipped files when ``directory`` is theirs."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="zh-ner-") as staging:
        shutil.copy(weights, Path(staging) / zh_model.WEIGHTS_FILE)
        shutil.copy(vocab, Path(staging) / zh_model.VOCAB_FILE)
        return zh_model.ChineseTagger(
            Path(staging), weights_sha256=sha256(weights), vocab_sha256=sha256(vocab)
        )


if __name__ == "__main__":
    main()
