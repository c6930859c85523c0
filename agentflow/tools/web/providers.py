"""Network calls of the web backend: Serper and Jina APIs, plain page fetches, summaries.

Every function takes its endpoint, key and timeout explicitly and raises
:class:`ProviderError` for anything that goes wrong on the wire, so the backend never
sees ``requests`` or ``openai`` exceptions.
"""
from __future__ import annotations

import requests

from .._html import html_to_text
from ..netguard import AddressRefused, FetchError, GuardedResponse, NetPolicy, UnsafeUrl, charset_of, guarded_get

__all__ = ["ProviderError", "fetch_page", "jina_read", "jina_search", "serper_search", "summarize"]

USER_AGENT = "AgentFlow-web/1.0 (+https://github.com/OpenDCAI/AgentFlow)"
_MAX_REDIRECTS = 5


class ProviderError(Exception):
    """A provider or site could not answer (network, HTTP status, bad payload).
    Retrying may help for network errors and 5xx, not for 4xx."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def _check_status(resp: requests.Response, what: str) -> None:
    if resp.status_code < 400:
        return
    body = resp.text[:300].strip()
    if resp.status_code in (401, 403):
        raise ProviderError(f"{what}: the API key was rejected (HTTP {resp.status_code}): {body}", resp.status_code)
    raise ProviderError(f"{what}: HTTP {resp.status_code}: {body}", resp.status_code)


def _json(resp: requests.Response, what: str):
    try:
        return resp.json()
    except ValueError:
        raise ProviderError(f"{what}: answer is not JSON: {resp.text[:200]!r}") from None


def serper_search(query: str, *, api_key: str, base_url: str, num: int, timeout: float) -> list[dict]:
    """Google results from Serper (``POST {base_url}/search``)."""
    what = "serper search"
    try:
        resp = requests.post(f"{base_url.rstrip('/')}/search", json={"q": query, "num": num},
                             headers={"X-API-KEY": api_key, "Content-Type": "application/json"}, timeout=timeout)
    except requests.RequestException as err:
        raise ProviderError(f"{what}: {err}") from err
    _check_status(resp, what)
    data = _json(resp, what)
    results = []
    for item in (data.get("organic") or [])[:num] if isinstance(data, dict) else []:
        if isinstance(item, dict) and item.get("link"):
            results.append({"title": str(item.get("title") or ""), "url": str(item["link"]),
                            "snippet": str(item.get("snippet") or "")})
    answer = data.get("answerBox") if isinstance(data, dict) else None
    if isinstance(answer, dict) and (answer.get("answer") or answer.get("snippet")):
        results.insert(0, {"title": str(answer.get("title") or "Answer"), "url": str(answer.get("link") or ""),
                           "snippet": str(answer.get("answer") or answer.get("snippet"))})
        results = results[:num]
    return results


def jina_search(query: str, *, api_key: str, base_url: str, num: int, timeout: float) -> list[dict]:
    """Web results from Jina Search (``GET {base_url}/?q=…``, JSON answer)."""
    what = "jina search"
    try:
        resp = requests.get(f"{base_url.rstrip('/')}/", params={"q": query},
                            headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
                            timeout=timeout)
    except requests.RequestException as err:
        raise ProviderError(f"{what}: {err}") from err
    _check_status(resp, what)
    data = _json(resp, what)
    items = data.get("data") if isinstance(data, dict) else None
    return [{"title": str(i.get("title") or ""), "url": str(i.get("url") or ""),
             "snippet": str(i.get("description") or i.get("content") or "")[:500]}
            for i in (items or [])[:num] if isinstance(i, dict)]


def jina_read(url: str, *, api_key: str, base_url: str, timeout: float) -> dict:
    """A page as clean text through the Jina Reader (``GET {base_url}/{url}``)."""
    what = f"jina reader for {url}"
    try:
        resp = requests.get(f"{base_url.rstrip('/')}/{url}",
                            headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
                            timeout=timeout)
    except requests.RequestException as err:
        raise ProviderError(f"{what}: {err}") from err
    _check_status(resp, what)
    if "json" in resp.headers.get("Content-Type", ""):
        data = _json(resp, what)
        page = data.get("data") if isinstance(data, dict) else None
        if not isinstance(page, dict):
            raise ProviderError(f"{what}: unexpected answer {str(data)[:200]!r}")
        return {"url": str(page.get("url") or url), "title": str(page.get("title") or ""),
                "text": str(page.get("content") or "")}
    return {"url": url, "title": "", "text": resp.text}


def _status_error(answer: GuardedResponse) -> ProviderError:
    body = b""
    for chunk in answer.iter_content(300):
        body = chunk
        break
    text = body.decode("utf-8", "replace").strip()
    return ProviderError(f"fetch {answer.url}: HTTP {answer.status}: {text}", answer.status)


def _read_body(answer: GuardedResponse, max_bytes: int) -> bytes:
    parts, size = [], 0
    for chunk in answer.iter_content(65536):
        parts.append(chunk)
        size += len(chunk)
        if size >= max_bytes:
            break
    return b"".join(parts)[:max_bytes]


def fetch_page(url: str, *, timeout: float, max_bytes: int, policy: NetPolicy,
               ca_certs: str | None = None) -> dict:
    """Fetch an http(s) URL and return ``{url, title, text, content_type}``.

    Every hop (at most 5 redirects, followed by hand) is parsed once, resolved once,
    checked against ``policy`` and connected to the checked address (see
    :mod:`agentflow.tools.netguard`); a refusal raises :class:`ProviderError` before any
    connection to the refused address.
    """
    headers = {"User-Agent": USER_AGENT, "Accept": "text/html,text/plain,*/*", "Accept-Encoding": "gzip, deflate"}
    try:
        answer = guarded_get(url, policy, headers=headers, timeout=timeout, max_redirects=_MAX_REDIRECTS,
                             ca_certs=ca_certs)
    except (UnsafeUrl, AddressRefused, FetchError) as err:
        raise ProviderError(str(err)) from err
    with answer:
        current = answer.url
        if answer.status >= 400:
            raise _status_error(answer)
        raw_type = answer.headers.get("Content-Type", "")
        ctype = raw_type.split(";")[0].strip().lower()
        if ctype and not (ctype.startswith("text/") or ctype in ("application/xhtml+xml", "application/json",
                                                                  "application/xml")):
            raise ProviderError(f"cannot read {current}: content type {ctype} is not text")
        try:
            body = _read_body(answer, max_bytes)
        except FetchError as err:
            raise ProviderError(str(err)) from err
        text = body.decode(charset_of(raw_type) or "utf-8", errors="replace")
    if ctype in ("", "text/html", "application/xhtml+xml") and "<" in text[:2000]:
        page = html_to_text(text)
        return {"url": current, "title": page.title, "text": page.text, "content_type": ctype or "text/html"}
    return {"url": current, "title": "", "text": text, "content_type": ctype}


def summarize(text: str, goal: str, *, model: str, api_key: str, base_url: str | None, timeout: float) -> str:
    """Ask an OpenAI-compatible model for the parts of ``text`` that serve ``goal``."""
    import openai

    client = openai.OpenAI(api_key=api_key, base_url=base_url or None, timeout=timeout, max_retries=1)
    prompt = (
        "You extract information from a web page for a research agent.\n"
        f"Goal: {goal}\n\n"
        "Summarise only what in the page serves the goal, quoting exact facts, names and numbers. "
        "If the page does not help, say so in one sentence.\n\n"
        f"Page:\n{text}"
    )
    try:
        reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                               temperature=0)
    except openai.OpenAIError as err:
        raise ProviderError(f"summary model {model}: {err.__class__.__name__}: {err}") from err
    content = reply.choices[0].message.content if reply.choices else None
    if not content:
        raise ProviderError(f"summary model {model} returned an empty answer")
    return content.strip()
