"""Where sessions live: the SQLite checkpointer, opened safely, with clear errors.

Every step of the intake graph is checkpointed (durability "sync": a step is on disk before the
next one starts), so a process killed between any two turns resumes with every answer intact.
Deserialization is restricted to previsit's own state types: a checkpoint file is data, not code.

Exception hierarchy::

    SessionStoreError            the sessions database cannot be used
    ├── SessionStoreMissingError  there is no database yet (nothing was ever started here)
    └── SessionStoreLockedError   another process holds a lock on it for too long
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiosqlite
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from agents.coverage import Coverage, IntakeElement
from agents.events import ModelEvent
from agents.interviewer import ProposedQuestion
from agents.safety import RedFlag
from agents.summary_schema import ClinicianSummary
from agents.transcript import Turn
from tools.fhir.record import PatientRecord
from tools.imaging.records import ImageRecord
from tools.imaging.triage import LabelProbability, LabelSetRef, TriageResult

DB_FILENAME = "sessions.sqlite"
LOCK_TIMEOUT_S = 10.0

_STATE_TYPES: list[type] = [
    PatientRecord,
    Coverage,
    IntakeElement,
    ProposedQuestion,
    Turn,
    RedFlag,
    ModelEvent,
    ClinicianSummary,
    ImageRecord,
    TriageResult,
    LabelProbability,
    LabelSetRef,
]


class SessionStoreError(Exception):
    """The sessions database cannot be used."""


class SessionStoreMissingError(SessionStoreError):
    """No sessions database exists at the configured place."""


class SessionStoreLockedError(SessionStoreError):
    """The database stayed locked by another process past the timeout."""


def database_path(data_dir: Path) -> Path:
    return data_dir / DB_FILENAME


def serializer() -> JsonPlusSerializer:
    """Checkpoint serde that rebuilds only previsit's own state types."""
    return JsonPlusSerializer(allowed_msgpack_modules=_STATE_TYPES)


def describe_sqlite_error(path: Path, exc: sqlite3.Error, waited_s: float = LOCK_TIMEOUT_S) -> SessionStoreError:
    """A `SessionStoreError` that says what happened to which file, and what to do."""
    message = str(exc)
    if "locked" in message or "busy" in message:
        return SessionStoreLockedError(
            f"The sessions database {path} is locked by another process (waited {waited_s:g} s). "
            "Close the other previsit process and try again; no answer was lost."
        )
    return SessionStoreError(f"The sessions database {path} cannot be used: {message}")


@asynccontextmanager
async def open_checkpointer(
    data_dir: Path, *, create: bool = True, lock_timeout_s: float = LOCK_TIMEOUT_S
) -> AsyncIterator[AsyncSqliteSaver]:
    """An `AsyncSqliteSaver` on `<data_dir>/sessions.sqlite`; `create=False` for read-only commands."""
    path = database_path(data_dir)
    if not path.exists():
        if not create:
            raise SessionStoreMissingError(
                f"No sessions database at {path}. Start an intake first (previsit simulate / chat), "
                "or point --data-dir at the folder that holds one."
            )
        try:
            data_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, at start-up
        except OSError as exc:
            raise SessionStoreError(f"Cannot create the data directory {data_dir}: {exc}") from exc
    try:
        connection = await aiosqlite.connect(str(path), timeout=lock_timeout_s)
    except sqlite3.Error as exc:
        raise describe_sqlite_error(path, exc, lock_timeout_s) from exc
    try:
        saver = AsyncSqliteSaver(connection, serde=serializer())
        try:
            await saver.setup()
        except sqlite3.Error as exc:
            raise describe_sqlite_error(path, exc, lock_timeout_s) from exc
        yield saver
    finally:
        await connection.close()


async def list_thread_ids(saver: AsyncSqliteSaver) -> list[str]:
    """Every session id in the database, most recently updated first."""
    async with saver.conn.execute(
        "SELECT thread_id, MAX(checkpoint_id) AS last FROM checkpoints GROUP BY thread_id ORDER BY last DESC"
    ) as cursor:
        rows = await cursor.fetchall()
    return [str(row[0]) for row in rows]
