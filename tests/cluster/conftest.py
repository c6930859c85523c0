"""PostgreSQL for the cluster tests."""
from tests.support.postgres import postgres_url  # noqa: F401 - a fixture
