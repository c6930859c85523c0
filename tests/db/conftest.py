"""PostgreSQL for the tests of this folder."""
from tests.support.postgres import postgres_url  # noqa: F401 - a fixture
