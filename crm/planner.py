"""Keeping PostgreSQL's statistics in step with tables a bulk job grows.

A batch of an import looks up thousands of addresses and ids at once, and whether
PostgreSQL probes an index for each or reads the whole table depends on how many rows it
believes the table has. Autovacuum refreshes that belief some time after the rows arrive (a
minute at best; never where it is switched off), so the later batches of a large import
would be planned for the table as it was when the import began. A bulk job therefore keeps
a GrowthAnalyzer: a table is analyzed once the rows the job added outnumber those its
statistics describe, so a million-row import analyzes each table a handful of times, not
once per batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from django.db import connection, models

# Below this many new rows, a table's statistics are left to autovacuum.
MIN_NEW_ROWS: Final = 10_000


class GrowthAnalyzer:
    """ANALYZE each of the given tables once the rows a job added to it outnumber the rows its
    statistics describe (it has about doubled). PostgreSQL only; elsewhere a no-op.

    The job reports what it inserted with added() and calls analyze_grown() after each
    commit (ANALYZE does not see rows of a transaction still open).
    """

    def __init__(self, *models: type[models.Model]) -> None:
        self.enabled = connection.vendor == "postgresql"
        self.tables = [model._meta.db_table for model in models]
        self.new_rows = dict.fromkeys(self.tables, 0)
        self.analyzed_rows = self._analyzed_rows(self.tables) if self.enabled else {}

    def added(self, rows: Mapping[type[models.Model], int]) -> None:
        for model, count in rows.items():
            self.new_rows[model._meta.db_table] += count

    def analyze_grown(self) -> list[str]:
        """The tables analyzed now."""
        if not self.enabled:
            return []
        grown = [
            table
            for table in self.tables
            if self.new_rows[table] > max(MIN_NEW_ROWS, self.analyzed_rows[table])
        ]
        if grown:
            quote = connection.ops.quote_name
            with connection.cursor() as cursor:
                for table in grown:
                    cursor.execute(f"ANALYZE {quote(table)}")
            self.analyzed_rows.update(self._analyzed_rows(grown))
            self.new_rows.update(dict.fromkeys(grown, 0))
        return grown

    @staticmethod
    def _analyzed_rows(tables: list[str]) -> dict[str, float]:
        """The row count each table's statistics describe (0 if never analyzed: -1)."""
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT relname, GREATEST(reltuples, 0) FROM pg_class"
                " WHERE oid = ANY(%s::regclass[])",
                [tables],
            )
            return dict(cursor.fetchall())


# PostgreSQL's default (4) prices each index probe as a seek on a spinning disk.
_PROBE_PAGE_COST: Final = 1.1


def prefer_index_probes() -> None:
    """Price random page reads as on SSD or in memory, and plan no parallel workers, for the
    rest of this transaction (one statement).

    A batch looks up thousands of keys with `= ANY(array)`; at the default price PostgreSQL
    reads a table of a few hundred thousand rows whole rather than probe its index thousands
    of times, ten times slower where the pages are in memory, as they are for the tables a
    running import is writing. Those probes take some 30 ms per batch; a lookup of several
    key kinds (a UNION ALL) was planned as a parallel append, and starting its two workers
    took longer than the probes themselves (80 of 150 ms, measured at 200,000 contacts).
    PostgreSQL only; call inside a transaction.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT set_config('random_page_cost', %s, true),"
                " set_config('max_parallel_workers_per_gather', '0', true)",
                [str(_PROBE_PAGE_COST)],
            )
