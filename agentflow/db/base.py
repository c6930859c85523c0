"""Declarative base shared by every model (server, rollout, synthesis)."""
from __future__ import annotations

import datetime as _dt

from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def utcnow() -> _dt.datetime:
    """Naive UTC timestamp: the form every DateTime column in the schema holds."""
    return _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None)


def isoformat(value: _dt.datetime | None) -> str | None:
    """Render a stored (naive UTC) timestamp as ISO 8601 with a ``Z``."""
    return None if value is None else value.isoformat(timespec="milliseconds") + "Z"
