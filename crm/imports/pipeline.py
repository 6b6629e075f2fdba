"""Reading ahead: the next batch is read and parsed while the current one is written.

Parsing (columns.parse_row) needs no database, and while a batch is written the import's
process mostly waits for PostgreSQL (COPY into indexed tables, the commit). A thread that
reads and parses the next batch in that time uses the machine's second core instead of
leaving it idle; psycopg releases the GIL while it waits. Exactly one batch is read ahead, in
file order, so memory stays at two batches and batches reach the writer in the order, and
with the line numbers, a plain loop would give them. An error reading the file (a line the
CSV reader cannot read) is raised when the batch that holds it is asked for, as without the
thread, so the batches before it are written first.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

from django.utils import translation

from crm.imports.columns import ColumnMap, ImportRow, parse_row


def _parse(rows: Iterator[tuple[int, list[str]]], columns: ColumnMap, size: int) -> list[ImportRow]:
    return [parse_row(line, cells, columns) for line, cells in itertools.islice(rows, size)]


@contextmanager
def parsed_batches(
    rows: Iterable[tuple[int, list[str]]], columns: ColumnMap, batch_size: int
) -> Iterator[Iterator[list[ImportRow]]]:
    """The rows in parsed batches of `batch_size`, each next batch parsed while the caller
    works on the current one. On leaving, the batch being read ahead is waited for, so the
    file is not closed under the thread."""
    rows = iter(rows)
    # Rejection reasons are translated: the thread speaks the caller's language (translation
    # is activated per thread).
    language = translation.get_language()

    def parse_next() -> list[ImportRow]:
        with translation.override(language):
            return _parse(rows, columns, batch_size)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="import-parse") as pool:
        pending: list[Future[list[ImportRow]]] = [pool.submit(parse_next)]

        def batches() -> Iterator[list[ImportRow]]:
            while batch := pending[0].result():
                pending[0] = pool.submit(parse_next)
                yield batch

        try:
            yield batches()
        finally:
            # Wait for the batch read ahead (its errors do not matter any more).
            pending[0].exception()
