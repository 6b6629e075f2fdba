"""What PostgreSQL has and plans: a table's indexes and foreign keys, a statement's plan."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection

postgres_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="index names and plans of PostgreSQL"
)


def index_names(table: str) -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname FROM pg_indexes WHERE tablename = %s", [table])
        return {name for (name,) in cursor.fetchall()}


def plan(sql: str, params: list[Any]) -> str:
    """EXPLAIN of `sql`; call inside a transaction (the setting is local to it)."""
    with connection.cursor() as cursor:
        # Tiny test tables: without this the planner reads them whole.
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN {sql}", params)
        return "\n".join(row[0] for row in cursor.fetchall())


def referenced_tables(table: str) -> set[str]:
    """The tables `table`'s database foreign keys point to."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT confrelid::regclass::text FROM pg_constraint"
            " WHERE conrelid = %s::regclass AND contype = 'f'",
            [table],
        )
        return {name for (name,) in cursor.fetchall()}
