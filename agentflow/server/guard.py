"""Refusing browser-style requests the server did not expect.

A token-less server on loopback is reachable by any web page the operator's browser
opens: directly, with a cross-origin "simple" request (``text/plain`` or form bodies
need no CORS preflight), or through DNS rebinding (the page's own name resolves to
127.0.0.1, so the browser treats the server as same-origin). Three checks close these:

- ``Host`` must name this server: rebinding sends the attacker's name.
- ``Origin``, when a browser sends one, must be the server's own origin (or configured).
- A body must be declared JSON: browsers cannot send ``application/json`` cross-origin
  without a preflight, which this server never answers.
"""
from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from flask import request

from ..config import ServerConfig
from ..runtime.errors import MalformedRequest

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_IP = ipaddress.IPv4Address | ipaddress.IPv6Address


class UnsupportedMediaType(MalformedRequest):
    """A body that is not declared JSON (code 1000, HTTP 415)."""

    http_status, default_message = 415, "unsupported media type"


class MisdirectedRequest(MalformedRequest):
    """A ``Host`` that is not this server's name (code 1000, HTTP 421)."""

    http_status, default_message = 421, "misdirected request"


class ForbiddenOrigin(MalformedRequest):
    """A browser request from another origin (code 1000, HTTP 403)."""

    http_status, default_message = 403, "cross-origin request refused"


def _ip(name: str) -> _IP | None:
    try:
        ip = ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return None
    mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:127.0.0.1 is 127.0.0.1
    return mapped or ip


def _normal_name(name: str) -> str:
    return name.strip().lower().rstrip(".")


def split_host(value: str) -> tuple[str, int | None]:
    """``name[:port]`` or ``[v6][:port]`` of a Host header → (name, port); raises ValueError."""
    value = value.strip()
    if value.startswith("["):
        name, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(value)
        port = rest[1:]
    elif value.count(":") == 1:
        name, port = value.split(":")
    elif ":" in value:  # a bare IPv6 literal without brackets
        name, port = value, ""
    else:
        name, port = value, ""
    if not name or (port and not port.isdigit()):
        raise ValueError(value)
    return _normal_name(name), int(port) if port else None


def _node_names() -> set[str]:
    names = {"localhost"}
    node = _normal_name(socket.gethostname())
    if node:
        names |= {node, node.split(".")[0]}
    return names


def _advertised_name(config: ServerConfig) -> set[str]:
    """The host of ``server.node_url``: the name other nodes forward requests to."""
    host = urlsplit(config.node_url).hostname if config.node_url else None
    return {_normal_name(host)} if host else set()


class HostPolicy:
    """Which ``Host`` and ``Origin`` values the server accepts (server config
    ``allowed_hosts`` and ``allowed_origins``)."""

    def __init__(self, config: ServerConfig):
        configured = config.allowed_hosts
        self.any_host = configured is not None and "*" in configured
        self.defaults = configured is None
        # the host of node_url is always this server's: other nodes forward to it
        entries = (set(configured) if configured is not None else
                   _node_names() | {_normal_name(config.host)}) | _advertised_name(config)
        self.names = {_normal_name(e) for e in entries if _ip(e) is None}
        self.ips = {_ip(e) for e in entries if _ip(e) is not None}
        self.any_origin = "*" in config.allowed_origins
        self.origins = {o.lower().rstrip("/") for o in config.allowed_origins}

    def host_allowed(self, name: str, local_ip: _IP | None) -> bool:
        if self.any_host or name in self.names:
            return True
        ip = _ip(name)
        if ip is None:
            return False
        if ip in self.ips:
            return True
        # by default, loopback and the address this connection arrived on: DNS
        # rebinding always sends a name, never an address
        return self.defaults and (ip.is_loopback or ip == local_ip)

    def origin_allowed(self, origin: str, host: str | None, scheme: str = "http") -> bool:
        origin = origin.strip().lower().rstrip("/")
        if self.any_origin or origin in self.origins:
            return True
        if host is None or origin == "null":
            return False
        parts = urlsplit(origin)
        if parts.scheme != scheme or parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
            return False
        try:
            port = parts.port or _DEFAULT_PORTS[parts.scheme]
            host_name, host_port = split_host(host)
        except ValueError:
            return False
        same_name = _normal_name(parts.hostname) == host_name or (
            _ip(parts.hostname) is not None and _ip(parts.hostname) == _ip(host_name))
        return same_name and port == (host_port or _DEFAULT_PORTS[parts.scheme])


def local_ip(environ: dict) -> _IP | None:
    """The address the request's connection arrived on (gunicorn), else the bound one."""
    sock = environ.get("gunicorn.socket")
    try:
        if sock is not None:
            return _ip(str(sock.getsockname()[0]))
    except (OSError, IndexError, TypeError):
        pass
    return _ip(environ.get("SERVER_NAME", ""))


def host_problem(policy: HostPolicy, given: str | None, environ: dict) -> MisdirectedRequest | None:
    """The refusal of a ``Host`` that does not name this server (421), or None."""
    if given is None:  # HTTP/1.0 clients; every browser sends Host
        return None
    try:
        name, _port = split_host(given)
    except ValueError:
        name = None
    if name is not None and policy.host_allowed(name, local_ip(environ)):
        return None
    return MisdirectedRequest(
        f"header Host {given[:100]!r} does not name this server; add the name to the server config's "
        "'allowed_hosts' if clients reach the server by it", {"header": "Host"})


def check_host(policy: HostPolicy) -> None:
    """Refuse a ``Host`` that does not name this server (421)."""
    problem = host_problem(policy, request.headers.get("Host"), request.environ)
    if problem is not None:
        raise problem


def check_origin(policy: HostPolicy) -> None:
    """Refuse a browser request from another origin (403)."""
    origin = request.headers.get("Origin")
    if origin is None:
        return
    if not policy.origin_allowed(origin, request.headers.get("Host"), request.scheme):
        raise ForbiddenOrigin(
            f"requests from origin {origin[:100]!r} are refused: only the server's own origin, or one listed "
            "in the server config's 'allowed_origins', may send requests from a browser", {"header": "Origin"})


def _has_body() -> bool:
    return bool(request.content_length) or "Transfer-Encoding" in request.headers


def check_content_type() -> None:
    """Refuse a body not declared JSON on POST/PUT/PATCH/DELETE (415). A request without
    a body needs no Content-Type; a form or text one is refused even when empty."""
    if request.method not in _BODY_METHODS:
        return
    given = request.headers.get("Content-Type")
    if given is None:
        if _has_body():
            raise UnsupportedMediaType("the request has a body but no Content-Type: send "
                                       "'Content-Type: application/json'", {"header": "Content-Type"})
        return
    if not request.is_json:
        raise UnsupportedMediaType(f"Content-Type {given[:100]!r} is not JSON: send 'Content-Type: application/json'",
                                   {"header": "Content-Type"})


def check_request(policy: HostPolicy) -> None:
    """All three checks, in the order a refusal explains best."""
    check_host(policy)
    check_origin(policy)
    check_content_type()


__all__ = ["ForbiddenOrigin", "HostPolicy", "MisdirectedRequest", "UnsupportedMediaType", "check_request",
           "split_host"]
