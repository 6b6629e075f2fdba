"""The SQL that spells the export's lines on PostgreSQL: each piece against the Python writer's
spelling (csv_safe + csv.writer, json's escapes), and the shape that keeps it cheap."""

import csv
import datetime as dt
import io

import pytest
from django.db import connection, transaction
from django.utils import timezone

from crm.exports import csv_safe
from messaging.models import ConversationEvent
from messaging.services import exports as exports_module
from messaging.services.exports import conversations_export
from tests.db_plans import plan

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


def _distinct_on_heads(selection):
    """Each selected conversation's last event, as DISTINCT ON over the events gives it."""
    return list(
        ConversationEvent.objects.filter(conversation_id__in=selection.conversation_ids())
        .order_by("conversation_id", "-sequence")
        .distinct("conversation_id")
        .values_list("conversation_id", "sequence", "hash")
    )


@pytest.fixture
def three_conversations(team):
    """In `team`: two conversations with several messages (three and two) and one without
    any event; in another team, one conversation that the team's export leaves out."""
    from messaging.services import conversation_for
    from tests.factories import ChannelAccountFactory, TeamFactory
    from tests.messaging.helpers import reachable_contact, receive_text

    account = ChannelAccountFactory(team=team)
    first, second = reachable_contact(team), reachable_contact(team)
    for contact in (first, second, first, second, first):
        receive_text(account, contact)
    with transaction.atomic():
        conversation_for(contact=reachable_contact(team), account=account)
    other = TeamFactory()
    receive_text(ChannelAccountFactory(team=other), reachable_contact(other))
    return team


@pytest.mark.parametrize("period", [False, True])
def test_chain_heads_are_each_conversations_last_event_once(three_conversations, period):
    """With a period the conversations come from their messages (several per conversation):
    each head still appears once, in conversation order, and one without events has none."""
    since = timezone.now() - dt.timedelta(days=1) if period else None
    selection = exports_module._Selection([three_conversations.pk], None, since, None)

    heads = list(exports_module._chain_heads(selection))

    assert heads == _distinct_on_heads(selection)
    assert [sequence for _conversation, sequence, _hash in heads] == [3, 2]


def test_chain_heads_step_back_once_per_conversation_on_the_sequence_index(three_conversations):
    selection = exports_module._Selection([three_conversations.pk], None, None, None)

    with transaction.atomic():
        shown = plan(*exports_module._chain_heads_sql(selection))

    assert "Index Scan Backward using messaging_conversationevent_unique_seq" in shown
    assert "Unique" not in shown


def test_no_chain_heads_without_teams():
    selection = exports_module._Selection([], None, None, None)

    assert list(exports_module._chain_heads(selection)) == []
