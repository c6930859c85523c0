"""``browser``: a real Chromium per session, driven through Playwright.

Each session owns one headless Debian Chromium (``executable_path``, nothing is
downloaded) started with a DevTools port on loopback; the port, pid and marker are in
``session.state["browser"]``, so any server process connects to it over CDP (see
:mod:`._cdp`) and sees the same tabs, history and cookies. Destroy/expiry ends the
Chromium and all its helper processes.

Offline pages: requests for URLs stored in the shipped web corpus (``seeds/web``,
``manifest.jsonl`` of canonical ``https://`` URLs) are answered from the stored files,
so ``https://docs.python.org/3/library/json.html`` opens with no network. Other
network requests fail unless ``allow_network`` is set; ``file://`` URLs and plain paths
must lie inside the server's roots (else 1002).

Chromium runs as the server's user with ``--no-sandbox`` when that user is root.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
import time
from pathlib import Path
from urllib.parse import urldefrag, urlsplit

from ._cdp import forget, loop_thread
from ._chromium import QUIET_FLAGS, find_chromium, sandbox_flags
from ._x11 import MARKER_VAR, _forget, _same, _ticks, marker_pids
from .base import (Backend, BackendConfigError, ParamError, SessionFailed, SessionInfo, ToolContext, ToolError,
                   ToolTimeout, resolve_path, tool)
from .netguard import AddressRefused, FetchError, NetPolicy, UnsafeUrl, check_url, offline_resolver
from .vm import parse_screen_size

log = logging.getLogger(__name__)

_SCHEMES = ("http", "https", "file", "about", "data")
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


class BrowserBackend(Backend):
    name = "browser"
    description = "A headless Chromium per session, driven through Playwright"
    config_keys = frozenset({"chromium", "viewport", "screen_size", "offline_pages", "allow_network",
                             "startup_timeout", "navigation_timeout", "start_url", "allow_private_urls",
                             "allowed_networks"})

    def check_config(self) -> None:
        super().check_config()
        cfg = self.config
        try:
            self.viewport = parse_screen_size(cfg.get("viewport", cfg.get("screen_size", [1280, 800])),
                                              "resource 'browser': viewport")
            self.startup_timeout = float(cfg.get("startup_timeout", 20))
            self.navigation_timeout = float(cfg.get("navigation_timeout", 20))
            self.net_policy = NetPolicy.from_config(cfg)
        except (TypeError, ValueError) as err:
            raise BackendConfigError(str(err)) from None
        self.chromium = cfg.get("chromium")
        self.allow_network = bool(cfg.get("allow_network", False))
        self.start_url = cfg.get("start_url")
        pages = cfg.get("offline_pages", "seeds/web")
        self.offline_dir = (Path(self.context.project_dir) / pages).resolve() if pages else None
        self._offline: dict[str, Path] | None = None

    def warmup(self) -> dict:
        if find_chromium(self.chromium) is None:
            raise BackendConfigError("the browser backend needs Chromium (Debian package 'chromium')")
        try:
            import playwright  # noqa: F401
        except ImportError:
            raise BackendConfigError("the browser backend needs the Python package 'playwright' "
                                     "(pip install 'agentflow[gui]')") from None
        return {"chromium": find_chromium(self.chromium), "offline_pages": len(self._pages())}

    def _pages(self) -> dict[str, Path]:
        """Canonical URL → stored file of the offline corpus (loaded once per process)."""
        if self._offline is None:
            pages: dict[str, Path] = {}
            manifest = self.offline_dir / "manifest.jsonl" if self.offline_dir else None
            if manifest is not None and manifest.is_file():
                for line in manifest.read_text(encoding="utf-8").splitlines():
                    try:
                        item = json.loads(line)
                        pages[urldefrag(item["url"])[0]] = self.offline_dir / item["file"]
                    except (ValueError, KeyError, TypeError):
                        continue
            self._offline = pages
        return self._offline

    # -- sessions ----------------------------------------------------------------
    def create_session(self, session: SessionInfo) -> None:
        cfg = session.config or {}
        chromium = find_chromium(self.chromium)
        if chromium is None:
            raise SessionFailed("Chromium is not installed (Debian package 'chromium')")
        try:
            width, height = parse_screen_size(cfg.get("viewport", cfg.get("screen_size", self.viewport)),
                                              "config 'viewport'")
        except ValueError as err:
            raise SessionFailed(str(err)) from None
        profile = Path(session.workspace) / ".chromium"
        profile.mkdir(parents=True, exist_ok=True)
        marker = secrets.token_hex(12)
        argv = [chromium, "--headless=new", *sandbox_flags(), *QUIET_FLAGS, "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0", f"--user-data-dir={profile}", f"--window-size={width},{height}",
                "--hide-scrollbars", "--mute-audio", "about:blank"]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(session.workspace),
               "LANG": os.environ.get("LANG", "C.UTF-8"), MARKER_VAR: marker}
        t0 = time.monotonic()
        with open(Path(session.workspace) / ".chromium.log", "wb") as logf:
            proc = subprocess.Popen(argv, env=env, cwd=session.workspace, stdin=subprocess.DEVNULL, stdout=logf,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        _forget(proc)
        session.state["browser"] = {"pid": proc.pid, "ticks": _ticks(proc.pid) or 0, "marker": marker,
                                    "viewport": [width, height]}
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + self.startup_timeout
        while True:
            try:
                port = int(port_file.read_text().split()[0])
                break
            except (OSError, ValueError, IndexError):
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                self.destroy_session(session)
                tail = Path(session.workspace, ".chromium.log").read_text(errors="replace")[-500:]
                raise SessionFailed(f"Chromium did not start: {tail.strip() or 'no output'}")
            time.sleep(0.02)
        session.state["browser"]["cdp_url"] = f"http://127.0.0.1:{port}"
        session.state["browser"]["startup_ms"] = round((time.monotonic() - t0) * 1000, 1)
        url = cfg.get("start_url", self.start_url)
        if url:
            ctx = ToolContext(worker_id=session.worker_id, timeout=self.navigation_timeout + 5,
                              max_output_bytes=1 << 16, session=session)
            try:
                self.goto(ctx, url=str(url))
            except (ToolError, ParamError) as err:
                self.destroy_session(session)
                raise SessionFailed(f"start_url could not be opened: {err}") from None

    def destroy_session(self, session: SessionInfo) -> None:
        state = session.state.get("browser") or {}
        forget(session.session_id)
        marker = state.get("marker")
        for sig in (15, 9):
            pids = set(marker_pids(marker)) if marker else set()
            if state.get("pid") and _same(state["pid"], state.get("ticks", 0)):
                pids.add(state["pid"])
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass
            deadline = time.monotonic() + 2
            while pids and time.monotonic() < deadline and any(_ticks(p) is not None for p in pids):
                time.sleep(0.02)
            from ._x11 import _reap

            _reap()

    # -- plumbing ------------------------------------------------------------------
    def _call(self, ctx: ToolContext, action):
        """Run ``action(page)`` on the session's current tab in this process's loop."""
        session = ctx.session
        state = session.state.get("browser") or {}
        if not state.get("cdp_url") or not _same(state.get("pid", 0), state.get("ticks", 0)):
            raise SessionFailed(f"the browser of session {session.session_id} is no longer running; "
                                "destroy the session and create a new one")
        loop = loop_thread()

        async def run():
            browser = await loop.browser(session.session_id, state["cdp_url"], self._on_connect)
            context = browser.contexts[0]
            pages = [p for p in context.pages if not p.is_closed()]
            page = pages[-1] if pages else await context.new_page()
            width, height = state.get("viewport") or self.viewport
            if page.viewport_size != {"width": width, "height": height}:
                await page.set_viewport_size({"width": width, "height": height})
            page.set_default_timeout(max(1000, (ctx.remaining - 1) * 1000))
            return await action(page)

        from playwright.async_api import Error as PlaywrightError, TimeoutError as PlaywrightTimeout

        try:
            return loop.run(run, ctx.remaining)
        except (TimeoutError, PlaywrightTimeout) as err:
            raise ToolTimeout(f"the browser did not finish within {ctx.timeout:g} s: {_short(err)}") from None
        except PlaywrightError as err:
            raise ToolError(f"browser error: {_short(err)}") from None

    async def _on_connect(self, browser) -> None:
        context = browser.contexts[0]
        await context.route("**/*", self._route)

    async def _route(self, route) -> None:
        request = route.request
        url = urldefrag(request.url)[0]
        stored = self._pages().get(url)
        if stored is not None and stored.is_file():
            await route.fulfill(status=200, body=stored.read_bytes(), content_type="text/html; charset=utf-8",
                                headers={"x-agentflow-offline": "1"})
            return
        scheme, host = urlsplit(url).scheme, urlsplit(url).hostname or ""
        if scheme in ("http", "https") and not self.allow_network and host not in ("127.0.0.1", "localhost", "::1"):
            await route.abort("internetdisconnected")
            return
        await route.continue_()

    def _url(self, url: str) -> str:
        url = url.strip()
        scheme = urlsplit(url).scheme.lower()
        if scheme and len(scheme) > 1:
            if scheme not in _SCHEMES:
                raise ParamError("url", f"scheme '{scheme}' is not allowed (use http, https or a file path)")
            if scheme != "file":
                return url
            path = urlsplit(url).path
        else:
            path = url
        real = resolve_path(path, self.context.roots, "url", base=Path(self.context.project_dir))
        return real.as_uri()

    def _check_address(self, target: str, url: str) -> None:
        """Refuse an http(s) URL whose host is, or resolves to, a non-public address
        (the shared :mod:`.netguard` rules). Chromium resolves again when it connects, so
        this stops the direct forms (loopback literals, ``localhost``, numeric and
        userinfo tricks), not DNS rebinding. With the network off no DNS query is sent."""
        if urlsplit(target).scheme.lower() not in ("http", "https") or urldefrag(target)[0] in self._pages():
            return
        policy = self.net_policy
        if not self.allow_network:
            policy = NetPolicy(policy.allow_private, policy.allowed_networks, offline_resolver)
        try:
            check_url(target, policy)
        except UnsafeUrl as err:
            raise ParamError("url", str(err)) from None
        except AddressRefused as err:
            raise ToolError(str(err), {"url": url, "refused": err.reason, "address": err.address}) from None
        except FetchError:
            pass  # unresolvable here: Chromium reports it, or the offline route refuses it

    # -- tools ---------------------------------------------------------------------
    @tool("goto", "Open a URL in your browser tab (http/https, or a local .html file path). Pages of the "
                  "offline web corpus open without network. Returns the final URL, title and HTTP status.",
          {"properties": {"url": {"type": "string", "minLength": 1, "maxLength": 8000}}, "required": ["url"]},
          default_timeout=30, max_timeout=120)
    def goto(self, ctx: ToolContext, url: str) -> dict:
        target = self._url(url)
        self._check_address(target, url)

        async def action(page):
            response = await page.goto(target, wait_until="load")
            status = response.status if response is not None else None
            if status is None:  # answered by another server process's interception
                status = await page.evaluate(_STATUS_JS)
            return {"url": page.url, "title": await page.title(), "status": status or None,
                    "offline_copy": urldefrag(page.url)[0] in self._pages()}

        try:
            return self._call(ctx, action)
        except ToolError as err:
            if "ERR_INTERNET_DISCONNECTED" in err.message:
                raise ToolError(f"'{url}' is not in the offline corpus and the network is off for this browser",
                                {"url": url}) from None
            raise

    @tool("click", "Click an element of the page, found by a CSS 'selector' or by its visible 'text' "
                   "(a link or button label). Waits for any page load it starts; returns the new URL and title.",
          {"properties": {"selector": {"type": "string", "minLength": 1},
                          "text": {"type": "string", "minLength": 1}}},
          default_timeout=30, max_timeout=120)
    def click(self, ctx: ToolContext, selector: str | None = None, text: str | None = None) -> dict:
        if bool(selector) == bool(text):
            raise ParamError("selector", "give exactly one of 'selector' or 'text'")

        async def action(page):
            before = page.url
            if selector:
                target = page.locator(selector).first
            else:
                link = page.get_by_role("link", name=text).or_(page.get_by_role("button", name=text))
                target = link.first if await link.count() else page.get_by_text(text).first
            if not await target.count():
                raise ToolError(f"no element matches {'selector ' + repr(selector) if selector else 'text ' + repr(text)}",
                                {"url": before})
            await target.click()
            await page.wait_for_load_state("load")
            return {"url": page.url, "title": await page.title(), "navigated": page.url != before}

        return self._call(ctx, action)

    @tool("type", "Fill a text field found by CSS 'selector' with 'text' (replacing what it held); "
                  "'submit': true presses Enter afterwards.",
          {"properties": {"selector": {"type": "string", "minLength": 1}, "text": {"type": "string"},
                          "submit": {"type": "boolean"}}, "required": ["selector", "text"]},
          default_timeout=30, max_timeout=120)
    def type(self, ctx: ToolContext, selector: str, text: str, submit: bool = False) -> dict:
        async def action(page):
            field = page.locator(selector).first
            if not await field.count():
                raise ToolError(f"no element matches selector {selector!r}", {"url": page.url})
            await field.fill(text)
            if submit:
                await field.press("Enter")
                await page.wait_for_load_state("load")
            return {"url": page.url, "title": await page.title(), "typed_chars": len(text)}

        return self._call(ctx, action)

    @tool("text", "The visible text of the current page (or of the first element matching 'selector'), "
                  "whitespace cleaned; cut at a size limit (the full size is reported).",
          {"properties": {"selector": {"type": "string", "minLength": 1}}}, default_timeout=20, max_timeout=60)
    def text(self, ctx: ToolContext, selector: str = "body") -> dict:
        async def action(page):
            node = page.locator(selector).first
            if not await node.count():
                raise ToolError(f"no element matches selector {selector!r}", {"url": page.url})
            return page.url, await page.title(), await node.inner_text()

        url, title, raw = self._call(ctx, action)
        lines = [" ".join(line.split()) for line in raw.splitlines()]
        clean = "\n".join(line for line in lines if line)
        data = clean.encode("utf-8")
        cut = data[:ctx.max_output_bytes].decode("utf-8", "ignore")
        return {"url": url, "title": title, "text": cut, "text_bytes": len(data),
                "text_truncated": len(data) > ctx.max_output_bytes}

    @tool("screenshot", "Screenshot of the current tab's viewport (or the whole page with full_page) as "
                        "base64 PNG with its width and height.",
          {"properties": {"full_page": {"type": "boolean"}}}, default_timeout=20, max_timeout=60)
    def screenshot(self, ctx: ToolContext, full_page: bool = False) -> dict:
        import base64
        import io

        from PIL import Image

        async def action(page):
            return page.url, await page.screenshot(type="png", full_page=full_page)

        url, png = self._call(ctx, action)
        width, height = Image.open(io.BytesIO(png)).size
        return {"image": base64.b64encode(png).decode("ascii"), "format": "png", "mime_type": "image/png",
                "width": width, "height": height, "bytes": len(png), "url": url}

    @tool("back", "Go back to the previous page of this tab's history.", default_timeout=30, max_timeout=60)
    def back(self, ctx: ToolContext) -> dict:
        async def action(page):
            response = await page.go_back(wait_until="load")
            return {"url": page.url, "title": await page.title(), "navigated": response is not None}

        return self._call(ctx, action)

    @tool("links", "The links of the current page: visible text and absolute URL, in page order.",
          {"properties": {"max_links": {"type": "integer", "minimum": 1, "maximum": 1000}}},
          default_timeout=20, max_timeout=60)
    def links(self, ctx: ToolContext, max_links: int = 200) -> dict:
        async def action(page):
            return page.url, await page.evaluate(_LINKS_JS, max_links)

        url, links = self._call(ctx, action)
        return {"url": url, "links": links, "count": len(links)}


def _short(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:500] if text else type(err).__name__
