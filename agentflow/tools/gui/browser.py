"""``browser``: a real Chromium per session, driven through Playwright — inside the
session's jail.

Each session is a confined session (:mod:`agentflow.isolation`) with network ``full`` by
default: its supervisor runs Playwright (:mod:`.cdp`), which starts one headless Debian
Chromium (``executable_path``, nothing is downloaded) as the session's uid and talks to
it over ``--remote-debugging-pipe``. There is no DevTools port: no other session, and no
web page, can connect to this browser, and any server process reaches it only through
the session's supervisor socket. Tabs, history and cookies are the same whichever
server process serves a call. Destroy/expiry kills the session's cgroup, Chromium and
its helpers included. Chromium runs with ``--no-sandbox``: its own sandbox cannot nest
inside the jail, and the jail is the sandbox (see :mod:`.chromium`).

URLs are checked by the server before the browser sees them: ``file://`` URLs and plain
paths must lie inside the server's roots (else 1002), and http(s) hosts must be public
(:mod:`..netguard`). Offline pages: requests for URLs stored in the shipped web corpus
(``seeds/web``, ``manifest.jsonl`` of canonical ``https://`` URLs) are answered from the
stored files (bound read-only into the jail), so
``https://docs.python.org/3/library/json.html`` opens with no network. Other network
requests are refused by the browser's request routing unless ``allow_network`` is set;
with ``network: none`` the jail has no route out at all.
"""
from __future__ import annotations

import base64
import json
import secrets
import time
from pathlib import Path
from urllib.parse import urldefrag, urlsplit

from ...isolation import Limits, SupervisorError, SupervisorTimeout
from ...isolation.policy import LIMIT_KEYS
from ..base import (Backend, BackendConfigError, ParamError, SessionFailed, SessionInfo, ToolContext, ToolError,
                    ToolTimeout, resolve_path, tool)
from ..netguard import AddressRefused, FetchError, NetPolicy, UnsafeUrl, check_url, offline_resolver
from .chromium import JAIL_FLAGS, QUIET_FLAGS, find_chromium, font_caches
from .vm import parse_screen_size
from .x11 import MARKER_VAR


_SCHEMES = ("http", "https", "file", "about", "data")
# Chromium has a hundred threads, and the pids controller counts threads.
_DEFAULTS = Limits(memory_mb=3072, max_processes=2048, disk_mb=1024, file_size_mb=256, cpu_seconds=3600,
                   network="full")
_MAX_SCREENSHOT = 48 << 20


class BrowserBackend(Backend):
    name = "browser"
    description = "A headless Chromium per session, driven through Playwright"
    config_keys = frozenset({"chromium", "viewport", "screen_size", "offline_pages", "allow_network",
                             "startup_timeout", "navigation_timeout", "start_url", "allow_private_urls",
                             "allowed_networks"}) | LIMIT_KEYS

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
        offline = [self.offline_dir] if self.offline_dir else []
        self.confine = self.confinement(_DEFAULTS, extra_read_only=[*offline, *font_caches()])

    def warmup(self) -> dict:
        if find_chromium(self.chromium) is None:
            raise BackendConfigError("the browser backend needs Chromium (Debian package 'chromium')")
        try:
            import playwright  # noqa: F401
        except ImportError:
            raise BackendConfigError("the browser backend needs the Python package 'playwright' "
                                     "(pip install 'agentflow[gui]')") from None
        return {"chromium": find_chromium(self.chromium), "offline_pages": len(self._pages()),
                "sandbox": self.confine.describe()}

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
        t0 = time.monotonic()
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(session.workspace), "LANG": "C.UTF-8"}
        try:
            self.confine.start(session, env)
        except Exception as err:  # noqa: BLE001 - any start failure is a 1003
            raise SessionFailed(str(err)) from None
        marker = secrets.token_hex(12)
        session.state["browser"] = {"marker": marker, "viewport": [width, height]}
        launch = {"chromium": chromium, "profile": f"{session.workspace}/.chromium", "viewport": [width, height],
                  "args": [*JAIL_FLAGS, *QUIET_FLAGS, "--hide-scrollbars", "--mute-audio"],
                  "offline_dir": str(self.offline_dir) if self.offline_dir else None,
                  "allow_network": self.allow_network, "timeout_ms": self.startup_timeout * 1000}
        ctx = ToolContext(worker_id=session.worker_id, timeout=self.startup_timeout + 5, max_output_bytes=1 << 16,
                          session=session)
        try:
            self._act(ctx, "start", env={MARKER_VAR: marker}, **launch)
        except (ToolError, SessionFailed) as err:
            self.confine.stop(session)
            raise SessionFailed(f"Chromium did not start: {getattr(err, 'message', err)}") from None
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
        self.confine.stop(session)

    # -- plumbing ------------------------------------------------------------------
    def _act(self, ctx: ToolContext, action: str, *, env: dict | None = None, reply_bytes: int = 0,
             **params) -> dict:
        """Run one browser action in the session's jail (see :mod:`.cdp`); its result.

        Raises:
            ToolTimeout, ToolError: the action timed out or failed; SessionFailed: the
                browser (or its sandbox) is gone.
        """
        session = ctx.session
        cap = reply_bytes or 8 * ctx.max_output_bytes + (1 << 20)
        try:
            supervisor = self.confine.attach(session, max_reply_bytes=cap)
            reply = supervisor.request("browser", ctx.remaining, action=action, timeout=ctx.remaining,
                                       params=params, env=env or {})
        except SupervisorTimeout:
            raise ToolTimeout(f"the browser did not finish within {ctx.timeout:g} s and its sandbox did not "
                              "answer") from None
        except SupervisorError as err:
            raise SessionFailed(f"the browser of session {session.session_id} is no longer running ({err}); "
                                "destroy the session and create a new one") from None
        status, message = reply.get("status"), str(reply.get("message") or "")[:2000]
        result = reply.get("result")
        if status == "ok" and isinstance(result, dict):
            return result
        if status == "timeout":
            raise ToolTimeout(f"the browser did not finish within {ctx.timeout:g} s: {message}")
        if status == "gone":
            raise SessionFailed(f"the browser of session {session.session_id} is no longer running ({message}); "
                                "destroy the session and create a new one")
        if status == "failed":
            data = reply.get("data")
            raise ToolError(message, data if isinstance(data, dict) else {})
        raise ToolError(f"browser error: {message or 'no answer'}")

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
        try:
            result = self._act(ctx, "goto", url=target)
        except ToolError as err:
            if "ERR_INTERNET_DISCONNECTED" in err.message:
                raise ToolError(f"'{url}' is not in the offline corpus and the network is off for this browser",
                                {"url": url}) from None
            raise
        return {**result, "offline_copy": urldefrag(str(result.get("url", "")))[0] in self._pages()}

    @tool("click", "Click an element of the page, found by a CSS 'selector' or by its visible 'text' "
                   "(a link or button label). Waits for any page load it starts; returns the new URL and title.",
          {"properties": {"selector": {"type": "string", "minLength": 1},
                          "text": {"type": "string", "minLength": 1}}},
          default_timeout=30, max_timeout=120)
    def click(self, ctx: ToolContext, selector: str | None = None, text: str | None = None) -> dict:
        if bool(selector) == bool(text):
            raise ParamError("selector", "give exactly one of 'selector' or 'text'")
        return self._act(ctx, "click", selector=selector, text=text)

    @tool("type", "Fill a text field found by CSS 'selector' with 'text' (replacing what it held); "
                  "'submit': true presses Enter afterwards.",
          {"properties": {"selector": {"type": "string", "minLength": 1}, "text": {"type": "string"},
                          "submit": {"type": "boolean"}}, "required": ["selector", "text"]},
          default_timeout=30, max_timeout=120)
    def type(self, ctx: ToolContext, selector: str, text: str, submit: bool = False) -> dict:
        return self._act(ctx, "type", selector=selector, text=text, submit=submit)

    @tool("text", "The visible text of the current page (or of the first element matching 'selector'), "
                  "whitespace cleaned; cut at a size limit (the full size is reported).",
          {"properties": {"selector": {"type": "string", "minLength": 1}}}, default_timeout=20, max_timeout=60)
    def text(self, ctx: ToolContext, selector: str = "body") -> dict:
        return self._act(ctx, "text", selector=selector, max_bytes=ctx.max_output_bytes)

    @tool("screenshot", "Screenshot of the current tab's viewport (or the whole page with full_page) as "
                        "base64 PNG with its width and height.",
          {"properties": {"full_page": {"type": "boolean"}}}, default_timeout=20, max_timeout=60)
    def screenshot(self, ctx: ToolContext, full_page: bool = False) -> dict:
        result = self._act(ctx, "screenshot", reply_bytes=_MAX_SCREENSHOT * 2, full_page=full_page,
                           max_bytes=_MAX_SCREENSHOT)
        try:
            png = base64.b64decode(str(result.get("image", "")), validate=True)
        except ValueError:
            raise ToolError("the browser sent a screenshot that is not base64") from None
        if not png.startswith(b"\x89PNG\r\n\x1a\n") or len(png) < 24:
            raise ToolError("the browser sent a screenshot that is not a PNG")
        width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")  # the IHDR chunk
        return {"image": result["image"], "format": "png", "mime_type": "image/png", "width": width,
                "height": height, "bytes": len(png), "url": result.get("url")}

    @tool("back", "Go back to the previous page of this tab's history.", default_timeout=30, max_timeout=60)
    def back(self, ctx: ToolContext) -> dict:
        return self._act(ctx, "back")

    @tool("links", "The links of the current page: visible text and absolute URL, in page order.",
          {"properties": {"max_links": {"type": "integer", "minimum": 1, "maximum": 1000}}},
          default_timeout=20, max_timeout=60)
    def links(self, ctx: ToolContext, max_links: int = 200) -> dict:
        result = self._act(ctx, "links", max_links=max_links)
        links = result.get("links") if isinstance(result.get("links"), list) else []
        return {"url": result.get("url"), "links": links, "count": len(links)}
