"""The auditor export of conversations (JSON Lines, CSV, manifest) and its offline verification.

Selection: a conversation is included when it is in the exported teams (and belongs to the
contact, if one is given) and, when a period is given, has at least one message created in
[since, until). Its FULL event chain as of the export is written, so it verifies from genesis;
messages are limited to the period. Everything streams: rows are read in chunks, written and
hashed as they go (chain heads wait in a temporary file), so the export's memory does not grow
with its size; the verifier holds only the manifest's chain heads and one conversation.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import itertools
import json
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Final

import orjson
from django.core.exceptions import EmptyResultSet
from django.db import connection, transaction
from django.db.models import Q, QuerySet, TextField
from django.db.models.functions import Cast
from django.utils import timezone
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from crm import selectors as crm_selectors
from crm.errors import DomainError, PermissionRefused
from crm.exports import FORMULA_PREFIXES, csv_safe
from crm.ledger import GENESIS_HASH, chain_hash, sha256_hex
from crm.models import Contact, Team
from crm.privacy import SCRUBBED
from messaging.models import (
    MESSAGE_EVENTS,
    Conversation,
    ConversationEvent,
    ConversationExport,
    Message,
)
from messaging.services.ledger import actor_label, content_hash

if TYPE_CHECKING:
    from django.contrib.auth.base_user import AbstractBaseUser

EXPORT_PERM: Final = "messaging.export_conversations"
EXPORT_FORMAT_VERSION: Final = 1
CHUNK_SIZE: Final = 2000
# Output files are written through a large buffer: many small rows, few system calls.
WRITE_BUFFER: Final = 1 << 20

MESSAGES_JSONL: Final = "messages.jsonl"
MESSAGES_CSV: Final = "messages.csv"
EVENTS_JSONL: Final = "events.jsonl"
EVENTS_CSV: Final = "events.csv"
MANIFEST: Final = "manifest.json"
DATA_FILES: Final = (MESSAGES_JSONL, MESSAGES_CSV, EVENTS_JSONL, EVENTS_CSV)

SELECTION_RULE: Final = (
    "Conversations of the exported teams (and contact); with a period, only those with at "
    "least one message created in [since, until). Each included conversation's full event "
    "chain as of created_at is exported, from sequence 1, so it verifies from genesis. "
    "Messages are limited to the period."
)
HASHING_RULE: Final = {
    "event": "hash = sha256(previous_hash + '\\n' + canonical_json({conversation, sequence, "
    "kind, message, actor: actor_label, data, occurred_at, recorded_at})); the first "
    "previous_hash of each conversation is 64 zeros",
    "message": "body_hash = sha256(canonical_json({subject, body, variables})); equals the "
    "body_hash in the data of its message event; erased messages keep the hash of the text "
    "they had",
    "canonical_json": "JSON with sorted keys, separators ',' and ':', UTF-8, no ASCII escaping",
}

# How a column's values are written. JSON columns arrive as the database's JSON text.
NUMBER, TEXT, TIME, JSON = "number", "text", "time", "json"
# Columns of each file: (name in the files, ORM lookup, kind of value).
MESSAGE_COLUMNS: Final[tuple[tuple[str, str, str], ...]] = (
    ("id", "id", NUMBER),
    ("conversation", "conversation_id", NUMBER),
    ("team", "team_id", NUMBER),
    ("contact", "contact_id", NUMBER),
    ("account", "account_id", NUMBER),
    ("channel", "channel", TEXT),
    ("direction", "direction", TEXT),
    ("kind", "kind", TEXT),
    ("template_version", "template_version_id", NUMBER),
    ("purpose", "purpose_id", NUMBER),
    ("variables", "variables_json", JSON),
    ("subject", "subject", TEXT),
    ("body", "body", TEXT),
    ("body_hash", "body_hash", TEXT),
    ("sender_kind", "sender_kind", TEXT),
    ("sender", "sender__username", TEXT),
    ("origin", "origin", TEXT),
    ("status", "status", TEXT),
    ("due_at", "due_at", TIME),
    ("sent_at", "sent_at", TIME),
    ("delivered_at", "delivered_at", TIME),
    ("read_at", "read_at", TIME),
    ("failed_at", "failed_at", TIME),
    ("error_code", "error_code", TEXT),
    ("provider_message_id", "provider_message_id", TEXT),
    ("gate_decision", "gate_decision_json", JSON),
    ("created_at", "created_at", TIME),
    ("erased_at", "erased_at", TIME),
)
EVENT_COLUMNS: Final[tuple[tuple[str, str, str], ...]] = (
    ("conversation", "conversation_id", NUMBER),
    ("sequence", "sequence", NUMBER),
    ("kind", "kind", TEXT),
    ("message", "message_id", NUMBER),
    ("actor_label", "actor_label", TEXT),
    ("data", "data_json", JSON),
    ("occurred_at", "occurred_at", TIME),
    ("recorded_at", "recorded_at", TIME),
    ("previous_hash", "previous_hash", TEXT),
    ("hash", "hash", TEXT),
)

# What a pseudonymised message holds instead of its text (messaging.privacy writes it).
ERASED_TEXT: Final = SCRUBBED


class ExportInvalid(DomainError):
    code = "export_invalid"


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of export_verify: ok, or the first mismatch found, described precisely."""

    ok: bool
    first_mismatch: str | None
    counts: dict[str, int] = field(default_factory=dict)
    manifest_sha256: str = ""


class _HashingFile:
    """A text sink that writes UTF-8 to a file and hashes and counts the bytes on the way."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.digest = hashlib.sha256()
        self.bytes = 0
        self.rows = 0

    def write(self, text: str) -> int:
        data = text.encode("utf-8")
        self.digest.update(data)
        self.bytes += len(data)
        self.handle.write(data)
        return len(text)

    def write_bytes(self, data: bytes, rows: int) -> None:
        """`rows` whole lines, already UTF-8."""
        self.digest.update(data)
        self.bytes += len(data)
        self.handle.write(data)
        self.rows += rows

    def summary(self) -> dict[str, Any]:
        return {"sha256": self.digest.hexdigest(), "bytes": self.bytes, "rows": self.rows}


_encode_string = json.encoder.encode_basestring  # C-accelerated; keeps non-ASCII as is


class _RowWriter:
    """Writes one table to its JSON Lines and CSV files, row by row.

    Lines are assembled from per-column pieces rather than a json.dumps of a dict per row:
    the kinds are known, and formatting is most of an export's time.
    """

    def __init__(
        self, jsonl: _HashingFile, csv_file: _HashingFile, columns: Sequence[tuple[str, str, str]]
    ) -> None:
        self.jsonl = jsonl
        self.csv_file = csv_file
        self.csv = csv.writer(csv_file)
        self.keys = [
            ("{" if index == 0 else ",") + _encode_string(name) + ":"
            for index, (name, _lookup, _kind) in enumerate(columns)
        ]
        self.kinds = [kind for _name, _lookup, kind in columns]
        self.csv.writerow([csv_safe(name) for name, _lookup, _kind in columns])

    def write(self, row: Sequence[Any]) -> None:
        parts = []
        cells = []
        for key, kind, value in zip(self.keys, self.kinds, row, strict=True):
            if value is None:
                parts.append(key + "null")
                cells.append("")
                continue
            if kind == TEXT:
                text = value
                encoded = _encode_string(value)
            elif kind == TIME:
                text = value.isoformat()
                encoded = '"' + text + '"'
            elif kind == JSON:
                text = encoded = value
            else:
                text = encoded = str(value)
            parts.append(key + encoded)
            # Every cell, whatever its kind: a spreadsheet must never evaluate one.
            cells.append(csv_safe(text))
        parts.append("}\n")
        self.jsonl.write("".join(parts))
        self.csv.writerow(cells)
        self.jsonl.rows += 1
        self.csv_file.rows += 1


@dataclass
class _Selection:
    team_ids: list[int]
    contact_id: int | None
    since: dt.datetime | None
    until: dt.datetime | None

    def as_json(self) -> dict[str, Any]:
        return {
            "team_ids": self.team_ids,
            "contact_id": self.contact_id,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
        }

    def messages(self) -> QuerySet[Message]:
        scope = Q(team_id__in=self.team_ids)
        if self.contact_id is not None:
            scope &= Q(contact_id=self.contact_id)
        if self.since is not None:
            scope &= Q(created_at__gte=self.since)
        if self.until is not None:
            scope &= Q(created_at__lt=self.until)
        return Message.objects.filter(scope)

    def conversation_ids(self) -> QuerySet:
        if self.since is not None or self.until is not None:
            return self.messages().values("conversation_id")
        conversations = Conversation.objects.filter(team_id__in=self.team_ids)
        if self.contact_id is not None:
            conversations = conversations.filter(contact_id=self.contact_id)
        return conversations.values("pk")


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is None or timezone.is_aware(value):
        return value
    return timezone.make_aware(value)


def _selection(
    actor: AbstractBaseUser | None,
    team_ids: list[int] | None,
    contact_id: int | None,
    since: dt.datetime | None,
    until: dt.datetime | None,
) -> _Selection:
    """Check rights and filters; the teams that will be exported. Raises before any write."""
    if actor is not None and not actor.has_perm(EXPORT_PERM):
        raise PermissionRefused(_("You may not export conversations."))
    scope = (
        set(crm_selectors.visible_team_ids(actor))
        if actor is not None
        else set(Team.objects.values_list("pk", flat=True))
    )
    if team_ids is not None:
        wanted = set(team_ids)
        if not wanted:
            raise ExportInvalid(_("Name at least one team."), field="team_ids")
        if actor is not None and not wanted <= scope:
            raise PermissionRefused(_("You may not export conversations of these teams."))
        if not wanted <= scope:
            raise ExportInvalid(
                _("Unknown teams: %(ids)s.")
                % {"ids": ", ".join(str(pk) for pk in sorted(wanted - scope))},
                field="team_ids",
            )
        scope = wanted
    since, until = _aware(since), _aware(until)
    if since is not None and until is not None and since >= until:
        raise ExportInvalid(_("The end of the period must be after its start."), field="until")
    if (
        contact_id is not None
        and not Contact.objects.filter(pk=contact_id, team_id__in=scope).exists()
    ):
        raise ExportInvalid(
            _("There is no contact with id %(id)s in the exported teams.") % {"id": contact_id},
            field="contact_id",
        )
    return _Selection(sorted(scope), contact_id, since, until)


def _prepare_directory(out_dir: Path) -> bool:
    """Check that out_dir is empty or absent; returns whether it must be created."""
    if not out_dir.exists():
        return True
    if not out_dir.is_dir():
        raise ExportInvalid(_("%(path)s is not a directory.") % {"path": out_dir}, field="out_dir")
    if any(out_dir.iterdir()):
        raise ExportInvalid(
            _("%(path)s is not empty; exports never overwrite files.") % {"path": out_dir},
            field="out_dir",
        )
    return False


class _Snapshot:
    """One consistent view of the database for the whole export.

    On PostgreSQL, outside a caller's transaction, the reads run in one REPEATABLE READ
    transaction: messages and events written while the export runs can neither appear half
    nor break a chain head. That snapshot is also exported, so that a second session can
    share it (its id is what entering returns). Inside a caller's transaction the caller
    decides the isolation, and the snapshot is not shared: another session would not see
    what the caller's transaction wrote.
    """

    def __enter__(self) -> str | None:
        self.atomic = transaction.atomic()
        outer = connection.in_atomic_block
        self.atomic.__enter__()
        if connection.vendor != "postgresql" or outer:
            return None
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            cursor.execute("SELECT pg_export_snapshot()")
            return cursor.fetchone()[0]

    def __exit__(self, *exc_info: object) -> None:
        self.atomic.__exit__(*exc_info)


def _lookups(columns: Sequence[tuple[str, str, str]]) -> list[str]:
    return [lookup for _name, lookup, _kind in columns]


def _lines_in_sql() -> bool:
    """Whether the database spells the lines itself (PostgreSQL); elsewhere Python does.

    Formatting each row in Python was nearly all of an export's cost. On PostgreSQL one
    query spells each row's JSON line and CSV line in _RowWriter's spelling, and this process
    only joins, hashes and writes them: the files are byte-identical either way
    (tests/messaging/test_exports_fast.py compares them).
    """
    return connection.vendor == "postgresql"


def _sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# csv_safe's prefixes as code points: ascii() reads a text's first character without copying it.
_SQL_FORMULA_CODES: Final = ", ".join(str(ord(prefix)) for prefix in FORMULA_PREFIXES)
# The characters that make csv.writer (QUOTE_MINIMAL, the excel dialect) quote a cell.
_CSV_QUOTED: Final = (csv.excel.delimiter, csv.excel.quotechar, *csv.excel.lineterminator)


def _sql_spelled(column: str, kind: str) -> str:
    """The column as text, spelled as _RowWriter spells its value (None stays NULL)."""
    if kind == TIME:
        # datetime.isoformat() of a UTC datetime: microseconds only when there are any.
        spelled = f"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US')"
        return f"replace({spelled}, '.000000', '') || '+00:00'"
    return f"{column}::text"  # a JSON column is already the database's JSON text (_json_text)


def _sql_json_piece(value: str, kind: str) -> str:
    """The spelled value as _RowWriter writes it into a JSON line."""
    if kind == TEXT:
        return f"coalesce(to_json({value})::text, 'null')"  # JSON's escapes, as json's
    if kind == TIME:
        return f"coalesce('\"' || {value} || '\"', 'null')"  # digits and "-:.+T": no escapes
    return f"coalesce({value}, 'null')"


def _sql_csv_cell(value: str, kind: str, raw: str) -> str:
    """The spelled value as csv_safe() and csv.writer write it into a CSV line (NULL: NULL).

    `raw` is the column's value before spelling.
    """
    if kind == TIME:
        return value  # starts with a digit, holds nothing csv quotes
    if kind == NUMBER:
        # Columns of this kind are integers: their text starts with a formula character ("-")
        # exactly when they are negative, which a comparison answers without reading text.
        return f"CASE WHEN {raw} < 0 THEN '''' || {value} ELSE {value} END"
    prefixed = f"ascii({value}) IN ({_SQL_FORMULA_CODES})"
    safe = f"CASE WHEN {prefixed} THEN '''' || {value} ELSE {value} END"
    quoted = " OR ".join(f"strpos({value}, {_sql_literal(char)}) > 0" for char in _CSV_QUOTED)
    return f"CASE WHEN {quoted} THEN '\"' || replace({safe}, '\"', '\"\"') || '\"' ELSE {safe} END"


def _sql_joined(pieces: Sequence[str]) -> str:
    """The pieces (texts, none NULL) joined with ||, as a balanced tree of concatenations.

    Not concat(): it looks up each argument's output function again on every row, which cost
    more than the spelling itself. Balanced, a row's text is copied about log2(pieces) times
    rather than once per piece.
    """
    if len(pieces) == 1:
        return pieces[0]
    middle = len(pieces) // 2
    return f"({_sql_joined(pieces[:middle])} || {_sql_joined(pieces[middle:])})"


def _sql_lines(
    rows: QuerySet, columns: Sequence[tuple[str, str, str]]
) -> tuple[str, Sequence[Any]]:
    """A query for `rows` giving, per row, its JSON line and its CSV line; its parameters."""
    inner, params = rows.query.get_compiler(using=rows.db).as_sql()
    raw = [f"c{index}" for index in range(len(columns))]
    lookups = _lookups(columns)
    order = ", ".join(
        f"exported.{raw[lookups.index(name.removeprefix('-'))]}"
        + (" DESC" if name.startswith("-") else "")
        for name in rows.query.order_by
    )
    values = [f"v{index}" for index in range(len(columns))]
    kinds = [kind for _name, _lookup, kind in columns]
    spelled = []
    times = [index for index, kind in enumerate(kinds) if kind == TIME]
    for index, (column, value, kind) in enumerate(zip(raw, values, kinds, strict=True)):
        if kind == TIME and index != times[0]:
            # A time equal to the row's first time (an event's recorded_at is mostly its
            # occurred_at) takes that one's spelling: to_char is one of the dearest pieces.
            first = raw[times[0]]
            spelled += [
                f"CASE WHEN {column} = {first} THEN NULL "
                f"ELSE {_sql_spelled(column, kind)} END AS {value}",
                f"{column} = {first} AS same_{column}",
            ]
            values[index] = f"(CASE WHEN same_{column} THEN {values[times[0]]} ELSE {value} END)"
        else:
            spelled.append(f"{_sql_spelled(column, kind)} AS {value}")
        if kind == NUMBER:
            spelled.append(column)  # a number's CSV cell also needs the number (_sql_csv_cell)
    # OFFSET 0 keeps the spelled values a subquery's output: each is computed once per row,
    # not once for each line that uses it.
    exported = f"({inner}) AS exported ({', '.join(raw)})"
    line = f"SELECT {', '.join(spelled)} FROM {exported} ORDER BY {order} OFFSET 0"  # noqa: S608
    json_parts = []
    for index, (value, (name, _lookup, kind)) in enumerate(zip(values, columns, strict=True)):
        key = ("{" if index == 0 else ",") + _encode_string(name) + ":"
        json_parts += [_sql_literal(key), _sql_json_piece(value, kind)]
    json_line = _sql_joined([*json_parts, "'}' || chr(10)"])
    cells: list[str] = []
    for column, value, kind in zip(raw, values, kinds, strict=True):
        if cells:
            cells.append("','")
        # NULL is csv_safe's empty cell.
        cells.append(f"coalesce({_sql_csv_cell(value, kind, column)}, '')")
    csv_line = _sql_joined([*cells, "chr(13) || chr(10)"])
    # Formatted in: the ORM's query, constant column names and literals (none holds a "%").
    return f"SELECT {json_line}, {csv_line} FROM ({line}) AS line", params  # noqa: S608


@contextmanager
def _without_parallel_workers(cursor: Any) -> Iterator[None]:
    """Run the lines query without parallel workers; afterwards the transaction's setting again.

    The query's leader spells every line, and that is nearly all of its work: workers would
    only scan and sort rows and hand them over, which cost about 30% more CPU in all
    (200,000 messages), taken from the other session and from this process. The setting is
    local to the transaction, and put back for a caller's transaction that goes on; a failed
    transaction is rolled back, and the setting with it.
    """
    cursor.execute("SELECT current_setting('max_parallel_workers_per_gather')")
    previous = cursor.fetchone()[0]
    cursor.execute("SELECT set_config('max_parallel_workers_per_gather', '0', true)")
    yield
    cursor.execute("SELECT set_config('max_parallel_workers_per_gather', %s, true)", [previous])


def _write_sql_lines(
    rows: QuerySet,
    columns: Sequence[tuple[str, str, str]],
    writer: _RowWriter,
    progress: Callable[[int], None],
) -> None:
    """Let PostgreSQL spell both files' rows, in one pass, streamed CHUNK_SIZE rows at a time.

    The lines arrive in binary format and stay the bytes PostgreSQL sent (the session speaks
    UTF-8, the files' encoding): decoding every line to str only to encode it back was a good
    part of this process's time.
    """
    try:
        statement, params = _sql_lines(rows, columns)
    except EmptyResultSet:  # a filter that cannot match, e.g. no team in scope
        return
    # Only here: the Python writer (other databases) does not need psycopg.
    from psycopg import Cursor
    from psycopg.types.string import ByteaBinaryLoader

    connection.ensure_connection()
    # Django's cursors bind parameters client-side, and those cannot read binary results.
    with Cursor(connection.connection) as cursor:
        encoding = cursor.connection.info.encoding  # "utf-8": Django asks for UTF8

        def utf8(lines: Sequence[bytes]) -> bytes:
            joined = b"".join(lines)
            return joined if encoding == "utf-8" else joined.decode(encoding).encode()

        with _without_parallel_workers(cursor):
            cursor.adapters.register_loader("text", ByteaBinaryLoader)  # the bytes as sent
            lines = cursor.stream(statement, params, binary=True, size=CHUNK_SIZE)
            while chunk := list(itertools.islice(lines, CHUNK_SIZE)):
                json_lines, csv_lines = zip(*chunk, strict=True)
                writer.jsonl.write_bytes(utf8(json_lines), len(chunk))
                writer.csv_file.write_bytes(utf8(csv_lines), len(chunk))
                progress(len(chunk))


def _json_text(field_name: str) -> Cast:
    """A JSON field as _RowWriter writes it: the database's JSON text."""
    return Cast(field_name, TextField())


def _write_rows(
    rows: QuerySet,
    columns: Sequence[tuple[str, str, str]],
    writer: _RowWriter,
    progress: Callable[[int], None],
    heads: _HeadSpool | None = None,
) -> int:
    """Write `rows` to both files; with `heads`, note each conversation's chain head."""
    if _lines_in_sql():
        _write_sql_lines(rows, columns, writer, progress)
        return writer.jsonl.rows
    for row in rows.iterator(chunk_size=CHUNK_SIZE):
        writer.write(row)
        if heads is not None:
            heads.see(row[0], row[1], row[-1])
        if writer.jsonl.rows % CHUNK_SIZE == 0:
            progress(CHUNK_SIZE)
    progress(writer.jsonl.rows % CHUNK_SIZE)
    if heads is not None:
        heads.flush()
    return writer.jsonl.rows


def _write_messages(
    selection: _Selection, writer: _RowWriter, progress: Callable[[int], None]
) -> int:
    rows = (
        selection.messages()
        .annotate(
            variables_json=_json_text("variables"),
            gate_decision_json=_json_text("gate_decision"),
        )
        .order_by("conversation_id", "id")
        .values_list(*_lookups(MESSAGE_COLUMNS))
    )
    return _write_rows(rows, MESSAGE_COLUMNS, writer, progress)


class _HeadSpool:
    """The chain heads, one JSON member per conversation, spooled to a temporary file.

    A conversation's head is known when its last event is written; keeping them all in
    memory would grow with the number of conversations, so they wait on disk for the manifest.
    """

    def __init__(self) -> None:
        self.file = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115 - closed by close()
        self.count = 0
        self.last: tuple[int, int, str] | None = None

    def see(self, conversation: int, sequence: int, digest: str) -> None:
        """One event, in (conversation, sequence) order: the one before a new conversation
        was the previous conversation's head."""
        if self.last is not None and self.last[0] != conversation:
            self.add(*self.last)
        self.last = (conversation, sequence, digest)

    def flush(self) -> None:
        """The last conversation's head (after the last event)."""
        if self.last is not None:
            self.add(*self.last)
            self.last = None

    def add(self, conversation: int, sequence: int, digest: str) -> None:
        head = json.dumps({"sequence": sequence, "hash": digest})
        self.file.write(f"{_encode_string(str(conversation))}: {head}\n")
        self.count += 1

    def members(self) -> Iterator[str]:
        self.file.seek(0)
        for line in self.file:
            yield line.rstrip("\n")

    def close(self) -> None:
        self.file.close()


def _write_events(
    selection: _Selection,
    writer: _RowWriter,
    progress: Callable[[int], None],
    heads: _HeadSpool,
) -> int:
    events = ConversationEvent.objects.filter(conversation_id__in=selection.conversation_ids())
    rows = (
        events.annotate(data_json=_json_text("data"))
        .order_by("conversation_id", "sequence")
        .values_list(*_lookups(EVENT_COLUMNS))
    )
    if not _lines_in_sql():
        return _write_rows(rows, EVENT_COLUMNS, writer, progress, heads)
    count = _write_rows(rows, EVENT_COLUMNS, writer, progress)
    # The database wrote the rows; each conversation's last event comes from its index.
    for conversation, sequence, digest in _chain_heads(selection):
        heads.add(conversation, sequence, digest)
    return count


def _chain_heads_sql(selection: _Selection) -> tuple[str, Sequence[Any]]:
    """A query for each selected conversation's last event (conversation, sequence, hash), by
    conversation, for those that have events (PostgreSQL); its parameters.

    One backward step of the (conversation, sequence) index per conversation. DISTINCT ON over
    the events sorted every event of the export again (400,000 at 200,000 messages, on disk
    past work_mem): about 0.4 CPU-seconds there against 0.1, after the events' lines, when
    nothing else is left to run beside it.
    """
    conversations, params = (
        Conversation.objects.filter(pk__in=selection.conversation_ids())
        .order_by()
        .values("pk")
        .query.sql_with_params()
    )
    event = ConversationEvent._meta.db_table
    statement = (
        f"SELECT c.id, head.sequence, head.hash FROM ({conversations}) AS c (id) "  # noqa: S608 - ORM SQL and a table name, values are params
        f"CROSS JOIN LATERAL (SELECT e.sequence, e.hash FROM {event} e "
        "WHERE e.conversation_id = c.id ORDER BY e.sequence DESC LIMIT 1) AS head ORDER BY c.id"
    )
    return statement, params


def _chain_heads(selection: _Selection) -> Iterator[tuple[int, int, str]]:
    """The rows of _chain_heads_sql, read CHUNK_SIZE at a time from a server-side cursor."""
    try:
        statement, params = _chain_heads_sql(selection)
    except EmptyResultSet:  # a filter that cannot match, e.g. no team in scope
        return
    with connection.chunked_cursor() as cursor:
        cursor.execute(statement, params)
        while rows := cursor.fetchmany(CHUNK_SIZE):
            yield from rows


def _in_snapshot(snapshot: str, write: Callable[[], int]) -> int:
    """Run `write` in this thread's own database session, read-only on the export's snapshot."""
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            cursor.execute("SET TRANSACTION SNAPSHOT %s", [snapshot])
            return write()
    finally:
        connection.close()  # the session belongs to this thread, which ends with the export


def _write_tables(
    selection: _Selection,
    files: dict[str, _HashingFile],
    progress: Callable[[int], None],
    heads: _HeadSpool,
    snapshot: str | None,
) -> tuple[int, int]:
    """Write the messages' and the events' files; their row counts.

    With a shared snapshot the messages are read in a second session on another thread: the
    database spells both tables at once, on two cores, and this process joins, hashes and
    writes both streams (waiting on a socket, hashing and writing all release the GIL).
    """
    messages = partial(
        _write_messages,
        selection,
        _RowWriter(files[MESSAGES_JSONL], files[MESSAGES_CSV], MESSAGE_COLUMNS),
        progress,
    )
    events = partial(
        _write_events,
        selection,
        _RowWriter(files[EVENTS_JSONL], files[EVENTS_CSV], EVENT_COLUMNS),
        progress,
        heads,
    )
    if snapshot is None:
        return messages(), events()
    with ThreadPoolExecutor(max_workers=1) as pool:
        message_count = pool.submit(_in_snapshot, snapshot, messages)
        event_count = events()
        return message_count.result(), event_count


def _write_manifest(path: Path, fields: dict[str, Any], heads: _HeadSpool) -> str:
    """Write manifest.json (`fields` plus "chain_heads" streamed from the spool); its SHA-256."""
    with path.open("xb", buffering=WRITE_BUFFER) as handle:
        sink = _HashingFile(handle)
        # json.dumps(indent=2) of a non-empty dict ends with "\n}": the heads go before it.
        sink.write(json.dumps(fields, indent=2, ensure_ascii=False)[:-2])
        sink.write(',\n  "chain_heads": {')
        separator = "\n    "
        for member in heads.members():
            sink.write(separator + member)
            separator = ",\n    "
        sink.write("\n  }\n}\n" if heads.count else "}\n}\n")
    return sink.digest.hexdigest()


def conversations_export(
    *,
    actor: AbstractBaseUser | None,
    out_dir: Path,
    team_ids: list[int] | None = None,
    contact_id: int | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    progress: Callable[[int], None] | None = None,
    label: str = "system",
) -> ConversationExport:
    """Write the auditor export of the selected conversations into `out_dir` and record it.

    Needs messaging.export_conversations and only covers teams the actor can see (`actor`
    None: the system, every team, recorded as `label`). `progress` gets rows written.
    Refusals write nothing; a failure half-way removes what it wrote.
    """
    selection = _selection(actor, team_ids, contact_id, since, until)
    out_dir = Path(out_dir)
    create = _prepare_directory(out_dir)
    report = progress or (lambda _count: None)
    label = actor_label(actor, label)
    started = timezone.now()
    heads = _HeadSpool()
    files: dict[str, _HashingFile] = {}
    try:
        if create:
            out_dir.mkdir(parents=True)
        try:
            for name in DATA_FILES:
                files[name] = _HashingFile((out_dir / name).open("xb", buffering=WRITE_BUFFER))
            with _Snapshot() as snapshot:
                message_count, event_count = _write_tables(
                    selection, files, report, heads, snapshot
                )
        finally:
            for sink in files.values():
                sink.handle.close()
        counts = {"conversations": heads.count, "messages": message_count, "events": event_count}
        manifest_sha256 = _write_manifest(
            out_dir / MANIFEST,
            {
                "format_version": EXPORT_FORMAT_VERSION,
                "created_at": started.isoformat(),
                "exported_by": label,
                "filters": selection.as_json(),
                "selection": SELECTION_RULE,
                "hashing": HASHING_RULE,
                "counts": counts,
                "files": {name: sink.summary() for name, sink in files.items()},
            },
            heads,
        )
    except BaseException:
        _remove_partial(out_dir, create)
        raise
    finally:
        heads.close()
    # Recorded once the files are complete; the manifest's hash pins the whole export.
    return ConversationExport.objects.create(
        actor=actor,
        actor_label=label,
        filters=selection.as_json(),
        message_count=message_count,
        event_count=event_count,
        conversation_count=heads.count,
        manifest_sha256=manifest_sha256,
        location=str(out_dir.resolve()),
    )


def _remove_partial(out_dir: Path, created: bool) -> None:
    if created:
        shutil.rmtree(out_dir, ignore_errors=True)
        return
    for name in (*DATA_FILES, MANIFEST):
        (out_dir / name).unlink(missing_ok=True)


_decode_json = json.JSONDecoder().decode  # one decoder for every line
READ_BLOCK: Final = 1 << 22


class _Mismatch(Exception):
    """The first difference found; its text is the verifier's answer."""


# One line of a JSON Lines file: (line number, object).
_Line = tuple[int, dict[str, Any]]


def _json_line(raw: bytes) -> Any:
    """A line read by json, the module canonical_json writes with (None if it reads none)."""
    try:
        return _decode_json(raw.decode("utf-8"))
    except ValueError:  # also UnicodeDecodeError
        return None


def _canonical_fast(payload: dict[str, Any]) -> bytes | None:
    """orjson's spelling of crm.ledger.canonical_json(payload) for the fast walk, or None.

    orjson sorts keys and escapes strings exactly like json.dumps(ensure_ascii=False); it
    spells some floats differently, so its bytes only match the sealed hash where they are
    canonical_json's (see _walk). One case is set aside: orjson reads an integer beyond 64
    bits as a float, and that float's spelling ("…e+29") may be the sealed one although json
    reads the line's integer as an integer. None (no verdict) sends it to the exact walk.
    """
    try:
        spelled = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        return None
    # Looked for only when the bytes hold "e+" (a text may: "one+two"), which is seldom.
    if b"e+" in spelled and _holds_float(payload):
        return None
    return spelled


def _holds_float(value: dict[str, Any] | list[Any]) -> bool:
    for item in value.values() if type(value) is dict else value:
        kind = type(item)
        if kind is float or ((kind is dict or kind is list) and _holds_float(item)):
            return True
    return False


class _JsonlReader:
    """Streams a JSON Lines file in blocks of read lines, hashing the bytes as it reads.

    The fast walk reads lines with orjson (a line it cannot read ends the fast walk), the
    exact walk with json (see _walk). The blocks are hashed by `hasher`, one thread that
    takes them in order, while this one parses (hashlib releases the GIL).
    """

    def __init__(self, directory: Path, name: str, fast: bool, hasher: Executor) -> None:
        self.path = directory / name
        self.name = name
        self.load: Callable[[bytes], Any] = orjson.loads if fast else _json_line
        self.hasher = hasher
        self.digest = hashlib.sha256()
        self.hashed: Future[None] | None = None
        self.bytes = 0
        self.rows = 0
        if not self.path.is_file():
            raise _Mismatch(gettext("%(file)s: missing.") % {"file": name})

    def summary(self) -> dict[str, Any]:
        """The file's SHA-256, size and rows, once every block read has been hashed."""
        if self.hashed is not None:
            self.hashed.result()
        return {"sha256": self.digest.hexdigest(), "bytes": self.bytes, "rows": self.rows}

    def blocks(self) -> Iterator[Iterator[Any]]:
        """The lines of each block read, as read (not necessarily objects); counts them.

        Each block's lines are read as they are taken: a list of a block's objects would
        keep thousands alive at once, which the garbage collector walks again and again.
        """
        with self.path.open("rb") as handle:
            rest = b""
            while True:
                block = handle.read(READ_BLOCK)
                if block:
                    self.hashed = self.hasher.submit(self.digest.update, block)
                    self.bytes += len(block)
                    lines = (rest + block).split(b"\n")
                    rest = lines.pop()  # the start of a line the next block ends
                else:
                    lines = [rest] if rest else []
                self.rows += len(lines)
                yield map(self.load, lines)  # no call of this module's per line
                if not block:
                    return

    def __iter__(self) -> Iterator[_Line]:
        line = self.rows
        for rows in self.blocks():
            for row in rows:
                line += 1
                if type(row) is not dict:
                    raise _Mismatch(
                        gettext("%(file)s line %(line)d: not a JSON object.")
                        % {"file": self.name, "line": line}
                    )
                yield line, row


class _Lookahead:
    """An iterator whose next item can be looked at without taking it."""

    def __init__(self, items: Iterator[_Line]) -> None:
        self.items = items
        self.next: _Line | None = None
        self.advance()

    def advance(self) -> None:
        self.next = next(self.items, None)


@dataclass(slots=True)
class _ExportedEvent:
    """The chained fields of an exported event under ConversationEvent's attribute names.

    The verifier hands it to ConversationEvent.chain_payload, so the hashed payload has one
    definition (the model's) and the verifier builds no model instance per event.
    """

    conversation_id: int
    sequence: int
    kind: str
    message_id: int | None
    actor_label: str
    data: Any
    occurred_at: dt.datetime
    recorded_at: dt.datetime


@dataclass
class _Chain:
    conversation: int
    sequence: int = 0
    head: str = GENESIS_HASH
    # message id -> (body_hash in its event's data, event sequence), for this conversation.
    message_hashes: dict[int, tuple[Any, int]] = field(default_factory=dict)


def _where(line: int, conversation: Any, sequence: Any = None) -> str:
    if sequence is None:
        return gettext("%(file)s line %(line)d (conversation %(conversation)s)") % {
            "file": EVENTS_JSONL,
            "line": line,
            "conversation": conversation,
        }
    return gettext("%(file)s line %(line)d (conversation %(conversation)s, sequence %(seq)s)") % {
        "file": EVENTS_JSONL,
        "line": line,
        "conversation": conversation,
        "seq": sequence,
    }


@lru_cache(maxsize=16)
def _parse_time(text: str) -> dt.datetime:
    """datetime.fromisoformat; an event's two times are mostly equal, and its message's near."""
    return dt.datetime.fromisoformat(text)


def _event_check(chain: _Chain, line: int, event: dict[str, Any]) -> None:
    sequence = event.get("sequence")
    # Described only when something is wrong: formatting per event would cost more than hashing.
    if sequence != chain.sequence + 1:
        raise _Mismatch(
            gettext("%(where)s: expected sequence %(expected)d; an event is missing or moved.")
            % {"where": _where(line, chain.conversation, sequence), "expected": chain.sequence + 1}
        )
    if event.get("previous_hash") != chain.head:
        raise _Mismatch(
            gettext("%(where)s: previous_hash does not match the hash of the event before.")
            % {"where": _where(line, chain.conversation, sequence)}
        )
    try:
        stand_in = _ExportedEvent(
            conversation_id=chain.conversation,
            sequence=sequence,
            kind=event["kind"],
            message_id=event["message"],
            actor_label=event["actor_label"],
            data=event["data"],
            occurred_at=_parse_time(event["occurred_at"]),
            recorded_at=_parse_time(event["recorded_at"]),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise _Mismatch(
            gettext("%(where)s: malformed event (%(error)s).")
            % {"where": _where(line, chain.conversation, sequence), "error": error}
        ) from error
    payload = ConversationEvent.chain_payload(stand_in)  # type: ignore[arg-type]
    digest = chain_hash(chain.head, payload)
    if digest != event.get("hash"):
        raise _Mismatch(
            gettext("%(where)s: hash does not match the event's content.")
            % {"where": _where(line, chain.conversation, sequence)}
        )
    chain.sequence = sequence
    chain.head = digest
    if stand_in.kind in MESSAGE_EVENTS and isinstance(stand_in.data, dict):
        chain.message_hashes[stand_in.message_id] = (stand_in.data.get("body_hash"), sequence)


def _head_check(chain: _Chain, heads: dict[str, Any]) -> None:
    expected = heads.get(str(chain.conversation))
    if not isinstance(expected, dict):
        raise _Mismatch(
            gettext("%(file)s: conversation %(conversation)s has no chain head in the manifest.")
            % {"file": EVENTS_JSONL, "conversation": chain.conversation}
        )
    if expected.get("sequence") != chain.sequence or expected.get("hash") != chain.head:
        raise _Mismatch(
            gettext(
                "%(file)s: conversation %(conversation)s ends at sequence %(sequence)s "
                "(hash %(hash)s); the manifest's chain head is sequence %(m_sequence)s "
                "(hash %(m_hash)s)."
            )
            % {
                "file": EVENTS_JSONL,
                "conversation": chain.conversation,
                "sequence": chain.sequence,
                "hash": chain.head,
                "m_sequence": expected.get("sequence"),
                "m_hash": expected.get("hash"),
            }
        )


def _message_where(line: int, message: dict[str, Any]) -> str:
    return gettext("%(file)s line %(line)d (message %(id)s, conversation %(conversation)s)") % {
        "file": MESSAGES_JSONL,
        "line": line,
        "id": message.get("id"),
        "conversation": message.get("conversation"),
    }


def _message_check(chain: _Chain, line: int, message: dict[str, Any], last_id: int) -> int:
    # Described only when something is wrong, as in _event_check.
    message_id = message.get("id")
    if not isinstance(message_id, int) or message_id <= last_id:
        raise _Mismatch(
            gettext("%(where)s: messages are not ordered by conversation and id.")
            % {"where": _message_where(line, message)}
        )
    chained = chain.message_hashes.get(message_id)
    if chained is None:
        raise _Mismatch(
            gettext("%(where)s: the conversation's chain has no event for this message.")
            % {"where": _message_where(line, message)}
        )
    chained_hash, sequence = chained
    if message.get("body_hash") != chained_hash:
        raise _Mismatch(
            gettext("%(where)s: body_hash differs from the one chained at sequence %(seq)d.")
            % {"where": _message_where(line, message), "seq": sequence}
        )
    subject, body, variables = message.get("subject"), message.get("body"), message.get("variables")
    if message.get("erased_at"):
        # Erasure replaced the text; its hash stays on the chain. Nothing else may be there.
        if body != ERASED_TEXT or subject not in ("", ERASED_TEXT) or variables != {}:
            raise _Mismatch(
                gettext("%(where)s: marked as erased but still holds text.")
                % {"where": _message_where(line, message)}
            )
        return message_id
    if not isinstance(subject, str) or not isinstance(body, str) or not isinstance(variables, dict):
        raise _Mismatch(
            gettext("%(where)s: malformed message.") % {"where": _message_where(line, message)}
        )
    if content_hash(subject=subject, body=body, variables=variables) != message["body_hash"]:
        raise _Mismatch(
            gettext("%(where)s: subject, body and variables do not match body_hash.")
            % {"where": _message_where(line, message)}
        )
    return message_id


def _messages_of(chain: _Chain, messages: _Lookahead) -> None:
    """Check the messages of `chain`'s conversation (the next ones in messages.jsonl)."""
    last_id = 0
    while messages.next is not None:
        line, message = messages.next
        conversation = message.get("conversation")
        if not isinstance(conversation, int) or conversation < chain.conversation:
            raise _Mismatch(
                gettext("%(where)s: no events of this conversation in %(file)s.")
                % {"where": _message_where(line, message), "file": EVENTS_JSONL}
            )
        if conversation > chain.conversation:
            break
        last_id = _message_check(chain, line, message, last_id)
        messages.advance()


def _walk_exactly(directory: Path, manifest: dict[str, Any], hasher: Executor) -> dict[str, Any]:
    """Re-walk every chain from genesis and every message against it, in one streaming pass,
    with json and canonical_json; the first mismatch is described precisely."""
    heads = manifest.get("chain_heads")
    if not isinstance(heads, dict):
        raise _Mismatch(gettext("%(file)s: no chain heads.") % {"file": MANIFEST})
    event_reader = _JsonlReader(directory, EVENTS_JSONL, False, hasher)
    message_reader = _JsonlReader(directory, MESSAGES_JSONL, False, hasher)
    messages = _Lookahead(iter(message_reader))
    chain: _Chain | None = None
    conversations = 0
    for line, event in event_reader:
        conversation = event.get("conversation")
        if chain is None or conversation != chain.conversation:
            if chain is not None:
                _head_check(chain, heads)
                _messages_of(chain, messages)
            if not isinstance(conversation, int) or (
                chain is not None and conversation < chain.conversation
            ):
                raise _Mismatch(
                    gettext("%(where)s: events are not ordered by conversation and sequence.")
                    % {"where": _where(line, conversation)}
                )
            chain = _Chain(conversation)
            conversations += 1
        _event_check(chain, line, event)
    if chain is not None:
        _head_check(chain, heads)
        _messages_of(chain, messages)
    if messages.next is not None:
        line, message = messages.next
        raise _Mismatch(
            gettext("%(where)s: no events of this conversation in %(file)s.")
            % {"where": _message_where(line, message), "file": EVENTS_JSONL}
        )
    if conversations != len(heads):
        raise _Mismatch(
            gettext("%(file)s lists %(heads)d chain heads; %(events)s has %(count)d conversations.")
            % {
                "file": MANIFEST,
                "heads": len(heads),
                "events": EVENTS_JSONL,
                "count": conversations,
            }
        )
    return {
        EVENTS_JSONL: event_reader.summary(),
        MESSAGES_JSONL: message_reader.summary(),
        "conversations": conversations,
    }


class _Unvouched(Exception):
    """Something the fast walk does not accept as it stands: the exact walk looks again."""


# Not a body hash: what a message that no event of its conversation chains is compared with.
_UNCHAINED: Final = object()


def _fast_payload(conversation: int, event: dict[str, Any]) -> dict[str, Any]:
    """ConversationEvent.chain_payload of an exported event, its times as the file spells them.

    Parsing and re-spelling every time cost more than hashing. A sealed hash that matches
    proves each text is what isoformat() wrote, which reads back to the same spelling.
    tests/messaging/test_exports_fast.py holds this to the model's chain_payload.
    """
    payload = {
        "conversation": conversation,
        "sequence": event["sequence"],
        "kind": event["kind"],
        "message": event["message"],
        "actor": event["actor_label"],
        "data": event["data"],
        "occurred_at": event["occurred_at"],
        "recorded_at": event["recorded_at"],
    }
    if type(payload["occurred_at"]) is not str or type(payload["recorded_at"]) is not str:
        raise _Unvouched
    return payload


def _fast_chain_end(conversation: int, sequence: Any, head: str, heads: dict[str, Any]) -> None:
    """_head_check, without a description."""
    expected = heads.get(str(conversation))
    if type(expected) is not dict or (
        expected.get("sequence") != sequence or expected.get("hash") != head
    ):
        raise _Unvouched


def _fast_messages(
    conversation: int, chained: dict[Any, Any], messages: Iterator[Any], message: Any
) -> Any:
    """_messages_of, without descriptions: checks the messages of `conversation` (`message`
    and the next ones of `messages`) against `chained` (message id -> chained body hash).
    Returns the first message of a later conversation, None at the end of the file."""
    last_id = 0
    sha256 = hashlib.sha256
    while message is not None:
        if type(message) is not dict:
            raise _Unvouched
        owner = message.get("conversation")
        if type(owner) is not int or owner < conversation:
            raise _Unvouched
        if owner > conversation:
            return message
        message_id, body_hash = message.get("id"), message.get("body_hash")
        if (
            type(message_id) is not int
            or message_id <= last_id
            or chained.get(message_id, _UNCHAINED) != body_hash
        ):
            raise _Unvouched
        subject, body, variables = (
            message.get("subject"),
            message.get("body"),
            message.get("variables"),
        )
        if message.get("erased_at"):
            if body != ERASED_TEXT or subject not in ("", ERASED_TEXT) or variables != {}:
                raise _Unvouched
        elif type(subject) is not str or type(body) is not str or type(variables) is not dict:
            raise _Unvouched
        else:
            spelled = _canonical_fast({"subject": subject, "body": body, "variables": variables})
            if spelled is None or sha256(spelled).hexdigest() != body_hash:
                raise _Unvouched
        last_id = message_id
        message = next(messages, None)
    return None


def _walk_fast(directory: Path, manifest: dict[str, Any], hasher: Executor) -> dict[str, Any]:
    """_walk_exactly's checks, read with orjson and spelled with orjson, in one tight loop.

    It only answers yes, or raises _Unvouched (or a _Mismatch, orjson's JSONDecodeError or a
    KeyError) at the first thing it does not accept: describing is the exact walk's part.
    """
    heads = manifest.get("chain_heads")
    if not isinstance(heads, dict):
        raise _Unvouched
    event_reader = _JsonlReader(directory, EVENTS_JSONL, True, hasher)
    message_reader = _JsonlReader(directory, MESSAGES_JSONL, True, hasher)
    messages = itertools.chain.from_iterable(message_reader.blocks())
    message = next(messages, None)
    sha256 = hashlib.sha256
    conversation: int | None = None
    sequence: Any = 0
    head = GENESIS_HASH
    chained: dict[Any, Any] = {}
    conversations = 0
    for block in event_reader.blocks():
        for event in block:
            if type(event) is not dict:
                raise _Unvouched
            owner = event.get("conversation")
            if owner != conversation or type(owner) is not int:
                if type(owner) is not int:
                    raise _Unvouched
                if conversation is not None:
                    if owner < conversation:
                        raise _Unvouched
                    _fast_chain_end(conversation, sequence, head, heads)
                    message = _fast_messages(conversation, chained, messages, message)
                conversation, sequence, head, chained = owner, 0, GENESIS_HASH, {}
                conversations += 1
            if event.get("sequence") != sequence + 1 or event.get("previous_hash") != head:
                raise _Unvouched
            payload = _fast_payload(conversation, event)
            spelled = _canonical_fast(payload)
            if spelled is None:
                raise _Unvouched
            digest = sha256(head.encode("ascii") + b"\n" + spelled).hexdigest()
            if digest != event.get("hash"):
                raise _Unvouched
            sequence, head = payload["sequence"], digest
            data = payload["data"]
            if payload["kind"] in MESSAGE_EVENTS and type(data) is dict:
                chained[payload["message"]] = data.get("body_hash")
    if conversation is not None:
        _fast_chain_end(conversation, sequence, head, heads)
        message = _fast_messages(conversation, chained, messages, message)
    if message is not None or conversations != len(heads):
        raise _Unvouched
    return {
        EVENTS_JSONL: event_reader.summary(),
        MESSAGES_JSONL: message_reader.summary(),
        "conversations": conversations,
    }


def _walk(directory: Path, manifest: dict[str, Any], hasher: Executor) -> dict[str, Any]:
    """_walk_fast, and where it does not vouch for the export, _walk_exactly.

    json reads numbers a little differently (orjson reads an integer beyond 64 bits as a
    float) and canonical_json spells some floats differently. Every hash the fast walk
    accepts is the sealed one, whose bytes canonical_json wrote, so the exact walk accepts
    it too. Anything the fast walk does not accept is walked again exactly, with json and
    canonical_json, which finds and describes the first difference, if there is one.
    """
    try:
        return _walk_fast(directory, manifest, hasher)
    except (_Unvouched, _Mismatch, KeyError, orjson.JSONDecodeError):
        return _walk_exactly(directory, manifest, hasher)


def _file_digest(path: Path) -> dict[str, Any] | None:
    """The file's SHA-256 and size; None if there is no such file."""
    digest = hashlib.sha256()
    size = 0
    try:
        with path.open("rb") as handle:
            while block := handle.read(READ_BLOCK):
                digest.update(block)
                size += len(block)
    except OSError:
        return None
    return {"sha256": digest.hexdigest(), "bytes": size}


def _files_check(
    manifest: dict[str, Any],
    walked: dict[str, Any],
    hashed: dict[str, Future[dict[str, Any] | None]],
) -> None:
    listed = manifest.get("files")
    if not isinstance(listed, dict) or set(listed) != set(DATA_FILES):
        raise _Mismatch(
            gettext("%(file)s: the list of files is not %(files)s.")
            % {"file": MANIFEST, "files": ", ".join(DATA_FILES)}
        )
    for name in DATA_FILES:
        expected = listed[name]
        if not isinstance(expected, dict):
            raise _Mismatch(
                gettext("%(file)s: no entry for %(name)s.") % {"file": MANIFEST, "name": name}
            )
        found = walked[name] if name in walked else hashed[name].result()
        if found is None:
            raise _Mismatch(gettext("%(file)s: missing.") % {"file": name})
        for key in ("rows", "bytes", "sha256"):
            if key in found and found[key] != expected.get(key):
                raise _Mismatch(
                    gettext("%(file)s: %(key)s is %(found)s; the manifest says %(expected)s.")
                    % {
                        "file": name,
                        "key": key,
                        "found": found[key],
                        "expected": expected.get(key),
                    }
                )


def _counts_check(manifest: dict[str, Any], counts: dict[str, int]) -> None:
    stated = manifest.get("counts")
    if not isinstance(stated, dict):
        raise _Mismatch(gettext("%(file)s: no counts.") % {"file": MANIFEST})
    for key, value in counts.items():
        if stated.get(key) != value:
            raise _Mismatch(
                gettext("%(file)s: counts.%(key)s is %(stated)s; the files hold %(found)d.")
                % {"file": MANIFEST, "key": key, "stated": stated.get(key), "found": value}
            )


def _manifest(directory: Path) -> tuple[dict[str, Any], str]:
    path = directory / MANIFEST
    if not path.is_file():
        raise _Mismatch(gettext("%(file)s: missing.") % {"file": MANIFEST})
    raw = path.read_bytes()
    try:
        manifest = json.loads(raw)
    except ValueError:
        manifest = None
    if not isinstance(manifest, dict):
        raise _Mismatch(gettext("%(file)s: not a JSON object.") % {"file": MANIFEST})
    if manifest.get("format_version") != EXPORT_FORMAT_VERSION:
        raise _Mismatch(
            gettext("%(file)s: unknown format_version %(version)s.")
            % {"file": MANIFEST, "version": manifest.get("format_version")}
        )
    return manifest, sha256_hex(raw)


def export_verify(directory: Path, *, manifest_sha256: str | None = None) -> VerifyResult:
    """Recompute an export offline: every chain from genesis, every message's body hash
    against its content and its chained event, the chain heads and each file's SHA-256.

    `manifest_sha256` (from the ConversationExport record) also pins the manifest itself.
    """
    directory = Path(directory)
    digest = ""
    counts: dict[str, int] = {}
    try:
        manifest, digest = _manifest(directory)
        if manifest_sha256 is not None and digest != manifest_sha256:
            raise _Mismatch(
                gettext("%(file)s: sha256 is %(found)s; expected %(expected)s.")
                % {"file": MANIFEST, "found": digest, "expected": manifest_sha256}
            )
        # Hashing (hashlib and reads release the GIL) runs on other threads while this one
        # walks the chains: the CSV files, which are only hashed, on one; the JSON Lines
        # blocks the walk reads on another, so that they never wait behind a CSV file.
        with ThreadPoolExecutor(max_workers=1) as pool, ThreadPoolExecutor(1) as hasher:
            hashed = {
                name: pool.submit(_file_digest, directory / name)
                for name in DATA_FILES
                if name not in (EVENTS_JSONL, MESSAGES_JSONL)
            }
            walked = _walk(directory, manifest, hasher)
            counts = {
                "conversations": walked["conversations"],
                "messages": walked[MESSAGES_JSONL]["rows"],
                "events": walked[EVENTS_JSONL]["rows"],
            }
            _counts_check(manifest, counts)
            _files_check(manifest, walked, hashed)
    except _Mismatch as mismatch:
        return VerifyResult(
            ok=False, first_mismatch=str(mismatch), counts=counts, manifest_sha256=digest
        )
    return VerifyResult(ok=True, first_mismatch=None, counts=counts, manifest_sha256=digest)
