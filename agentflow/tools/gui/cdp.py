"""Playwright inside a session's jail: the ``browser`` backend's Chromium and the
actions the tools run on it.

Imported by the session's supervisor (op ``browser``), never by the server. Playwright
launches Chromium with ``--remote-debugging-pipe`` (what ``launch`` does), so the
DevTools protocol runs over two pipes between this process and its Chromium: there is
no DevTools port, on any network namespace, that another session or a web page could
connect to, and the server reaches the browser only through the session's supervisor
socket. Everything here runs as the session, so the server treats its answers as
hostile data (size-capped by the channel, types checked by :mod:`.browser`).

Playwright objects belong to the event loop that made them, while the supervisor serves
each request on a thread of its own: one event-loop thread runs them all.
"""
from __future__ import annotations

import asyncio
import base64
import json
import os
import threading
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import urldefrag, urlsplit

__all__ = ["ActionFailed", "BrowserHost", "LoopThread", "handle"]

_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_STATUS_JS = "(() => { const n = performance.getEntriesByType('navigation')[0]; return n ? n.responseStatus : null; })()"
_LINKS_JS = """(max) => {
  const seen = new Set(), out = [];
  for (const a of document.querySelectorAll('a[href]')) {
    const url = a.href; if (!url || url.startsWith('javascript:') || seen.has(url)) continue;
    seen.add(url); out.push({text: (a.innerText || a.title || '').trim().replace(/\\s+/g, ' ').slice(0, 200), url});
    if (out.length >= max) break;
  }
  return out;
}"""


class ActionFailed(Exception):
    """The action ran and failed in a way the caller should see (no such element…)."""

    def __init__(self, message: str, data: dict | None = None):
        super().__init__(message)
        self.message, self.data = message, data or {}


class BrowserGone(Exception):
    """The session's Chromium is not running (never started, crashed or closed)."""


class LoopThread:
    """An asyncio loop on a daemon thread with a started ``async_playwright``."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="agentflow-playwright", daemon=True)
        self._thread.start()
        self.playwright = None

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


class BrowserHost:
    """The session's one Chromium (a persistent context) and its request routing."""

    def __init__(self):
        self.loop = LoopThread()
        self.context = None
        self.offline: dict[str, Path] = {}
        self.allow_network = False
        self.timeout_ms = 30000.0

    # -- start ---------------------------------------------------------------------
    async def start(self, cfg: dict, env: dict[str, str]) -> dict:
        if self.context is not None:
            return {"started": False}
        self.offline = _load_manifest(cfg.get("offline_dir"))
        self.allow_network = bool(cfg.get("allow_network"))
        width, height = (int(v) for v in cfg["viewport"])
        self.context = await self.loop.playwright.chromium.launch_persistent_context(
            str(cfg["profile"]), executable_path=str(cfg["chromium"]), headless=True,
            args=[str(a) for a in cfg.get("args") or []], env=env, viewport={"width": width, "height": height},
            timeout=float(cfg.get("timeout_ms", 20000)))
        self.context.on("close", lambda _ctx: setattr(self, "context", None))
        await self.context.route("**/*", self._route)
        return {"started": True}

    async def _route(self, route) -> None:
        """Offline corpus pages from their stored files; other http(s) only when the
        network is allowed (loopback stays open for local test pages)."""
        url = urldefrag(route.request.url)[0]
        stored = self.offline.get(url)
        if stored is not None and stored.is_file():
            await route.fulfill(status=200, body=stored.read_bytes(), content_type="text/html; charset=utf-8",
                                headers={"x-agentflow-offline": "1"})
            return
        parts = urlsplit(url)
        if parts.scheme in ("http", "https") and not self.allow_network and (parts.hostname or "") not in _LOOPBACK:
            await route.abort("internetdisconnected")
            return
        await route.continue_()

    async def page(self, timeout: float):
        if self.context is None:
            raise BrowserGone("the browser is not running")
        pages = [p for p in self.context.pages if not p.is_closed()]
        page = pages[-1] if pages else await self.context.new_page()
        page.set_default_timeout(max(1000.0, (timeout - 1) * 1000))
        return page


# -- actions: (page, **params) -> JSON-safe dict ---------------------------------------------
async def _goto(page, url: str) -> dict:
    response = await page.goto(url, wait_until="load")
    status = response.status if response is not None else None
    if status is None:
        status = await page.evaluate(_STATUS_JS)
    return {"url": page.url, "title": await page.title(), "status": status or None}


async def _click(page, selector: str | None = None, text: str | None = None) -> dict:
    before = page.url
    if selector:
        target = page.locator(selector).first
    else:
        link = page.get_by_role("link", name=text).or_(page.get_by_role("button", name=text))
        target = link.first if await link.count() else page.get_by_text(text).first
    if not await target.count():
        raise ActionFailed(f"no element matches {'selector ' + repr(selector) if selector else 'text ' + repr(text)}",
                           {"url": before})
    await target.click()
    await page.wait_for_load_state("load")
    return {"url": page.url, "title": await page.title(), "navigated": page.url != before}


async def _type(page, selector: str, text: str, submit: bool = False) -> dict:
    field = page.locator(selector).first
    if not await field.count():
        raise ActionFailed(f"no element matches selector {selector!r}", {"url": page.url})
    await field.fill(text)
    if submit:
        await field.press("Enter")
        await page.wait_for_load_state("load")
    return {"url": page.url, "title": await page.title(), "typed_chars": len(text)}


async def _text(page, selector: str, max_bytes: int) -> dict:
    node = page.locator(selector).first
    if not await node.count():
        raise ActionFailed(f"no element matches selector {selector!r}", {"url": page.url})
    raw = await node.inner_text()
    lines = (" ".join(line.split()) for line in raw.splitlines())
    data = "\n".join(line for line in lines if line).encode("utf-8")
    return {"url": page.url, "title": await page.title(), "text": data[:max_bytes].decode("utf-8", "ignore"),
            "text_bytes": len(data), "text_truncated": len(data) > max_bytes}


async def _screenshot(page, full_page: bool, max_bytes: int) -> dict:
    png = await page.screenshot(type="png", full_page=full_page)
    if len(png) > max_bytes:
        raise ActionFailed(f"the screenshot is {len(png)} bytes, over the {max_bytes}-byte limit", {"url": page.url})
    return {"url": page.url, "image": base64.b64encode(png).decode("ascii")}


async def _back(page) -> dict:
    response = await page.go_back(wait_until="load")
    return {"url": page.url, "title": await page.title(), "navigated": response is not None}


async def _links(page, max_links: int) -> dict:
    return {"url": page.url, "links": await page.evaluate(_LINKS_JS, int(max_links))}


ACTIONS: dict[str, Callable[..., Awaitable[dict]]] = {
    "goto": _goto, "click": _click, "type": _type, "text": _text, "screenshot": _screenshot, "back": _back,
    "links": _links,
}

_host: BrowserHost | None = None
_host_lock = threading.Lock()


def handle(req: dict, env: dict[str, str], workspace: str) -> dict:
    """One ``browser`` request of the supervisor: ``action`` "start" or one of
    :data:`ACTIONS`, with ``params`` and a ``timeout`` in seconds. Never raises for a
    failed action: ``status`` says what happened."""
    global _host
    from playwright.async_api import Error as PlaywrightError, TimeoutError as PlaywrightTimeout

    with _host_lock:
        if _host is None:
            os.environ.setdefault("HOME", workspace)  # Playwright's driver keeps a cache there
            _host = BrowserHost()
    host, action, timeout = _host, str(req.get("action")), float(req["timeout"])
    params: dict[str, Any] = dict(req.get("params") or {})
    if action != "start" and action not in ACTIONS:
        return {"status": "failed", "message": f"unknown browser action {action!r}"}

    async def make():
        if action == "start":
            return await host.start(params, {**env, **(req.get("env") or {})})
        return await ACTIONS[action](await host.page(timeout), **params)

    try:
        return {"status": "ok", "result": host.loop.run(make, timeout)}
    except ActionFailed as err:
        return {"status": "failed", "message": err.message, "data": err.data}
    except BrowserGone as err:
        return {"status": "gone", "message": str(err)}
    except (TimeoutError, PlaywrightTimeout) as err:
        return {"status": "timeout", "message": _short(err)}
    except PlaywrightError as err:
        gone = host.context is None or "has been closed" in str(err)
        return {"status": "gone" if gone else "error", "message": _short(err)}


def _load_manifest(folder: str | None) -> dict[str, Path]:
    pages: dict[str, Path] = {}
    manifest = Path(folder) / "manifest.jsonl" if folder else None
    if manifest is None or not manifest.is_file():
        return pages
    for line in manifest.read_text(encoding="utf-8").splitlines():
        try:
            item = json.loads(line)
            pages[urldefrag(item["url"])[0]] = Path(folder) / item["file"]
        except (ValueError, KeyError, TypeError):
            continue
    return pages


def _short(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:500] if text else type(err).__name__
