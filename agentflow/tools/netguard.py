"""Outbound address checks for tools that fetch what a model (or a web page) asked for.

The rule: the address that is *connected to* is the address that was checked. A URL is
parsed once, strictly (:func:`parse_url`); its host is resolved once and every resolved
address is checked (:func:`resolve_checked`); the connection then goes to one of those
checked addresses while the original name travels in the ``Host`` header and TLS SNI
(:func:`open_pinned`). Redirects are followed by hand, each hop checked again
(:func:`guarded_get`). So a second DNS answer (rebinding), a parser disagreement
(``http://127.0.0.1:1\\@8.8.8.8/``) or a redirect cannot move the connection elsewhere.

Refused unless the operator allows them: loopback, unspecified, link-local (with the
cloud metadata address), private (RFC 1918, ULA ``fc00::/7``), shared CGNAT space,
multicast, broadcast/reserved, and IPv6 forms that embed an IPv4 address (mapped,
compatible, NAT64, 6to4). Policy options (read by :meth:`NetPolicy.from_config`):
``allow_private_urls`` (every address allowed; syntax checks and pinning still apply) and
``allowed_networks`` (CIDRs or addresses allowed although not public).
"""
from __future__ import annotations

import codecs
import ipaddress
import re
import socket
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping, Sequence
from urllib.parse import urljoin, urlsplit

import urllib3
from requests.utils import requote_uri

__all__ = [
    "AddressRefused", "FetchError", "GuardedResponse", "NetGuardError", "NetPolicy", "Target", "UnsafeUrl",
    "address_problem", "charset_of", "check_url", "guarded_get", "offline_resolver", "open_pinned", "parse_url",
    "reject_unsafe_chars", "resolve_checked",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Sequence[str]]

_DEFAULT_PORTS = {"http": 80, "https": 443}
_REDIRECTS = (301, 302, 303, 307, 308)
# A host name as DNS knows it (after IDNA): letters, digits, '-', '_' and dots.
_NAME = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}))*\.?$")
_NUMBER_LABEL = re.compile(r"^(\d+|0[xX][0-9A-Fa-f]*)$")
_CANONICAL_OCTET = re.compile(r"^(0|[1-9]\d{0,2})$")

# Checked in order, so the most specific name wins (metadata before link-local).
_RANGES: list[tuple[str, list[str]]] = [
    ("an unspecified address", ["0.0.0.0/8", "::/128"]),
    ("a loopback address", ["127.0.0.0/8", "::1/128"]),
    ("the cloud metadata address", ["169.254.169.254/32", "fd00:ec2::254/128"]),
    ("a link-local address", ["169.254.0.0/16", "fe80::/10"]),
    ("a private address", ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7", "fec0::/10"]),
    ("a shared (CGNAT) address", ["100.64.0.0/10"]),
    ("a multicast address", ["224.0.0.0/4", "ff00::/8"]),
    ("a broadcast or reserved address", ["240.0.0.0/4", "255.255.255.255/32"]),
    ("an IPv4-mapped IPv6 address", ["::ffff:0:0/96"]),
    ("an IPv6 address embedding IPv4 (compatible, NAT64 or 6to4)",
     ["::/96", "64:ff9b::/96", "64:ff9b:1::/48", "2002::/16"]),
]
_NETWORKS = [(label, [ipaddress.ip_network(n) for n in nets]) for label, nets in _RANGES]


class NetGuardError(Exception):
    """Base of the refusals and failures of this module."""


class UnsafeUrl(NetGuardError, ValueError):
    """The URL is malformed or ambiguous (parsers could disagree on its host)."""


class AddressRefused(NetGuardError):
    """The host is, or resolves to, an address the policy does not allow."""

    def __init__(self, message: str, host: str, address: str, reason: str):
        super().__init__(message)
        self.host, self.address, self.reason = host, address, reason


class FetchError(NetGuardError):
    """Resolution, connection or HTTP exchange failed (not a policy refusal)."""


def _system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [info[4][0] for info in infos]


def _is_localhost(host: str) -> bool:
    return host == "localhost" or host.endswith(".localhost")


def offline_resolver(host: str, port: int) -> list[str]:
    """A resolver that sends no DNS query: ``localhost`` names are loopback (RFC 6761),
    any other name is unknown. For clients whose network is off, so that checking a URL
    does not open a DNS side channel."""
    if _is_localhost(host):
        return ["127.0.0.1", "::1"]
    raise OSError(f"{host} is not resolved while the network is off")


@dataclass(frozen=True)
class NetPolicy:
    """What a tool may connect to. ``resolver`` is the one DNS look-up per host."""

    allow_private: bool = False
    allowed_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    resolver: Resolver = field(default=_system_resolver, compare=False)

    @classmethod
    def from_config(cls, config: Mapping, *, resolver: Resolver | None = None) -> "NetPolicy":
        """Policy from a backend config (``allow_private_urls``, ``allowed_networks``).

        Raises:
            ValueError: ``allowed_networks`` is not a list of CIDRs / addresses.
        """
        raw = config.get("allowed_networks") or []
        if isinstance(raw, str) or not isinstance(raw, (list, tuple)):
            raise ValueError(f"allowed_networks must be a list of CIDRs such as \"10.1.2.0/24\", got {raw!r}")
        try:
            nets = tuple(ipaddress.ip_network(str(n), strict=False) for n in raw)
        except ValueError as err:
            raise ValueError(f"allowed_networks: {err}") from None
        return cls(allow_private=bool(config.get("allow_private_urls", False)), allowed_networks=nets,
                   resolver=resolver or _system_resolver)


@dataclass(frozen=True)
class Target:
    """One parsed http(s) URL: where to connect and what to send."""

    url: str
    scheme: str
    host: str  # ASCII (IDNA) name or the IP literal, without brackets
    port: int
    ip: IPAddress | None  # set when the host is an IP literal
    request_target: str  # path and query, as sent on the request line

    @property
    def host_header(self) -> str:
        shown = f"[{self.host}]" if self.ip is not None and self.ip.version == 6 else self.host
        return shown if self.port == _DEFAULT_PORTS[self.scheme] else f"{shown}:{self.port}"


# -- parsing ---------------------------------------------------------------------------

def reject_unsafe_chars(url: str) -> None:
    """Raise :class:`UnsafeUrl` for a backslash or control character anywhere in ``url``."""
    # Browsers drop tabs/newlines and read '\' as '/', Python's parsers do neither: any of
    # them lets two parsers see two different hosts, so none is accepted anywhere.
    for ch in url:
        if ch == "\\":
            raise UnsafeUrl(f"URL contains a backslash: {url!r}")
        if ord(ch) < 0x20 or ord(ch) == 0x7F:
            raise UnsafeUrl(f"URL contains a control character ({ch!r}): {url!r}")


def _split_authority(netloc: str, url: str) -> tuple[str, str]:
    """``host`` (brackets kept) and ``port`` text of an authority without userinfo."""
    if "@" in netloc:
        raise UnsafeUrl(f"URL has user information before its host ('@'), refused: {url!r}")
    if any(ch.isspace() for ch in netloc) or "%" in netloc:
        raise UnsafeUrl(f"URL host contains whitespace or '%': {url!r}")
    if netloc.startswith("["):
        end = netloc.find("]")
        if end < 0:
            raise UnsafeUrl(f"unclosed '[' in URL host: {url!r}")
        rest = netloc[end + 1:]
        if rest and not rest.startswith(":"):
            raise UnsafeUrl(f"unexpected text after ']' in URL host: {url!r}")
        return netloc[: end + 1], rest[1:]
    host, _, port = netloc.partition(":")
    if ":" in port:
        raise UnsafeUrl(f"URL host has more than one ':' (IPv6 literals need [brackets]): {url!r}")
    return host, port


def _port(text: str, scheme: str, url: str) -> int:
    if not text:
        return _DEFAULT_PORTS[scheme]
    if not text.isascii() or not text.isdigit() or not 0 < int(text) < 65536:
        raise UnsafeUrl(f"bad port {text!r} in URL: {url!r}")
    return int(text)


def _host(raw: str, url: str) -> tuple[str, IPAddress | None]:
    """ASCII host and its address when it is an IP literal."""
    if raw.startswith("["):
        try:
            return str(ipaddress.IPv6Address(raw[1:-1])), ipaddress.IPv6Address(raw[1:-1])
        except ValueError:
            raise UnsafeUrl(f"not an IPv6 address in brackets: {raw!r}") from None
    if not raw:
        raise UnsafeUrl(f"URL has no host: {url!r}")
    try:
        # IDNA maps full-width digits and dots to ASCII, so the checks below see what DNS sees.
        host = raw.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise UnsafeUrl(f"host {raw!r} is not a valid internationalised name") from None
    labels = host.rstrip(".").split(".")
    if _NUMBER_LABEL.match(labels[-1]):
        return _ipv4_literal(labels, raw)
    if not _NAME.match(host):
        raise UnsafeUrl(f"host {raw!r} has characters a host name cannot have")
    return host.rstrip("."), None


def _ipv4_literal(labels: list[str], raw: str) -> tuple[str, IPAddress]:
    # Resolvers and browsers read 2130706433, 0x7f.1, 017700000001 and 127.1 as 127.0.0.1
    # (inet_aton forms): only the plain dotted quad is unambiguous, so only it is accepted.
    if len(labels) != 4 or not all(_CANONICAL_OCTET.match(x) and int(x) < 256 for x in labels):
        raise UnsafeUrl(f"host {raw!r} is an ambiguous numeric IPv4 form (decimal, octal, hex or short); "
                        "write the address as four decimal numbers a.b.c.d")
    address = ipaddress.IPv4Address(".".join(labels))
    return str(address), address


def parse_url(url: str) -> Target:
    """The one parse of an http(s) URL that later steps use.

    Raises:
        UnsafeUrl: not http(s), malformed, or written so that parsers could disagree.
    """
    if not isinstance(url, str) or not url:
        raise UnsafeUrl("URL is empty")
    reject_unsafe_chars(url)
    try:
        parts = urlsplit(url)
    except ValueError as err:
        raise UnsafeUrl(f"malformed URL {url!r}: {err}") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise UnsafeUrl(f"only http and https URLs can be fetched, not {url!r}")
    raw_host, port_text = _split_authority(parts.netloc, url)
    host, ip = _host(raw_host, url)
    target = requote_uri((parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
    return Target(url=url, scheme=scheme, host=host, port=_port(port_text, scheme, url), ip=ip,
                  request_target=target)


# -- address policy ----------------------------------------------------------------------

def address_problem(address: IPAddress, policy: NetPolicy) -> str | None:
    """Why ``address`` is refused under ``policy`` ("a loopback address", …), or None."""
    if policy.allow_private or any(address in net for net in policy.allowed_networks
                                   if net.version == address.version):
        return None
    for label, nets in _NETWORKS:
        if any(address in net for net in nets if net.version == address.version):
            return label
    if not address.is_global:
        return "not a public address"
    return None


def _refuse(target: Target, address: IPAddress, reason: str) -> AddressRefused:
    shown = target.host if target.ip is not None else f"{target.host} ({address})"
    mapped = getattr(address, "ipv4_mapped", None)
    extra = f"; it maps to {mapped}" if mapped else ""
    return AddressRefused(f"refusing to connect to {shown}: {reason}{extra} (allow it with the "
                          "allowed_networks or allow_private_urls option)", target.host, str(address), reason)


def resolve_checked(target: Target, policy: NetPolicy) -> list[IPAddress]:
    """Every address of ``target``'s host, each one allowed; resolved exactly once.

    Raises:
        AddressRefused: any resolved address is refused (one bad answer taints the name).
        FetchError: the name does not resolve.
    """
    if target.ip is not None:
        addresses: list[IPAddress] = [target.ip]
    else:
        # RFC 6761: localhost names are loopback and never sent to DNS (some resolvers
        # would forward "x.localhost" upstream and return whatever comes back).
        resolver = offline_resolver if _is_localhost(target.host) else policy.resolver
        try:
            answers = resolver(target.host, target.port)
        except (OSError, UnicodeError) as err:
            raise FetchError(f"cannot resolve host {target.host!r} ({err}); is the network available?") from err
        addresses = []
        for text in answers:
            address = ipaddress.ip_address(str(text).split("%", 1)[0])
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            raise FetchError(f"host {target.host!r} has no address")
    for address in addresses:
        reason = address_problem(address, policy)
        if reason:
            raise _refuse(target, address, reason)
    return addresses


def check_url(url: str, policy: NetPolicy) -> Target:
    """Parse ``url`` and check its host's addresses (for clients that connect themselves).

    Raises:
        UnsafeUrl, AddressRefused, FetchError: as :func:`parse_url` and :func:`resolve_checked`.
    """
    target = parse_url(url)
    resolve_checked(target, policy)
    return target


# -- pinned connections ---------------------------------------------------------------------

class GuardedResponse:
    """A streamed answer plus the pool that owns its connection (closed together)."""

    def __init__(self, target: Target, response: urllib3.BaseHTTPResponse, pool: urllib3.HTTPConnectionPool):
        self.target, self.response, self._pool = target, response, pool

    @property
    def url(self) -> str:
        return self.target.url

    @property
    def status(self) -> int:
        return self.response.status

    @property
    def headers(self) -> Mapping[str, str]:
        return self.response.headers

    def iter_content(self, size: int = 65536) -> Iterator[bytes]:
        try:
            yield from self.response.stream(size)
        except urllib3.exceptions.HTTPError as err:
            raise FetchError(f"cannot read {self.url}: {err.__class__.__name__}: {err}") from err

    def close(self) -> None:
        self.response.release_conn()
        self._pool.close()

    def __enter__(self) -> "GuardedResponse":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _pool(target: Target, address: IPAddress, timeout: float, ca_certs: str | None) -> urllib3.HTTPConnectionPool:
    timeouts = urllib3.Timeout(connect=timeout, read=timeout)
    if target.scheme == "http":
        return urllib3.HTTPConnectionPool(str(address), target.port, timeout=timeouts, maxsize=1, retries=False)
    # The socket goes to the checked address; SNI and certificate checks use the URL's name.
    return urllib3.HTTPSConnectionPool(
        str(address), target.port, timeout=timeouts, maxsize=1, retries=False, cert_reqs="CERT_REQUIRED",
        ca_certs=ca_certs or _default_ca(), assert_hostname=target.host, server_hostname=target.host)


def _default_ca() -> str | None:
    try:
        import certifi
    except ImportError:  # pragma: no cover - requests depends on certifi
        return None
    return certifi.where()


def open_pinned(target: Target, addresses: Sequence[IPAddress], *, headers: Mapping[str, str], timeout: float,
                ca_certs: str | None = None) -> GuardedResponse:
    """``GET`` ``target`` over a connection to one of ``addresses`` (tried in order).

    Raises:
        FetchError: no address accepted the connection, or the exchange failed.
    """
    errors = []
    for address in addresses:
        pool = _pool(target, address, timeout, ca_certs)
        try:
            response = pool.urlopen("GET", target.request_target, headers={**headers, "Host": target.host_header},
                                    redirect=False, retries=False, preload_content=False, assert_same_host=False)
        except (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError) as err:
            pool.close()
            errors.append(f"{address}: {err}")
            continue
        except urllib3.exceptions.HTTPError as err:
            pool.close()
            raise FetchError(f"cannot fetch {target.url}: {err.__class__.__name__}: {err}") from err
        return GuardedResponse(target, response, pool)
    raise FetchError(f"cannot connect to {target.host_header} ({'; '.join(errors)})")


def guarded_get(url: str, policy: NetPolicy, *, headers: Mapping[str, str], timeout: float,
                max_redirects: int = 5, ca_certs: str | None = None) -> GuardedResponse:
    """``GET url`` following at most ``max_redirects`` redirects, every hop parsed,
    resolved, checked and pinned anew. The caller closes the answer.

    Raises:
        UnsafeUrl, AddressRefused, FetchError: the first hop that fails.
    """
    current = url
    for _ in range(max_redirects + 1):
        target = parse_url(current)
        answer = open_pinned(target, resolve_checked(target, policy), headers=headers, timeout=timeout,
                             ca_certs=ca_certs)
        location = answer.headers.get("Location")
        if answer.status not in _REDIRECTS or not location:
            return answer
        answer.close()
        current = urljoin(current, location)
    raise FetchError(f"cannot fetch {url}: more than {max_redirects} redirects")


def charset_of(content_type: str) -> str | None:
    """The declared, known charset of a ``Content-Type`` value, or None."""
    match = re.search(r"charset\s*=\s*\"?([\w.:-]+)", content_type or "", re.I)
    if not match:
        return None
    try:
        return codecs.lookup(match.group(1)).name
    except LookupError:
        return None
