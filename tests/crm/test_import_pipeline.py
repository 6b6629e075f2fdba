"""Batches read ahead: the next batch is parsed in a thread (crm.imports.pipeline) with the
results, order, errors and language of a plain loop."""

from __future__ import annotations

import threading

import pytest
from django.utils import translation

from crm.imports import hooks
from crm.imports.columns import parse_row, resolve_columns
from crm.imports.errors import ImportFileInvalid
from crm.imports.pipeline import parsed_batches
from crm.models import Contact, ImportStatus
from tests.crm.test_import import run

COLUMNS = resolve_columns(["first_name", "email", "salutation"])


def _lines(count: int, *, start: int = 2) -> list[tuple[int, list[str]]]:
    # Every third row is refused (its salutation), so batches carry translated reasons.
    return [
        (line, [f"N{line}", f"n{line}@example.org", "Frau" if line % 3 else "Graf"])
        for line in range(start, start + count)
    ]


def _summary(rows):
    return [(row.line, row.fields, row.points, row.error) for row in rows]


def test_batches_come_in_file_order_parsed_as_a_plain_loop_parses():
    source = _lines(23)
    with parsed_batches(iter(source), COLUMNS, 5) as batches:
        got = list(batches)

    assert [len(batch) for batch in got] == [5, 5, 5, 5, 3]
    plain = [parse_row(line, cells, COLUMNS) for line, cells in source]
    assert _summary(row for batch in got for row in batch) == _summary(plain)


def test_rows_are_parsed_in_another_thread():
    threads = set()

    def source():
        for item in _lines(6):
            threads.add(threading.get_ident())
            yield item

    with parsed_batches(source(), COLUMNS, 2) as batches:
        assert sum(len(batch) for batch in batches) == 6
    assert threads
    assert threading.get_ident() not in threads


def test_reasons_are_in_the_callers_language():
    with translation.override("de"):
        with parsed_batches(iter(_lines(3)), COLUMNS, 10) as batches:
            (batch,) = list(batches)
        expected = [parse_row(line, cells, COLUMNS).error for line, cells in _lines(3)]
    assert [row.error for row in batch] == expected
    assert expected[1].startswith("Spalte „salutation“")


def test_an_unreadable_line_stops_at_its_batch_after_the_batches_before_it():
    def source():
        yield from _lines(7)
        raise ImportFileInvalid("Line 9 cannot be read")

    received = []

    def receive():
        with parsed_batches(source(), COLUMNS, 3) as batches:
            for batch in batches:
                received.append([row.line for row in batch])

    with pytest.raises(ImportFileInvalid, match="Line 9"):
        receive()
    assert received == [[2, 3, 4], [5, 6, 7]]


def test_leaving_early_waits_for_the_batch_read_ahead_and_reads_no_further():
    read = []

    def source():
        for item in _lines(20):
            read.append(item[0])
            yield item

    with parsed_batches(source(), COLUMNS, 4) as batches:
        next(batches)
    settled = list(read)
    # The first batch and the one read ahead of it, nothing more, and nothing after leaving.
    assert settled == list(range(2, 10))
    assert read == settled


@pytest.mark.django_db
def test_a_failing_batch_keeps_the_batches_before_it(tmp_path, team, marketing, monkeypatch):
    """With batches read ahead, an import still stops at the first failing batch and
    resumes there."""

    def fail_on_line_5(contact_import, pairs):
        if any(row.line == 5 for _contact, row in pairs):
            raise RuntimeError("hook failed")
        return []

    monkeypatch.setattr(hooks, "ROW_HOOKS", [fail_on_line_5])
    rows = [["", f"N{i}", "", f"n{i}@example.org", "", ""] for i in range(6)]
    result = run(tmp_path, rows, team, marketing, batch_size=2)

    assert result.status == ImportStatus.FAILED
    assert result.processed_rows == 2
    assert sorted(Contact.objects.values_list("first_name", flat=True)) == ["N0", "N1"]
