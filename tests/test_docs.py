"""The documentation builds: ``mkdocs build --strict`` (broken links, pages missing from
the nav and unknown anchors fail), as CI's docs step does; and the README keeps the
test command CI ends with."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _mkdocs() -> list[str] | None:
    try:
        import mkdocs  # noqa: F401
    except ImportError:
        return [shutil.which("mkdocs")] if shutil.which("mkdocs") else None
    return [sys.executable, "-m", "mkdocs"]


def test_docs_build_strict(tmp_path):
    cmd = _mkdocs()
    if cmd is None:
        pytest.skip("mkdocs is not installed (pip install -e '.[docs]')")
    out = subprocess.run([*cmd, "build", "--strict", "--config-file", str(REPO / "mkdocs.yml"),
                          "--site-dir", str(tmp_path / "site")], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert (tmp_path / "site" / "security" / "index.html").is_file()


def test_every_docs_page_is_in_the_nav():
    nav = (REPO / "mkdocs.yml").read_text()
    pages = sorted(str(p.relative_to(REPO / "docs")) for p in (REPO / "docs").rglob("*.md"))
    assert pages and [p for p in pages if f" {p}\n" not in nav] == []


def test_ci_ends_with_the_readme_test_command():
    last = (REPO / ".ci" / "run").read_text().rstrip("\n").splitlines()[-1]
    assert last in (REPO / "README.md").read_text()
    assert last in (REPO / "docs" / "development.md").read_text()


def test_ci_installs_what_the_docs_list():
    """.ci/run's system packages are exactly the docs' one apt-get line."""
    ci = (REPO / ".ci" / "run").read_text()
    dev = (REPO / "docs" / "development.md").read_text()
    line = next(l for l in dev.splitlines() if l.startswith("sudo apt-get install"))
    packages = line.split("--no-install-recommends", 1)[1].split()
    ci_line = next(l for l in ci.splitlines() if "bubblewrap" in l and "apt" not in l)
    assert ci_line.split() == packages + ["\\"]
    assert "'.[dev,local]'" in dev and "'.[dev,local]'" in ci
