"""Blueprints of our documented HTTP API (``/api/v1`` is :mod:`agentflow.server.reference`)."""
from . import admin, execute, sessions, tools, warmup

BLUEPRINTS = [execute.bp, sessions.bp, tools.bp, warmup.bp, admin.bp]
