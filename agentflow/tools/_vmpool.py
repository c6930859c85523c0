"""Private: a pool of pre-started displays shared by every server process.

Each waiting display is one JSON file ``<W>x<H>-<number>.json`` under the pool folder.
A process claims one by renaming its file (atomic: exactly one claimer wins), so the
pool needs no lock to be taken from; filling it is serialised by an ``flock``.

A waiting display belongs to the server, not to a session: a watchdog shell ends it
when the server's master process (``AGENTFLOW_MASTER_PID``, else the process that
filled the pool) is gone, so a stopped server leaves no display behind. Claiming a
display ends its watchdog; from then on the session owns it.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import subprocess
import threading
from pathlib import Path
from typing import Callable

from ._x11 import Display, X11Error, _same, _ticks, is_alive, stop_display

log = logging.getLogger(__name__)

_WATCHDOG = 'while kill -0 "$0" 2>/dev/null; do sleep 1; done; kill -TERM "$@" 2>/dev/null'


def owner_pid() -> int:
    """The process whose end ends the pool: gunicorn's master, else this process."""
    try:
        return int(os.environ.get("AGENTFLOW_MASTER_PID", "")) or os.getpid()
    except ValueError:
        return os.getpid()


class DisplayPool:
    """Pre-started displays of one size, kept under ``folder``.

    Args:
        folder: where the pool's entries and lock live (shared by all processes).
        size: ``(width, height)`` of the pooled displays.
        target: how many displays to keep waiting.
        start: builds a ready display (X server and window manager) of a size.
    """

    def __init__(self, folder: Path, size: tuple[int, int], target: int,
                 start: Callable[[int, int], Display]):
        self.folder = folder
        self.size = size
        self.target = target
        self._start = start
        self._refilling = threading.Lock()

    def _entries(self) -> list[Path]:
        prefix = f"{self.size[0]}x{self.size[1]}-"
        try:
            return sorted(p for p in self.folder.iterdir() if p.name.startswith(prefix) and p.suffix == ".json")
        except FileNotFoundError:
            return []

    def waiting(self) -> int:
        return len(self._entries())

    def claim(self) -> Display | None:
        """Take a waiting display (alive, watchdog ended), or None when the pool is empty."""
        for entry in self._entries():
            mine = entry.with_name(f"{entry.name}.claimed-{os.getpid()}-{secrets.token_hex(3)}")
            try:
                os.rename(entry, mine)
            except FileNotFoundError:
                continue  # another process was faster
            try:
                display = Display.from_state(json.loads(mine.read_text()))
            except (OSError, ValueError):
                display = None
            finally:
                mine.unlink(missing_ok=True)
            if display is None:
                continue
            if display.watchdog and _same(*display.watchdog):
                try:
                    os.kill(display.watchdog[0], 15)
                except OSError:
                    pass
            display.watchdog = None
            if is_alive(display):
                return display
            stop_display(display)
        return None

    def fill(self) -> int:
        """Start displays until ``target`` wait; returns how many were started. Only one
        process fills at a time; the others return at once."""
        if self.target <= 0:
            return 0
        self.folder.mkdir(parents=True, exist_ok=True)
        started = 0
        with open(self.folder / ".fill.lock", "a+") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0
            try:
                while self.waiting() < self.target:
                    display = self._start(*self.size)
                    self._guard(display)
                    path = self.folder / f"{self.size[0]}x{self.size[1]}-{display.number}.json"
                    tmp = path.with_suffix(".tmp")
                    tmp.write_text(json.dumps(display.to_state()))
                    os.replace(tmp, path)
                    started += 1
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        return started

    def refill_soon(self) -> None:
        """Fill the pool in a background thread (at most one per process)."""
        if self.target <= 0 or not self._refilling.acquire(blocking=False):
            return

        def run():
            try:
                self.fill()
            except (X11Error, OSError) as err:
                log.warning("refilling the display pool failed: %s", err)
            finally:
                self._refilling.release()

        threading.Thread(target=run, name="agentflow-vm-pool", daemon=True).start()

    def drain(self) -> int:
        """End every waiting display (tests, shutdown)."""
        ended = 0
        while (display := self.claim()) is not None:
            stop_display(display)
            ended += 1
        return ended

    @staticmethod
    def _guard(display: Display) -> None:
        pids = [str(pid) for pid, _, _ in display.pids]
        proc = subprocess.Popen(["sh", "-c", _WATCHDOG, str(owner_pid()), *pids], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
        from ._x11 import _forget

        _forget(proc)
        display.watchdog = [proc.pid, _ticks(proc.pid) or 0]
