"""The SQL that spells the export's lines on PostgreSQL: each piece against the Python writer's
spelling (csv_safe + csv.writer, json's escapes), and the shape that keeps it cheap."""

import csv
import io

import pytest
from django.db import connection

from crm.exports import csv_safe
from messaging.models import ConversationEvent
from messaging.services import exports as exports_module
from messaging.services.exports import conversations_export

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]


def _python_cell(value) -> str:
    """One cell as _RowWriter writes it (without the line's terminator)."""
    buffer = io.StringIO()
    csv.writer(buffer).writerow([csv_safe(value), "x"])
    return buffer.getvalue()[: -len(",x\r\n")]


def _sql_cell(value, kind: str, sql_type: str) -> str:
    cell = exports_module._sql_csv_cell("v", kind, "c")
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT coalesce({cell}, '') FROM (SELECT %s::{sql_type} AS c) AS r, "  # noqa: S608
            "LATERAL (SELECT c::text AS v) AS s",
            [value],
        )
        return cursor.fetchone()[0]


@pytest.mark.parametrize("number", [0, 7, 123456789012, -1, -42, None])
def test_a_number_cell_is_quoted_exactly_when_negative(number):
    assert _sql_cell(number, exports_module.NUMBER, "bigint") == _python_cell(number)


@pytest.mark.parametrize(
    "text",
    ["", "plain", "a,b", 'say "hi"', "line\nbreak", "cr\rhere", "=1+2", "-3", "@x", "\tx", None],
)
def test_a_text_cell_is_spelled_as_csv_writer_does(text):
    assert _sql_cell(text, exports_module.TEXT, "text") == _python_cell(text)


@pytest.mark.parametrize("count", [1, 2, 3, 7, 8, 56])
def test_joined_pieces_are_all_the_pieces_in_order(count):
    pieces = [exports_module._sql_literal(f"p{index};") for index in range(count)]
    joined = exports_module._sql_joined(pieces)
    assert joined.count("||") == count - 1
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {joined}")
        assert cursor.fetchone()[0] == "".join(f"p{index};" for index in range(count))


def test_the_lines_query_uses_no_per_row_type_lookups():
    """concat() looks up each argument's output function on every row: the query avoids it."""
    rows = ConversationEvent.objects.order_by("conversation_id", "sequence").values_list(
        *exports_module._lookups(exports_module.EVENT_COLUMNS[:5])
    )
    statement, _params = exports_module._sql_lines(rows, exports_module.EVENT_COLUMNS[:5])
    assert "concat(" not in statement
    assert "ascii(v0)" not in statement  # numbers are compared, not read as text


def test_the_files_are_written_from_the_bytes_postgresql_sends(team, tmp_path, monkeypatch):
    """Lines reach the files as bytes: no decoding to str and encoding back."""
    from tests.factories import ChannelAccountFactory
    from tests.messaging.helpers import reachable_contact, receive_text

    receive_text(ChannelAccountFactory(team=team), reachable_contact(team), 'Grüße 😀, "ja"')
    written: list[type] = []
    original = exports_module._HashingFile.write_bytes

    def write_bytes(self, data, rows):
        written.append(type(data))
        return original(self, data, rows)

    monkeypatch.setattr(exports_module._HashingFile, "write_bytes", write_bytes)
    conversations_export(actor=None, out_dir=tmp_path / "x")

    assert written
    assert set(written) == {bytes}
    line = (tmp_path / "x" / "messages.jsonl").read_bytes()
    assert 'Grüße 😀, \\"ja\\"'.encode() in line
    assert exports_module.export_verify(tmp_path / "x").ok


def _parallel_workers() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SHOW max_parallel_workers_per_gather")
        return cursor.fetchone()[0]


def test_the_lines_query_runs_without_parallel_workers():
    """Its leader spells every line: workers would only scan, hand rows over and cost CPU."""
    from psycopg import Cursor

    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL max_parallel_workers_per_gather = 3")
    with (
        Cursor(connection.connection) as cursor,
        exports_module._without_parallel_workers(cursor),
    ):
        cursor.execute("SHOW max_parallel_workers_per_gather")
        assert cursor.fetchone()[0] == "0"
    assert _parallel_workers() == "3"


def test_both_tables_are_read_without_parallel_workers(team, tmp_path, monkeypatch):
    """And a caller's transaction that goes on keeps its own setting."""
    from tests.factories import ChannelAccountFactory
    from tests.messaging.helpers import reachable_contact, receive_text

    receive_text(ChannelAccountFactory(team=team), reachable_contact(team), "Hallo")
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL max_parallel_workers_per_gather = 3")
    entered: list[str] = []
    original = exports_module._without_parallel_workers

    def recorded(cursor):
        entered.append("lines")
        return original(cursor)

    monkeypatch.setattr(exports_module, "_without_parallel_workers", recorded)
    conversations_export(actor=None, out_dir=tmp_path / "x")

    assert entered == ["lines", "lines"]  # messages and events
    assert _parallel_workers() == "3"
    assert exports_module.export_verify(tmp_path / "x").ok
