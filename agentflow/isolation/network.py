"""``network: full`` without the host's loopback: a user-mode network stack per session.

A confined session always has a network namespace of its own. With ``full`` it gets a
tap device served by slirp4netns, running outside the jail as the session's uid and in
the session's cgroup (so it ends with the session), with ``--disable-host-loopback``:
the session reaches outside addresses through it, while the host's loopback — the
sandbox server's port, a local database — stays out of reach. DNS goes to slirp's
resolver (10.0.2.3), so the jail's ``/etc/resolv.conf`` is replaced.
"""
from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import time

from .errors import IsolationError, IsolationUnavailable

__all__ = ["RESOLV_CONF", "slirp_path", "require_slirp", "read_child_pid", "slirp_command", "wait_ready",
           "userns_of_netns"]

RESOLV_CONF = b"nameserver 10.0.2.3\n"
_NS_GET_USERNS = 0xB701  # ioctl: the user namespace that owns a namespace


def slirp_path() -> str | None:
    return shutil.which("slirp4netns")


def require_slirp(resource: str) -> None:
    if slirp_path() is None:
        raise IsolationUnavailable(
            f"resource '{resource}': network \"full\" needs slirp4netns (Debian/Ubuntu: apt-get install "
            "slirp4netns), which gives a session outside addresses but not the host's loopback; install it or "
            "use network \"none\"")


def read_child_pid(fd: int, timeout: float) -> int:
    """The jail's first process (host pid), from bwrap's ``--info-fd`` JSON."""
    deadline = time.monotonic() + timeout
    raw = b""
    while b"}" not in raw:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise IsolationError("the jail did not report its process in time")
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        raw += chunk
    try:
        return int(json.loads(raw)["child-pid"])
    except (ValueError, KeyError, TypeError):
        raise IsolationError("the jail reported no process") from None


def userns_of_netns(pid: int) -> int:
    """A descriptor of the user namespace owning the jail's network namespace. bwrap
    nests a second user namespace (for devpts), so the jail's own is not the one that
    may configure its network."""
    net = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        return fcntl.ioctl(net, _NS_GET_USERNS)
    finally:
        os.close(net)


def slirp_command(pid: int, userns_fd: int, ready_fd: int) -> list[str]:
    return [slirp_path() or "slirp4netns", "--configure", "--mtu=65520", "--disable-host-loopback",
            "--enable-seccomp", f"--ready-fd={ready_fd}",
            f"--userns-path=/proc/self/fd/{userns_fd}", "--netns-type=path", f"/proc/{pid}/ns/net", "tap0"]


def wait_ready(fd: int, timeout: float) -> None:
    if not select.select([fd], [], [], timeout)[0] or os.read(fd, 1) != b"1":
        raise IsolationError("the session's network (slirp4netns) did not come up")
