"""The ``web`` backend family: search and page reading (:mod:`.backend`), the network
calls (:mod:`.providers`) and the offline page store (:mod:`.store`). Outbound address
checks are shared with the browser in :mod:`agentflow.tools.netguard`."""
from __future__ import annotations

from .backend import WebBackend

__all__ = ["WebBackend"]
