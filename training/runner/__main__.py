"""Command line: `python -m training.runner train --spec SPEC.json --out DIR < records.jsonl`.

Events go to stdout as JSON lines. Exit codes: 0 done, 2 invalid spec, 3 unusable input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from training.runner.data import InputError, read_records
from training.runner.spec import SpecError, parse_spec

EXIT_SPEC = 2
EXIT_INPUT = 3


def emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def _error(field: str, detail: str, code: int) -> int:
    emit({"event": "error", "field": field, "detail": detail})
    return code


def train_command(spec_path: Path, out_dir: Path) -> int:
    try:
        raw = json.loads(spec_path.read_text())
    except (OSError, json.JSONDecodeError):
        return _error("spec", "cannot read the spec as JSON", EXIT_SPEC)
    try:
        spec = parse_spec(raw)
    except SpecError as error:
        return _error(error.field, error.detail, EXIT_SPEC)
    try:
        texts = read_records(sys.stdin.buffer)
        # Imported late: torch and transformers load only once the spec and input are sound.
        from training.runner.train import train

        emit(train(spec, texts, out_dir, emit))
    except InputError as error:
        return _error(error.field, error.detail, EXIT_INPUT)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.runner")
    commands = parser.add_subparsers(dest="command", required=True)
    train_parser = commands.add_parser("train", help="fine-tune on JSON-lines records read from stdin")
    train_parser.add_argument("--spec", type=Path, required=True)
    train_parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    return train_command(args.spec, args.out)


if __name__ == "__main__":
    sys.exit(main())
