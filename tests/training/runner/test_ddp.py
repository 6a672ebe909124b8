"""DDP on torch's own engine: a 2-process gloo job in the real sandbox against a 1-process run of
the same global batch, the spec's `devices`, and the sandbox walls a multi-process job gets.

Tiny config (a one-layer GPT-2 without dropout, 24 records, 2 epochs): the two sandboxed runs take
seconds on a quiet machine. They run in whichever sandbox this machine has (bubblewrap with the
seccomp filter, else the unshare fallback) and skip, saying why, where neither works.
"""

from __future__ import annotations

import copy
import json
import resource
import shutil
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.training.runner.conftest import jsonl, notes, run_cli
from training import sandbox, seccomp
from training.runner.spec import MAX_DEVICES, SpecError, parse_spec
from training.sandbox import Limits, RunResult, run_runner

SPEC: dict[str, Any] = {
    "template": "causal_lm",
    "base": {"kind": "uploaded", "path": "base"},
    "hyperparameters": {
        "learning_rate": 0.01,
        "epochs": 2,
        "batch_size": 4,
        "max_seq_len": 16,
        "seed": 3,
        "precision": "fp32",
        "validation_fraction": 0.25,
        "log_every": 1,
    },
    "telemetry": {"window_records": 1, "window_tokens": 0},
}
RECORDS = [{"text": r["text"]} for r in notes(24)]


def with_devices(devices: int | None, **extra: Any) -> dict[str, Any]:
    spec = copy.deepcopy(SPEC)
    if devices is not None:
        spec["devices"] = devices
    spec.update(extra)
    return spec


def _sandbox_or_skip() -> str:
    try:
        return sandbox._sandbox_tool()
    except sandbox.SandboxUnavailable as error:
        pytest.skip(f"no sandbox on this machine: {error}")


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer: Path) -> Path:
    """A one-layer GPT-2 with no dropout: one process and two see the same arithmetic."""
    from tokenizers import Tokenizer
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=Tokenizer.from_file(str(tiny_tokenizer)).get_vocab_size(),
        n_positions=64,
        n_layer=1,
        n_head=2,
        n_embd=16,
        eos_token_id=3,
        pad_token_id=0,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    directory = tmp_path_factory.mktemp("ddp-base") / "base"
    GPT2LMHeadModel(config).save_pretrained(directory, safe_serialization=True)
    shutil.copy(tiny_tokenizer, directory / "tokenizer.json")
    return directory


def train_in_sandbox(workdir: Path, base: Path, devices: int) -> RunResult:
    shutil.copytree(base, workdir / "base")
    (workdir / "spec.json").write_text(json.dumps(with_devices(devices)))
    return run_runner(
        ["train", "--spec", "spec.json", "--out", "out"],
        workdir=workdir,
        limits=Limits(memory_bytes=2 * 1024**3, wall_seconds=280, devices=devices),
        stdin_records=RECORDS,
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, base_dir: Path) -> dict[int, tuple[RunResult, Path]]:
    """The same job with 1 and with 2 processes, each in the real sandbox."""
    _sandbox_or_skip()
    out: dict[int, tuple[RunResult, Path]] = {}
    for devices in (1, 2):
        workdir = tmp_path_factory.mktemp(f"ddp-{devices}")
        out[devices] = (train_in_sandbox(workdir, base_dir, devices), workdir)
    return out


def _norm(tensors: dict[str, Any]) -> float:
    return float(sum(float(t.double().pow(2).sum()) for t in tensors.values()) ** 0.5)


def done(result: RunResult) -> dict[str, Any]:
    assert result.exit_code == 0 and result.reason is None, result
    (event,) = [e for e in result.events if e["event"] == "done"]
    return event


class TestTwoProcessGlooJob:
    def test_finishes_and_reports_world_size_2(self, runs: dict[int, tuple[RunResult, Path]]) -> None:
        two = done(runs[2][0])
        assert two["metrics"]["world_size"] == 2 and two["ranks"]["world_size"] == 2
        assert two["ranks"]["backend"] == "gloo" and two["metrics"]["device"] == "cpu"
        one = done(runs[1][0])
        assert one["metrics"]["world_size"] == 1 and "ranks" not in one

    def test_each_rank_trains_its_own_half_every_unit_once(
        self, runs: dict[int, tuple[RunResult, Path]]
    ) -> None:
        ranks = done(runs[2][0])["ranks"]
        units, epochs = ranks["units"], SPEC["hyperparameters"]["epochs"]
        assert units >= 4
        # Disjoint shares that cover the epoch: every unit came to exactly one rank.
        assert ranks["first_epoch_units_covered"] == units
        assert ranks["first_epoch_units_repeated"] == 0
        # Halves: each global batch of 4 is split 2 + 2 (a last odd batch leaves one unit over).
        per_rank = ranks["units_per_rank"]
        assert sum(per_rank) == units * epochs
        assert all(abs(n - units * epochs / 2) <= epochs for n in per_rank), per_rank

    def test_replicas_agree_and_match_one_process_on_the_same_global_batch(
        self, runs: dict[int, tuple[RunResult, Path]], base_dir: Path
    ) -> None:
        from safetensors.torch import load_file

        one, two = done(runs[1][0]), done(runs[2][0])
        assert two["ranks"]["replicas_agree"] is True
        base = load_file(base_dir / "model.safetensors")
        weights_one = load_file(runs[1][1] / "out" / "model.safetensors")
        weights_two = load_file(runs[2][1] / "out" / "model.safetensors")
        assert weights_one.keys() == weights_two.keys()
        moved = max(float((weights_one[k] - base[k]).abs().max()) for k in weights_one if k in base)
        assert moved > 1e-3  # the runs trained: the weights left the base
        # The 2 ranks took the 1-process steps. Averaging two half-batch gradients rounds differently
        # from one mean over the batch, and Adam magnifies that where a gradient is near zero (an
        # absolute bound of 1e-4 on one weight failed once at 1.09e-4), so the distance between
        # the two models is measured against how far training moved them. Measured: 4.4e-5 of the
        # motion; a 1-process run on half the records (what a rank without the all-reduce sees)
        # lands 0.79 of it away.
        apart = _norm({k: weights_one[k] - weights_two[k] for k in weights_one})
        travelled = _norm({k: weights_one[k] - base[k] for k in weights_one if k in base})
        assert apart / travelled < 1e-3, (apart, travelled)
        assert two["metrics"]["train_loss"] == pytest.approx(one["metrics"]["train_loss"], rel=1e-3)
        assert two["tokens_trained"] == one["tokens_trained"] and two["steps"] == one["steps"]

    def test_only_rank_0_reports(self, runs: dict[int, tuple[RunResult, Path]]) -> None:
        kinds = {d: [e["event"] for e in runs[d][0].events] for d in (1, 2)}
        assert kinds[2] == kinds[1]  # no event twice: rank 1 says nothing
        assert sandbox.output_check(runs[2][1] / "out", max_bytes=100 * 1024**2) == []


def test_an_input_error_in_the_ranks_is_reported_once_with_its_exit_code(tmp_path: Path) -> None:
    """Every rank meets the missing base; rank 0 alone says so, and the runner exits 3."""
    (tmp_path / "spec.json").write_text(json.dumps(with_devices(2)))  # no base/ directory
    code, events = run_cli(
        ["train", "--spec", "spec.json", "--out", "out"], cwd=tmp_path, stdin=jsonl(RECORDS)
    )
    assert code == 3, events
    assert [e["event"] for e in events] == ["error"] and events[0]["field"].startswith("base")
    assert not (tmp_path / "out").exists()


class TestDevicesField:
    @pytest.mark.parametrize("value", [0, -1, MAX_DEVICES + 1, "2", 1.5, True, [2]])
    def test_bad_values_are_refused_naming_the_field(self, value: Any) -> None:
        raw = with_devices(None)
        raw["devices"] = value
        with pytest.raises(SpecError) as caught:
            parse_spec(raw)
        assert caught.value.field == "devices"

    def test_defaults_to_one_process(self) -> None:
        assert parse_spec(with_devices(None)).devices == 1
        assert parse_spec(with_devices(2)).devices == 2

    def test_dp_jobs_are_refused_several_processes(self) -> None:
        dp = {"enabled": True, "target_epsilon": 8.0, "delta": 1e-5}
        raw = with_devices(2, dp=dp, template="causal_lm_lora")
        with pytest.raises(SpecError) as caught:
            parse_spec(raw)
        assert caught.value.field == "devices" and "one process" in caught.value.detail
        raw["devices"] = 1
        assert parse_spec(raw).dp is not None


# --- the walls a multi-process job gets -------------------------------------------------------

PROBE = """
    import errno, json, resource, socket
    def attempt(family, kind, proto=0):
        try:
            socket.socket(family, kind, proto).close()
            return "ok"
        except OSError as error:
            return errno.errorcode.get(error.errno, str(error.errno))
    try:
        socket.create_connection(("127.0.0.1", PORT), timeout=3).close()
        outside = "connected"
    except OSError as error:
        outside = type(error).__name__
    try:
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        socket.create_connection(server.getsockname(), timeout=3).close()
        loopback = "ok"
    except OSError as error:
        loopback = errno.errorcode.get(error.errno, str(error.errno))
    print(json.dumps({
        "loopback": loopback,
        "event": "probe",
        "inet": attempt(socket.AF_INET, socket.SOCK_STREAM),
        "inet6": attempt(socket.AF_INET6, socket.SOCK_STREAM),
        "route": attempt(socket.AF_NETLINK, socket.SOCK_RAW, 0),
        "audit": attempt(socket.AF_NETLINK, socket.SOCK_RAW, 9),
        "packet": attempt(socket.AF_PACKET, socket.SOCK_RAW),
        "outside": outside,
        "nproc": resource.getrlimit(resource.RLIMIT_NPROC)[0],
    }))
"""


def probe(workdir: Path, port: int, devices: int) -> dict[str, Any]:
    code = textwrap.dedent(PROBE).replace("PORT", str(port))
    limits = Limits(memory_bytes=512 * 1024**2, wall_seconds=60, max_processes=64, devices=devices)
    result = sandbox._run_sandboxed([sys.executable, "-c", code], workdir=workdir, limits=limits)
    assert result.exit_code == 0, result
    (event,) = result.events
    return event


class TestMultiProcessWalls:
    def test_ranks_reach_their_own_loopback_never_the_host(self, tmp_path: Path, listener: Any) -> None:
        _sandbox_or_skip()
        port, accepted = listener
        event = probe(tmp_path, port, devices=2)
        assert event["loopback"] == "ok"  # where gloo's ranks meet
        assert event["outside"] != "connected" and accepted == []
        # Processes are per rank: two ranks of 64 tasks hold at most 128 together.
        hard = resource.getrlimit(resource.RLIMIT_NPROC)[1]
        assert event["nproc"] == (128 if hard == resource.RLIM_INFINITY else min(128, hard))

    def test_filter_allows_ipv4_and_route_netlink_only_for_ddp(self, tmp_path: Path, listener: Any) -> None:
        if _sandbox_or_skip() != "bwrap" or seccomp.filter_program() is None:
            pytest.skip("the seccomp filter needs bubblewrap on x86_64 or aarch64")
        port, _ = listener
        ddp = probe(tmp_path, port, devices=2)
        assert (ddp["inet"], ddp["route"]) == ("ok", "ok")
        assert ddp["inet6"] == ddp["audit"] == ddp["packet"] == "EPERM"
        one = probe(tmp_path, port, devices=1)
        assert one["inet"] == one["route"] == one["inet6"] == one["packet"] == "EPERM"

    def test_limits_scale_with_the_ranks(self) -> None:
        limits = Limits(memory_bytes=1024**3, wall_seconds=1, max_processes=100, devices=3)
        assert (limits.total_memory_bytes, limits.total_processes) == (3 * 1024**3, 300)
        assert "300" in sandbox._confined(["/bin/true"], limits)
        for machine in seccomp.ARCHITECTURES:
            plain, ddp = seccomp.filter_program(machine), seccomp.filter_program(machine, inet=True)
            assert plain is not None and ddp is not None and len(ddp) == len(plain) + 4 * 8
