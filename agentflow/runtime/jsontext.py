"""JSON text of envelopes, audit results and stored answers, written fast.

Every audited call serializes its envelope three times (the answer sent, the answer
stored for replay, the audited result); with the standard library that was a sixth of
the server's CPU per call. orjson writes the same JSON (compact separators) several
times faster. Values it handles differently from ``json.dumps(default=str)`` are
routed the old way: datetimes and dataclasses go through ``str`` as before, and what
orjson refuses (integers beyond 64 bits, nesting deeper than 254) falls back to the
standard library. NaN and infinities become ``null``: the standard library wrote
``NaN``, which is not JSON. A lone surrogate (not encodable) is written as ``?``, so the
text is always valid UTF-8.
"""
from __future__ import annotations

import json
from typing import Any

import orjson

_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def dumps_bytes(value: Any) -> bytes:
    """UTF-8 JSON of ``value``; what is not JSON becomes its ``str``."""
    try:
        return orjson.dumps(value, default=str, option=_OPTIONS)
    except (TypeError, orjson.JSONEncodeError):
        return json.dumps(value, default=str, ensure_ascii=False).encode("utf-8", "replace")


def dumps_text(value: Any) -> str:
    return dumps_bytes(value).decode("utf-8")
