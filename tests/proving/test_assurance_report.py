"""``chaos/assurance.py`` refuses a dirty tree, or marks the page loudly, and records the commit."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from chaos import assurance


def git(root: Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True)
    return result.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    git(tmp_path, "init", "-q")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "assurance.md").write_text("old\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git(tmp_path, "add", ".")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@example.test", "commit", "-qm", "one")
    return tmp_path


def test_a_clean_tree_records_its_full_commit(repo):
    assert assurance.main(["--report-only"], root=repo) == 0
    page = (repo / "docs" / "assurance.md").read_text()
    commit = git(repo, "rev-parse", "HEAD")
    assert f"- Commit: `{commit}`" in page
    assert "NOT FROM A CLEAN COMMIT" not in page and "uncommitted" not in page


@pytest.mark.parametrize("change", ["modified", "untracked"])
def test_a_dirty_tree_is_refused_and_the_page_left_alone(repo, capsys, change):
    if change == "modified":
        (repo / "code.py").write_text("x = 2\n")
    else:
        (repo / "new_module.py").write_text("y = 1\n")
    assert assurance.main(["--report-only"], root=repo) == 2
    assert (repo / "docs" / "assurance.md").read_text() == "old\n"
    assert "refusing" in capsys.readouterr().err


def test_allow_dirty_marks_the_top_of_the_page_with_what_changed(repo):
    (repo / "code.py").write_text("x = 2\n")
    assert assurance.main(["--report-only", "--allow-dirty"], root=repo) == 0
    lines = (repo / "docs" / "assurance.md").read_text().splitlines()
    assert lines[0] == "# Assurance figures"
    assert "NOT FROM A CLEAN COMMIT" in lines[2] and "`code.py`" in lines[3]
    assert any("(with uncommitted changes)" in line for line in lines)
