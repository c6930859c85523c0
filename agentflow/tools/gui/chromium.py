"""Debian's Chromium for the GUI backends, the flags it runs with inside a jail, and the
system caches GUI programs need to see there."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")

# No calls home: background networking, component updates, sync, metrics, first-run UI.
QUIET_FLAGS = [
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--disable-domain-reliability",
    "--disable-breakpad",
    "--disable-client-side-phishing-detection",
    "--disable-default-apps",
    "--disable-extensions",
    "--metrics-recording-only",
    "--no-pings",
    "--password-store=basic",
    "--use-mock-keychain",
    "--disable-features=Translate,OptimizationHints,MediaRouter,DialMediaRouteProvider,AutofillServerCommunication",
    "--disable-gpu",
    "--disable-dev-shm-usage",
]

# Chromium's own sandbox needs user/pid namespaces (or a setuid helper) that cannot be
# nested inside the session's bubblewrap jail, so it is switched off: the jail *is* the
# sandbox (own uid, mount/pid/ipc namespaces, no view of the server's files or
# processes). A renderer exploit therefore gets exactly what the session's bash gets.
JAIL_FLAGS = ["--no-sandbox"]


def find_chromium(configured: str | None = None) -> str | None:
    """The Chromium executable: the configured one, else Debian's, else on PATH."""
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    for path in CHROMIUM_CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    return shutil.which("chromium") or shutil.which("chromium-browser")


def font_caches() -> list[Path]:
    """The system's fontconfig cache, for the jail to see read-only: ``/var`` is not in a
    jail, and without the cache every X program and Chromium rescans all fonts at start
    (about 5 s per xterm)."""
    return [p for p in (Path("/var/cache/fontconfig"),) if p.is_dir()]
