"""Database models, engines and migrations.

Importing this package registers every model on ``Base.metadata`` (Alembic needs the
full picture); each feature keeps its models in its own module here.
"""
from .base import Base, isoformat, utcnow
from .engine import DatabaseError, default_database_url, make_engine, make_session_factory, upgrade
from . import models  # noqa: F401  (registers the server tables)
from . import rollout  # noqa: F401  (registers the rollout tables)
from . import synthesis  # noqa: F401  (registers the synthesis tables)
from . import web_cache  # noqa: F401
from . import model_cache  # noqa: F401  (registers the model-call cache)

__all__ = [
    "Base",
    "DatabaseError",
    "default_database_url",
    "isoformat",
    "make_engine",
    "make_session_factory",
    "upgrade",
    "utcnow",
]
