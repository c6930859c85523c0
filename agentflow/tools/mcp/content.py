"""An MCP ``CallToolResult`` (wire form, from a process we do not trust) as our tool data.

The answer keeps every content block and adds views an agent reads directly:

- ``text`` — the text blocks joined (capped, with ``text_bytes`` / ``text_truncated``);
- ``images`` — ``[{data, mime_type}]``, base64 as ``vm:screenshot`` gives its ``image``;
- ``audio`` — likewise;
- ``resources`` — embedded resources (``uri``, ``mime_type``, ``text`` or base64 ``blob``)
  and resource links (``uri``, ``name``, ``description``);
- ``structured_content`` — the server's structured result, when it gave one;
- ``is_error`` — the server's verdict (the backend turns ``true`` into a 2001).

Image, audio and blob data are not repeated in ``content``: each block there says where
its data went (``{"type": "image", "mime_type": ..., "index": 0}``).
"""
from __future__ import annotations

import base64
import binascii
import json
from typing import Any

__all__ = ["MalformedResult", "result_data", "scrub"]

_MAX_BINARY = 16 << 20


class MalformedResult(ValueError):
    """The MCP server's answer is not a valid ``CallToolResult``."""


def _cap(name: str, text: str, cap: int) -> dict:
    raw = text.encode("utf-8", "replace")
    if len(raw) <= cap:
        return {name: text, f"{name}_bytes": len(raw), f"{name}_truncated": False}
    return {name: raw[:cap].decode("utf-8", "ignore"), f"{name}_bytes": len(raw), f"{name}_truncated": True}


def _b64(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise MalformedResult(f"{what} is not base64 text")
    if len(value) > _MAX_BINARY * 4 // 3 + 4:
        raise MalformedResult(f"{what} is larger than {_MAX_BINARY >> 20} MiB")
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedResult(f"{what} is not valid base64") from None
    return value


def result_data(raw: dict, max_output_bytes: int) -> dict:
    """Our data for a wire-form ``CallToolResult``.

    Raises:
        MalformedResult: it does not validate as one.
    """
    import mcp_types
    from pydantic import ValidationError

    try:
        result = mcp_types.CallToolResult.model_validate(raw)
    except ValidationError as err:
        raise MalformedResult(f"the MCP server sent a malformed tool result ({err.error_count()} problem(s), "
                              f"first: {err.errors()[0]['msg']})") from None
    texts: list[str] = []
    blocks: list[dict] = []
    images: list[dict] = []
    audio: list[dict] = []
    resources: list[dict] = []
    for block in result.content:
        kind = block.type
        if kind == "text":
            texts.append(block.text)
            blocks.append({"type": "text", "text": block.text})
        elif kind == "image":
            images.append({"data": _b64(block.data, "an image"), "mime_type": block.mime_type})
            blocks.append({"type": "image", "mime_type": block.mime_type, "index": len(images) - 1})
        elif kind == "audio":
            audio.append({"data": _b64(block.data, "an audio clip"), "mime_type": block.mime_type})
            blocks.append({"type": "audio", "mime_type": block.mime_type, "index": len(audio) - 1})
        elif kind == "resource":
            res = block.resource
            item = {"type": "resource", "uri": str(res.uri), "mime_type": res.mime_type}
            if hasattr(res, "text"):
                item["text"] = res.text
            else:
                item["blob"] = _b64(res.blob, f"resource {res.uri}")
            resources.append(item)
            blocks.append({"type": "resource", "uri": str(res.uri), "index": len(resources) - 1})
        elif kind == "resource_link":
            item = {"type": "resource_link", "uri": str(block.uri), "name": block.name,
                    "description": block.description, "mime_type": block.mime_type}
            resources.append({k: v for k, v in item.items() if v is not None})
            blocks.append({"type": "resource_link", "uri": str(block.uri), "index": len(resources) - 1})
    data: dict = {"is_error": bool(result.is_error)}
    data.update(_cap("text", "\n".join(texts), max_output_bytes))
    content_text = json.dumps(blocks, ensure_ascii=False)
    if len(content_text.encode()) > max_output_bytes:  # the text view above keeps the full size
        blocks = [{**b, "text": _cap("t", b["text"], max(256, max_output_bytes // max(1, len(texts))))["t"]}
                  if b["type"] == "text" else b for b in blocks]
    data["content"] = blocks
    data["images"] = images
    if audio:
        data["audio"] = audio
    data["resources"] = resources
    if result.structured_content is not None:
        structured = json.dumps(result.structured_content, ensure_ascii=False, default=str)
        if len(structured.encode()) > max_output_bytes:
            data.update(_cap("structured_content_json", structured, max_output_bytes))
        else:
            data["structured_content"] = result.structured_content
    return data


def scrub(value: Any, secrets: list[str]) -> Any:
    """``value`` with every occurrence of a configured secret replaced by ``***``."""
    if not secrets:
        return value
    if isinstance(value, str):
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, "***")
        return value
    if isinstance(value, dict):
        return {k: scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v, secrets) for v in value]
    return value
