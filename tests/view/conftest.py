"""Fixtures of the viewer tests: a database made by real runs (``scenario``), a generated
10,000-task one (``bigrun``), the real viewer (``agentflow view`` in a subprocess) on
each, and headless Chromium through Playwright.

Screenshots of every page go to ``$AGENTFLOW_TEST_ARTIFACTS/view`` (default:
``agentflow-view-screenshots`` in the system's temp folder; the path is printed at the end); with
``AGENTFLOW_UPDATE_SCREENSHOTS=1`` the README's are also written to ``docs/images/``.
"""
from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from agentflow.tools.gui.chromium import find_chromium
from tests.support.postgres import postgres_url  # noqa: F401 - a fixture (test_postgres.py)
from tests.support.server import REPO, free_port

from . import bigrun, scenario

README_IMAGES = REPO / "docs" / "images"
README_SHOTS = {"runs", "rollout-run", "trajectory", "compare", "synthesis-tree", "tools", "sql"}
"""Screenshots the README shows (``docs/images/view-<name>.png``)."""


class Viewer:
    """A running ``agentflow view``: ``url``, ``get(path)``, ``stop()``."""

    def __init__(self, database_url: str, log: Path, *extra: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.database_url = database_url
        self.log = log
        env = {k: v for k, v in os.environ.items() if k not in ("AGENTFLOW_DATABASE_URL", "AGENTFLOW_CONFIG")}
        self.proc = subprocess.Popen([sys.executable, "-m", "agentflow.cli", "view", "--database-url", database_url,
                                      "--port", str(self.port), *extra], cwd=REPO, env=env,
                                     stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agentflow view exited with {self.proc.returncode}:\n{log.read_text()}")
            try:
                if requests.get(self.url + "/api/health", timeout=1).ok:
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"agentflow view did not answer within 30 s:\n{log.read_text()}")
            time.sleep(0.1)

    def get(self, path: str, **kw) -> requests.Response:
        return requests.get(self.url + path, timeout=30, **kw)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def file_digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> scenario.Built:
    """The database of real runs (``agentflow demo``, two rollouts, a synthesis)."""
    return scenario.build(tmp_path_factory.mktemp("view-home"))


@pytest.fixture(scope="session")
def db_digest(built) -> dict:
    """sha256 of the database file (and its WAL) before any viewer opened it."""
    db = built.home / "agentflow.db"
    return {"db": file_digest(db), "wal": file_digest(Path(f"{db}-wal"))}


@pytest.fixture(scope="session")
def viewer(built, db_digest, tmp_path_factory):
    v = Viewer(built.url, tmp_path_factory.mktemp("viewer") / "view.log")
    yield v
    v.stop()


@pytest.fixture(scope="session")
def big(tmp_path_factory):
    """(the 10,000-task database's URL, a viewer on it)."""
    folder = tmp_path_factory.mktemp("view-big")
    url = bigrun.build(folder / "big.db")
    v = Viewer(url, folder / "view.log")
    yield url, v
    v.stop()


_SHOTS: list[Path] = []


@pytest.fixture(scope="session")
def shots() -> Path:
    root = os.environ.get("AGENTFLOW_TEST_ARTIFACTS")
    # the root conftest points TMPDIR at a folder removed after the run; PYTEST_DEBUG_TEMPROOT is the system's
    folder = Path(root) / "view" if root else Path(os.environ.get("PYTEST_DEBUG_TEMPROOT") or "/tmp") / \
        "agentflow-view-screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    _SHOTS.append(folder)
    return folder


def pytest_terminal_summary(terminalreporter):
    if _SHOTS:
        terminalreporter.write_line(f"viewer screenshots: {_SHOTS[0]}")


@pytest.fixture(scope="session")
def browser():
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("Chromium is not installed (Debian package chromium; see docs/development.md)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


class Page:
    """A browser tab that records console errors and uncaught exceptions (each test
    asserts there were none), and takes named screenshots."""

    def __init__(self, tab, base: str, shots: Path):
        self.tab, self.base, self.shots = tab, base, shots
        self.errors: list[str] = []
        tab.on("console", lambda m: self.errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        tab.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))

    def allow_http_errors(self) -> None:
        """Forget Chromium's "Failed to load resource: … status of 4xx" lines (a test that
        asks for error pages expects them); any other error still fails the test."""
        self.errors = [e for e in self.errors if not re.search(r"Failed to load resource: the server responded "
                                                               r"with a status of 4\d\d", e)]

    def goto(self, path: str):
        response = self.tab.goto(self.base + path)
        assert response is not None
        return response

    def shot(self, name: str, *, readme_full_page: bool = False) -> Path:
        """Save the whole page as ``view-<name>.png``; a README picture (the top of the
        page, or all of it) too when ``AGENTFLOW_UPDATE_SCREENSHOTS=1``."""
        path = self.shots / f"view-{name}.png"
        self.tab.screenshot(path=str(path), full_page=True)
        if name in README_SHOTS and os.environ.get("AGENTFLOW_UPDATE_SCREENSHOTS") == "1":
            README_IMAGES.mkdir(parents=True, exist_ok=True)
            self.tab.evaluate("window.scrollTo(0, 0)")
            self.tab.screenshot(path=str(README_IMAGES / f"view-{name}.png"), full_page=readme_full_page)
        return path


@pytest.fixture
def page(browser, viewer, shots):
    context = browser.new_context(viewport={"width": 1360, "height": 860})
    p = Page(context.new_page(), viewer.url, shots)
    yield p
    context.close()
    assert p.errors == [], p.errors


@pytest.fixture
def big_page(browser, big, shots):
    context = browser.new_context(viewport={"width": 1360, "height": 860})
    p = Page(context.new_page(), big[1].url, shots)
    yield p
    context.close()
    assert p.errors == [], p.errors
