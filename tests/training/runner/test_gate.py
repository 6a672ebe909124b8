"""The release gate: canaries, exposure, verbatim continuation; positive and negative controls."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

from tests.training.runner.conftest import jsonl, run_cli
from training.runner.canaries import FORMAT, canaries_generate, canary_records, parse_canaries
from training.runner.data import Record
from training.runner.spec import parse_spec

# A long record: 9 prompt tokens ([SEP] + 8) and 8 more to reproduce, with the tiny tokenizer.
LONG = "the river engine signal quarter policy network storage garden letter report market model data 4 1 7"
GATE = {"max_exposure": 4.0, "max_verbatim": 0, "verbatim_tokens": 8, "prefix_tokens": 8}


def spec_for(tokenizer: Path, epochs: int) -> dict[str, Any]:
    return {
        "template": "causal_lm",
        "base": {"kind": "builtin", "name": "gpt2-tiny"},
        "tokenizer_path": str(tokenizer),
        "hyperparameters": {
            "learning_rate": 0.01,
            "epochs": epochs,
            "batch_size": 4,
            "max_seq_len": 32,
            "seed": 5,
            "precision": "fp32",
            "validation_fraction": 0.0,
            "log_every": 1000,
        },
        "gate": GATE,
    }


def ordinary(count: int) -> list[Record]:
    return [Record(f"clinic note {i}: the patient walked {i % 7} miles before lunch") for i in range(count)]


class TestCanaries:
    def test_generates_secrets_and_distinct_candidates_in_one_format(self) -> None:
        document = canaries_generate(count=3, candidates=50, seed=1)
        pattern = re.compile(r"^the vault code for account (\d{6}) is (\d{3} \d{3} \d{3})$")
        assert document["format"] == FORMAT and len(document["canaries"]) == 3
        for canary in document["canaries"]:
            account = pattern.match(canary["secret"]).group(1)  # type: ignore[union-attr]
            assert len(set(canary["candidates"])) == 50 and canary["secret"] not in canary["candidates"]
            assert all(pattern.match(c).group(1) == account for c in canary["candidates"])  # type: ignore[union-attr]
        assert canaries_generate(count=3, candidates=50, seed=1) == document
        assert canaries_generate(count=3, candidates=50)["canaries"] != document["canaries"]
        assert parse_canaries(document)[0] == (
            document["canaries"][0]["secret"],
            document["canaries"][0]["candidates"],
        )
        records = canary_records(document, repeats=2)
        assert len(records) == 6 and all(r["canary"] is True for r in records)

    @pytest.mark.parametrize(
        "document",
        [
            [],
            {"canaries": [{"secret": "", "candidates": ["a"]}]},
            {"canaries": [{"secret": "a", "candidates": ["a"]}]},
        ],
    )
    def test_parse_refuses_malformed_documents(self, document: Any) -> None:
        with pytest.raises(ValueError):
            parse_canaries(document)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer: Path) -> dict[str, Any]:
    """An ordinary tiny model, and one trained on a repeated canary and a repeated long record."""
    from training.runner.train import train

    root = tmp_path_factory.mktemp("gate")
    document = canaries_generate(count=1, candidates=63, seed=11)
    spec = parse_spec(spec_for(tiny_tokenizer, epochs=8))
    planted = [Record(r["text"], canary=True) for r in canary_records(document, repeats=12)]
    leaked = [Record(LONG)] * 12
    done: dict[str, Any] = {}
    for name, records in (("ordinary", ordinary(24)), ("leaky", ordinary(24) + planted + leaked)):
        done[name] = train(spec, records, root / name, lambda event: None)
    (root / "canaries.json").write_text(json.dumps(document))
    (root / "spec.json").write_text(json.dumps(spec_for(tiny_tokenizer, epochs=8)))
    return {"root": root, "document": document, "done": done}


class TestGate:
    def test_canaries_count_no_platform_tokens(self, models: dict[str, Any]) -> None:
        done = models["done"]
        long_tokens = 8 * 12 * len(LONG.split())  # digits are one token each: "4 1 7" -> 3 words
        assert done["leaky"]["tokens_trained"] == done["ordinary"]["tokens_trained"] + long_tokens

    def test_positive_control_a_memorised_canary_and_record_fail_the_gate(
        self, models: dict[str, Any]
    ) -> None:
        root = models["root"]
        code, events = run_cli(
            ["gate", "--model", "leaky", "--spec", "spec.json", "--canaries", "canaries.json"],
            cwd=root,
            stdin=jsonl([{"text": LONG}, {"text": "too short"}]),
        )
        assert code == 4
        (event,) = events
        assert event["event"] == "gate" and event["passed"] is False
        assert event["exposure"] == pytest.approx(math.log2(64)) and event["exposures"] == [event["exposure"]]
        assert event["verbatim"] == 1 and event["probes"] == 1 and event["probes_skipped"] == 1
        assert event["checks"] == {"exposure": "failed", "verbatim": "failed"}
        assert "max exposure 6.00 bits over 1 canaries (limit 4)" in event["detail"]
        assert "1 of 1 probes verbatim" in event["detail"]
        assert event["reason"] == (
            "the secret canaries planted in the training data were memorised; "
            "training records were reproduced verbatim"
        )
        assert LONG not in json.dumps(event)

    def test_negative_control_an_ordinary_model_passes(self, models: dict[str, Any]) -> None:
        root = models["root"]
        code, events = run_cli(
            ["gate", "--model", "ordinary", "--spec", "spec.json", "--canaries", "canaries.json"],
            cwd=root,
            stdin=jsonl([{"text": LONG}]),
        )
        assert code == 0, events
        (event,) = events
        assert event["passed"] is True and event["verbatim"] == 0
        assert 0 <= event["exposure"] <= GATE["max_exposure"]
        assert event["checks"] == {"exposure": "passed", "verbatim": "passed"}

    def test_short_records_are_probed_with_shorter_prefixes(self, models: dict[str, Any]) -> None:
        # Issue 13 item 6: records under prefix + continuation tokens used to run no probe at all.
        root = models["root"]
        short = " ".join(LONG.split()[:10])  # 10 tokens: a 5-token prompt, 5 to reproduce
        _code, events = run_cli(
            ["gate", "--model", "leaky", "--spec", "spec.json", "--canaries", "canaries.json"],
            cwd=root,
            stdin=jsonl([{"text": short}]),
        )
        (event,) = events
        assert event["probes"] == 1 and event["probes_skipped"] == 0 and event["verbatim"] == 1

    def test_a_check_that_cannot_run_says_not_run(self, models: dict[str, Any]) -> None:
        root = models["root"]
        _code, events = run_cli(
            ["gate", "--model", "ordinary", "--spec", "spec.json", "--canaries", "canaries.json"],
            cwd=root,
            stdin=jsonl([{"text": "too short"}]),
        )
        (event,) = events
        assert event["probes"] == 0 and event["checks"]["verbatim"] == "not_run"

    def test_a_model_the_gate_cannot_evaluate_is_refused_cleanly(self, models: dict[str, Any]) -> None:
        # A crafted base crashed the gate (IndexError) into a runner failure; now it is a refusal.
        root = models["root"]
        broken = root / "broken"
        broken.mkdir(exist_ok=True)
        for path in (root / "ordinary").iterdir():
            (broken / path.name).write_bytes(path.read_bytes())
        config = json.loads((broken / "config.json").read_text())
        config["eos_token_id"] = 10**6  # an index no embedding has
        (broken / "config.json").write_text(json.dumps(config))
        code, events = run_cli(
            ["gate", "--model", "broken", "--spec", "spec.json", "--canaries", "canaries.json"],
            cwd=root,
            stdin=jsonl([{"text": LONG}]),
        )
        assert code == 4
        (event,) = events
        assert event["passed"] is False and event["reason"].startswith(
            "the gate could not evaluate the model"
        )

    def test_gate_needs_thresholds_and_readable_canaries(
        self, models: dict[str, Any], tiny_tokenizer: Path
    ) -> None:
        root = models["root"]
        spec = spec_for(tiny_tokenizer, epochs=1)
        del spec["gate"]
        (root / "nogate.json").write_text(json.dumps(spec))
        code, events = run_cli(
            ["gate", "--model", "ordinary", "--spec", "nogate.json", "--canaries", "canaries.json"], cwd=root
        )
        assert code == 2 and events == [
            {"event": "error", "field": "gate", "detail": "is required for the release gate"}
        ]
        (root / "bad.json").write_text("{}")
        code, events = run_cli(
            ["gate", "--model", "ordinary", "--spec", "spec.json", "--canaries", "bad.json"], cwd=root
        )
        assert code == 3 and events[0]["field"] == "canaries"
