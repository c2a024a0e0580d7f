"""Opening the session database: the checkpointer and the service's record store, on one database.

`--db` names a SQLite file (the default: `<data-dir>/sessions.sqlite`) or a `postgresql://` URL.
On Postgres both share one connection pool, and schema set-up runs under an advisory lock so
several server processes can start at once against a fresh database.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from graphs.checkpoint import SessionStoreError, describe_sqlite_error, serializer
from previsit.service.store import PostgresSessionStore, SessionStore, SqliteSessionStore

_SETUP_LOCK_KEY = 7_316_504  # pg_advisory_lock key guarding schema set-up


@dataclass(frozen=True)
class Backend:
    checkpointer: BaseCheckpointSaver[Any]
    store: SessionStore
    description: str


@asynccontextmanager
async def open_backend(db: str, *, lock_timeout_s: float = 10.0, pool_size: int = 10) -> AsyncIterator[Backend]:
    if db.startswith(("postgresql://", "postgres://")):
        async with _postgres(db, pool_size) as backend:
            yield backend
    else:
        async with _sqlite(Path(db), lock_timeout_s) as backend:
            yield backend


@asynccontextmanager
async def _sqlite(path: Path, lock_timeout_s: float) -> AsyncIterator[Backend]:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        connection = await aiosqlite.connect(str(path), timeout=lock_timeout_s)
    except (OSError, sqlite3.Error) as exc:
        raise SessionStoreError(f"The sessions database {path} cannot be opened: {exc}") from exc
    try:
        saver = AsyncSqliteSaver(connection, serde=serializer())
        store = SqliteSessionStore(connection, saver.lock)
        try:
            await saver.setup()
            await store.setup()
        except sqlite3.Error as exc:
            raise describe_sqlite_error(path, exc, lock_timeout_s) from exc
        yield Backend(saver, store, f"sqlite:{path}")
    finally:
        await connection.close()


@asynccontextmanager
async def _postgres(url: str, pool_size: int) -> AsyncIterator[Backend]:
    pool: AsyncConnectionPool[AsyncConnection[Any]] = AsyncConnectionPool(
        url,
        min_size=1,
        max_size=pool_size,
        open=False,
        kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
    )
    try:
        await pool.open(wait=True, timeout=15)
    except Exception as exc:
        raise SessionStoreError(f"Cannot connect to the Postgres sessions database: {type(exc).__name__}") from exc
    try:
        saver = AsyncPostgresSaver(pool, serde=serializer())
        store = PostgresSessionStore(pool)
        async with pool.connection() as conn:
            await conn.execute("SELECT pg_advisory_lock(%s)", (_SETUP_LOCK_KEY,))
            try:
                await saver.setup()
                await store.setup()
            finally:
                await conn.execute("SELECT pg_advisory_unlock(%s)", (_SETUP_LOCK_KEY,))
        yield Backend(saver, store, "postgres")
    finally:
        await pool.close()
