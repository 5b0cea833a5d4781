from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import POSTGRES_URL
from tests.keys.dbs import database_url


@pytest.fixture(params=["sqlite", "postgresql"])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The database of each test, SQLite or PostgreSQL (a missing server fails, never skips)."""
    async for url in database_url(request.param, tmp_path, POSTGRES_URL):
        yield url
