"""The sandbox as an MCP server, driven by the ``mcp`` SDK's own client: ``agentflow mcp
serve`` over stdio and ``/mcp`` (Streamable HTTP) of a real server under gunicorn."""
from __future__ import annotations

import base64
import json
import shutil
import sys
from pathlib import Path

import anyio
import pytest

pytest.importorskip("mcp")
import httpx2  # noqa: E402 - comes with mcp
from mcp import Client, StdioServerParameters, stdio_client  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402

from tests.support.server import start_server  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TOKEN = "serve-test-token"
_GUI = all(shutil.which(p) for p in ("Xvfb", "xdotool", "openbox", "xauth"))


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    resources = {"bash": {}, "code": {}, "diag": {}, **({"vm": {"config": {}}} if _GUI else {})}
    srv = start_server(tmp_path_factory.mktemp("mcp-serve"), config={"resources": resources}, token=TOKEN)
    yield srv
    srv.stop()


def _stdio(srv):
    params = StdioServerParameters(command=sys.executable, args=["-m", "agentflow.cli", "mcp", "serve",
                                                                 "--server-url", srv.url, "--token", TOKEN],
                                   cwd=str(REPO))
    return Client(stdio_client(params))


class _Http:
    """A Client on /mcp with the token; remembers the session id it was given."""

    def __init__(self, srv, token=TOKEN):
        self.http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"})
        self.url = srv.url + "/mcp"

    async def __aenter__(self):
        await self.http.__aenter__()
        self.client = Client(streamable_http_client(self.url, http_client=self.http))
        return await self.client.__aenter__()

    async def __aexit__(self, *exc):
        await self.client.__aexit__(*exc)
        await self.http.__aexit__(*exc)


def _connect(kind, srv):
    return _stdio(srv) if kind == "stdio" else _Http(srv)


def _data(result) -> dict:
    return result.structured_content if result.structured_content is not None else json.loads(result.content[0].text)


async def _scenario(kind, srv):
    async with _connect(kind, srv) as one:
        names = {t.name for t in (await one.list_tools()).tools}
        assert {"bash-run", "code-run"} <= names and not any(n.startswith("diag-") for n in names), names
        tool = next(t for t in (await one.list_tools()).tools if t.name == "bash-run")
        assert tool.input_schema["required"] == ["command"]
        first = await one.call_tool("bash-run", {"command": "mkdir -p d && cd d && export KEPT=yes"})
        assert not first.is_error, first
        second = await one.call_tool("bash-run", {"command": "pwd; echo $KEPT"})
        out = _data(second)["stdout"].split()
        assert out[0].endswith("/d") and out[1] == "yes", out
        failing = await one.call_tool("bash-run", {"command": "echo nope >&2; exit 7"})
        assert failing.is_error and "exited with code 7" in failing.content[0].text, failing
        raised = await one.call_tool("code-run", {"code": "1/0"})
        assert raised.is_error and "ZeroDivisionError" in raised.content[0].text
        unknown = await one.call_tool("no-such-tool", {})
        assert unknown.is_error and "1001" in unknown.content[0].text
        figure = await one.call_tool("code-run", {"code": "x = 41"})
        assert not figure.is_error
        async with _connect(kind, srv) as two:
            other = await two.call_tool("bash-run", {"command": "pwd; echo ${KEPT:-unset}"})
            assert _data(other)["stdout"].split()[1] == "unset"
            assert not _data(other)["stdout"].split()[0].endswith("/d")
            var = await two.call_tool("code-run", {"code": "print('x' in dir())"})
            assert _data(var)["stdout"].strip() == "False"
        kept = await one.call_tool("code-run", {"code": "x + 1"})
        assert _data(kept)["value"] == "42"
        if _GUI:
            shot = await one.call_tool("vm-screenshot", {})
            assert not shot.is_error, shot.content[0].text[:500]
            images = [c for c in shot.content if c.type == "image"]
            assert images and base64.b64decode(images[0].data).startswith(b"\x89PNG")
            assert images[0].mime_type == "image/png" and "returned as MCP image content" in shot.content[0].text


@pytest.mark.parametrize("kind", ["stdio", "http"])
def test_one_connection_is_one_worker(sandbox, kind):
    before = _live(sandbox)
    anyio.run(_scenario, kind, sandbox)
    assert _live(sandbox) == before  # the closed connections' sessions were destroyed


def _live(srv) -> int:
    import sqlite3

    db = sqlite3.connect(srv.home / "agentflow.db")
    try:
        return db.execute("SELECT count(*) FROM sessions WHERE status IN ('active', 'starting')").fetchone()[0]
    finally:
        db.close()


def test_calls_are_audited_with_the_connection_as_trace(sandbox):
    async def run():
        async with _Http(sandbox) as client:
            await client.call_tool("bash-run", {"command": "echo audited-over-mcp"})
            await client.call_tool("bash-run", {"command": "true"})

    anyio.run(run)
    import sqlite3

    db = sqlite3.connect(sandbox.home / "agentflow.db")
    rows = db.execute("SELECT trace_id, worker_id FROM tool_calls WHERE params LIKE '%audited-over-mcp%'").fetchall()
    assert len(rows) == 1 and rows[0][1] == f"mcp-{rows[0][0]}", rows
    both = db.execute("SELECT count(*) FROM tool_calls WHERE trace_id = ?", (rows[0][0],)).fetchone()[0]
    assert both == 2


def test_http_needs_the_token_and_refuses_unknown_sessions(sandbox):
    import requests

    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    assert requests.post(sandbox.url + "/mcp", json=body, headers=headers).status_code == 401
    auth = {**headers, "Authorization": f"Bearer {TOKEN}"}
    forged = requests.post(sandbox.url + "/mcp", json=body, headers={**auth, "Mcp-Session-Id": "mcp-" + "0" * 32
                                                                     + "." + "0" * 32})
    assert forged.status_code == 404
    sessionless = requests.post(sandbox.url + "/mcp", json=body, headers=auth)
    assert sessionless.status_code == 200 and "bash-run" in sessionless.text
    assert requests.get(sandbox.url + "/mcp", headers=auth).status_code == 405
