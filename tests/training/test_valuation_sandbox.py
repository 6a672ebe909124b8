"""End to end: a valuation job in bubblewrap with the real MiniLM; only aggregates come out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from training.sandbox import Limits, SandboxUnavailable, run_runner

SPEC: dict[str, Any] = {
    "template": "valuation",
    "base": {"kind": "builtin", "name": "all-minilm-l6-v2"},
    "hyperparameters": {"batch_size": 16, "max_seq_len": 32, "seed": 3},
    "valuation": {"k": 3, "min_group": 10},
}
TOPICS = {
    "weather": "rain and wind are expected over the hills tonight, number {i}",
    "cooking": "simmer the onions in butter before adding the rice, step {i}",
}


def records() -> list[dict[str, Any]]:
    """Contributions C1 (clean, 20), C2 (labels flipped, 12), C3 (4: too small to report alone);
    12 validation records (a trainer's labelled set)."""
    rows: list[dict[str, Any]] = []
    for i in range(24):
        topic = ("weather", "cooking")[i % 2]
        group = "C1" if i < 20 else "C3"
        rows.append({"id": f"r{i}", "text": TOPICS[topic].format(i=i), "label": topic, "group": group})
    for i in range(24, 36):
        topic, wrong = (("weather", "cooking"), ("cooking", "weather"))[i % 2]
        rows.append({"id": f"r{i}", "text": TOPICS[topic].format(i=i), "label": wrong, "group": "C2"})
    for i in range(36, 48):
        topic = ("weather", "cooking")[i % 2]
        rows.append({"text": TOPICS[topic].format(i=i), "label": topic, "split": "validation"})
    return rows


def run(tmp_path: Path, spec: dict[str, Any], rows: list[dict[str, Any]]) -> Any:
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    try:
        return run_runner(
            ["train", "--spec", "spec.json", "--out", "out"],
            workdir=tmp_path,
            limits=Limits(memory_bytes=3 * 1024**3, wall_seconds=280),
            stdin_records=rows,
        )
    except SandboxUnavailable as error:
        pytest.skip(f"no sandbox on this machine: {error}")


def test_a_valuation_job_reports_aggregates_only(tmp_path: Path) -> None:
    result = run(tmp_path, SPEC, records())
    assert result.exit_code == 0 and result.reason is None, result
    done = result.events[-1]
    assert done["event"] == "done" and done["tokens_trained"] == 0 and done["epsilon_spent"] is None
    valuation = done["valuation"]
    groups = valuation["groups"]
    assert set(groups) == {"C1", "C2"} and valuation["suppressed_records"] == 4
    assert groups["C1"]["count"] == 20 and groups["C1"]["sum"] > 0 > groups["C2"]["sum"]
    assert min(b["count"] for b in valuation["histogram"]) >= 10
    assert valuation["summary"]["count"] == 36 and valuation["summary"]["validation_records"] == 12
    # Nothing per record in the events: no text, no id; the flags stay in the work directory.
    printed = json.dumps(result.events)
    assert "onions" not in printed and "hills" not in printed and '"r2' not in printed
    flags = json.loads((tmp_path / "out" / "flags.json").read_text())["ids"]
    assert set(flags) <= {f"r{i}" for i in range(24, 36)}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["flags.json"]


def test_records_without_labels_are_refused_by_line(tmp_path: Path) -> None:
    rows = records()
    del rows[5]["label"]
    result = run(tmp_path, SPEC, rows)
    assert result.exit_code == 3
    assert result.events[-1] == {
        "event": "error",
        "field": "records",
        "detail": "line 6: valuation needs a string 'label'",
    }


def test_a_bad_valuation_block_is_a_spec_error(tmp_path: Path) -> None:
    result = run(tmp_path, {**SPEC, "valuation": {"min_group": 1}}, records())
    assert result.exit_code == 2 and result.events[-1]["field"] == "valuation.min_group"
