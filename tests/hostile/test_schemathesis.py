"""Property-based fuzzing of the HTTP API from its own ``/openapi.json`` (schemathesis).

Checks: no 5xx, every status code and content type documented, every response body
valid against the documented schema, schema-violating requests refused, undeclared
methods answered with 405 + ``Allow``. ``positive_data_acceptance`` is left out on
purpose: a schema-valid body may still name a resource that is not enabled (1002) —
the schema cannot know the server's config.

Repeatable: a fixed seed and a bounded number of examples per operation. Reproduce a
failure with the ``curl`` line schemathesis prints.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("schemathesis")

CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,"
          "negative_data_rejection,unsupported_method")
# /shutdown would end the server under test. (/api/v1, the reference's protocol, is not in
# the document; tests/compat checks it.)
EXCLUDE = r"shutdown"
EXAMPLES = 25
SEED = 20240607


def _cli() -> list[str]:
    exe = Path(sys.executable).with_name("schemathesis")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("schemathesis") or shutil.which("st")
    return [found] if found else [sys.executable, "-m", "schemathesis.cli"]


def run_schemathesis(server, *extra: str) -> subprocess.CompletedProcess:
    cmd = [*_cli(), "run", server.url + "/openapi.json", "--checks", CHECKS,
           "--exclude-path-regex", EXCLUDE, "-n", str(EXAMPLES), "--seed", str(SEED),
           "--workers", "2", "--continue-on-failure", "--request-timeout", "60",
           "--phases", "examples,coverage,fuzzing", *extra]
    for name, value in server.headers().items():
        cmd += ["-H", f"{name}: {value}"]
    # its cwd gets a .schemathesis/ cache: keep it out of the repository
    return subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=server.home)


@pytest.mark.slow
def test_api_conforms_to_its_openapi_document(server_factory):
    # Backends that need no model and start no kernel, so the run stays cheap.
    srv = server_factory({"resources": {name: {"enabled": True} for name in ("diag", "bash", "text2sql", "doc")}})
    out = run_schemathesis(srv)
    assert out.returncode == 0, out.stdout[-20000:] + out.stderr[-3000:]
    assert "Tested:" in out.stdout
    assert " 5000" not in srv.log_text() and "unhandled error" not in srv.log_text()


@pytest.mark.slow
def test_token_protected_api_conforms_too(server_factory):
    """With a token every operation is fuzzed authenticated: 401 must never appear."""
    srv = server_factory({"resources": {"diag": {"enabled": True}}}, token="fuzz-token")
    out = run_schemathesis(srv, "--include-path-regex", r"^/(execute|tools|session/list|warmup/status)$")
    assert out.returncode == 0, out.stdout[-20000:] + out.stderr[-3000:]
    assert "[401]" not in out.stdout
