"""Private: the tools of the ``vm`` backend (mouse, keyboard, screen, windows).

Kept apart from :mod:`.vm` (sessions, config) to keep both files small; the backend
class combines them. Input goes through ``xdotool`` (XTEST), window lists through
``wmctrl`` (EWMH, which openbox provides); both run inside the session's jail.
"""
from __future__ import annotations

import base64
import time

from ..base import ParamError, ToolContext, ToolError, ToolTimeout, tool
from .x11 import Desktop, X11Error, X11Timeout

_BUTTONS = {"left": "1", "middle": "2", "right": "3"}
_KEY_ALIASES = {
    "enter": "Return", "return": "Return", "esc": "Escape", "escape": "Escape", "backspace": "BackSpace",
    "tab": "Tab", "space": "space", "delete": "Delete", "del": "Delete", "up": "Up", "down": "Down",
    "left": "Left", "right": "Right", "home": "Home", "end": "End", "pageup": "Prior", "page_up": "Prior",
    "pagedown": "Next", "page_down": "Next", "insert": "Insert", "ctrl": "ctrl", "control": "ctrl",
    "alt": "alt", "shift": "shift", "super": "super", "win": "super", "cmd": "super", "meta": "super",
}
_MAX_TYPE_CHARS = 20000


def _xy(name: str, extra: dict | None = None) -> dict:
    props = {
        f"{name}x" if name else "x": {"type": "integer", "description": "Horizontal pixel, 0 = left edge."},
        f"{name}y" if name else "y": {"type": "integer", "description": "Vertical pixel, 0 = top edge."},
    }
    return {**props, **(extra or {})}


_POINT = {"properties": _xy(""), "required": ["x", "y"]}


def _key(name: str) -> str:
    name = name.strip()
    if not name:
        raise ParamError("key", "must not be empty")
    parts = [p for p in name.replace(" ", "").split("+")] if "+" in name and len(name) > 1 else [name]
    return "+".join(_KEY_ALIASES.get(p.lower(), p) for p in parts)


class VmToolsMixin:
    """Tool methods of :class:`agentflow.tools.gui.vm.VmBackend` (needs ``_display``, ``_open``)."""

    # -- plumbing -------------------------------------------------------------------
    def _x(self, ctx: ToolContext, display: Desktop, argv: list[str], param: str = "") -> str:
        if ctx.remaining <= 0:
            raise ToolTimeout("no time left for this call")
        try:
            res = display.run(argv, timeout=ctx.remaining)
        except X11Timeout as err:
            raise ToolTimeout(str(err)) from None
        except X11Error as err:
            raise ToolError(str(err)) from None
        if "No such key name" in res.stderr or "Invalid key" in res.stderr:
            raise ParamError(param or "key", f"unknown key name ({res.stderr.strip().splitlines()[0]}); use X "
                             "keysym names such as Return, Escape, Tab, BackSpace, F5, ctrl+c")
        if res.returncode != 0:
            raise ToolError(f"{argv[0]} failed: {res.stderr.strip()[:500]}", {"exit_code": res.returncode})
        return res.stdout

    def _point(self, display: Desktop, x: int, y: int, prefix: str = "") -> tuple[str, str]:
        for name, value, limit in ((f"{prefix}x", x, display.width), (f"{prefix}y", y, display.height)):
            if not 0 <= value < limit:
                raise ParamError(name, f"{value} is outside the {display.width}x{display.height} screen "
                                       f"(valid: 0 to {limit - 1})")
        return str(x), str(y)

    def _click(self, ctx: ToolContext, x: int, y: int, button: str, repeat: int) -> dict:
        display = self._display(ctx.session)
        px, py = self._point(display, x, y)
        argv = ["xdotool", "mousemove", "--sync", px, py, "click"]
        if repeat > 1:
            argv += ["--repeat", str(repeat), "--delay", "80"]
        self._x(ctx, display, argv + [_BUTTONS[button]])
        return {"x": x, "y": y, "button": button, "clicks": repeat}

    # -- screen ---------------------------------------------------------------------
    @tool("screenshot",
          "Take a screenshot of the whole desktop. Returns a base64 PNG ('image') with its width and "
          "height in pixels; coordinates for click/move/drag are pixels of this image.",
          default_timeout=20, max_timeout=60)
    def screenshot(self, ctx: ToolContext) -> dict:
        display = self._display(ctx.session)
        t0 = time.monotonic()
        try:
            png = display.grab_png(max(0.5, ctx.remaining - 1))
        except X11Timeout as err:
            raise ToolTimeout(str(err)) from None
        except X11Error as err:
            raise ToolError(str(err)) from None
        return {"image": base64.b64encode(png).decode("ascii"), "format": "png", "mime_type": "image/png",
                "width": display.width, "height": display.height, "bytes": len(png),
                "capture_ms": round((time.monotonic() - t0) * 1000, 1)}

    @tool("windows",
          "List the open windows: title, position and size in screen pixels, and which one has the "
          "keyboard focus. Use it to find where to click without a screenshot.",
          default_timeout=10, max_timeout=30)
    def windows(self, ctx: ToolContext) -> dict:
        display = self._display(ctx.session)
        out = self._x(ctx, display, ["wmctrl", "-lG"])
        try:
            active = int(self._x(ctx, display, ["xdotool", "getactivewindow"]).strip() or 0)
        except ToolError:  # nothing focused
            active = 0
        windows = []
        for line in out.splitlines():
            parts = line.split(None, 7)
            if len(parts) < 7:
                continue
            wid, desktop, x, y, w, h = parts[0], parts[1], *map(int, parts[2:6])
            windows.append({"id": wid, "title": parts[7] if len(parts) > 7 else "", "x": x, "y": y,
                            "width": w, "height": h, "desktop": int(desktop), "focused": int(wid, 16) == active})
        return {"windows": windows, "count": len(windows), "screen": {"width": display.width,
                                                                      "height": display.height}}

    # -- mouse ----------------------------------------------------------------------
    @tool("click", "Move the mouse to (x, y) and click a button (default left).",
          {"properties": _xy("", {"button": {"type": "string", "enum": list(_BUTTONS),
                                             "description": "left (default), middle or right."}}),
           "required": ["x", "y"]}, default_timeout=10, max_timeout=30)
    def click(self, ctx: ToolContext, x: int, y: int, button: str = "left") -> dict:
        return self._click(ctx, x, y, button, 1)

    @tool("double_click", "Double-click the left button at (x, y) (e.g. to open an icon or select a word).",
          _POINT, default_timeout=10, max_timeout=30)
    def double_click(self, ctx: ToolContext, x: int, y: int) -> dict:
        return self._click(ctx, x, y, "left", 2)

    @tool("right_click", "Right-click at (x, y), usually to open a context menu.", _POINT,
          default_timeout=10, max_timeout=30)
    def right_click(self, ctx: ToolContext, x: int, y: int) -> dict:
        return self._click(ctx, x, y, "right", 1)

    @tool("move", "Move the mouse pointer to (x, y) without clicking (e.g. to hover).", _POINT,
          default_timeout=10, max_timeout=30)
    def move(self, ctx: ToolContext, x: int, y: int) -> dict:
        display = self._display(ctx.session)
        self._x(ctx, display, ["xdotool", "mousemove", "--sync", *self._point(display, x, y)])
        return {"x": x, "y": y}

    @tool("drag", "Press the left button at (start_x, start_y), move to (end_x, end_y) and release "
                  "(move windows, select text, drag files).",
          {"properties": {**_xy("start_"), **_xy("end_")}, "required": ["start_x", "start_y", "end_x", "end_y"]},
          default_timeout=15, max_timeout=30)
    def drag(self, ctx: ToolContext, start_x: int, start_y: int, end_x: int, end_y: int) -> dict:
        display = self._display(ctx.session)
        sx, sy = self._point(display, start_x, start_y, "start_")
        ex, ey = self._point(display, end_x, end_y, "end_")
        mx, my = str((start_x + end_x) // 2), str((start_y + end_y) // 2)
        self._x(ctx, display, ["xdotool", "mousemove", "--sync", sx, sy, "mousedown", "1", "sleep", "0.1",
                               "mousemove", "--sync", mx, my, "sleep", "0.05", "mousemove", "--sync", ex, ey,
                               "sleep", "0.1", "mouseup", "1"])
        return {"start": [start_x, start_y], "end": [end_x, end_y]}

    @tool("scroll", "Scroll the mouse wheel at (x, y): positive clicks scroll down, negative scroll up.",
          {"properties": _xy("", {"clicks": {"type": "integer", "minimum": -100, "maximum": 100,
                                             "description": "Wheel steps; > 0 down, < 0 up."}}),
           "required": ["x", "y", "clicks"]}, default_timeout=15, max_timeout=30)
    def scroll(self, ctx: ToolContext, x: int, y: int, clicks: int) -> dict:
        display = self._display(ctx.session)
        px, py = self._point(display, x, y)
        if clicks:
            self._x(ctx, display, ["xdotool", "mousemove", "--sync", px, py, "click", "--repeat",
                                   str(abs(clicks)), "--delay", "30", "5" if clicks > 0 else "4"])
        return {"x": x, "y": y, "clicks": clicks}

    # -- keyboard -------------------------------------------------------------------
    @tool("type", "Type text with the keyboard into the focused window (click it first). A newline "
                  "presses Enter, so 'ls -l\\n' runs a command in the terminal.",
          {"properties": {"text": {"type": "string", "minLength": 1, "maxLength": _MAX_TYPE_CHARS}},
           "required": ["text"]}, default_timeout=30, max_timeout=300)
    def type(self, ctx: ToolContext, text: str) -> dict:
        display = self._display(ctx.session)
        self._x(ctx, display, ["xdotool", "type", "--delay", "8", "--", text], "text")
        return {"typed_chars": len(text)}

    @tool("key", "Press one key or a combination, named as X keysyms: Return, Escape, Tab, BackSpace, "
                 "Up, F5, ctrl+c, ctrl+shift+t, alt+F4.",
          {"properties": {"key": {"type": "string", "minLength": 1}}, "required": ["key"]},
          default_timeout=10, max_timeout=30)
    def key(self, ctx: ToolContext, key: str) -> dict:
        display = self._display(ctx.session)
        combo = _key(key)
        self._x(ctx, display, ["xdotool", "key", "--clearmodifiers", combo], "key")
        return {"key": combo}

    @tool("hotkey", "Press keys together, e.g. [\"ctrl\", \"c\"] or [\"alt\", \"F4\"].",
          {"properties": {"keys": {"type": "array", "items": {"type": "string", "minLength": 1},
                                   "minItems": 1, "maxItems": 6}}, "required": ["keys"]},
          default_timeout=10, max_timeout=30)
    def hotkey(self, ctx: ToolContext, keys: list[str]) -> dict:
        display = self._display(ctx.session)
        combo = "+".join(_key(k) for k in keys)
        self._x(ctx, display, ["xdotool", "key", "--clearmodifiers", combo], "keys")
        return {"keys": combo}

    # -- other ----------------------------------------------------------------------
    @tool("wait", "Wait a number of seconds (for an app to start or a page to load).",
          {"properties": {"seconds": {"type": "number", "minimum": 0, "maximum": 60}}, "required": ["seconds"]},
          default_timeout=65, max_timeout=65)
    def wait(self, ctx: ToolContext, seconds: float) -> dict:
        self._display(ctx.session)
        time.sleep(min(seconds, ctx.remaining))
        return {"waited_seconds": seconds}

    @tool("open", "Open an application or a web page on the desktop: 'terminal', 'browser', an installed "
                  "program with arguments (e.g. 'xterm -e top'), a URL, or an .html file in the workspace. "
                  "Returns the windows that appeared.",
          {"properties": {"app_or_url": {"type": "string", "minLength": 1, "maxLength": 4000},
                          "wait_seconds": {"type": "number", "minimum": 0, "maximum": 30,
                                           "description": "How long to wait for a new window (default 8)."}},
           "required": ["app_or_url"]}, default_timeout=40, max_timeout=60)
    def open(self, ctx: ToolContext, app_or_url: str, wait_seconds: float = 8) -> dict:
        session = ctx.session
        display = self._display(session)
        before = {w["id"] for w in self.windows(ctx)["windows"]}
        try:
            pid, argv = self._open(display, app_or_url, session.workspace)
        except ValueError as err:
            raise ParamError("app_or_url", str(err)) from None
        session.state["display"] = display.display.to_state()  # the new pid
        deadline = time.monotonic() + min(wait_seconds, max(0.0, ctx.remaining - 2))
        new: list = []
        while time.monotonic() < deadline:
            new = [w for w in self.windows(ctx)["windows"] if w["id"] not in before]
            if new:
                break
            time.sleep(0.1)
        return {"pid": pid, "command": argv[0], "new_windows": new,
                "note": "" if new else "no new window yet; check again with vm:windows or vm:screenshot"}
