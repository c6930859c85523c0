"""open_within: what the server opens in a data root is checked on the opened
descriptor, so links, FIFOs and a swap between check and use gain nothing."""
from __future__ import annotations

import os
import threading
import time

import pytest

from agentflow.isolation.safefs import UnsafePath, open_within


@pytest.fixture
def layout(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "ok.csv").write_text("a\n1\n")
    (outside / "secret.csv").write_text("TOPSECRET\n")
    return root, outside


def test_a_regular_file_inside_opens(layout):
    root, _ = layout
    with open_within(root / "ok.csv", [root]) as fh:
        assert fh.read() == b"a\n1\n"


def test_a_final_symlink_is_refused(layout):
    root, outside = layout
    os.symlink(outside / "secret.csv", root / "link.csv")
    with pytest.raises(UnsafePath, match="symbolic link"):
        open_within(root / "link.csv", [root])


def test_a_linked_folder_leading_outside_is_refused_after_the_open(layout):
    root, outside = layout
    os.symlink(outside, root / "dir")
    with pytest.raises(UnsafePath, match="outside"):
        open_within(root / "dir" / "secret.csv", [root])


def test_a_fifo_is_refused_without_blocking(layout):
    root, _ = layout
    os.mkfifo(root / "fifo.csv")
    t0 = time.monotonic()
    with pytest.raises(UnsafePath, match="not a regular file"):
        open_within(root / "fifo.csv", [root])
    assert time.monotonic() - t0 < 1


def test_a_swap_racing_the_open_never_yields_the_outside_file(layout):
    root, outside = layout
    target = root / "swap.csv"
    stop = threading.Event()

    def swapper():
        while not stop.is_set():
            tmp = root / ".tmp"
            for make in (lambda: tmp.write_text("inside\n"), lambda: os.symlink(outside / "secret.csv", tmp)):
                try:
                    tmp.unlink()
                except FileNotFoundError:
                    pass
                make()
                os.replace(tmp, target)

    thread = threading.Thread(target=swapper, daemon=True)
    thread.start()
    opened = refused = 0
    deadline = time.monotonic() + 10
    try:  # until both states of the swap were met (or the time is up), never the outside file
        while (opened < 20 or refused < 20) and time.monotonic() < deadline:
            try:
                with open_within(target, [root]) as fh:
                    assert b"TOPSECRET" not in fh.read()
                    opened += 1
            except (UnsafePath, FileNotFoundError):
                refused += 1
            time.sleep(0)
    finally:
        stop.set()
        thread.join()
    assert opened and refused, (opened, refused)
