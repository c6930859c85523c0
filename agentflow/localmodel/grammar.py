"""Constrained decoding for the local model: JSON Schema → llama.cpp grammar (GBNF).

When tools are offered, the reply is decoded under a grammar with two branches:

* a **tool call**: one JSON object ``{"name": <one of the offered names>, "arguments":
  {...}}`` whose arguments follow that tool's parameter schema, or
* **plain text** that does not start with ``{`` (so it can never be mistaken for a
  half-written call).

The model picks the branch with its first token; from then on the grammar keeps it in
that branch. Tool schemas are first simplified (:func:`bound_schema`) to what the
grammar converter handles well: arrays get a ``maxItems``, unsupported keywords are
dropped. String lengths are *not* put in the grammar (llama.cpp expands a length bound
into one nested rule per character, which made decoding several times slower); a call
that runs out of tokens is closed by :func:`close_json` instead, so the JSON handed
out is never broken.
"""
from __future__ import annotations

import json
from typing import Any

__all__ = [
    "TEXT_RULE",
    "bound_schema",
    "close_json",
    "call_schema",
    "json_schema_grammar",
    "reply_grammar",
]

MAX_ARRAY_ITEMS = 6
"""Default most items of an array inside tool arguments."""
_MAX_DEPTH = 6

TEXT_RULE = r"[^{ \t\r\n] [^\x00]*"
"""Plain text: anything that does not start with ``{`` or white space."""


def bound_schema(schema: Any, max_items: int = MAX_ARRAY_ITEMS, _depth: int = 0) -> dict:
    """A copy of a JSON Schema that the grammar converter handles well.

    Kept: ``type`` (a list becomes ``anyOf``), ``properties``/``required``, ``items``,
    ``enum``, ``const``, ``anyOf``/``oneOf`` and ``minItems``/``maxItems`` (capped at
    ``max_items``). Dropped: ``pattern``, ``format``, string lengths, ``$ref`` and other
    keywords; a schema without a usable type becomes a string. A required string may not
    be empty. An ``object`` without ``properties`` allows only ``{}``.
    """
    if not isinstance(schema, dict) or _depth > _MAX_DEPTH:
        return {"type": "string"}

    def sub(s: Any) -> dict:
        return bound_schema(s, max_items, _depth + 1)

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
            return {"type": "string"}
        if len(kinds) > 1:
            return {"anyOf": [sub({**schema, "type": k}) for k in kinds]}
        kind = kinds[0]
    if kind is None and "properties" in schema:
        kind = "object"
    if kind is None and "items" in schema:
        kind = "array"
    if kind in ("string", "integer", "number", "boolean", "null"):
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
        for name in required:  # a required text left empty ("query": "") is never what a tool wants
            if bounded[name] == {"type": "string"}:
                bounded[name] = {"type": "string", "minLength": 1}
        return {"type": "object", "properties": bounded, "required": required}
    return {"type": "string"}


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default


def call_schema(tools: list[dict], only: str | None = None, max_items: int = MAX_ARRAY_ITEMS) -> dict:
    """The JSON Schema of one call to one of ``tools`` (OpenAI ``tools`` entries), or only
    to the function named ``only``."""
    options = []
    for tool in tools:
        fn = tool.get("function") or {}
        name = fn.get("name")
        if not name or (only is not None and name != only):
            continue
        params = fn.get("parameters") or {"type": "object", "properties": {}}
        args = bound_schema(params, max_items)
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
    # JSON strings may not hold raw control characters (llama_cpp's rule lets them in)
    gbnf = gbnf.replace('char ::= [^"\\\\] |', 'char ::= [^"\\\\\\x00-\\x1F] |')
    if root == "root":
        return gbnf
    lines = []
    for line in gbnf.splitlines():
        if line.startswith("root ::= "):
            line = f"{root} ::= " + line[len("root ::= "):]
        lines.append(line)
    return "\n".join(lines)


def reply_grammar(tools: list[dict], mode: str, only: str | None = None,
                  max_items: int = MAX_ARRAY_ITEMS) -> str | None:
    """The GBNF for a reply.

    Args:
        tools: The offered tools.
        mode: ``"auto"`` (a call or text), ``"required"`` (a call), ``"text"`` (text that
            does not look like a call), ``"none"`` (no constraint: returns ``None``).
        only: With ``"required"``, the one function that must be called.
    """
    if mode == "none" or not tools:
        return None
    if mode == "text":
        return f"root ::= af-text\naf-text ::= {TEXT_RULE}"
    call = json_schema_grammar(call_schema(tools, only, max_items), root="af-call")
    if mode == "required":
        return f"root ::= af-call\n{call}"
    return f"root ::= af-call | af-text\naf-text ::= {TEXT_RULE}\n{call}"


_LITERAL_ENDS = ("", "null", ":null", "0", "e", "ue", "rue", "alse", "lse", "se", "ull", "ll", "l")


def close_json(prefix: str) -> str | None:
    """Complete a JSON text cut off after ``prefix`` (a valid prefix, as the grammar
    guarantees): close an open string, finish a cut literal or number, give a key
    without a value ``null``, and close the open objects and arrays.

    Returns:
        Valid JSON, or ``None`` when no completion parses.
    """
    stack: list[str] = []
    in_string = escaped = False
    for ch in prefix:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch in "{[":
            stack.append(ch)
        elif ch in "}]" and stack:
            stack.pop()
        elif ch == '"':
            in_string = True
    text = prefix
    if in_string:
        if escaped:
            text = text[:-1]
        cut = text.rfind("\\u")
        if cut != -1 and cut >= len(text) - 5 and not text[cut - 1:cut] == "\\":
            text = text[:cut]  # a \\u escape cut short
        text += '"'
    closers = "".join("}" if c == "{" else "]" for c in reversed(stack))
    base = text.rstrip()
    candidates = [base + end + closers for end in _LITERAL_ENDS]
    candidates.append(base.rstrip(",:").rstrip() + closers)
    for candidate in candidates:
        try:
            json.loads(candidate, strict=False)
        except json.JSONDecodeError:
            continue
        return candidate
    return None
