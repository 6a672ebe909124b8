"""Several training processes on one machine: DDP on torch's own engine (torch.distributed).

`train_ranks` forks one process per rank after the records are read (each rank holds the same
records; none is ever written to disk) and waits for them. The ranks meet through a `file://`
store in the sandbox's private /tmp, and talk over the sandbox's own loopback: gloo on CPU, NCCL
when the sandbox has GPUs (one per rank). A multi-process job's seccomp filter allows AF_INET
sockets for that (training/seccomp.py); the network namespace has no interface but loopback.

Every rank builds the same model (same seed) and the same data; each global batch of
`batch_size` units is cut into per-rank shares (`Rank.share`), so every unit is trained exactly
once per epoch across the ranks and the optimizer sees the same global batch as one process
would. Only rank 0 emits events and writes the output directory.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from training.runner.data import InputError, Record
from training.runner.spec import Spec

# A rank that waits this long on the others has lost them (the sandbox's wall clock is the job's).
COLLECTIVE_TIMEOUT = timedelta(minutes=30)
_STOP_SECONDS = 5.0
_REPORT_SECONDS = 10.0  # how long a failed job waits for rank 0's own exit (and error event)


@dataclass(frozen=True)
class Rank:
    """This process's place in the job: rank, world size and backend ('' when alone)."""

    rank: int = 0
    world_size: int = 1
    backend: str = ""

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def share(self, batch: list[int]) -> list[int]:
        """This rank's rows of a global batch: every world_size-th row, starting at its rank."""
        return batch[self.rank :: self.world_size]


SINGLE = Rank()
Emit = Callable[[dict[str, Any]], None]


def backend_for(world_size: int) -> str:
    """NCCL when the sandbox has a GPU per rank; gloo on CPU.

    :raises InputError: GPUs are present but fewer than the ranks asked for.
    """
    if os.environ.get("CUDA_VISIBLE_DEVICES") == "":
        return "gloo"  # the sandbox gave this job no GPU
    # Count through NVML, not the CUDA runtime: the parent must not initialise CUDA before its
    # ranks start (a CUDA context does not survive a fork, and NCCL ranks are spawned anyway).
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    import torch

    if not torch.cuda.is_available():
        return "gloo"
    count = torch.cuda.device_count()
    if count < world_size:
        raise InputError("devices", f"the job asks for {world_size} devices; the sandbox has {count} GPUs")
    return "nccl"


def train_ranks(spec: Spec, records: list[Record], out_dir: Path, emit: Emit) -> int:
    """Train `spec.devices` ranks with DDP; rank 0 emits and writes. Returns the exit code.

    A rank that fails stops the others; the first failure's exit code is returned (rank 0's
    when it failed: it emitted the error event).
    """
    world_size = spec.devices
    try:
        backend = backend_for(world_size)
    except InputError as error:
        emit({"event": "error", "field": error.field, "detail": error.detail})
        return EXIT_INPUT
    store = Path(tempfile.mkdtemp(prefix="ddp-"))
    # gloo: fork, the ranks inherit the records in memory (the parent has run no torch operation,
    # so no thread pool is forked mid-flight). NCCL: spawn, as CUDA requires; the records reach
    # each rank pickled through a pipe. Never through a file.
    context: multiprocessing.context.SpawnContext | multiprocessing.context.ForkContext = (
        multiprocessing.get_context("spawn") if backend == "nccl" else multiprocessing.get_context("fork")
    )
    ranks = [
        context.Process(
            target=_rank_main,
            args=(Rank(rank, world_size, backend), spec, records, out_dir, store / "store"),
            name=f"rank-{rank}",
        )
        for rank in range(world_size)
    ]
    try:
        for process in ranks:
            process.start()
        return _wait(ranks)
    finally:
        for process in ranks:
            if process.is_alive():
                process.kill()
            process.join(timeout=_STOP_SECONDS)
        shutil.rmtree(store, ignore_errors=True)


def _wait(ranks: Sequence[multiprocessing.process.BaseProcess]) -> int:
    """Wait for every rank; on the first failure stop the rest (they would wait on it forever)."""
    running = list(ranks)
    failed: dict[int, int] = {}
    while running and not failed:
        multiprocessing.connection.wait([p.sentinel for p in running])
        for process in [p for p in running if p.exitcode is not None]:
            running.remove(process)
            if process.exitcode != 0:
                failed[ranks.index(process)] = int(process.exitcode or 1)
    if failed:
        # Rank 0 reports for the job: a rank that failed on the job's input (every rank meets the
        # same missing base or bad field) may exit before rank 0 has written its error event, so
        # give rank 0 a moment to finish on its own before the others are stopped.
        if ranks[0] in running:
            ranks[0].join(timeout=_REPORT_SECONDS)
        for process in running:
            with contextlib.suppress(OSError, ValueError):
                os.kill(process.pid or 0, signal.SIGTERM)
        for process in running:
            process.join(timeout=_STOP_SECONDS)
        ranks[0].join(timeout=_STOP_SECONDS)
        main_code = ranks[0].exitcode
        if main_code is not None and main_code not in (0, -signal.SIGTERM):
            return _exit_code(main_code)
        return _exit_code(failed[min(failed)])
    return 0


def _exit_code(code: int) -> int:
    return code if code > 0 else 128 - code


def _rank_main(rank: Rank, spec: Spec, records: list[Record], out_dir: Path, store: Path) -> None:
    """One rank: join the group, train (rank 0 emits and saves), leave. Exits with the runner's code."""
    import torch
    import torch.distributed as dist

    threads = int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
    torch.set_num_threads(max(1, threads // rank.world_size))
    if rank.backend == "nccl":
        torch.cuda.set_device(rank.rank)
    dist.init_process_group(
        backend=rank.backend,
        init_method=f"file://{store}",
        rank=rank.rank,
        world_size=rank.world_size,
        timeout=COLLECTIVE_TIMEOUT,
    )
    code = 0
    try:
        from training.runner.train import train

        done = train(spec, records, out_dir, _emit if rank.main else _silent, rank=rank)
        if rank.main:
            _emit(done)
    except InputError as error:
        if rank.main:
            _emit({"event": "error", "field": error.field, "detail": error.detail})
        code = EXIT_INPUT
    finally:
        with contextlib.suppress(Exception):  # a peer gone already: nothing left to tear down
            dist.destroy_process_group()
    sys.stdout.flush()
    sys.exit(code)


EXIT_INPUT = 3  # as training.runner.__main__


def _emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def _silent(event: dict[str, Any]) -> None:
    """Ranks other than 0 say nothing: rank 0 reports for the job."""
