"""Run the proof profiles and write docs/assurance.md with their figures, the date and the commit.

``make proof`` calls this. It runs ``pytest -m proof`` (the hostile-upload
corpus, the API fuzzing, the crash drills and every other test marked
``proof``), reads the figures the proving tests leave in
``var/test-output/proving/``, and writes ``docs/assurance.md``. The page is
written whether or not the run passed, and says which; the exit status is
pytest's.

    python chaos/assurance.py [pytest arguments...]
    python chaos/assurance.py --report-only   # rewrite the page from the last figures
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ROOT / "var" / "test-output" / "proving"
PAGE = ROOT / "docs" / "assurance.md"


def git(*args: str) -> str:
    result = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    return result.stdout.strip()


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


def write_page(status: int | None, seconds: float | None) -> None:
    commit = git("rev-parse", "--short=12", "HEAD") or "unknown"
    dirty = " (with uncommitted changes)" if git("status", "--porcelain", "--untracked-files=no") else ""
    if status is None:
        verdict = "not run by this script (--report-only): the figures are the latest proving-test runs"
    else:
        verdict = "passed" if status == 0 else f"FAILED (pytest exit {status})"
    took = f", {seconds / 60:.1f} min" if seconds is not None else ""
    lines = [
        "# Assurance figures",
        "",
        "Written by `chaos/assurance.py` (`make proof`); do not edit by hand. The drills",
        "are described in `chaos/README.md`, the threats they answer in `docs/threat-model.md`.",
        "",
        f"- Date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Commit: `{commit}`{dirty}",
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
    PAGE.write_text("\n".join(lines))
    print(f"wrote {PAGE.relative_to(ROOT)}")


def main(argv: list[str]) -> int:
    if argv[:1] == ["--report-only"]:
        write_page(None, None)
        return 0
    status, seconds = run_proofs(argv)
    write_page(status, seconds)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
