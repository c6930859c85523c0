"""Private helpers shared by the ``vm`` and ``browser`` backends: Debian's Chromium and
the flags that keep it quiet on a machine without network."""
from __future__ import annotations

import os
import shutil

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


def find_chromium(configured: str | None = None) -> str | None:
    """The Chromium executable: the configured one, else Debian's, else on PATH."""
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    for path in CHROMIUM_CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    return shutil.which("chromium") or shutil.which("chromium-browser")


def sandbox_flags() -> list[str]:
    """Chromium's own sandbox cannot run as root: it must be told so."""
    return ["--no-sandbox"] if os.geteuid() == 0 else []
