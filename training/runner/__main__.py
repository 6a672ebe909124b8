"""Command line (see README.md beside this file):

    python -m training.runner train --spec SPEC.json --out DIR < records.jsonl
    python -m training.runner validate-base --dir DIR [--max-bytes N]
    python -m training.runner generate --spec SPEC.json   (records out as events: generate_model.py)
    python -m training.runner gate --model DIR --spec SPEC.json --canaries CANARIES.json [--probes -|FILE]
        [--base DIR]
    python -m training.runner serve --model DIR --task generate|classify [--max-new-tokens N] < prompts.jsonl

Events go to stdout as JSON lines. Exit codes: 0 done, 2 invalid spec, 3 unusable input,
4 release gate failed.
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

from training.runner.bases import DEFAULT_MAX_BYTES
from training.runner.canaries import parse_canaries
from training.runner.data import InputError, read_records
from training.runner.spec import Spec, SpecError, parse_spec

EXIT_SPEC = 2
EXIT_INPUT = 3
EXIT_GATE = 4


def emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def _error(field: str, detail: str, code: int) -> int:
    emit({"event": "error", "field": field, "detail": detail})
    return code


def _load_spec(spec_path: Path) -> Spec:
    try:
        raw = json.loads(spec_path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        raise SpecError("spec", "cannot read the spec as JSON") from None
    return parse_spec(raw)


def train_command(spec_path: Path, out_dir: Path) -> int:
    try:
        spec = _load_spec(spec_path)
    except SpecError as error:
        return _error(error.field, error.detail, EXIT_SPEC)
    if spec.template == "valuation":
        return value_command(spec, out_dir)
    try:
        records = read_records(sys.stdin.buffer)
        if spec.devices > 1:
            from training.runner.distributed import train_ranks

            return train_ranks(spec, records, out_dir, emit)
        # Imported late: torch and transformers load only once the spec and input are sound.
        from training.runner.train import train

        emit(train(spec, records, out_dir, emit))
    except InputError as error:
        return _error(error.field, error.detail, EXIT_INPUT)
    return 0


def value_command(spec: Spec, out_dir: Path) -> int:
    """The valuation template: its records carry labels, groups and splits (valuation.py)."""
    from training.runner.valuation import read_items, value

    try:
        emit(value(spec, read_items(sys.stdin.buffer), out_dir, emit))
    except InputError as error:
        return _error(error.field, error.detail, EXIT_INPUT)
    return 0


def generate_command(spec_path: Path) -> int:
    """The generate template (generate.py): records leave only as events on stdout."""
    from training.runner.generate import parse_generation

    try:
        raw = json.loads(spec_path.read_text())
        spec = parse_generation(raw)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return _error("spec", "cannot read the spec as JSON", EXIT_SPEC)
    except SpecError as error:
        return _error(error.field, error.detail, EXIT_SPEC)
    try:
        # Imported late: torch and transformers load only once the spec is sound.
        from training.runner.generate_model import generate

        emit(generate(spec, emit))
    except InputError as error:
        return _error(error.field, error.detail, EXIT_INPUT)
    return 0


def validate_base_command(directory: Path, max_bytes: int) -> int:
    from training.runner.bases import validate_base

    event = validate_base(directory, max_bytes=max_bytes)
    emit(event)
    return 0 if event["ok"] else EXIT_INPUT


def _probes(source: str) -> list[str]:
    """Probe texts: JSON lines {"text"} on stdin for "-", else a file {"probes": [{"text"}]}."""
    if source == "-":
        return [record.text for record in read_records(sys.stdin.buffer)] if not sys.stdin.isatty() else []
    try:
        document = json.loads(Path(source).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        raise InputError("probes", "cannot read the probes file as JSON") from None
    probes = document.get("probes") if isinstance(document, dict) else None
    if not isinstance(probes, list) or not all(
        isinstance(p, dict) and isinstance(p.get("text"), str) for p in probes
    ):
        raise InputError("probes", "must be an object with a list 'probes' of {\"text\": str}")
    return [probe["text"] for probe in probes]


def gate_command(
    model_dir: Path, spec_path: Path, canaries_path: Path, probes_source: str, base_dir: Path | None = None
) -> int:
    try:
        spec = _load_spec(spec_path)
        if spec.gate is None:
            raise SpecError("gate", "is required for the release gate")
    except SpecError as error:
        return _error(error.field, error.detail, EXIT_SPEC)
    try:
        try:
            canaries = parse_canaries(json.loads(canaries_path.read_text()))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            raise InputError("canaries", "cannot read the canaries file as JSON") from None
        except ValueError as error:
            raise InputError("canaries", str(error)) from None
        try:
            probes = _probes(probes_source)
        except InputError as error:
            if error.detail != "no records on stdin":
                raise
            probes = []
    except InputError as error:
        return _error(error.field, error.detail, EXIT_INPUT)
    from training.runner.gate import gate, gate_refusal

    try:
        event = gate(spec, model_dir, canaries, probes, base_dir=base_dir)
    except InputError as error:
        event = gate_refusal(f"the gate could not evaluate the model ({error.field})")
    except Exception as error:  # noqa: BLE001 - a crafted model fails in many ways: refuse, never pass
        event = gate_refusal(f"the gate could not evaluate the model ({type(error).__name__})")
    emit(event)
    return 0 if event["passed"] else EXIT_GATE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.runner")
    commands = parser.add_subparsers(dest="command", required=True)
    train_parser = commands.add_parser("train", help="fine-tune on JSON-lines records read from stdin")
    train_parser.add_argument("--spec", type=Path, required=True)
    train_parser.add_argument("--out", type=Path, required=True)
    base_parser = commands.add_parser("validate-base", help="check and load an uploaded base directory")
    base_parser.add_argument("--dir", type=Path, required=True)
    base_parser.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES)
    gate_parser = commands.add_parser("gate", help="release gate: canary exposure and verbatim probes")
    gate_parser.add_argument("--model", type=Path, required=True)
    gate_parser.add_argument("--spec", type=Path, required=True)
    gate_parser.add_argument("--canaries", type=Path, required=True)
    gate_parser.add_argument("--probes", default="-", help="'-' (stdin JSON lines, default) or a JSON file")
    gate_parser.add_argument(
        "--base", type=Path, default=None, help="an uploaded base, to compare the update"
    )
    serve_parser = commands.add_parser("serve", help="plug-in inference on a custody model (issue 16)")
    serve_parser.add_argument("--model", type=Path, required=True)
    serve_parser.add_argument("--task", choices=("generate", "classify"), required=True)
    serve_parser.add_argument("--max-new-tokens", type=int, default=32)
    generate_parser = commands.add_parser("generate", help="write synthetic records with a causal LM")
    generate_parser.add_argument("--spec", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "generate":
        return generate_command(args.spec)
    if args.command == "serve":
        from training.runner.serve import serve_command

        return serve_command(args.model, args.task, args.max_new_tokens)
    if args.command == "train":
        return train_command(args.spec, args.out)
    if args.command == "validate-base":
        return validate_base_command(args.dir, args.max_bytes)
    return gate_command(args.model, args.spec, args.canaries, args.probes, args.base)


if __name__ == "__main__":
    sys.exit(main())
