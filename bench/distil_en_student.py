"""Distil a cheaper English tagger from the 6-layer teacher, and score it in the engine on dev.

An experiment of issue 12's seventh round (docs/desensitization.md, "Seventh round"): the shipped
student is the teacher's first 3 layers, frozen, with a new head; it reads 5.3 M multiply-adds per
token, which is most of an English record's CPU on a CPU without native bfloat16. This script
builds a student with fewer layers (``--layers``) and fewer feed-forward units per layer
(``--ffn``, the units kept by their mean |activation| x outgoing weight norm on the train split),
initialised from the teacher's merged weights, and trains **all** its encoder layers and its head
(the embeddings stay the base's) to the teacher's tag probabilities (KL divergence) on the dev
set's train split, plus a lower-cased copy of a third of it. ``--special-tokens 0`` trains and
runs it without [CLS]/[SEP]. It writes ``OUT/adapter.safetensors`` in the form
``custody.recognizers.en_model.EnglishTagger`` loads (whole layers, fp16, and the
``tagger.special_tokens`` flag) and then scores the engine with it on the dev split's English
records and times the tagger alone against the shipped one (CPU per record, one thread).

    .venv/bin/python bench/distil_en_student.py --teacher DIR --out DIR [--layers 2] [--ffn 768]
        [--epochs 12] [--special-tokens 0] [--threads 1]
    .venv/bin/python bench/distil_en_student.py --score-only DIR     # score a student already built

The teacher is the runner-trained 6-layer adapter (sha256 8218f253...e4be7c):
``git show 2e6a883:custody/recognizers/data/en_ner/adapter.safetensors > DIR/adapter.safetensors``.
Nothing here is shipped; the figures it printed are in docs/desensitization.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TRAIN = ROOT / "bench/data/devset/en-train.jsonl"
DEV = ROOT / "bench/data/devset/en-dev.jsonl"
SEED = 7
BATCH = 32


def padded(torch: Any, chunk: list[list[int]], prefix: list[int], suffix: list[int]) -> tuple[Any, Any]:
    width = max(len(p) for p in chunk) + len(prefix) + len(suffix)
    ids = torch.zeros((len(chunk), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, piece in enumerate(chunk):
        tokens = [*prefix, *piece, *suffix]
        ids[row, : len(tokens)] = torch.tensor(tokens)
        mask[row, : len(tokens)] = 1
    return ids, mask


def distil(args: argparse.Namespace) -> Path:
    import torch
    from safetensors.torch import save_file
    from transformers import BertModel

    from custody.recognizers.en_model import SPECIAL_TOKENS_KEY, EnglishTagger, sha256_file

    torch.manual_seed(SEED)
    rng = random.Random(SEED)
    torch.set_num_threads(args.threads)
    # float32 whatever the CPU, as bench/train_en_ner.py's distillation: the student starts from the
    # teacher's weights and the states are read outside the tagger's bfloat16 autocast.
    teacher = EnglishTagger(
        args.teacher,
        adapter_sha256=sha256_file(args.teacher / "adapter.safetensors"),
        threads=args.threads,
        precision="float32",
    )
    texts = [json.loads(line)["text"] for line in TRAIN.read_text().splitlines() if line.strip()]
    texts += [t.lower() for t in rng.sample(texts, len(texts) // 3)]
    # The windows the tagger itself reads (126 word pieces, stride 96).
    pieces = [window.ids for window in teacher._windows(texts)]
    cls, sep = int(teacher.cls or 0), int(teacher.sep or 0)
    layers = args.layers
    layer_modules = teacher.encoder.encoder.layer
    importance = [torch.zeros(layer_modules[0].intermediate.dense.out_features) for _ in range(layers)]
    activations: dict[int, Any] = {}
    hooks = [
        layer_modules[i].intermediate.register_forward_hook(
            lambda _m, _i, out, i=i: activations.__setitem__(i, out)
        )
        for i in range(layers)
    ]
    targets: list[Any] = [None] * len(pieces)
    order = sorted(range(len(pieces)), key=lambda i: len(pieces[i]))
    started = time.perf_counter()
    with torch.inference_mode():
        for begin in range(0, len(order), 64):
            rows = order[begin : begin + 64]
            ids, mask = padded(torch, [pieces[i] for i in rows], [cls], [sep])
            hidden = teacher.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
            soft = teacher.head(hidden).softmax(dim=-1)
            for i in range(layers):
                outgoing = layer_modules[i].output.dense.weight.norm(dim=0)
                importance[i] += (activations[i].abs() * mask[..., None]).sum((0, 1)) * outgoing
            for row, i in enumerate(rows):
                targets[i] = soft[row, 1 : len(pieces[i]) + 1].clone()
    for hook in hooks:
        hook.remove()
    count = sum(map(len, pieces))
    print(f"teacher: {len(pieces)} windows, {count} tokens, {time.perf_counter() - started:.0f} s")

    config = teacher.encoder.config.__class__.from_dict(teacher.encoder.config.to_dict())
    config.num_hidden_layers = layers
    config.intermediate_size = args.ffn
    student = BertModel(config, add_pooling_layer=False)
    state = {}
    for key, value in teacher.encoder.state_dict().items():
        if key.startswith("encoder.layer."):
            index = int(key.split(".")[2])
            if index >= layers:
                continue
            keep = importance[index].argsort(descending=True)[: args.ffn].sort().values
            if ".intermediate.dense." in key:
                value = value[keep]
            elif key.endswith(".output.dense.weight") and ".attention." not in key:
                value = value[:, keep]
        state[key] = value.clone()
    student.load_state_dict(state, strict=False)
    head = torch.nn.Linear(config.hidden_size, teacher.head.out_features)
    head.load_state_dict(teacher.head.state_dict())
    for parameter in student.embeddings.parameters():
        parameter.requires_grad = False
    trained = [p for p in student.parameters() if p.requires_grad] + list(head.parameters())
    optimizer = torch.optim.AdamW(trained, lr=args.lr, weight_decay=0.01)
    steps = args.epochs * ((len(pieces) + BATCH - 1) // BATCH)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.lr, total_steps=steps, pct_start=0.1
    )
    prefix, suffix = ([cls], [sep]) if args.special_tokens else ([], [])
    student.train()
    for epoch in range(args.epochs):
        started = time.perf_counter()
        shuffled = sorted(range(len(pieces)), key=lambda i: len(pieces[i]) + rng.random() * 8)
        batches = [shuffled[b : b + BATCH] for b in range(0, len(shuffled), BATCH)]
        rng.shuffle(batches)
        total = 0.0
        for rows in batches:
            chunk = [pieces[i] for i in rows]
            ids, mask = padded(torch, chunk, prefix, suffix)
            hidden = student(input_ids=ids, attention_mask=mask).last_hidden_state
            tokens = torch.cat([hidden[r, len(prefix) : len(prefix) + len(p)] for r, p in enumerate(chunk)])
            log_p = head(tokens).log_softmax(dim=-1)
            loss = torch.nn.functional.kl_div(
                log_p, torch.cat([targets[i] for i in rows]), reduction="batchmean"
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach())
        print(
            f"epoch {epoch}: KL {total / len(batches):.5f}, {time.perf_counter() - started:.0f} s", flush=True
        )
    args.out.mkdir(parents=True, exist_ok=True)
    shipped = {
        k: v.detach().to(torch.float16).contiguous()
        for k, v in student.state_dict().items()
        if k.startswith("encoder.layer.")
    }
    shipped["classifier.weight"] = head.weight.detach().to(torch.float16).contiguous()
    shipped["classifier.bias"] = head.bias.detach().to(torch.float16).contiguous()
    shipped[SPECIAL_TOKENS_KEY] = torch.tensor([int(args.special_tokens)], dtype=torch.int8)
    save_file(shipped, args.out / "adapter.safetensors")
    print(
        f"student: {args.out / 'adapter.safetensors'} sha256 {sha256_file(args.out / 'adapter.safetensors')}"
    )
    return args.out


def score(student_dir: Path) -> None:
    """The engine on the dev split's English records with the student as its tagger, and CPU per record."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    import torch

    from custody.desensitize import Desensitizer, policy_named
    from custody.desensitize.evaluation import load_devset_file
    from custody.desensitize.evaluation import score as score_set
    from custody.recognizers.en_model import DATA_DIR, EnglishTagger, sha256_file

    records = load_devset_file(DEV)
    texts = [r.text for r in records]
    taggers = {
        "shipped": EnglishTagger(threads=1),
        "student": EnglishTagger(
            student_dir, adapter_sha256=sha256_file(student_dir / "adapter.safetensors"), threads=1
        ),
    }
    torch.set_num_threads(1)
    for name, tagger in taggers.items():
        desensitizer = Desensitizer(policy_named("default"), b"distil-en-student-key-0123456789")
        desensitizer._engine = dataclasses.replace(desensitizer.engine, en_tagger=tagger)
        predictions = [
            [(s.start, s.end, s.entity_type) for s in result.spans]
            for begin in range(0, len(texts), 256)
            for result in desensitizer.desensitize_batch(texts[begin : begin + 256])
        ]
        figures = score_set(records, predictions).to_dict()
        best = float("inf")
        for _ in range(3):
            started = time.process_time()
            for begin in range(0, len(texts), 256):
                tagger.tag(texts[begin : begin + 256])
            best = min(best, time.process_time() - started)
        where = DATA_DIR if name == "shipped" else student_dir
        overall = figures["overall"]
        wnut = figures["sources"].get("en/wnut17", {})
        print(
            f"{name} ({where}): dev English char R {overall['char_recall']:.3f} "
            f"span R {overall['span_recall']:.3f} precision {overall['precision']:.3f} "
            f"kept {overall['non_pii_kept']:.3f}; wnut17 span R {wnut.get('span_recall') or 0:.3f}; "
            f"tagger {best / len(texts) * 1e3:.2f} ms CPU per record"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--teacher", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--score-only", type=Path, metavar="DIR")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--ffn", type=int, default=768)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--special-tokens", type=int, choices=(0, 1), default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.score_only:
        score(args.score_only)
        return
    if args.teacher is None or args.out is None:
        parser.error("--teacher and --out are required (or --score-only DIR)")
    score(distil(args))


if __name__ == "__main__":
    main()
