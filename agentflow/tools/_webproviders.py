"""Network calls of the web backend: Serper and Jina APIs, plain page fetches, summaries.

Every function takes its endpoint, key and timeout explicitly and raises
:class:`ProviderError` for anything that goes wrong on the wire, so the backend never
sees ``requests`` or ``openai`` exceptions.
"""
from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urljoin, urlsplit

import requests

from ._html import html_to_text

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


def _check_public(url: str) -> None:
    host = urlsplit(url).hostname or ""
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror as err:
        raise ProviderError(f"cannot resolve host {host!r} ({err.strerror}); is the network available?") from err
    for info in infos:
        addr = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        if not addr.is_global:
            raise ProviderError(f"refusing to fetch {url}: {host} is a private address "
                                "(set allow_private_urls to allow it)")


def fetch_page(url: str, *, timeout: float, max_bytes: int, allow_private: bool) -> dict:
    """Fetch an http(s) URL and return ``{url, title, text, content_type}``.

    Redirects are followed by hand (at most 5) so each hop passes the address check.
    """
    current = url
    for _ in range(_MAX_REDIRECTS + 1):
        if not allow_private:
            _check_public(current)
        try:
            resp = requests.get(current, headers={"User-Agent": USER_AGENT, "Accept": "text/html,text/plain,*/*"},
                                timeout=timeout, allow_redirects=False, stream=True)
        except requests.RequestException as err:
            raise ProviderError(f"cannot fetch {current}: {err.__class__.__name__}: {err}") from err
        if resp.is_redirect and resp.headers.get("Location"):
            current = urljoin(current, resp.headers["Location"])
            resp.close()
            continue
        break
    else:
        raise ProviderError(f"cannot fetch {url}: more than {_MAX_REDIRECTS} redirects")
    with resp:
        _check_status(resp, f"fetch {current}")
        ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype and not (ctype.startswith("text/") or ctype in ("application/xhtml+xml", "application/json",
                                                                  "application/xml")):
            raise ProviderError(f"cannot read {current}: content type {ctype} is not text")
        body = b""
        try:
            for chunk in resp.iter_content(65536):
                body += chunk
                if len(body) >= max_bytes:
                    break
        except requests.RequestException as err:
            raise ProviderError(f"cannot fetch {current}: {err}") from err
        declared = "charset=" in resp.headers.get("Content-Type", "").lower()
        text = body[:max_bytes].decode(resp.encoding if declared and resp.encoding else "utf-8", errors="replace")
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
