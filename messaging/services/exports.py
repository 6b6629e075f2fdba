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
import json
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Final

import orjson
from django.core.exceptions import EmptyResultSet
from django.db import connection, transaction
from django.db.models import F, Q, QuerySet, TextField
from django.db.models.functions import Cast
from django.utils import timezone
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from crm import selectors as crm_selectors
from crm.errors import DomainError, PermissionRefused
from crm.exports import FORMULA_PREFIXES, csv_safe
from crm.ledger import GENESIS_HASH, canonical_json, sha256_hex
from crm.models import Contact, Team
from crm.privacy import SCRUBBED
from messaging.models import (
    MESSAGE_EVENTS,
    Conversation,
    ConversationEvent,
    ConversationExport,
    Message,
)
from messaging.services.ledger import actor_label

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
    nor break a chain head. Inside a caller's transaction the caller decides the isolation.
    """

    def __enter__(self) -> None:
        self.atomic = transaction.atomic()
        outer = connection.in_atomic_block
        self.atomic.__enter__()
        if connection.vendor == "postgresql" and not outer:
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")

    def __exit__(self, *exc_info: object) -> None:
        self.atomic.__exit__(*exc_info)


def _lookups(columns: Sequence[tuple[str, str, str]]) -> list[str]:
    return [lookup for _name, lookup, _kind in columns]


def _lines_in_sql() -> bool:
    """Whether the database spells the lines itself (PostgreSQL); elsewhere Python does.

    Formatting each row in Python was nearly all of an export's cost. On PostgreSQL,
    row_to_json and COPY's CSV format write the lines in _RowWriter's spelling, and this
    process only hashes and writes what COPY sends: the files are byte-identical either way
    (tests/messaging/test_exports_fast.py compares them).
    """
    return connection.vendor == "postgresql"


def _sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


_SQL_FORMULA_PREFIXES: Final = "(" + ", ".join(map(_sql_literal, FORMULA_PREFIXES)) + ")"


def _sql_json_value(column: str, kind: str) -> str:
    """The column as row_to_json must see it to write what _RowWriter writes."""
    if kind == TIME:
        # datetime.isoformat() of a UTC datetime: microseconds only when there are any.
        spelled = f"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US')"
        return f"replace({spelled}, '.000000', '') || '+00:00'"
    return column  # a JSON column stays jsonb (see _json_text): row_to_json embeds its text


def _sql_csv_cell(column: str, kind: str) -> str:
    """csv_safe() in SQL; an empty cell is NULL, so that COPY leaves it unquoted like csv."""
    if kind == TIME:
        return column  # the spelled timestamp: starts with a digit
    text = column if kind == TEXT else f"{column}::text"
    return (
        f"nullif(CASE WHEN left({text}, 1) IN {_SQL_FORMULA_PREFIXES} "
        f"THEN '''' || {text} ELSE {text} END, '')"
    )


def _copy_statements(
    rows: QuerySet, columns: Sequence[tuple[str, str, str]]
) -> tuple[str, str, Sequence[Any]]:
    """COPY statements for the JSON Lines and the CSV rows of `rows`, and their parameters.

    Each value is spelled as _RowWriter spells it: row_to_json writes the JSON object, COPY's
    CSV format quotes cells exactly like csv.writer (QUOTE_MINIMAL).
    """
    inner, params = rows.query.get_compiler(using=rows.db).as_sql()
    raw = [f"c{index}" for index in range(len(columns))]
    lookups = _lookups(columns)
    order = ", ".join(
        f"exported.{raw[lookups.index(name.removeprefix('-'))]}"
        + (" DESC" if name.startswith("-") else "")
        for name in rows.query.order_by
    )
    values = ", ".join(
        f"{_sql_json_value(column, kind)} AS {connection.ops.quote_name(name)}"
        for column, (name, _lookup, kind) in zip(raw, columns, strict=True)
    )
    spelled = f"SELECT {values} FROM ({inner}) AS exported ({', '.join(raw)}) ORDER BY {order}"  # noqa: S608
    names = [connection.ops.quote_name(name) for name, _lookup, _kind in columns]
    cells = ", ".join(
        _sql_csv_cell(f"line.{name}", kind)
        for name, (_name, _lookup, kind) in zip(names, columns, strict=True)
    )
    # Formatted in: the ORM's query, constant column names and literals (none holds a "%").
    jsonl = f"COPY (SELECT row_to_json(line) FROM ({spelled}) AS line) TO STDOUT"  # noqa: S608
    csv_rows = f"COPY (SELECT {cells} FROM ({spelled}) AS line) TO STDOUT (FORMAT csv)"  # noqa: S608
    return jsonl, csv_rows, params


def _copy_out(statement: str, params: Sequence[Any]) -> Iterator[list[bytes]]:
    """The rows a COPY … TO STDOUT sends (one line each, ending in "\\n"), in chunks."""
    with connection.cursor() as cursor, cursor.cursor.copy(statement, params) as copy:
        chunk: list[bytes] = []
        for row in copy:
            chunk.append(bytes(row))
            if len(chunk) == CHUNK_SIZE:
                yield chunk
                chunk = []
        if chunk:
            yield chunk


def _copy_tables(
    rows: QuerySet,
    columns: Sequence[tuple[str, str, str]],
    writer: _RowWriter,
    progress: Callable[[int], None],
) -> None:
    """Let PostgreSQL write both files' rows: one pass for JSON Lines, one for CSV."""
    try:
        jsonl, csv_rows, params = _copy_statements(rows, columns)
    except EmptyResultSet:  # a filter that cannot match, e.g. no team in scope
        return
    for chunk in _copy_out(jsonl, params):
        # COPY's text format doubles each backslash (JSON holds no other character it escapes).
        writer.jsonl.write_bytes(b"".join(chunk).replace(b"\\\\", b"\\"), len(chunk))
        progress(len(chunk))
    for chunk in _copy_out(csv_rows, params):
        # csv.writer ends a row with "\r\n", COPY with "\n" (a line break in a cell is quoted).
        writer.csv_file.write_bytes(b"\r\n".join(row[:-1] for row in chunk) + b"\r\n", len(chunk))


def _json_text(field_name: str) -> Cast | F:
    """A JSON field as _RowWriter writes it: the database's JSON text. The SQL path keeps
    the jsonb value, which row_to_json and ::text write as that same text."""
    return F(field_name) if _lines_in_sql() else Cast(field_name, TextField())


def _write_rows(
    rows: QuerySet,
    columns: Sequence[tuple[str, str, str]],
    writer: _RowWriter,
    progress: Callable[[int], None],
    heads: _HeadSpool | None = None,
) -> int:
    """Write `rows` to both files; with `heads`, note each conversation's chain head."""
    if _lines_in_sql():
        _copy_tables(rows, columns, writer, progress)
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
    last_events = (
        events.order_by("conversation_id", "-sequence")
        .distinct("conversation_id")
        .values_list("conversation_id", "sequence", "hash")
    )
    for conversation, sequence, digest in last_events.iterator(chunk_size=CHUNK_SIZE):
        heads.add(conversation, sequence, digest)
    return count


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
            with _Snapshot():
                message_count = _write_messages(
                    selection,
                    _RowWriter(files[MESSAGES_JSONL], files[MESSAGES_CSV], MESSAGE_COLUMNS),
                    report,
                )
                event_count = _write_events(
                    selection,
                    _RowWriter(files[EVENTS_JSONL], files[EVENTS_CSV], EVENT_COLUMNS),
                    report,
                    heads,
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


# One line of a JSON Lines file: (line number, object, whether orjson spells it exactly).
_Line = tuple[int, dict[str, Any], bool]


def _canonical(payload: dict[str, Any], exact: bool) -> bytes:
    """crm.ledger.canonical_json(payload), with orjson where it writes the very same bytes.

    orjson sorts keys and escapes strings exactly like json.dumps(ensure_ascii=False); it
    differs only on floats and integers beyond 64 bits (lines holding any are read by json
    and not `exact`) and refuses lone surrogates. Then canonical_json spells the payload.
    """
    if exact:
        try:
            return orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError:
            pass
    return canonical_json(payload)


def _chain_hash(previous_hash: str, payload: dict[str, Any], exact: bool) -> str:
    """crm.ledger.chain_hash, through _canonical."""
    return hashlib.sha256(
        previous_hash.encode("ascii") + b"\n" + _canonical(payload, exact)
    ).hexdigest()


def _content_hash(subject: Any, body: Any, variables: Any, exact: bool) -> str:
    """messaging.services.ledger.content_hash, through _canonical."""
    payload = {"subject": subject, "body": body, "variables": variables}
    return hashlib.sha256(_canonical(payload, exact)).hexdigest()


class _JsonlReader:
    """Streams a JSON Lines file as _Lines, hashing the bytes as it reads (in large blocks)."""

    def __init__(self, directory: Path, name: str) -> None:
        self.path = directory / name
        self.name = name
        self.digest = hashlib.sha256()
        self.bytes = 0
        self.rows = 0
        if not self.path.is_file():
            raise _Mismatch(gettext("%(file)s: missing.") % {"file": name})

    def __iter__(self) -> Iterator[_Line]:
        with self.path.open("rb") as handle:
            rest = b""
            while block := handle.read(READ_BLOCK):
                self.digest.update(block)
                self.bytes += len(block)
                lines = (rest + block).split(b"\n")
                rest = lines.pop()  # the start of a line the next block ends
                for raw in lines:
                    yield self._parsed(raw)
            if rest:
                yield self._parsed(rest)

    def _parsed(self, raw: bytes) -> _Line:
        self.rows += 1
        try:
            row = orjson.loads(raw)
            # orjson reads an integer beyond 64 bits as a float, and spells floats its own way.
            exact = isinstance(row, dict) and not _holds_float(row)
        except orjson.JSONDecodeError:  # json may still read it (a lone surrogate, NaN)
            exact = False
        if not exact:
            try:
                row = _decode_json(raw.decode("utf-8"))
            except ValueError:  # also UnicodeDecodeError
                row = None
        if not isinstance(row, dict):
            raise _Mismatch(
                gettext("%(file)s line %(line)d: not a JSON object.")
                % {"file": self.name, "line": self.rows}
            )
        return self.rows, row, exact


def _holds_float(value: dict[str, Any] | list[Any]) -> bool:
    for item in value.values() if type(value) is dict else value:
        kind = type(item)
        if kind is float or ((kind is dict or kind is list) and _holds_float(item)):
            return True
    return False


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


def _event_check(chain: _Chain, line: int, event: dict[str, Any], exact: bool) -> None:
    sequence = event.get("sequence")
    # Described only when something is wrong: formatting per event would cost more than hashing.
    where = partial(_where, line, chain.conversation, sequence)
    if sequence != chain.sequence + 1:
        raise _Mismatch(
            gettext("%(where)s: expected sequence %(expected)d; an event is missing or moved.")
            % {"where": where(), "expected": chain.sequence + 1}
        )
    if event.get("previous_hash") != chain.head:
        raise _Mismatch(
            gettext("%(where)s: previous_hash does not match the hash of the event before.")
            % {"where": where()}
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
            gettext("%(where)s: malformed event (%(error)s).") % {"where": where(), "error": error}
        ) from error
    payload = ConversationEvent.chain_payload(stand_in)  # type: ignore[arg-type]
    if _chain_hash(chain.head, payload, exact) != event.get("hash"):
        raise _Mismatch(
            gettext("%(where)s: hash does not match the event's content.") % {"where": where()}
        )
    chain.sequence = sequence
    chain.head = event["hash"]
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


def _message_check(
    chain: _Chain, line: int, message: dict[str, Any], exact: bool, last_id: int
) -> int:
    where = partial(_message_where, line, message)
    message_id = message.get("id")
    if not isinstance(message_id, int) or message_id <= last_id:
        raise _Mismatch(
            gettext("%(where)s: messages are not ordered by conversation and id.")
            % {"where": where()}
        )
    chained = chain.message_hashes.get(message_id)
    if chained is None:
        raise _Mismatch(
            gettext("%(where)s: the conversation's chain has no event for this message.")
            % {"where": where()}
        )
    chained_hash, sequence = chained
    if message.get("body_hash") != chained_hash:
        raise _Mismatch(
            gettext("%(where)s: body_hash differs from the one chained at sequence %(seq)d.")
            % {"where": where(), "seq": sequence}
        )
    subject, body, variables = message.get("subject"), message.get("body"), message.get("variables")
    if message.get("erased_at"):
        # Erasure replaced the text; its hash stays on the chain. Nothing else may be there.
        if body != ERASED_TEXT or subject not in ("", ERASED_TEXT) or variables != {}:
            raise _Mismatch(
                gettext("%(where)s: marked as erased but still holds text.") % {"where": where()}
            )
        return message_id
    if not isinstance(subject, str) or not isinstance(body, str) or not isinstance(variables, dict):
        raise _Mismatch(gettext("%(where)s: malformed message.") % {"where": where()})
    if _content_hash(subject, body, variables, exact) != message["body_hash"]:
        raise _Mismatch(
            gettext("%(where)s: subject, body and variables do not match body_hash.")
            % {"where": where()}
        )
    return message_id


def _messages_of(chain: _Chain, messages: _Lookahead) -> None:
    """Check the messages of `chain`'s conversation (the next ones in messages.jsonl)."""
    last_id = 0
    while messages.next is not None:
        line, message, exact = messages.next
        conversation = message.get("conversation")
        if not isinstance(conversation, int) or conversation < chain.conversation:
            raise _Mismatch(
                gettext("%(where)s: no events of this conversation in %(file)s.")
                % {"where": _message_where(line, message), "file": EVENTS_JSONL}
            )
        if conversation > chain.conversation:
            break
        last_id = _message_check(chain, line, message, exact, last_id)
        messages.advance()


def _walk(directory: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Re-walk every chain from genesis and every message against it, in one streaming pass."""
    heads = manifest.get("chain_heads")
    if not isinstance(heads, dict):
        raise _Mismatch(gettext("%(file)s: no chain heads.") % {"file": MANIFEST})
    event_reader = _JsonlReader(directory, EVENTS_JSONL)
    message_reader = _JsonlReader(directory, MESSAGES_JSONL)
    messages = _Lookahead(iter(message_reader))
    chain: _Chain | None = None
    conversations = 0
    for line, event, exact in event_reader:
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
        _event_check(chain, line, event, exact)
    if chain is not None:
        _head_check(chain, heads)
        _messages_of(chain, messages)
    if messages.next is not None:
        line, message, _exact = messages.next
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
        EVENTS_JSONL: {
            "sha256": event_reader.digest.hexdigest(),
            "bytes": event_reader.bytes,
            "rows": event_reader.rows,
        },
        MESSAGES_JSONL: {
            "sha256": message_reader.digest.hexdigest(),
            "bytes": message_reader.bytes,
            "rows": message_reader.rows,
        },
        "conversations": conversations,
    }


def _file_digest(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while block := handle.read(WRITE_BUFFER):
            digest.update(block)
            size += len(block)
    return {"sha256": digest.hexdigest(), "bytes": size}


def _files_check(directory: Path, manifest: dict[str, Any], walked: dict[str, Any]) -> None:
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
        if name in walked:
            found = walked[name]
        elif (directory / name).is_file():
            found = _file_digest(directory / name)
        else:
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
        walked = _walk(directory, manifest)
        counts = {
            "conversations": walked["conversations"],
            "messages": walked[MESSAGES_JSONL]["rows"],
            "events": walked[EVENTS_JSONL]["rows"],
        }
        _counts_check(manifest, counts)
        _files_check(directory, manifest, walked)
    except _Mismatch as mismatch:
        return VerifyResult(
            ok=False, first_mismatch=str(mismatch), counts=counts, manifest_sha256=digest
        )
    return VerifyResult(ok=True, first_mismatch=None, counts=counts, manifest_sha256=digest)
