"""The documentation builds: ``mkdocs build --strict`` (broken links, pages missing from
the nav and unknown anchors fail), as CI's docs step does; and the README keeps the
test command CI ends with."""
from __future__ import annotations

import re
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


_SHIPPED = re.compile(r"(?<![\w/.-])((?:configs|seeds|benchmark)/[\w./-]+\.(?:jsonl|json|py|md|html))(?![\w.])")


def _doc_texts() -> dict[str, str]:
    return {str(p.relative_to(REPO)): p.read_text() for p in [REPO / "README.md", *(REPO / "docs").rglob("*.md")]}


def test_every_shipped_file_the_docs_name_exists():
    """A config, seed or benchmark file named in the docs is in the repository (the
    README once named a `configs/sandbox-server/prod.json` that never existed)."""
    missing = sorted({(page, path) for page, text in _doc_texts().items() for path in _SHIPPED.findall(text)
                      if not (REPO / path).exists() and "example" not in path})
    assert missing == []


def test_docs_say_to_activate_the_venv_and_never_guess_a_server_pid():
    texts = _doc_texts()
    assert ". .venv/bin/activate" in texts["README.md"]
    assert not [page for page, text in texts.items() if "pgrep -of" in text or "pgrep -f \"agentflow serve\"" in text]


def test_docs_do_not_call_a_shipped_backend_unshipped():
    for page, text in _doc_texts().items():
        assert "does not ship yet" not in text, page
