"""OpenAI chat requests as plain chat messages for a small model, and its replies back.

A small local model has no native tool-calling format, so tools are described in the
system message and a call is written as one JSON object ``{"name": ..., "arguments":
{...}}`` (the grammar of :mod:`agentflow.localmodel.grammar` enforces it). Earlier turns
are rendered the same way: an assistant's tool call as that JSON, a tool result as a
user message that names the tool. :func:`parse_reply` turns the decoded text back into
an OpenAI message (``content`` or ``tool_calls``).
"""
from __future__ import annotations

import json
import uuid
from typing import Any

__all__ = ["RequestError", "fold_system", "parse_reply", "render_messages", "tool_instructions"]


class RequestError(ValueError):
    """A chat request the local model cannot serve (answered with HTTP 400)."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


def _text(content: Any, where: str) -> str:
    """Message content as text: a string, or the text parts of a content list."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for i, part in enumerate(content):
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and part.get("type") in ("text", "input_text") and isinstance(
                    part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, dict) and part.get("type") in ("image_url", "input_image", "input_audio"):
                raise RequestError(f"{where}.content[{i}]: this model reads text only ({part['type']} given)",
                                   param=f"{where}.content")
            else:
                raise RequestError(f"{where}.content[{i}] is not a text part", param=f"{where}.content")
        return "\n".join(parts)
    raise RequestError(f"{where}.content must be a string or a list of text parts", param=f"{where}.content")


def _describe(schema: dict) -> str:
    """A compact one-line description of a parameter schema."""
    props = schema.get("properties") if isinstance(schema, dict) else None
    if not props:
        return "{}"
    required = set(schema.get("required") or [])
    items = []
    for name, spec in props.items():
        spec = spec if isinstance(spec, dict) else {}
        kind = spec.get("type", "any")
        kind = "|".join(kind) if isinstance(kind, list) else kind
        if "enum" in spec:
            kind = " or ".join(json.dumps(v) for v in spec["enum"])
        text = f'"{name}": {kind}' + ("" if name in required else " (optional)")
        desc = str(spec.get("description") or "").strip()
        if desc:
            text += f" - {desc[:120]}"
        items.append(text)
    return "{" + "; ".join(items) + "}"


def tool_instructions(tools: list[dict]) -> str:
    """The system-message part that offers ``tools`` and explains the call format. It is
    the same on every turn (whatever the grammar allows), so a conversation's prompt
    prefix stays cached."""
    lines = ["You can call these tools:"]
    for tool in tools:
        fn = tool.get("function") or {}
        desc = " ".join(str(fn.get("description") or "").split())[:300]
        lines.append(f"- {fn.get('name')}: {desc} Arguments: {_describe(fn.get('parameters') or {})}")
    lines.append('To call a tool, reply with only a JSON object: {"name": "<tool name>", "arguments": {...}}')
    lines.append("When you have the answer, reply in plain text instead.")
    return "\n".join(lines)


def render_messages(messages: list[dict], tools: list[dict] | None) -> list[dict]:
    """OpenAI messages → ``[{role, content}]`` with roles system, user and assistant.

    Raises:
        RequestError: a message has an unknown role or unusable content.
    """
    out: list[dict] = []
    names: dict[str, str] = {}
    system: list[str] = []
    for i, msg in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise RequestError(f"{where} must be an object", param=where)
        role = msg.get("role")
        if role in ("system", "developer"):
            text = _text(msg.get("content"), where)
            if not out:
                system.append(text)
            else:
                out.append({"role": "user", "content": f"(instruction) {text}"})
        elif role == "user":
            out.append({"role": "user", "content": _text(msg.get("content"), where)})
        elif role == "assistant":
            parts = []
            text = _text(msg.get("content"), where).strip()
            calls = msg.get("tool_calls") or []
            if text and not calls:
                parts.append(text)
            for j, call in enumerate(calls):
                fn = call.get("function") if isinstance(call, dict) else None
                if not isinstance(fn, dict):
                    raise RequestError(f"{where}.tool_calls[{j}] has no function", param=f"{where}.tool_calls")
                name = str(fn.get("name") or "")
                names[str(call.get("id") or "")] = name
                try:
                    args = json.loads(fn.get("arguments") or "{}")
                except (TypeError, json.JSONDecodeError):
                    args = fn.get("arguments")
                parts.append(json.dumps({"name": name, "arguments": args}, ensure_ascii=False))
            out.append({"role": "assistant", "content": "\n".join(parts)})
        elif role in ("tool", "function"):
            name = names.get(str(msg.get("tool_call_id") or ""), msg.get("name") or "the tool")
            out.append({"role": "user", "content": f"Result of {name}:\n{_text(msg.get('content'), where)}"})
        else:
            raise RequestError(f"{where}.role {role!r} is not one of system, developer, user, assistant, tool",
                               param=f"{where}.role")
    if tools:
        system.append(tool_instructions(tools))
    if system:
        out.insert(0, {"role": "system", "content": "\n\n".join(s for s in system if s)})
    if not any(m["role"] in ("system", "user") for m in out):
        raise RequestError("messages must hold at least one system or user message", param="messages")
    return out


def fold_system(chat: list[dict]) -> list[dict]:
    """``chat`` (from :func:`render_messages`) for a model without a system role (Gemma):
    the system text opens the first user turn, and consecutive turns of one role are
    joined, so roles alternate user / assistant."""
    out: list[dict] = []
    system = ""
    for msg in chat:
        if msg["role"] == "system":
            system = msg["content"]
            continue
        if out and out[-1]["role"] == msg["role"]:
            out[-1] = {"role": msg["role"], "content": f"{out[-1]['content']}\n\n{msg['content']}"}
        else:
            out.append(dict(msg))
    if system:
        if out and out[0]["role"] == "user":
            out[0] = {"role": "user", "content": f"{system}\n\n{out[0]['content']}"}
        else:
            out.insert(0, {"role": "user", "content": system})
    return out


def parse_reply(text: str, tools_offered: bool) -> dict:
    """The decoded reply as an OpenAI assistant message.

    A reply that is one JSON object with a ``name`` (which the grammar guarantees in the
    call branch) becomes a tool call; anything else is text.
    """
    stripped = text.strip()
    if tools_offered and stripped.startswith("{"):
        try:
            obj = json.loads(stripped, strict=False)  # a raw newline in a string is repaired by dumps
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, dict) and isinstance(obj.get("name"), str):
            args = obj.get("arguments")
            return {"role": "assistant", "content": None, "tool_calls": [{
                "id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                "function": {"name": obj["name"],
                             "arguments": json.dumps(args if isinstance(args, dict) else {}, ensure_ascii=False)}}]}
    return {"role": "assistant", "content": stripped}
