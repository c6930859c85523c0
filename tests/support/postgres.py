"""A throwaway PostgreSQL server on loopback, for the tests that prove AgentFlow works
on PostgreSQL by URL (``tests/db``, ``tests/cluster``). Skips (saying why) where
PostgreSQL or psycopg is missing. A conftest imports the fixture to use it."""
from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from tests.support.server import free_port


def _pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


class PostgresUnavailable(Exception):
    """PostgreSQL's server binaries, a user to run them as, or psycopg are missing."""


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[str]:
    """Start a PostgreSQL server on loopback with an empty ``agentflow`` database; yield
    its URL; stop and remove it. Raises PostgresUnavailable saying what is missing."""
    try:
        import psycopg
    except ImportError:
        raise PostgresUnavailable("psycopg is not installed (pip install '.[postgres]')") from None
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        raise PostgresUnavailable("PostgreSQL server binaries are not installed (Debian package postgresql)")
    run_as: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise PostgresUnavailable("no 'postgres' user to run the PostgreSQL server as") from None
        run_as = ["runuser", "-u", "postgres", "--"]
    base = Path(tempfile.mkdtemp(prefix="agentflow-pg-"))
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    if run_as:
        shutil.chown(base, "postgres")
        shutil.chown(sock, "postgres")
    port = free_port()
    subprocess.run([*run_as, initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
                   check=True, capture_output=True)
    subprocess.run([*run_as, pg_ctl, "-D", str(data), "-w", "-l", str(base / "log"), "-o",
                    f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300",
                    "start"], check=True, capture_output=True)
    try:
        with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE agentflow")
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/agentflow"
    finally:
        subprocess.run([*run_as, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def postgres_or_exit() -> Iterator[str]:
    """:func:`throwaway_postgres` for a script (the benchmarks): exits saying what is missing."""
    import sys

    try:
        with throwaway_postgres() as url:
            yield url
    except PostgresUnavailable as err:
        sys.exit(f"cannot start PostgreSQL: {err}")


@pytest.fixture(scope="session")
def postgres_url():
    try:
        with throwaway_postgres() as url:
            yield url
    except PostgresUnavailable as err:
        pytest.skip(str(err))
