"""SSRF: ``web:visit`` (and ``browser:goto``) must not reach loopback, private or other
non-public addresses, whatever the URL looks like, wherever a redirect points, and
whatever a second DNS answer says.

Only loopback traffic: a "secret" HTTP server on 127.0.0.1 stands for the sandbox
server's API and any other local service; an "allowed" server on 127.0.0.2 is what the
operator allowed in config (``allowed_networks``). Each attack asserts the secret server
got no request. Forms naming a public address are refused before any connection, and
the unit tests prove that by failing every socket connect.
"""
from __future__ import annotations

import ipaddress
import shutil
import ssl
import subprocess
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import urllib3

from agentflow.tools import netguard
from agentflow.tools.base import BackendContext, ParamError, ToolError
from agentflow.tools.netguard import AddressRefused, FetchError, NetPolicy, UnsafeUrl
from agentflow.tools.web.providers import ProviderError, fetch_page
from tests.support.server import start_server

REPO = Path(__file__).resolve().parents[2]


class Recorder(BaseHTTPRequestHandler):
    """Records every request; ``/page`` answers HTML, ``/go?to=URL`` redirects to URL,
    ``/loop`` redirects to itself."""

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802
        self.server.hits.append({"path": self.path, "host": self.headers.get("Host")})
        if self.path.startswith("/go?to="):
            return self._redirect(self.path[len("/go?to="):])
        if self.path == "/loop":
            return self._redirect("/loop")
        body = b"<html><head><title>ok</title></head><body><main><p>SECRET-OR-PAGE</p></main></body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location: str) -> None:
        from urllib.parse import unquote

        self.send_response(302)
        self.send_header("Location", unquote(location))
        self.send_header("Content-Length", "0")
        self.end_headers()


def serve(host: str, tls: ssl.SSLContext | None = None) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((host, 0), Recorder)
    server.hits = []
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def secret():
    server = serve("127.0.0.1")
    yield server
    server.shutdown()


@pytest.fixture(scope="module")
def allowed():
    server = serve("127.0.0.2")
    yield server
    server.shutdown()


@pytest.fixture(autouse=True)
def _clear(secret, allowed):
    secret.hits.clear()
    allowed.hits.clear()


def bypass_urls(port: int) -> list[str]:
    """Ways to write "127.0.0.1:port" (or another local address) that a naive check misses."""
    return [
        f"http://127.0.0.1:{port}\\@8.8.8.8/",  # the reported bypass: checker saw 8.8.8.8
        f"http://127.0.0.1:{port}/",
        f"http://localhost:{port}/",
        f"http://localhost.:{port}/",
        f"http://127.0.0.1.:{port}/",
        f"http://127.0.0.2.nip.io.localhost:{port}/",
        f"http://[::1]:{port}/",
        f"http://[::ffff:127.0.0.1]:{port}/",
        f"http://[::ffff:7f00:1]:{port}/",
        f"http://[::127.0.0.1]:{port}/",
        f"http://0.0.0.0:{port}/",
        f"http://[::]:{port}/",
        f"http://2130706433:{port}/",
        f"http://0x7f.1:{port}/",
        f"http://017700000001:{port}/",
        f"http://0x7f000001:{port}/",
        f"http://0177.0.0.1:{port}/",
        f"http://127.1:{port}/",
        f"http://\uff11\uff12\uff17\uff0e\uff10\uff0e\uff10\uff0e\uff11:{port}/",  # full-width digits and dots
        f"http://foo@127.0.0.1:{port}/",
        f"http://8.8.8.8:80@127.0.0.1:{port}/",
        f"http://127.0.0.%31:{port}/",
        f"http://127.0.0.1:{port}%2F@8.8.8.8/",
        f"http://127.0.0.\t1:{port}/",
        f"http://127.0.0.1:{port}\\/",
        f"http://127.0.0.1\\:{port}/",
    ]


# -- unit: the netguard itself ------------------------------------------------------------------

@pytest.fixture
def no_connect(monkeypatch):
    """Fail (and record) every socket connect urllib3 makes, so a test can show that a
    refusal happened before any connection was attempted."""
    attempts = []

    def refuse(address, *args, **kwargs):
        attempts.append(address)
        raise OSError("connection attempted in a test that forbids it")

    monkeypatch.setattr(urllib3.util.connection, "create_connection", refuse)
    return attempts


@pytest.mark.parametrize("index", range(len(bypass_urls(1))))
def test_bypass_forms_are_refused_before_connecting(no_connect, secret, index):
    url = bypass_urls(secret.server_address[1])[index]
    with pytest.raises((UnsafeUrl, AddressRefused)):
        netguard.guarded_get(url, NetPolicy(), headers={}, timeout=2)
    assert no_connect == [] and secret.hits == []


@pytest.mark.parametrize("url, text", [
    ("http://127.0.0.1:1\\@8.8.8.8/", "backslash"),
    ("http://foo@8.8.8.8/", "user information"),
    ("http://2130706433/", "ambiguous numeric IPv4"),
    ("http://0x7f.1/", "ambiguous numeric IPv4"),
    ("http://017700000001/", "ambiguous numeric IPv4"),
    ("http://8.8.8.8\n/", "control character"),
    ("http://exa mple.org/", "whitespace"),
    ("http://[::1/", "Invalid IPv6"),
    ("http://[fe80::1%25eth0]/", "'%'"),
    ("http://::1/", "more than one ':'"),
    ("http://8.8.8.8:99999/", "bad port"),
    ("file:///etc/passwd", "only http and https"),
    ("gopher://127.0.0.1:6379/", "only http and https"),
])
def test_parse_refusals_say_why(url, text):
    with pytest.raises(UnsafeUrl, match=text):
        netguard.parse_url(url)


@pytest.mark.parametrize("address, reason", [
    ("127.0.0.1", "loopback"), ("127.255.255.254", "loopback"), ("::1", "loopback"),
    ("0.0.0.0", "unspecified"), ("0.1.2.3", "unspecified"), ("::", "unspecified"),
    ("169.254.169.254", "cloud metadata"), ("fd00:ec2::254", "cloud metadata"),
    ("169.254.1.1", "link-local"), ("fe80::1", "link-local"), ("febf::1", "link-local"),
    ("10.0.0.1", "private"), ("172.16.0.1", "private"), ("172.31.255.255", "private"),
    ("192.168.1.1", "private"), ("fc00::1", "private"), ("fd12:3456::1", "private"),
    ("100.64.0.1", "CGNAT"), ("100.127.255.255", "CGNAT"),
    ("224.0.0.1", "multicast"), ("239.255.255.250", "multicast"), ("ff02::1", "multicast"),
    ("ff0e::1", "multicast"),
    ("255.255.255.255", "broadcast"), ("240.0.0.1", "reserved"),
    ("::ffff:127.0.0.1", "IPv4-mapped"), ("::ffff:8.8.8.8", "IPv4-mapped"),
    ("64:ff9b::7f00:1", "embedding IPv4"), ("2002:7f00:1::1", "embedding IPv4"), ("::7f00:1", "embedding IPv4"),
    ("192.0.2.1", "not a public address"), ("198.18.0.1", "not a public address"),
])
def test_non_public_ranges_are_refused(address, reason):
    problem = netguard.address_problem(ipaddress.ip_address(address), NetPolicy())
    assert problem is not None and reason in problem


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "172.32.0.1", "100.128.0.1", "2606:4700::1111",
                                     "2a00:1450::1"])
def test_public_addresses_pass(address):
    assert netguard.address_problem(ipaddress.ip_address(address), NetPolicy()) is None


def test_operator_allow_list_and_allow_private():
    policy = NetPolicy.from_config({"allowed_networks": ["127.0.0.2/32", "10.1.0.0/16"]})
    assert netguard.address_problem(ipaddress.ip_address("127.0.0.2"), policy) is None
    assert netguard.address_problem(ipaddress.ip_address("10.1.2.3"), policy) is None
    assert "loopback" in netguard.address_problem(ipaddress.ip_address("127.0.0.1"), policy)
    # the mapped form of an allowed address is a different address: not allowed unless listed
    assert "IPv4-mapped" in netguard.address_problem(ipaddress.ip_address("::ffff:127.0.0.2"), policy)
    assert netguard.address_problem(ipaddress.ip_address("127.0.0.1"),
                                    NetPolicy.from_config({"allow_private_urls": True})) is None
    with pytest.raises(ValueError, match="allowed_networks"):
        NetPolicy.from_config({"allowed_networks": "10.0.0.0/8"})
    with pytest.raises(ValueError, match="allowed_networks"):
        NetPolicy.from_config({"allowed_networks": ["not-a-net"]})


def test_one_bad_answer_taints_the_name(no_connect):
    policy = NetPolicy(resolver=lambda host, port: ["8.8.8.8", "127.0.0.1"])
    with pytest.raises(AddressRefused, match=r"mixed\.test \(127\.0\.0\.1\): a loopback address"):
        netguard.guarded_get("http://mixed.test/", policy, headers={}, timeout=2)
    assert no_connect == []


def test_unresolvable_name_is_a_fetch_error(no_connect):
    def nxdomain(host, port):
        raise OSError("Name or service not known")

    with pytest.raises(FetchError, match="cannot resolve host 'nowhere.test'"):
        netguard.guarded_get("http://nowhere.test/", NetPolicy(resolver=nxdomain), headers={}, timeout=2)
    assert no_connect == []


def test_connection_is_pinned_to_the_checked_address(secret, allowed):
    """DNS rebinding: the first answer (allowed) is checked, a later one (loopback) would
    win if the HTTP library resolved again. The request lands on the checked address and
    carries the original name in Host."""
    answers = iter([["127.0.0.2"], ["127.0.0.1"], ["127.0.0.1"]])
    calls = []

    def rebinding(host, port):
        calls.append(host)
        return next(answers)

    policy = NetPolicy(allowed_networks=(ipaddress.ip_network("127.0.0.2/32"),), resolver=rebinding)
    port = allowed.server_address[1]
    page = fetch_page(f"http://rebind.test:{port}/page", timeout=5, max_bytes=10_000, policy=policy)
    assert page["text"].strip() == "SECRET-OR-PAGE"
    assert calls == ["rebind.test"]  # resolved exactly once
    assert allowed.hits == [{"path": "/page", "host": f"rebind.test:{port}"}]
    assert secret.hits == []


def test_redirect_hops_are_each_checked(secret, allowed):
    policy = NetPolicy(allowed_networks=(ipaddress.ip_network("127.0.0.2/32"),))
    base = f"http://127.0.0.2:{allowed.server_address[1]}"
    target = f"http://127.0.0.1:{secret.server_address[1]}/"
    with pytest.raises(ProviderError, match="refusing to connect to 127.0.0.1: a loopback address"):
        fetch_page(f"{base}/go?to={target}", timeout=5, max_bytes=10_000, policy=policy)
    with pytest.raises(ProviderError, match="more than 5 redirects"):
        fetch_page(f"{base}/loop", timeout=5, max_bytes=10_000, policy=policy)
    assert len([h for h in allowed.hits if h["path"] == "/loop"]) == 6
    assert secret.hits == []


# -- unit: HTTPS keeps SNI and certificate checks on the name ---------------------------------------

@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=pinned.test", "-addext",
                    "subjectAltName=DNS:pinned.test"], check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    names = []
    context.sni_callback = lambda sock, name, ctx: names.append(name)
    server = serve("127.0.0.2", tls=context)
    yield server, str(cert), names
    server.shutdown()


def test_https_sends_sni_and_verifies_the_name_while_pinned(tls_server):
    server, cert, names = tls_server
    port = server.server_address[1]
    policy = NetPolicy(allowed_networks=(ipaddress.ip_network("127.0.0.2/32"),),
                       resolver=lambda host, p: ["127.0.0.2"])
    page = fetch_page(f"https://pinned.test:{port}/page", timeout=5, max_bytes=10_000, policy=policy,
                      ca_certs=cert)
    assert page["text"].strip() == "SECRET-OR-PAGE" and names[-1] == "pinned.test"
    assert server.hits[-1]["host"] == f"pinned.test:{port}"
    with pytest.raises(ProviderError, match="(?i)certificate|hostname"):
        fetch_page(f"https://other.test:{port}/page", timeout=5, max_bytes=10_000, policy=policy, ca_certs=cert)


# -- unit: browser:goto uses the same check ------------------------------------------------------------

@pytest.fixture
def browser(tmp_path):
    from agentflow.tools.gui.browser import BrowserBackend

    return BrowserBackend({"allow_network": True},
                          BackendContext(data_dir=tmp_path, roots=[REPO], project_dir=REPO))


@pytest.mark.parametrize("index", range(len(bypass_urls(1))))
def test_browser_goto_refuses_bypass_forms(browser, no_connect, secret, index):
    url = bypass_urls(secret.server_address[1])[index]
    with pytest.raises((ParamError, ToolError)) as err:
        browser.goto(None, url=url)
    if isinstance(err.value, ToolError):
        assert "refusing to connect" in err.value.message
    assert no_connect == [] and secret.hits == []


def test_browser_goto_with_network_off_sends_no_dns(tmp_path, monkeypatch):
    from agentflow.tools.gui.browser import BrowserBackend

    offline = BrowserBackend({}, BackendContext(data_dir=tmp_path, roots=[REPO], project_dir=REPO))
    import socket

    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: pytest.fail(f"DNS query with the network off: {a}"))
    with pytest.raises(ToolError, match="loopback"):
        offline._check_address("http://localhost:9/", "http://localhost:9/")
    offline._check_address("https://example.invalid/", "https://example.invalid/")  # left to the offline route
    offline._check_address("https://docs.python.org/3/library/json.html", "x")  # offline corpus page


# -- through the API: the real server under gunicorn ------------------------------------------------------

@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    config = {"resources": {"web": {"config": {
        "visit_method": "direct", "cache_mode": "off", "allow_network": True, "fetch_timeout": 5,
        "allowed_networks": ["127.0.0.2/32"]}}}}
    server = start_server(tmp_path_factory.mktemp("ssrf"), config=config)
    yield server
    server.stop()


def visit(srv, url: str) -> dict:
    return srv.post("/execute", {"worker_id": f"ssrf-{uuid.uuid4().hex[:6]}", "action": "web:visit",
                                 "params": {"urls": url}}).json()


def test_api_allowed_host_is_fetched(srv, allowed, secret):
    out = visit(srv, f"http://127.0.0.2:{allowed.server_address[1]}/page")
    assert out["code"] == 0, out
    assert out["data"]["pages"][0]["text"].strip() == "SECRET-OR-PAGE"
    assert [h["path"] for h in allowed.hits] == ["/page"] and secret.hits == []


@pytest.mark.parametrize("index", range(len(bypass_urls(1))))
def test_api_bypass_forms_are_refused(srv, secret, index):
    url = bypass_urls(secret.server_address[1])[index]
    out = visit(srv, url)
    assert out["code"] in (1002, 2001), out
    assert any(word in out["message"] for word in ("refusing to connect", "backslash", "user information",
                                                    "ambiguous numeric", "control character", "'%'")), out
    assert secret.hits == []


def test_api_server_own_port_via_reported_bypass(srv):
    out = visit(srv, f"http://127.0.0.1:{srv.port}\\@8.8.8.8/health")
    assert out["code"] == 1002 and "backslash" in out["message"], out
    out = visit(srv, f"http://127.0.0.1:{srv.port}/health")
    assert out["code"] == 2001 and "a loopback address" in out["message"], out


@pytest.mark.parametrize("target", [
    "http://127.0.0.1:{port}/",
    "http://localhost:{port}/",
    "http://[::ffff:127.0.0.1]:{port}/",
    "http://2130706433:{port}/",
    "http://127.0.0.1:{port}\\@8.8.8.8/",
])
def test_api_redirect_from_allowed_host_to_loopback_is_refused(srv, allowed, secret, target):
    location = target.format(port=secret.server_address[1]).replace("\\", "%5C")
    out = visit(srv, f"http://127.0.0.2:{allowed.server_address[1]}/go?to={location}")
    assert out["code"] == 2001, out
    assert "refusing to connect" in out["message"] or "backslash" in out["message"] \
        or "ambiguous" in out["message"], out
    assert len(allowed.hits) == 1 and secret.hits == []
