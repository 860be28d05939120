"""Which database errors the projector loop retries, and which crash it for a restart."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import exc as sa_exc

from aion_projector.service import is_transient


class _PgDriverError(Exception):
    """Stands for an asyncpg/psycopg error (its module does not name sqlite)."""


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (
            sa_exc.OperationalError("COMMIT", {}, sqlite3.OperationalError("database is locked")),
            True,
        ),
        (
            sa_exc.OperationalError("SELECT", {}, sqlite3.OperationalError("no such table: x")),
            False,
        ),
        (sa_exc.OperationalError("INSERT", {}, _PgDriverError("connection was closed")), True),
        (sa_exc.InterfaceError("INSERT", {}, _PgDriverError("connection is closed")), True),
        (
            sa_exc.DBAPIError("INSERT", {}, _PgDriverError("gone"), connection_invalidated=True),
            True,
        ),
        (sa_exc.IntegrityError("INSERT", {}, _PgDriverError("duplicate key")), False),
        (sa_exc.ProgrammingError("INSERT", {}, _PgDriverError("syntax error")), False),
        (sa_exc.TimeoutError("pool exhausted"), True),
        (ConnectionRefusedError("connect"), True),
        (ValueError("a bug"), False),
    ],
)
def test_is_transient(error: BaseException, transient: bool) -> None:
    assert is_transient(error) is transient
