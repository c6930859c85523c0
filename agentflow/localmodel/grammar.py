"""Constrained decoding for the local model: JSON Schema → llama.cpp grammar (GBNF).

When tools are offered, the reply is decoded under a grammar with two branches:

* a **tool call**: one JSON object ``{"name": <one of the offered names>, "arguments":
  {...}}`` whose arguments follow that tool's parameter schema, or
* **plain text** that does not start with ``{`` (so it can never be mistaken for a
  half-written call).

The model picks the branch with its first token; from then on the grammar keeps it in
that branch. Tool schemas are first *bounded* (:func:`bound_schema`): strings get a
``maxLength``, arrays a ``maxItems``, unsupported keywords are dropped, so a call is
always finished within a known number of tokens and the JSON is never cut off.
"""
from __future__ import annotations

import json
from typing import Any

__all__ = [
    "TEXT_RULE",
    "bound_schema",
    "call_schema",
    "json_schema_grammar",
    "reply_grammar",
]

MAX_STRING_CHARS = 200
"""Default longest string inside tool arguments (a schema's smaller ``maxLength`` wins)."""
MAX_ARRAY_ITEMS = 6
"""Default most items of an array inside tool arguments."""
_MAX_DEPTH = 6

TEXT_RULE = r"[^{ \t\r\n] [^\x00]*"
"""Plain text: anything that does not start with ``{`` or white space."""


def bound_schema(schema: Any, max_string: int = MAX_STRING_CHARS, max_items: int = MAX_ARRAY_ITEMS,
                 _depth: int = 0) -> dict:
    """A copy of a JSON Schema that the grammar converter handles and whose instances
    have a bounded length.

    Kept: ``type`` (a list becomes ``anyOf``), ``properties``/``required``, ``items``,
    ``enum``, ``const``, ``anyOf``/``oneOf``, ``minLength``/``maxLength`` and
    ``minItems``/``maxItems`` (capped). Dropped: ``pattern``, ``format``, ``$ref`` and
    other keywords; a schema without a usable type becomes a bounded string. An
    ``object`` without ``properties`` allows only ``{}``.
    """
    if not isinstance(schema, dict) or _depth > _MAX_DEPTH:
        return {"type": "string", "maxLength": max_string}

    def sub(s: Any) -> dict:
        return bound_schema(s, max_string, max_items, _depth + 1)

    if "const" in schema and _is_scalar(schema["const"]):
        return {"const": schema["const"]}
    if isinstance(schema.get("enum"), list):
        values = [v for v in schema["enum"] if _is_scalar(v)]
        if values:
            return {"enum": values}
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return {"anyOf": [sub(s) for s in schema[key]]}
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if isinstance(k, str)]
        if not kinds:
            return {"type": "string", "maxLength": max_string}
        if len(kinds) > 1:
            return {"anyOf": [sub({**schema, "type": k}) for k in kinds]}
        kind = kinds[0]
    if kind is None and "properties" in schema:
        kind = "object"
    if kind is None and "items" in schema:
        kind = "array"
    if kind == "string":
        limit = min(_int(schema.get("maxLength"), max_string), max_string)
        out: dict[str, Any] = {"type": "string", "maxLength": max(limit, 1)}
        low = _int(schema.get("minLength"), 0)
        if 0 < low <= limit:
            out["minLength"] = low
        return out
    if kind in ("integer", "number", "boolean", "null"):
        return {"type": kind}
    if kind == "array":
        items = schema.get("items")
        high = min(_int(schema.get("maxItems"), max_items), max_items)
        low = min(_int(schema.get("minItems"), 0), high)
        return {"type": "array", "items": sub(items if isinstance(items, dict) else {"type": "string"}),
                "minItems": low, "maxItems": max(high, 1)}
    if kind == "object":
        props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
        bounded = {str(k): sub(v) for k, v in props.items()}
        required = [r for r in schema.get("required") or [] if r in bounded]
        return {"type": "object", "properties": bounded, "required": required}
    return {"type": "string", "maxLength": max_string}


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default


def call_schema(tools: list[dict], only: str | None = None, max_string: int = MAX_STRING_CHARS,
                max_items: int = MAX_ARRAY_ITEMS) -> dict:
    """The JSON Schema of one call to one of ``tools`` (OpenAI ``tools`` entries), or only
    to the function named ``only``."""
    options = []
    for tool in tools:
        fn = tool.get("function") or {}
        name = fn.get("name")
        if not name or (only is not None and name != only):
            continue
        params = fn.get("parameters") or {"type": "object", "properties": {}}
        args = bound_schema(params, max_string, max_items)
        if args.get("type") != "object":  # arguments are always an object
            args = {"type": "object", "properties": {}, "required": []}
        options.append({"type": "object", "properties": {"name": {"const": name}, "arguments": args},
                        "required": ["name", "arguments"]})
    if not options:
        raise ValueError(f"no tool named {only!r}" if only else "no usable tool")
    return options[0] if len(options) == 1 else {"anyOf": options}


def json_schema_grammar(schema: dict, root: str = "root") -> str:
    """GBNF for instances of ``schema`` with its top rule named ``root``."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    gbnf = json_schema_to_gbnf(json.dumps(schema))
    if root == "root":
        return gbnf
    lines = []
    for line in gbnf.splitlines():
        if line.startswith("root ::= "):
            line = f"{root} ::= " + line[len("root ::= "):]
        lines.append(line)
    return "\n".join(lines)


def reply_grammar(tools: list[dict], mode: str, only: str | None = None, max_string: int = MAX_STRING_CHARS,
                  max_items: int = MAX_ARRAY_ITEMS) -> str | None:
    """The GBNF for a reply.

    Args:
        tools: The offered tools.
        mode: ``"auto"`` (a call or text), ``"required"`` (a call), ``"none"`` (text,
            no grammar needed: returns ``None``).
        only: With ``"required"``, the one function that must be called.
    """
    if mode == "none" or not tools:
        return None
    call = json_schema_grammar(call_schema(tools, only, max_string, max_items), root="af-call")
    if mode == "required":
        return f"root ::= af-call\n{call}"
    return f"root ::= af-call | af-text\naf-text ::= {TEXT_RULE}\n{call}"
