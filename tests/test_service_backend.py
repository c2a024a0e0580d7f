"""Opening the session database: several servers setting up a fresh Postgres database at the same moment."""

from __future__ import annotations

import asyncio

import pytest

from previsit.service.backend import open_backend
from tests.postgres_fixture import postgres_db, postgres_server  # noqa: F401 - fixtures


async def test_servers_starting_together_set_up_a_fresh_postgres_database_without_waiting_on_each_other(
    request: pytest.FixtureRequest,
) -> None:
    database: str = request.getfixturevalue("postgres_db")

    async def start() -> int:
        async with open_backend(database, pool_size=2) as backend:
            return len(await backend.store.list())

    assert await asyncio.wait_for(asyncio.gather(*(start() for _ in range(4))), timeout=60) == [0, 0, 0, 0]
