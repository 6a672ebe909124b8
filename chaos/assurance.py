"""Run the proof profiles and write docs/assurance.md with their figures, the date and the commit.

``make proof`` calls this. It runs ``pytest -m proof`` (the hostile-upload
corpus, the API fuzzing, the crash drills and every other test marked
``proof``), reads the figures the proving tests leave in
``var/test-output/proving/``, and writes ``docs/assurance.md``. The page is
written whether or not the run passed, and says which; the exit status is
pytest's.

The figures stand for a commit, so the script refuses a working tree with
uncommitted changes (tracked or untracked, ``.gitignore`` aside) before it runs
anything. ``--allow-dirty`` runs anyway and marks the page at its top, naming
the changed paths.

    python chaos/assurance.py [--allow-dirty] [pytest arguments...]
    python chaos/assurance.py --report-only   # rewrite the page from the last figures
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ROOT / "var" / "test-output" / "proving"
PAGE = ROOT / "docs" / "assurance.md"


def git(*args: str, root: Path = ROOT) -> str:
    result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
    return result.stdout.strip()


@dataclass(frozen=True)
class Tree:
    """The commit the figures come from, and what differs from it in the working tree."""

    commit: str
    changed: list[str]

    @property
    def dirty(self) -> bool:
        return bool(self.changed) or self.commit == "unknown"


def tree_state(root: Path = ROOT) -> Tree:
    commit = git("rev-parse", "HEAD", root=root) or "unknown"
    status = git("status", "--porcelain", "--untracked-files=all", root=root)
    # "XY path" lines; git() strips the first line's leading blank, so split rather than slice.
    return Tree(commit, [line.split(None, 1)[-1] for line in status.splitlines() if line.strip()])


def dirty_banner(tree: Tree) -> list[str]:
    """The warning a page written from a dirty tree opens with (nothing for a clean one)."""
    if not tree.dirty:
        return []
    shown = ", ".join(f"`{path}`" for path in tree.changed[:20])
    more = f" and {len(tree.changed) - 20} more" if len(tree.changed) > 20 else ""
    return [
        "> **WARNING: NOT FROM A CLEAN COMMIT.** These figures were produced from a working tree",
        f"> that differs from commit `{tree.commit}`: {shown or 'no commit found'}{more}.",
        "> They do not describe any commit; rerun `make proof` on a clean checkout.",
        "",
    ]


def run_proofs(extra: list[str]) -> tuple[int, float]:
    for stale in FIGURES.glob("*.json"):
        stale.unlink()
    command = [sys.executable, "-m", "pytest", "-m", "proof", "--durations=25", *extra]
    print("$", " ".join(command), flush=True)
    started = time.monotonic()
    status = subprocess.run(command, cwd=ROOT, check=False).returncode
    return status, time.monotonic() - started


def load(name: str) -> dict[str, Any] | None:
    path = FIGURES / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _hostile_rows(name: str, label: str) -> list[str]:
    figures = load(name)
    if figures is None:
        return [f"| {label} | not run | | |"]
    failures = len(figures.get("failures") or {})
    extra = []
    if "rss_growth_bytes" in figures:
        extra.append(f"peak RSS growth {figures['rss_growth_bytes'] / 2**20:.0f} MiB")
        extra.append(f"largest Python peak {figures['peak_python_bytes'] / 2**20:.0f} MiB")
    if "database" in figures:
        extra.insert(0, f"on {figures['database']}")
    return [
        f"| {label} | {figures['rejected']} / {figures['total']} | {failures} | {'; '.join(extra)} |",
    ]


def _fuzz_section() -> list[str]:
    figures = load("fuzz-proof") or load("fuzz-quick")
    if figures is None:
        return ["API fuzzing: not run."]
    lines = [
        f"Profile `{figures['profile']}` on {figures.get('database', '?')}: "
        f"{figures['operations']} operations, "
        f"**{figures['requests']:,} requests** as two organisations, "
        f"**{figures['server_errors']} server errors**, {figures['seconds']} s.",
        "",
        "| status | responses |",
        "| --- | --- |",
        *[f"| {status} | {count:,} |" for status, count in figures["statuses"].items()],
    ]
    failures = figures.get("failures") or {}
    if failures:
        lines += ["", "Failures:", ""]
        lines += [f"- `{op}`: {found[0][:200]}" for op, found in failures.items()]
    lenient = figures.get("accepted_invalid_known") or {}
    if lenient:
        lines += [
            "",
            "Invalid data accepted for a known reason (DRF ignores query parameters it cannot use and turns "
            "numbers into strings for string fields):",
            "",
        ]
        lines += [f"- {what}: {count}" for what, count in sorted(lenient.items())]
    return lines


DRILLS = ("web-orders", "postgres-restart", "redis-restart")


def _drill_rows() -> list[str]:
    """One row per crash drill (chaos/drills) and profile that left figures."""
    rows = []
    for profile in ("proof", "quick"):
        for name in DRILLS:
            figures = load(f"drill-{name}-{profile}")
            if figures is None:
                continue
            rows.append(
                f"| {name} | {profile} (seed {figures['seed']}) | {figures['faults']} "
                f"({figures['faults_with_work_in_flight']} with work in flight) | "
                f"{figures['unknown_outcomes']} | {figures['orders_acknowledged']} | "
                f"{figures['settlements']} | {figures['worker_exits']} | **{figures['violations']}** |"
            )
    return rows or ["| not run | | | | | | | |"]


def _exposure_section() -> list[str]:
    """The whole-demo exposure scan (tests/proving/test_no_exposure.py), proof profile first."""
    rows = []
    for profile in ("proof", "quick"):
        figures = load(f"exposure-{profile}")
        if figures is None:
            continue
        channels = figures["channels"]
        places = "; ".join(
            f"{name} {tally['items']:,} ({tally['bytes'] / 2**20:.1f} MiB)"
            for name, tally in channels.items()
        )
        controls = f"{len(figures['controls_found'])} / {len(figures['controls_planted'])}"
        job = figures["job"]
        outcome = job["state"] + (f" ({job['failure_code']})" if job.get("failure_code") else "")
        rows.append(
            f"| {profile} on {figures['database']}, {figures['broker']} broker; demo job {outcome} | "
            f"{figures['sentinels_planted']} ({figures['sentinels_in_preview']} in the preview) | "
            f"{figures['requests']:,} as {figures['users']} users | {places} | "
            f"{figures['bytes'] / 2**20:.0f} MiB | **{len(figures['violations'])}** | {controls} |"
        )
    return rows or ["| not run | | | | | | |"]


def write_page(status: int | None, seconds: float | None, tree: Tree, page: Path = PAGE) -> None:
    dirty = " (with uncommitted changes)" if tree.dirty else ""
    if status is None:
        verdict = "not run by this script (--report-only): the figures are the latest proving-test runs"
    else:
        verdict = "passed" if status == 0 else f"FAILED (pytest exit {status})"
    took = f", {seconds / 60:.1f} min" if seconds is not None else ""
    lines = [
        "# Assurance figures",
        "",
        *dirty_banner(tree),
        "Written by `chaos/assurance.py` (`make proof`); do not edit by hand. The drills",
        "are described in `chaos/README.md`, the threats they answer in `docs/threat-model.md`.",
        "",
        f"- Date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Commit: `{tree.commit}`{dirty}",
        f"- `pytest -m proof`: {verdict}{took}",
        "",
        "## Hostile uploads",
        "",
        "Seeded corpus `chaos/hostile_corpus.py`, through the custody upload API. Refused means a",
        "4xx problem+json with the expected code and a reason (or, on the ingest path, a failed",
        "contribution with its reason), and nothing of the upload left in the database, the blob",
        "store, the key directory or the temp directory.",
        "",
        "| profile | refused / files | failures | notes |",
        "| --- | --- | --- | --- |",
        *_hostile_rows("hostile-proof", "proof, in the request"),
        *_hostile_rows("hostile-ingest-proof", "proof, at ingest"),
        *_hostile_rows("hostile-quick", "quick, in the request"),
        *_hostile_rows("hostile-ingest-quick", "quick, at ingest"),
        "",
        "## API fuzzing (schemathesis)",
        "",
        *_fuzz_section(),
        "",
        "## Crash drills",
        "",
        "`chaos/drills`: the platform on its own Postgres and Redis, a stream of orders over HTTP and",
        "settlements by the worker, faults at seeded moments, then the offline checker (acknowledged",
        "work lost, anything done twice, ledger, audit chain, unfinished work). Worker exits: times the",
        "Celery worker died on its own and was restarted by the drill's supervisor.",
        "",
        "| drill | profile | faults survived | unknown outcomes retried | orders acknowledged "
        "| settlements | worker exits | violations |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        *_drill_rows(),
        "",
        "## No exposure (whole demo)",
        "",
        "`tests/proving/test_no_exposure.py`: the whole demo seed with sentinel tokens planted in the",
        "tickets, its training job run by the real worker and its sale settled, then every channel",
        "scanned (items and bytes read per channel; archives and compressed data unpacked). Hits",
        "counts sentinels found outside the provider's own views and the approved preview; controls",
        "are sentinels planted in plaintext on purpose, one per channel, which the scan must find.",
        "",
        "| profile | sentinels | requests | places scanned | bytes | hits | controls found |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *_exposure_section(),
        "",
    ]
    page.write_text("\n".join(lines))
    print(f"wrote {page}")


def main(argv: list[str], root: Path = ROOT) -> int:
    allow_dirty = "--allow-dirty" in argv
    argv = [arg for arg in argv if arg != "--allow-dirty"]
    tree = tree_state(root)
    if tree.dirty and not allow_dirty:
        print(
            f"refusing: the working tree differs from commit {tree.commit} "
            f"({', '.join(tree.changed[:10]) or 'no commit'}); commit or stash first, "
            "or pass --allow-dirty to write a page marked as such",
            file=sys.stderr,
        )
        return 2
    page = root / "docs" / "assurance.md"
    if argv[:1] == ["--report-only"]:
        write_page(None, None, tree, page)
        return 0
    status, seconds = run_proofs(argv)
    write_page(status, seconds, tree, page)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
