"""The require-real plugin, run on a throwaway test module in a pytest subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parents[2]

SAMPLE = """
import pytest

pytestmark = []


@pytest.mark.worker
def test_needs_a_worker():
    pytest.skip("no worker here")


@pytest.mark.postgres
@pytest.mark.skip(reason="needs Postgres")
def test_needs_postgres():
    pass


@pytest.mark.skip(reason="unrelated")
def test_skipped_for_another_reason():
    pass


@pytest.mark.worker
@pytest.mark.xfail(reason="known")
def test_expected_failure():
    raise AssertionError


def test_plain():
    assert True
"""

MODULE_SKIP = """
import pytest

pytest.skip("chromium is not installed", allow_module_level=True)
"""


def run_pytest(tmp_path: Path, *, require: bool, files: dict[str, str]) -> subprocess.CompletedProcess[str]:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nmarkers =\n    worker: w\n    postgres: p\n    browser: b\n"
    )
    env = {
        k: v for k, v in os.environ.items() if k not in {"SEALROOM_REQUIRE_REAL", "DJANGO_SETTINGS_MODULE"}
    }
    env["PYTHONPATH"] = str(BASE_DIR)
    if require:
        env["SEALROOM_REQUIRE_REAL"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.plugins.require_real", "-p", "no:cacheprovider", "-q"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


class TestRequireReal:
    def test_lists_real_service_skips_by_module_with_the_reason(self, tmp_path):
        result = run_pytest(tmp_path, require=False, files={"test_sample.py": SAMPLE})
        assert result.returncode == 0, result.stdout
        assert "tests needing real services skipped" in result.stdout
        assert "test_sample.py: 2 skipped [postgres, worker]" in result.stdout
        assert "because: no worker here" in result.stdout
        assert "because: needs Postgres" in result.stdout
        assert "unrelated" not in result.stdout.split("tests needing real services skipped")[1]

    def test_fails_the_session_when_required(self, tmp_path):
        result = run_pytest(tmp_path, require=True, files={"test_sample.py": SAMPLE})
        assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout
        assert "SEALROOM_REQUIRE_REAL=1: these tests needing real services skipped" in result.stdout
        assert "FAILED: 2 skipped" in result.stdout

    def test_a_module_skipped_at_collection_fails_when_required(self, tmp_path):
        result = run_pytest(tmp_path, require=True, files={"test_browser.py": MODULE_SKIP})
        assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout
        assert "test_browser.py: 1 skipped [module]" in result.stdout
        assert "because: chromium is not installed" in result.stdout

    def test_passes_when_nothing_real_skipped(self, tmp_path):
        plain = "import pytest\n\n@pytest.mark.worker\ndef test_ran():\n    assert True\n"
        result = run_pytest(tmp_path, require=True, files={"test_plain.py": plain})
        assert result.returncode == 0, result.stdout
        assert "needing real services" not in result.stdout
