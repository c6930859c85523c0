"""Decoding responses into envelopes or :mod:`~agentflow.sandbox.errors` exceptions.

No I/O here: these functions only look at a finished ``requests.Response`` (or a
transport exception) and decide what the caller gets.
"""
from __future__ import annotations

import requests

from .errors import SandboxAuthError, SandboxRequestError, SandboxServerError

#: Envelope codes that are *results* (returned, never raised). 2004: the server process
#: running the call died mid-run; its outcome is unknown and it was not run again.
RESULT_CODES = frozenset({0, 2001, 2002, 2003, 2004})


def root_cause(err: requests.RequestException) -> str:
    """The transport's reason for a failed connection, as one short line."""
    reason = err.args[0] if err.args else err
    reason = getattr(reason, "reason", None) or reason  # urllib3 MaxRetryError -> its cause
    text = str(reason)
    for sep in (">: ", "): "):  # drop urllib3's "<HTTPConnection object at 0x..>: " / "HTTPConnection(...): "
        head, found, tail = text.partition(sep)
        if found and head.startswith(("<", "HTTP")):
            text = tail
    return text


def decode(resp: requests.Response, url: str, request_id: str, envelope: bool, results_ok: bool = False) -> dict:
    """Turn a response into the envelope dict, or raise the matching SandboxError.

    ``results_ok``: a batch envelope (one with ``data.results``) is returned whatever
    its top code, because the code then only reports its first failed item.
    """
    status = resp.status_code
    try:
        payload = resp.json()
    except ValueError:
        payload = None
    server_rid = resp.headers.get("X-Request-ID") or request_id

    if not envelope:
        if status == 200 and isinstance(payload, dict):
            return payload
        if isinstance(payload, dict) and "code" in payload:
            _raise_for_code(payload, status, url, server_rid)
        _raise_for_status(resp, url, server_rid)

    if not isinstance(payload, dict) or "code" not in payload:
        _raise_for_status(resp, url, server_rid)
    code = payload.get("code")
    if code in RESULT_CODES:  # tool results, incl. 2003 "backend not ready" (HTTP 503 after retries)
        return payload
    data = payload.get("data")
    if results_ok and code != 1004 and status != 401 and isinstance(data, dict) and "results" in data:
        return payload
    _raise_for_code(payload, status, url, server_rid)
    return payload  # unknown non-error code with a 2xx status: pass it on


def _raise_for_code(payload: dict, status: int, url: str, request_id: str) -> None:
    code = payload.get("code")
    meta = payload.get("meta") if isinstance(payload.get("meta"), dict) else {}
    kw = {
        "code": code,
        "request_id": meta.get("request_id") or request_id,
        "status": status,
        "data": payload.get("data") if isinstance(payload.get("data"), dict) else {},
        "url": url,
    }
    message = str(payload.get("message") or "")
    if code == 1004 or status == 401:
        raise SandboxAuthError(message or "unauthorized", **kw)
    if isinstance(code, int) and 1000 <= code < 2000:
        raise SandboxRequestError(message or "request rejected", **kw)
    if status >= 500 or (isinstance(code, int) and code >= 5000):
        raise SandboxServerError(message or "internal server error", **kw)
    if status >= 400:
        raise SandboxRequestError(message or f"HTTP {status}", **kw)


def _raise_for_status(resp: requests.Response, url: str, request_id: str) -> None:
    status = resp.status_code
    snippet = (resp.text or "").strip().replace("\n", " ")[:200]
    kw = {"status": status, "request_id": request_id, "url": url}
    if status == 401:
        raise SandboxAuthError(f"unauthorized at {url}: {snippet}", **kw)
    if 400 <= status < 500:
        raise SandboxRequestError(f"HTTP {status} from {url}: {snippet}", **kw)
    raise SandboxServerError(f"unexpected response (HTTP {status}) from {url}: {snippet or 'empty body'}", **kw)
