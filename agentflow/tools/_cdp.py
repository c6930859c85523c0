"""Private: one Playwright (asyncio) per server process, connected over CDP to the
per-session Chromium processes of the ``browser`` backend.

Playwright objects belong to the event loop that made them, while gunicorn serves
calls on many threads. So each process runs one event-loop thread; tool calls submit
coroutines to it and wait with a timeout. Connections to session browsers are cached
per process and re-made when a browser went away or a worker was recycled.
"""
from __future__ import annotations

import asyncio
import threading
from typing import Any, Awaitable, Callable

__all__ = ["LoopThread", "forget", "loop_thread"]


class LoopThread:
    """An asyncio loop on a daemon thread with a started ``async_playwright``."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="agentflow-playwright", daemon=True)
        self._thread.start()
        self.playwright = None
        self.browsers: dict[str, Any] = {}
        """session id → (cdp url, Browser) of this process."""

    def run(self, make: Callable[[], Awaitable], timeout: float):
        """Run ``make()`` on the loop; raise TimeoutError after ``timeout`` seconds."""
        future = asyncio.run_coroutine_threadsafe(self._with_playwright(make), self.loop)
        try:
            return future.result(timeout=max(timeout, 0.05))
        except TimeoutError:
            future.cancel()
            raise

    async def _with_playwright(self, make):
        if self.playwright is None:
            from playwright.async_api import async_playwright

            self.playwright = await async_playwright().start()
        return await make()

    async def browser(self, session_id: str, cdp_url: str, on_connect: Callable[[Any], Awaitable] | None = None):
        """This process's connection to a session's Chromium (connected on first use)."""
        cached = self.browsers.get(session_id)
        if cached is not None and cached[0] == cdp_url and cached[1].is_connected():
            return cached[1]
        browser = await self.playwright.chromium.connect_over_cdp(cdp_url)
        if on_connect is not None:
            await on_connect(browser)
        self.browsers[session_id] = (cdp_url, browser)
        return browser

    async def forget(self, session_id: str) -> None:
        cached = self.browsers.pop(session_id, None)
        if cached is not None:
            try:
                await cached[1].close()
            except Exception:  # noqa: BLE001 - the browser is going away anyway
                pass


_lock = threading.Lock()
_instance: LoopThread | None = None


def loop_thread() -> LoopThread:
    """The process's loop thread, started on first use."""
    global _instance
    with _lock:
        if _instance is None:
            _instance = LoopThread()
        return _instance


def forget(session_id: str, timeout: float = 5.0) -> None:
    """Drop this process's connection to a session's browser, if it has one."""
    inst = _instance
    if inst is not None and session_id in inst.browsers:
        try:
            inst.run(lambda: inst.forget(session_id), timeout)
        except Exception:  # noqa: BLE001 - the browser is being ended anyway
            pass
