"""Auditor export and its verification: messages per second and peak memory, through the real
services (messaging.services.exports.conversations_export / export_verify).

Contacts and conversations are generated inside PostgreSQL (generate_series). Messages and
their events are generated in Python with real content hashes and hash chains (computed by
the model's own chain_payload) and streamed in with COPY, so every export verifies. Each
conversation holds ten messages, inbound and outbound in turn; an outbound message also has
`sent` and `delivered` status events: two events per message on average.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from django.db import connection

from benchmarks.harness import Figure, median, peak_rss_mb, time_runs

TARGET_MESSAGES_PER_SECOND = 50_000.0
TARGET_PEAK_RSS_MB = 300.0
MESSAGES_PER_CONVERSATION = 10
BASE_TIME = dt.datetime(2025, 1, 6, 8, 0, tzinfo=dt.UTC)

MESSAGE_COLUMNS = (
    "id",
    "conversation_id",
    "team_id",
    "contact_id",
    "account_id",
    "channel",
    "direction",
    "kind",
    "variables",
    "subject",
    "body",
    "body_hash",
    "sender_kind",
    "origin",
    "gate_decision",
    "idempotency_key",
    "provider_message_id",
    "status",
    "created_at",
    "sent_at",
    "delivered_at",
    "error_code",
    "error_detail",
)
EVENT_COLUMNS = (
    "previous_hash",
    "hash",
    "conversation_id",
    "sequence",
    "kind",
    "message_id",
    "actor_label",
    "data",
    "occurred_at",
    "recorded_at",
)


def _populate_conversations(conversations: int) -> tuple[int, int]:
    """A team, a WhatsApp account, one contact and one conversation per contact."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO crm_team (name, slug, default_language, default_time_zone, is_active,
                                  created_at, updated_at)
            VALUES ('Bench Export', 'bench-export', 'de', 'Europe/Berlin', true, now(), now())
            RETURNING id
            """
        )
        team_id = cursor.fetchone()[0]
        cursor.execute(
            """
            INSERT INTO messaging_channelaccount (team_id, name, slug, channel, provider,
                address, external_id, credentials_env, first_response_minutes,
                messages_per_second, is_active, created_at, updated_at)
            VALUES (%s, 'Bench WhatsApp', 'bench-whatsapp', 'whatsapp', 'console',
                    '+4930123456', '', '', 60, 20, true, now(), now())
            RETURNING id
            """,
            [team_id],
        )
        account_id = cursor.fetchone()[0]
        cursor.execute(
            """
            INSERT INTO crm_contact (team_id, salutation, first_name, last_name, language,
                time_zone, organisation, profession, preferred_channel, attributes, external_id,
                is_restricted, erased_at, created_at, updated_at)
            SELECT %s, '', 'Vorname' || g, 'Nachname' || g, 'de', 'Europe/Berlin', '', '',
                   'whatsapp', '{}'::jsonb, 'EXPORT' || g, false, NULL, now(), now()
            FROM generate_series(1, %s) AS g
            """,
            [team_id, conversations],
        )
        cursor.execute(
            """
            INSERT INTO messaging_conversation (team_id, contact_id, account_id, channel, status,
                handler, last_sequence, head_hash, created_at, updated_at)
            SELECT team_id, id, %s, 'whatsapp', 'open', 'bot', 0, '', now(), now()
            FROM crm_contact WHERE team_id = %s ORDER BY id
            """,
            [account_id, team_id],
        )
    return team_id, account_id


def _conversations(team_id: int) -> list[tuple[int, int]]:
    # Read before COPY starts: the connection serves one statement at a time.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, contact_id FROM messaging_conversation WHERE team_id = %s ORDER BY id",
            [team_id],
        )
        return cursor.fetchall()


def _messages(
    size: int,
    team_id: int,
    account_id: int,
    first_id: int,
    conversations: list[tuple[int, int]],
) -> Iterator[dict]:
    """Every message as the fields the services would have written (deterministic)."""
    from messaging.services.ledger import content_hash

    number = itertools.count()
    for conversation_id, contact_id in conversations:
        for position in range(MESSAGES_PER_CONVERSATION):
            index = next(number)
            if index >= size:
                return
            created_at = BASE_TIME + dt.timedelta(seconds=index, microseconds=index % 997)
            inbound = position % 2 == 0
            if inbound:
                body = f"Hallo, ich hätte eine Frage zu Termin {index}. Grüße aus Köln!"
                if index % 50 == 0:
                    body = f"=SUM(A1:A{index}) steht in meiner Tabelle"
                variables: dict[str, Any] = {}
            else:
                body = f"Guten Tag Vorname{contact_id}, Ihr Termin {index} ist bestätigt."
                variables = {"first_name": f"Vorname{contact_id}", "slot": str(index)}
            yield {
                "id": first_id + index,
                "conversation_id": conversation_id,
                "team_id": team_id,
                "contact_id": contact_id,
                "account_id": account_id,
                "channel": "whatsapp",
                "direction": "inbound" if inbound else "outbound",
                "kind": "text",
                "template_version_id": None,
                "purpose_id": None,
                "variables": variables,
                "subject": "",
                "body": body,
                "body_hash": content_hash(subject="", body=body, variables=variables),
                "sender_kind": "contact" if inbound else "agent",
                "origin": "",
                "gate_decision": {} if inbound else {"allowed": True, "reason": None},
                "idempotency_key": uuid.UUID(int=index + 1),
                "provider_message_id": f"{'in' if inbound else 'out'}-{index}",
                "status": "received" if inbound else "delivered",
                "created_at": created_at,
                "sent_at": None if inbound else created_at + dt.timedelta(seconds=1),
                "delivered_at": None if inbound else created_at + dt.timedelta(seconds=3),
                "error_code": "",
                "error_detail": "",
            }


def _events(message: dict, sequence: int, previous: str) -> Iterator[tuple]:
    """The chain events of one message, sealed exactly as event_append seals them."""
    from crm.ledger import chain_hash
    from messaging.models import ConversationEvent
    from messaging.services.ledger import message_event_data

    inbound = message["direction"] == "inbound"
    steps = [("message_in" if inbound else "message_out", "" if inbound else "agent", None)]
    if not inbound:
        steps += [("status", "system", "sent"), ("status", "system", "delivered")]
    for offset, (kind, label, status) in enumerate(steps):
        if status is None:
            data = message_event_data(SimpleNamespace(**message))
        else:
            data = {"status": status}
        at = message["created_at"] + dt.timedelta(seconds=offset)
        fields = SimpleNamespace(
            conversation_id=message["conversation_id"],
            sequence=sequence + offset,
            kind=kind,
            message_id=message["id"],
            actor_label=label,
            data=data,
            occurred_at=at,
            recorded_at=at,
        )
        digest = chain_hash(previous, ConversationEvent.chain_payload(fields))
        yield (
            previous,
            digest,
            fields.conversation_id,
            fields.sequence,
            kind,
            fields.message_id,
            label,
            json.dumps(data),
            at,
            at,
        )
        previous = digest


def _populate(size: int) -> int:
    from crm.ledger import GENESIS_HASH

    conversations = -(-size // MESSAGES_PER_CONVERSATION)
    team_id, account_id = _populate_conversations(conversations)
    pairs = _conversations(team_id)
    with connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(max(id), 0) + 1 FROM messaging_message")
        first_id = cursor.fetchone()[0]
        columns = ", ".join(MESSAGE_COLUMNS)
        with cursor.cursor.copy(f"COPY messaging_message ({columns}) FROM STDIN") as copy:
            for message in _messages(size, team_id, account_id, first_id, pairs):
                message["variables"] = json.dumps(message["variables"])
                message["gate_decision"] = json.dumps(message["gate_decision"])
                copy.write_row([message[name] for name in MESSAGE_COLUMNS])
        cursor.execute(
            "SELECT setval(pg_get_serial_sequence('messaging_message', 'id'), max(id)) "
            "FROM messaging_message"
        )
        columns = ", ".join(EVENT_COLUMNS)
        with cursor.cursor.copy(f"COPY messaging_conversationevent ({columns}) FROM STDIN") as copy:
            conversation, sequence, previous = None, 1, GENESIS_HASH
            for message in _messages(size, team_id, account_id, first_id, pairs):
                if message["conversation_id"] != conversation:
                    conversation, sequence, previous = message["conversation_id"], 1, GENESIS_HASH
                for row in _events(message, sequence, previous):
                    copy.write_row(row)
                    sequence, previous = row[3] + 1, row[1]
        cursor.execute(
            """
            UPDATE messaging_conversation c
            SET last_sequence = e.sequence, head_hash = e.hash,
                last_message_at = e.occurred_at
            FROM (SELECT DISTINCT ON (conversation_id) conversation_id, sequence, hash,
                         occurred_at
                  FROM messaging_conversationevent ORDER BY conversation_id, sequence DESC) e
            WHERE e.conversation_id = c.id
            """
        )
        cursor.execute("ANALYZE")
    return team_id


def _peak_reset() -> None:
    """Start a new peak-RSS measurement (Linux: writing 5 to clear_refs resets VmHWM)."""
    # Elsewhere the figure is the process's peak so far.
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _peak_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return peak_rss_mb()


def run(size: int, runs: int) -> list[Figure]:
    from messaging.services.exports import conversations_export, export_verify

    team_id = _populate(size)
    workdir = Path(tempfile.mkdtemp(prefix="bench-export-"))
    runs_done = itertools.count()
    state: dict[str, Any] = {}

    def export() -> None:
        # One export on disk at a time: at a million messages each is a few gigabytes.
        if "out" in state:
            shutil.rmtree(state["out"])
        state["out"] = workdir / f"run-{next(runs_done)}"
        state["export"] = conversations_export(
            actor=None, out_dir=state["out"], team_ids=[team_id], label="benchmark"
        )

    def verify() -> None:
        state["verified"] = export_verify(state["out"])

    try:
        _peak_reset()
        export_timings = time_runs(export, runs)
        export_peak = _peak_mb()
        if state["export"].message_count != size:
            raise SystemExit(f"exported {state['export'].message_count} messages, not {size}")
        sizes = {p.name: p.stat().st_size for p in state["out"].iterdir()}
        _peak_reset()
        verify_timings = time_runs(verify, runs)
        verify_peak = _peak_mb()
        result = state["verified"]
        if not result.ok:
            raise SystemExit(f"export does not verify: {result.first_mismatch}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    notes = {
        "messages": size,
        "events": result.counts["events"],
        "conversations": result.counts["conversations"],
        "bytes": sizes,
    }
    return [
        Figure(
            name="export conversations (jsonl+csv+manifest)",
            size=size,
            unit="msg/s",
            median=size / median(export_timings),
            target=TARGET_MESSAGES_PER_SECOND,
            higher_is_better=True,
            runs=[size / t for t in export_timings],
            peak_rss_mb=export_peak,
            notes=notes,
        ),
        Figure(
            name="export conversations peak memory",
            size=size,
            unit="MB",
            median=export_peak,
            target=TARGET_PEAK_RSS_MB,
            higher_is_better=False,
            peak_rss_mb=export_peak,
        ),
        Figure(
            name="verify export (chains, hashes, files)",
            size=size,
            unit="msg/s",
            median=size / median(verify_timings),
            target=TARGET_MESSAGES_PER_SECOND,
            higher_is_better=True,
            runs=[size / t for t in verify_timings],
            peak_rss_mb=verify_peak,
            notes={"ok": result.ok},
        ),
        Figure(
            name="verify export peak memory",
            size=size,
            unit="MB",
            median=verify_peak,
            target=TARGET_PEAK_RSS_MB,
            higher_is_better=False,
            peak_rss_mb=verify_peak,
        ),
    ]
