"""The JSON writer of envelopes and audit rows (agentflow/runtime/jsontext.py)."""
from __future__ import annotations

import dataclasses
import datetime as dt
import json

from agentflow.runtime.jsontext import dumps_bytes, dumps_text


@dataclasses.dataclass
class Point:
    x: int


def test_ordinary_values_round_trip():
    value = {"s": "é\u2028\U0001F600", "n": [1, 2.5, None, True], "nested": {"k": {"d": []}}}
    assert json.loads(dumps_bytes(value)) == value


def test_values_orjson_treats_differently_keep_the_old_text():
    when = dt.datetime(2020, 1, 2, 3, 4, 5)
    out = json.loads(dumps_bytes({"when": when, "point": Point(1), 7: "int key", "big": 2 ** 70}))
    assert out == {"when": "2020-01-02 03:04:05", "point": "Point(x=1)", "7": "int key", "big": 2 ** 70}


def test_nan_is_null_and_text_is_always_valid_utf8():
    assert json.loads(dumps_bytes({"x": float("nan"), "y": float("inf")})) == {"x": None, "y": None}
    raw = dumps_bytes({"bad": "a\udc80b"})
    assert json.loads(raw.decode("utf-8")) == {"bad": "a?b"}


def test_nesting_deeper_than_orjson_allows_falls_back():
    deep: list = []
    for _ in range(400):
        deep = [deep]
    assert json.loads(dumps_text(deep)) == deep
