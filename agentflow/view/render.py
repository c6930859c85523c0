"""Turning stored values into what a page shows: numbers and times, pretty JSON, tool
results split into readable parts, and images.

Nothing here produces markup: templates escape every value (Jinja autoescaping), and an
image reaches a page only as a ``data:`` URL rebuilt from bytes that decoded from base64
and start with a PNG or JPEG signature — never the stored text itself.
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import json
import re
import struct
from typing import Any

__all__ = ["Image", "find_image", "fmt_bytes", "fmt_duration_ms", "fmt_int", "fmt_score", "fmt_time",
           "message_parts", "pretty_json", "result_parts"]

MAX_IMAGE_BYTES = 8 * 1024 * 1024
_B64 = re.compile(r"[A-Za-z0-9+/\r\n]+={0,2}")
_DATA_URL = re.compile(r"data:image/(png|jpeg|jpg);base64,", re.IGNORECASE)
_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG = b"\xff\xd8\xff"


@dataclasses.dataclass
class Image:
    mime: str
    width: int | None
    height: int | None
    size: int
    data_url: str
    """``data:image/png;base64,…`` re-encoded from the validated bytes."""
    where: str
    """Where in the result it was (``image``, ``images[0].data``)."""

    @property
    def label(self) -> str:
        dims = f" {self.width}×{self.height}" if self.width and self.height else ""
        return f"{self.mime.split('/')[1].upper()}{dims}, {fmt_bytes(self.size)}"


def find_image(text: str, where: str = "") -> Image | None:
    """The image ``text`` holds (base64 PNG or JPEG, bare or as a data URL), else None."""
    if len(text) < 64 or len(text) > MAX_IMAGE_BYTES * 4 // 3 + 64:
        return None
    m = _DATA_URL.match(text)
    body = text[m.end():] if m else text
    if not _B64.fullmatch(body):
        return None
    try:
        raw = base64.b64decode(body, validate=False)
    except (binascii.Error, ValueError):
        return None
    if raw.startswith(_PNG):
        mime = "image/png"
        width, height = struct.unpack(">II", raw[16:24]) if len(raw) >= 24 and raw[12:16] == b"IHDR" else (None, None)
    elif raw.startswith(_JPEG):
        mime, (width, height) = "image/jpeg", _jpeg_size(raw)
    else:
        return None
    return Image(mime, width, height, len(raw), f"data:{mime};base64,{base64.b64encode(raw).decode('ascii')}", where)


def _jpeg_size(raw: bytes) -> tuple[int | None, int | None]:
    i = 2
    while i + 9 < len(raw):
        if raw[i] != 0xFF:
            return None, None
        marker = raw[i + 1]
        length = int.from_bytes(raw[i + 2:i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", raw[i + 5:i + 9])
            return width, height
        i += 2 + length
    return None, None


def _replace_images(value: Any, where: str, images: list[Image]) -> Any:
    if isinstance(value, str):
        image = find_image(value, where or "value")
        if image is None:
            return value
        images.append(image)
        return f"[image {len(images)}: {image.label}]"
    if isinstance(value, dict):
        return {k: _replace_images(v, f"{where}.{k}" if where else str(k), images) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_images(v, f"{where}[{i}]", images) for i, v in enumerate(value)]
    return value


COMPACT_JSON_CHARS = 100
"""JSON this short stays on one line."""


def _dumps(value: Any) -> str:
    compact = json.dumps(value, ensure_ascii=False, default=str)
    return compact if len(compact) <= COMPACT_JSON_CHARS else json.dumps(value, indent=2, ensure_ascii=False,
                                                                          default=str)


def pretty_json(value: Any) -> str:
    """JSON for a value (or a JSON text; other text as it is): on one line when short,
    else indented."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    return _dumps(value)


def result_parts(text: str | None) -> tuple[list[tuple[str, str]], list[Image]]:
    """A tool result as ``[(label, text)]`` parts and the images found in it.

    A JSON object's long text fields (``stdout``, ``stderr``, ``text``...) become parts of
    their own, shown as text rather than as one escaped JSON string; the rest is one
    pretty-printed JSON part. An error result (``Error 2001: ...`` then JSON) keeps its
    first line as a part. Images are replaced by ``[image N: PNG 640×480, 12 KB]``.
    """
    if text is None:
        return [], []
    images: list[Image] = []
    head, body = "", text
    if text.startswith("Error ") and "\n" in text:
        head, body = text.split("\n", 1)
    try:
        data = json.loads(body)
    except ValueError:
        image = find_image(text.strip(), "result")
        if image is not None:
            return [("result", "[image 1: " + image.label + "]")], [image]
        return [("result", text)], []
    data = _replace_images(data, "", images)
    parts: list[tuple[str, str]] = [("error", head)] if head else []
    if isinstance(data, dict):
        rest = {}
        for key, value in data.items():
            if isinstance(value, str) and ("\n" in value or len(value) > 200):
                parts.append((str(key), value))
            else:
                rest[key] = value
        if rest or not parts:
            parts.insert(1 if head else 0, ("data", _dumps(rest)))
    else:
        parts.append(("data", _dumps(data)))
    return parts, images


def message_parts(content: str | None) -> tuple[str, list[Image], list[str]]:
    """A message's text, its inline images and any image URLs it points at (shown as text,
    never loaded). Content stored as a JSON list of OpenAI content parts is unpacked."""
    if not content:
        return "", [], []
    if content.startswith("[") and '"type"' in content:
        try:
            items = json.loads(content)
        except ValueError:
            items = None
        if isinstance(items, list) and all(isinstance(p, dict) for p in items):
            texts, images, urls = [], [], []
            for p in items:
                if p.get("type") == "text":
                    texts.append(str(p.get("text") or ""))
                elif p.get("type") == "image_url":
                    url = str((p.get("image_url") or {}).get("url") or "")
                    image = find_image(url, "image_url")
                    (images.append(image) if image else urls.append(url[:300]))
            return "\n".join(texts), images, urls
    return content, [], []


def fmt_int(value: Any) -> str:
    return "–" if value is None else f"{int(value):,}"


def fmt_score(value: Any, digits: int = 3) -> str:
    return "–" if value is None else f"{float(value):.{digits}f}"


def fmt_usd(value: Any) -> str:
    """A cost in dollars; ``None`` is *unknown* (a model without a price), never $0."""
    if value is None:
        return "unknown"
    value = float(value)
    if value == 0:
        return "$0"
    return f"${value:.4f}" if value >= 0.01 else f"${value:.6f}"


def fmt_duration_ms(ms: Any) -> str:
    """``830 ms``, ``4.2 s``, ``3 min 5 s``, ``2 h 4 min``."""
    if ms is None:
        return "–"
    ms = float(ms)
    if ms < 1000:
        return f"{ms:.0f} ms" if ms >= 10 else f"{ms:.1f} ms"
    s = ms / 1000
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60)} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60)} min"


def fmt_bytes(n: Any) -> str:
    if n is None:
        return "–"
    n = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def fmt_time(value: dt.datetime | str | None) -> str:
    """A stored (naive UTC) time as ``2025-01-31 14:05:09``."""
    if value is None:
        return "–"
    if isinstance(value, str):
        return value.replace("T", " ").rstrip("Z")[:19]
    return value.strftime("%Y-%m-%d %H:%M:%S")
