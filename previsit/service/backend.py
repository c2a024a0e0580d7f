"""Opening the session database: the checkpointer and the service's record store, on one database.

`--db` names a SQLite file (the default: `<data-dir>/sessions.sqlite`) or a `postgresql://` URL.
On Postgres both share one connection pool, and schema set-up runs under an advisory lock so
several server processes can start at once against a fresh database.
"""

from __future__ import annotations

import asyncio
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


async def _advisory_lock(conn: AsyncConnection[Any], timeout_s: float = 120.0) -> None:
    """Take the set-up lock by polling `pg_try_advisory_lock`.

    A blocking `pg_advisory_lock` would wait inside a statement that holds a snapshot, and the
    checkpointer's migrations run `CREATE INDEX CONCURRENTLY`, which waits for every such snapshot:
    two processes starting together would wait on each other for ever.
    """
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        cursor = await conn.execute("SELECT pg_try_advisory_lock(%s) AS locked", (_SETUP_LOCK_KEY,))
        row = await cursor.fetchone()
        if row is not None and row["locked"]:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise SessionStoreError(f"Another process held the database set-up lock for over {timeout_s:g} s.")
        await asyncio.sleep(0.2)


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
            await _advisory_lock(conn)
            try:
                await saver.setup()
                await store.setup()
            finally:
                await conn.execute("SELECT pg_advisory_unlock(%s)", (_SETUP_LOCK_KEY,))
        yield Backend(saver, store, "postgres")
    finally:
        await pool.close()
