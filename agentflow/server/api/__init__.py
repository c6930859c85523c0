"""Blueprints of the HTTP API, each served at the root and under ``/api/v1``."""
from . import admin, execute, sessions, tools, warmup

BLUEPRINTS = [execute.bp, sessions.bp, tools.bp, warmup.bp, admin.bp]
