"""The service's own small per-session record, beside the checkpoints, in the same database.

The graph's checkpoints hold the interview; this table holds what the service adds around it:
the token nonce, the lock of a turn in progress, review (approval, edits), uploads and a cached
status for the session list. A lock is a lease taken by one compare-and-set UPDATE, so it works the
same across processes on SQLite and on Postgres, and a killed process's lease simply runs out.
Only the lock holder may write a session's record.
"""

from __future__ import annotations

import asyncio
import json
import time
from abc import ABC, abstractmethod
from datetime import datetime
from typing import Any, Literal

import aiosqlite
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, Field

ApiStatus = Literal["awaiting_answer", "finished", "escalated", "ended"]

_COLUMNS = "session_id, patient_id, created_at, updated_at, token_nonce, lock_owner, lock_until, data"


class LaunchContext(BaseModel):
    """An EHR launch the session came from (SMART launch parameters)."""

    iss: str = Field(min_length=1, max_length=2000)
    patient: str = Field(min_length=1, max_length=200)
    encounter: str | None = Field(default=None, max_length=200)


class ImageRecord(BaseModel):
    """An upload kept under the session's directory with a random name."""

    id: str
    filename: str
    stored_name: str
    turn_id: str
    content_type: str
    modality: str | None = None
    size: int
    uploaded_at: datetime


class SummaryEdit(BaseModel):
    """One clinician change to a summary statement (text None removes it)."""

    section: str
    index: int
    text: str | None
    by: str
    at: datetime


class WriteBackRecord(BaseModel):
    at: datetime
    written: list[str]
    already_present: list[str]


class SessionData(BaseModel):
    """The JSON part of a session's record."""

    reason_for_visit: str | None = None
    launch: LaunchContext | None = None
    status: ApiStatus = "awaiting_answer"
    asked: int = 0
    red_flag: bool = False
    ended: bool = False
    escalated: bool = False
    approved_at: datetime | None = None
    approved_by: str | None = None
    clinician_note: str | None = None
    edits: list[SummaryEdit] = Field(default_factory=list)
    images: list[ImageRecord] = Field(default_factory=list)
    writebacks: list[WriteBackRecord] = Field(default_factory=list)


class SessionRecord(BaseModel):
    session_id: str
    patient_id: str
    created_at: float
    updated_at: float
    token_nonce: str
    lock_owner: str | None = None
    lock_until: float | None = None
    data: SessionData


def _record(row: Any) -> SessionRecord:
    values = dict(row) if not isinstance(row, tuple) else dict(zip(_COLUMNS.split(", "), row, strict=True))
    values["data"] = SessionData.model_validate(json.loads(values["data"]))
    return SessionRecord.model_validate(values)


class SessionStore(ABC):
    """Sessions' service records with lease locks."""

    @abstractmethod
    async def setup(self) -> None: ...

    @abstractmethod
    async def _execute(self, sql: str, params: tuple[Any, ...]) -> int:
        """Run one statement; the number of rows it changed."""

    @abstractmethod
    async def _fetch(self, sql: str, params: tuple[Any, ...]) -> list[Any]: ...

    async def create(
        self, session_id: str, patient_id: str, nonce: str, data: SessionData, owner: str, lease_s: float
    ) -> None:
        """A new record, locked by its creator (the first graph run holds the lock)."""
        now = time.time()
        await self._execute(
            f"INSERT INTO previsit_service_sessions ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (session_id, patient_id, now, now, nonce, owner, now + lease_s, data.model_dump_json()),
        )

    async def get(self, session_id: str) -> SessionRecord | None:
        rows = await self._fetch(
            f"SELECT {_COLUMNS} FROM previsit_service_sessions WHERE session_id = ?", (session_id,)
        )
        return _record(rows[0]) if rows else None

    async def list(self, limit: int = 500) -> list[SessionRecord]:
        rows = await self._fetch(
            f"SELECT {_COLUMNS} FROM previsit_service_sessions ORDER BY updated_at DESC LIMIT ?", (limit,)
        )
        return [_record(r) for r in rows]

    async def acquire(self, session_id: str, owner: str, lease_s: float) -> bool:
        """Take the session's lock if it is free or its lease ran out (one atomic UPDATE)."""
        now = time.time()
        changed = await self._execute(
            "UPDATE previsit_service_sessions SET lock_owner = ?, lock_until = ? "
            "WHERE session_id = ? AND (lock_owner IS NULL OR lock_until < ?)",
            (owner, now + lease_s, session_id, now),
        )
        return changed == 1

    async def renew(self, session_id: str, owner: str, lease_s: float) -> bool:
        changed = await self._execute(
            "UPDATE previsit_service_sessions SET lock_until = ? WHERE session_id = ? AND lock_owner = ?",
            (time.time() + lease_s, session_id, owner),
        )
        return changed == 1

    async def release(self, session_id: str, owner: str) -> None:
        await self._execute(
            "UPDATE previsit_service_sessions SET lock_owner = NULL, lock_until = NULL "
            "WHERE session_id = ? AND lock_owner = ?",
            (session_id, owner),
        )

    async def save(self, session_id: str, owner: str, data: SessionData) -> bool:
        """Write the record's data; only the lock holder can."""
        changed = await self._execute(
            "UPDATE previsit_service_sessions SET data = ?, updated_at = ? WHERE session_id = ? AND lock_owner = ?",
            (data.model_dump_json(), time.time(), session_id, owner),
        )
        return changed == 1


_TABLE = """
CREATE TABLE IF NOT EXISTS previsit_service_sessions (
    session_id TEXT PRIMARY KEY,
    patient_id TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    token_nonce TEXT NOT NULL,
    lock_owner TEXT,
    lock_until DOUBLE PRECISION,
    data TEXT NOT NULL
)
"""


class SqliteSessionStore(SessionStore):
    """Records in the SQLite sessions file, on the checkpointer's own connection and under its lock.

    One connection per process: a second connection writing the same file makes SQLite refuse a
    write outright ("database is locked") when a read snapshot cannot be upgraded, which a busy
    timeout does not cure. Sharing the saver's connection and lock serializes every write here.
    """

    def __init__(self, connection: aiosqlite.Connection, lock: asyncio.Lock) -> None:
        self.connection = connection
        self.lock = lock

    async def setup(self) -> None:
        async with self.lock:
            await self.connection.execute(_TABLE)
            await self.connection.commit()

    async def _execute(self, sql: str, params: tuple[Any, ...]) -> int:
        async with self.lock:
            cursor = await self.connection.execute(sql, params)
            await self.connection.commit()
            return cursor.rowcount

    async def _fetch(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        async with self.lock, self.connection.execute(sql, params) as cursor:
            return list(await cursor.fetchall())


class PostgresSessionStore(SessionStore):
    """Records in the Postgres database the checkpointer uses, through its connection pool."""

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self.pool = pool

    async def setup(self) -> None:
        await self._execute(_TABLE, ())

    async def _execute(self, sql: str, params: tuple[Any, ...]) -> int:
        async with self.pool.connection() as conn:
            cursor = await conn.execute(sql.replace("?", "%s"), params)
            return int(cursor.rowcount)

    async def _fetch(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        async with self.pool.connection() as conn:
            cursor = await conn.execute(sql.replace("?", "%s"), params)
            return list(await cursor.fetchall())
