"""``python -m chaos.drills <name> --faults N --seed S --out DIR``: run one crash drill.

Prints the fault schedule first and a one-line summary last; exits 0 when
the checker found no violation, 1 when it found one, 2 when the drill could
not run (a server did not start, a tool is missing).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from chaos.drills.cluster import ClusterError, missing_tools
from chaos.drills.drills import DRILLS, run
from chaos.history import of_kind, read_history


def summary(name: str, out: Path, status: int) -> str:
    """One line from the history: the checker's verdict and the figures it counted."""
    checked = list(of_kind(read_history(out / "history.jsonl"), "checked"))
    if not checked:
        return f"drill {name}: NOT CHECKED (exit {status}); see {out}"
    figures = checked[-1]["figures"]
    violations = len(checked[-1]["violations"])
    return (
        f"drill {name}: {'PASS' if violations == 0 else 'FAIL'}, {violations} violation(s); "
        f"{figures['faults']} fault(s), {figures['faults_with_work_in_flight']} with work in flight, "
        f"{figures['unknown_outcomes']} unknown outcome(s) retried; "
        f"{figures['orders_acknowledged']} order(s) acknowledged, {figures['settlements']} settlement(s); "
        f"the worker exited {figures['worker_exits']} time(s) and was restarted"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos.drills", description="Run a seeded crash drill.")
    parser.add_argument("name", choices=sorted(DRILLS))
    parser.add_argument("--faults", type=int, default=3, help="how many faults to strike (default 3)")
    parser.add_argument("--seed", type=int, default=1, help="the seed of the fault schedule (replay with it)")
    parser.add_argument(
        "--out", type=Path, required=True, help="an empty folder for the run (history, cluster)"
    )
    args = parser.parse_args(argv)
    missing = missing_tools()
    if missing:
        print(f"cannot run a drill: missing {', '.join(missing)}", file=sys.stderr)
        return 2
    out = args.out.resolve()
    try:
        status = run(args.name, faults=args.faults, seed=args.seed, out=out)
    except ClusterError as exc:
        print(f"drill {args.name}: could not run: {exc}", file=sys.stderr)
        return 2
    print(summary(args.name, out, status), flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
