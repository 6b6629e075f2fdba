import csv
import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db.models.query import QuerySet
from django.utils import timezone

from crm.errors import PermissionRefused
from crm.ledger import chain_hash, sha256_hex
from messaging.models import Conversation, ConversationEvent, ConversationExport, Message
from messaging.services import conversation_note_add, message_send, message_status_apply
from messaging.services import exports as exports_module
from messaging.services.exports import (
    CHUNK_SIZE,
    ExportInvalid,
    conversations_export,
    export_verify,
)
from messaging.services.ledger import content_hash
from messaging.webhooks.events import DeliveryStatus, StatusUpdate
from tests.consent.helpers import grant_consent
from tests.factories import ChannelAccountFactory, PurposeFactory
from tests.messaging.helpers import (
    exported_event,
    reachable_contact,
    receive_text,
    sendable_version,
)

pytestmark = pytest.mark.django_db

FORMULA = '=HYPERLINK("http://evil.example/x","Gutschein")'


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _rewrite_line(path: Path, index: int, change) -> None:
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    row = json.loads(lines[index])
    change(row)
    lines[index] = json.dumps(row, ensure_ascii=False) + "\n"
    path.write_text("".join(lines), encoding="utf-8")


@pytest.fixture
def dialogs(team, other_team, agent, django_capture_on_commit_callbacks):
    """Two conversations in `team` (outbound template, inbound, reply, note, receipts) and
    one in `other_team`."""
    account = ChannelAccountFactory(team=team)
    purpose = PurposeFactory(team=team, allowed_channels=["whatsapp"])
    version = sendable_version(team, purpose=purpose)
    anna = reachable_contact(team, first_name="Anna")
    grant_consent(anna, purpose, "whatsapp")
    with django_capture_on_commit_callbacks(execute=True):
        invitation = message_send(
            contact=anna, account=account, actor=None, template_version=version
        )
    invitation.refresh_from_db()
    message_status_apply(
        account=account,
        update=StatusUpdate(
            provider="console",
            channel="whatsapp",
            provider_message_id=invitation.provider_message_id,
            status=DeliveryStatus.DELIVERED,
            provider_status="delivered",
            occurred_at=timezone.now(),
            raw={"recipient_id": "4915112345001"},
        ),
    )
    receive_text(account, anna, "Wann läuft der Film?")
    with django_capture_on_commit_callbacks(execute=True):
        message_send(contact=anna, account=account, actor=agent, text="Um 20 Uhr.")
    conversation = Conversation.objects.get(contact=anna)
    conversation_note_add(conversation=conversation, actor=agent, text="Fragt nach Zeiten")
    ben = reachable_contact(team, first_name="Ben")
    receive_text(account, ben, FORMULA)
    foreign_account = ChannelAccountFactory(team=other_team)
    carla = reachable_contact(other_team, first_name="Carla")
    receive_text(foreign_account, carla, "Hallo Apotheke")
    return {"anna": anna, "ben": ben, "carla": carla, "account": account}


def test_export_writes_every_file_and_verifies(dialogs, auditor, tmp_path):
    out = tmp_path / "export"
    export = conversations_export(actor=auditor, out_dir=out)

    assert sorted(p.name for p in out.iterdir()) == [
        "events.csv",
        "events.jsonl",
        "manifest.json",
        "messages.csv",
        "messages.jsonl",
    ]
    messages = _lines(out / "messages.jsonl")
    events = _lines(out / "events.jsonl")
    assert len(messages) == Message.objects.count() == 6
    assert len(events) == ConversationEvent.objects.count()
    assert {m["direction"] for m in messages} == {"inbound", "outbound", "note"}
    assert {e["kind"] for e in events} >= {"message_in", "message_out", "note", "status"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["exported_by"] == "auditor"
    assert manifest["counts"] == {"conversations": 3, "messages": 6, "events": len(events)}
    assert manifest["chain_heads"] == {
        str(c.pk): {"sequence": c.last_sequence, "hash": c.head_hash}
        for c in Conversation.objects.all()
    }
    for name in ("messages.jsonl", "messages.csv", "events.jsonl", "events.csv"):
        data = (out / name).read_bytes()
        assert manifest["files"][name]["sha256"] == sha256_hex(data)
        assert manifest["files"][name]["bytes"] == len(data)
    assert manifest["files"]["messages.csv"]["rows"] == 6

    result = export_verify(out)
    assert result.ok, result.first_mismatch
    assert result.counts == {"conversations": 3, "messages": 6, "events": len(events)}
    assert result.manifest_sha256 == export.manifest_sha256


def test_message_rows_carry_content_status_and_gate_decision(dialogs, auditor, tmp_path):
    conversations_export(actor=auditor, out_dir=tmp_path / "x")
    invitation = Message.objects.filter(kind="template").get()
    row = next(m for m in _lines(tmp_path / "x" / "messages.jsonl") if m["id"] == invitation.pk)

    assert row["body"] == invitation.body
    assert row["variables"] == invitation.variables
    assert row["body_hash"] == invitation.body_hash
    assert row["template_version"] == invitation.template_version_id
    assert row["purpose"] == invitation.purpose_id
    assert row["status"] == "delivered"
    assert row["delivered_at"] == invitation.delivered_at.isoformat()
    assert row["gate_decision"]["allowed"] is True
    assert row["provider_message_id"] == invitation.provider_message_id
    assert row["erased_at"] is None
    reply = Message.objects.get(sender__username="agent", direction="outbound")
    reply_row = next(m for m in _lines(tmp_path / "x" / "messages.jsonl") if m["id"] == reply.pk)
    assert reply_row["sender"] == "agent"


def test_formula_in_a_message_body_is_neutralised_in_csv_only(dialogs, auditor, tmp_path):
    conversations_export(actor=auditor, out_dir=tmp_path / "x")
    with (tmp_path / "x" / "messages.csv").open(encoding="utf-8", newline="") as handle:
        bodies = [row["body"] for row in csv.DictReader(handle)]
    assert "'" + FORMULA in bodies
    assert FORMULA not in bodies
    # The JSON Lines file keeps the text as received: its hash must still verify.
    assert FORMULA in [m["body"] for m in _lines(tmp_path / "x" / "messages.jsonl")]
    assert export_verify(tmp_path / "x").ok


def test_an_export_without_conversations_is_valid(team, auditor, tmp_path):
    export = conversations_export(actor=auditor, out_dir=tmp_path / "x", team_ids=[team.pk])
    manifest = json.loads((tmp_path / "x" / "manifest.json").read_text())
    assert manifest["chain_heads"] == {}
    assert manifest["counts"] == {"conversations": 0, "messages": 0, "events": 0}
    assert (export.message_count, export.conversation_count) == (0, 0)
    assert export_verify(tmp_path / "x").ok


def test_a_tampered_event_is_reported_with_line_conversation_and_sequence(
    dialogs, auditor, tmp_path
):
    conversations_export(actor=auditor, out_dir=tmp_path / "x")
    path = tmp_path / "x" / "events.jsonl"
    target = _lines(path)[2]
    _rewrite_line(path, 2, lambda row: row["data"].update(status="read"))

    result = export_verify(tmp_path / "x")

    assert not result.ok
    assert result.first_mismatch == (
        f"events.jsonl line 3 (conversation {target['conversation']}, sequence "
        f"{target['sequence']}): hash does not match the event's content."
    )


def test_a_tampered_message_body_is_reported_with_line_and_message(dialogs, auditor, tmp_path):
    conversations_export(actor=auditor, out_dir=tmp_path / "x")
    path = tmp_path / "x" / "messages.jsonl"
    target = _lines(path)[1]
    _rewrite_line(path, 1, lambda row: row.update(body=row["body"] + " (geändert)"))

    result = export_verify(tmp_path / "x")

    assert result.first_mismatch == (
        f"messages.jsonl line 2 (message {target['id']}, conversation "
        f"{target['conversation']}): subject, body and variables do not match body_hash."
    )


def test_a_message_hash_changed_to_match_its_new_text_differs_from_the_chain(
    dialogs, auditor, tmp_path
):
    conversations_export(actor=auditor, out_dir=tmp_path / "x")
    path = tmp_path / "x" / "messages.jsonl"

    def forge(row):
        row["body"] = "Etwas anderes"
        row["body_hash"] = content_hash(
            subject=row["subject"], body=row["body"], variables=row["variables"]
        )

    _rewrite_line(path, 0, forge)
    assert "body_hash differs from the one chained at sequence" in (
        export_verify(tmp_path / "x").first_mismatch
    )


def test_a_changed_file_hash_in_the_manifest_is_reported(dialogs, auditor, tmp_path):
    conversations_export(actor=auditor, out_dir=tmp_path / "x")
    path = tmp_path / "x" / "manifest.json"
    manifest = json.loads(path.read_text())
    real = manifest["files"]["events.csv"]["sha256"]
    manifest["files"]["events.csv"]["sha256"] = "f" * 64
    path.write_text(json.dumps(manifest))

    result = export_verify(tmp_path / "x")

    assert result.first_mismatch == (f"events.csv: sha256 is {real}; the manifest says {'f' * 64}.")


def test_a_deleted_event_line_is_reported_where_the_sequence_breaks(dialogs, auditor, tmp_path):
    conversations_export(actor=auditor, out_dir=tmp_path / "x")
    path = tmp_path / "x" / "events.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    following = json.loads(lines[2])
    path.write_text("".join(lines[:1] + lines[2:]), encoding="utf-8")

    assert export_verify(tmp_path / "x").first_mismatch == (
        f"events.jsonl line 2 (conversation {following['conversation']}, sequence "
        f"{following['sequence']}): expected sequence {following['sequence'] - 1}; an event "
        "is missing or moved."
    )


def test_a_deleted_last_event_is_reported_against_the_chain_head(dialogs, auditor, tmp_path):
    conversations_export(actor=auditor, out_dir=tmp_path / "x")
    path = tmp_path / "x" / "events.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    first = json.loads(lines[0])["conversation"]
    index = max(i for i, line in enumerate(lines) if json.loads(line)["conversation"] == first)
    last = json.loads(lines[index])
    path.write_text("".join(lines[:index] + lines[index + 1 :]), encoding="utf-8")

    mismatch = export_verify(tmp_path / "x").first_mismatch
    assert mismatch.startswith(
        f"events.jsonl: conversation {last['conversation']} ends at sequence "
        f"{last['sequence'] - 1} "
    )
    assert f"the manifest's chain head is sequence {last['sequence']}" in mismatch


def test_a_deleted_message_line_is_reported_by_the_row_count(dialogs, auditor, tmp_path):
    conversations_export(actor=auditor, out_dir=tmp_path / "x")
    path = tmp_path / "x" / "messages.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join(lines[:2] + lines[3:]), encoding="utf-8")

    assert export_verify(tmp_path / "x").first_mismatch == (
        "manifest.json: counts.messages is 6; the files hold 5."
    )


def test_a_rewritten_and_rehashed_chain_fails_on_its_head(dialogs, auditor, tmp_path):
    """Recomputing every hash after a change keeps the chain intact, not the manifest."""
    conversations_export(actor=auditor, out_dir=tmp_path / "x")
    path = tmp_path / "x" / "events.jsonl"
    rows = _lines(path)
    conversation = rows[0]["conversation"]
    previous = None
    for row in rows:
        if row["conversation"] != conversation:
            break
        if row["sequence"] == 1:
            row["actor_label"] = "someone else"
        row["previous_hash"] = previous or row["previous_hash"]
        stand_in = exported_event(row)
        row["hash"] = chain_hash(row["previous_hash"], ConversationEvent.chain_payload(stand_in))
        previous = row["hash"]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")

    mismatch = export_verify(tmp_path / "x").first_mismatch
    assert mismatch.startswith(f"events.jsonl: conversation {conversation} ends at sequence")


def test_a_pinned_manifest_hash_catches_a_rewritten_manifest(dialogs, auditor, tmp_path):
    export = conversations_export(actor=auditor, out_dir=tmp_path / "x")
    assert export_verify(tmp_path / "x", manifest_sha256=export.manifest_sha256).ok
    path = tmp_path / "x" / "manifest.json"
    path.write_text(path.read_text().replace('"exported_by": "auditor"', '"exported_by": "x"'))

    mismatch = export_verify(tmp_path / "x", manifest_sha256=export.manifest_sha256)
    assert mismatch.first_mismatch.startswith("manifest.json: sha256 is ")


def test_a_missing_file_is_reported(dialogs, auditor, tmp_path):
    conversations_export(actor=auditor, out_dir=tmp_path / "x")
    (tmp_path / "x" / "events.csv").unlink()
    assert export_verify(tmp_path / "x").first_mismatch == "events.csv: missing."


def test_team_filter_exports_only_that_team(dialogs, auditor, team, other_team, tmp_path):
    export = conversations_export(actor=auditor, out_dir=tmp_path / "x", team_ids=[other_team.pk])
    messages = _lines(tmp_path / "x" / "messages.jsonl")
    assert [m["body"] for m in messages] == ["Hallo Apotheke"]
    assert {e["conversation"] for e in _lines(tmp_path / "x" / "events.jsonl")} == {
        messages[0]["conversation"]
    }
    assert export.filters["team_ids"] == [other_team.pk]
    assert export_verify(tmp_path / "x").ok


def test_contact_filter_exports_only_that_contacts_conversations(dialogs, auditor, tmp_path):
    ben = dialogs["ben"]
    conversations_export(actor=auditor, out_dir=tmp_path / "x", contact_id=ben.pk)
    messages = _lines(tmp_path / "x" / "messages.jsonl")
    assert {m["contact"] for m in messages} == {ben.pk}
    assert len(messages) == 1
    assert export_verify(tmp_path / "x").ok


def test_period_limits_messages_but_exports_full_chains(dialogs, auditor, tmp_path):
    anna, account = dialogs["anna"], dialogs["account"]
    cut = timezone.now()
    late = receive_text(account, anna, "Noch eine Frage")

    conversations_export(actor=auditor, out_dir=tmp_path / "x", since=cut)

    messages = _lines(tmp_path / "x" / "messages.jsonl")
    assert [m["id"] for m in messages] == [late.pk]
    conversation = Conversation.objects.get(pk=late.conversation_id)
    events = _lines(tmp_path / "x" / "events.jsonl")
    assert [e["sequence"] for e in events] == list(range(1, conversation.last_sequence + 1))
    assert export_verify(tmp_path / "x").ok

    conversations_export(actor=auditor, out_dir=tmp_path / "y", until=cut)
    assert late.pk not in [m["id"] for m in _lines(tmp_path / "y" / "messages.jsonl")]
    assert len(_lines(tmp_path / "y" / "messages.jsonl")) == 6
    assert export_verify(tmp_path / "y").ok


def test_marketing_user_is_refused_and_nothing_is_written(dialogs, marketing, tmp_path):
    with pytest.raises(PermissionRefused):
        conversations_export(actor=marketing, out_dir=tmp_path / "x")
    assert not (tmp_path / "x").exists()
    assert ConversationExport.objects.count() == 0


def test_team_member_with_export_right_cannot_export_another_team(
    dialogs, make_user, team, other_team, tmp_path
):
    from guardian.shortcuts import assign_perm

    lead = make_user("team_lead", team=team)
    assign_perm("messaging.export_conversations", lead)

    with pytest.raises(PermissionRefused):
        conversations_export(actor=lead, out_dir=tmp_path / "x", team_ids=[other_team.pk])
    assert not (tmp_path / "x").exists()
    assert ConversationExport.objects.count() == 0

    export = conversations_export(actor=lead, out_dir=tmp_path / "y")
    assert export.filters["team_ids"] == [team.pk]
    assert {m["team"] for m in _lines(tmp_path / "y" / "messages.jsonl")} == {team.pk}


def test_superuser_may_export(dialogs, superuser, tmp_path):
    export = conversations_export(actor=superuser, out_dir=tmp_path / "x")
    assert export.message_count == 6


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"since": "2025-02-01", "until": "2025-01-01"}, "until"),
        ({"contact_id": 999_999}, "contact_id"),
        ({"team_ids": [999_999]}, "team_ids"),
    ],
)
def test_bad_filters_are_refused_with_their_field_and_nothing_is_written(
    dialogs, tmp_path, arguments, field
):
    for name in ("since", "until"):
        if name in arguments:
            arguments[name] = exports_module.dt.datetime.fromisoformat(arguments[name] + "T00:00Z")
    with pytest.raises(ExportInvalid) as error:
        conversations_export(actor=None, out_dir=tmp_path / "x", **arguments)
    assert error.value.field == field
    assert not (tmp_path / "x").exists()
    assert ConversationExport.objects.count() == 0


def test_a_contact_of_another_team_is_outside_the_scope(dialogs, auditor, team, tmp_path):
    with pytest.raises(ExportInvalid) as error:
        conversations_export(
            actor=auditor,
            out_dir=tmp_path / "x",
            team_ids=[team.pk],
            contact_id=dialogs["carla"].pk,
        )
    assert error.value.field == "contact_id"


def test_a_directory_with_files_is_refused_and_left_alone(dialogs, auditor, tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(ExportInvalid) as error:
        conversations_export(actor=auditor, out_dir=tmp_path)
    assert error.value.field == "out_dir"
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_an_empty_existing_directory_is_used(dialogs, auditor, tmp_path):
    conversations_export(actor=auditor, out_dir=tmp_path)
    assert (tmp_path / "manifest.json").is_file()


def test_a_failure_half_way_removes_what_was_written(dialogs, auditor, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(exports_module, "_write_events", broken)
    with pytest.raises(RuntimeError):
        conversations_export(actor=auditor, out_dir=tmp_path / "x")
    assert not (tmp_path / "x").exists()
    assert ConversationExport.objects.count() == 0


def test_the_export_is_recorded(dialogs, auditor, tmp_path):
    export = conversations_export(
        actor=auditor, out_dir=tmp_path / "x", contact_id=dialogs["anna"].pk
    )
    export.refresh_from_db()
    assert export.actor == auditor
    assert export.actor_label == "auditor"
    assert export.filters["contact_id"] == dialogs["anna"].pk
    assert (export.conversation_count, export.message_count) == (1, 4)
    assert export.event_count == len(_lines(tmp_path / "x" / "events.jsonl"))
    assert export.manifest_sha256 == sha256_hex((tmp_path / "x" / "manifest.json").read_bytes())
    assert export.location == str((tmp_path / "x").resolve())


def test_rows_are_streamed_in_chunks(dialogs, auditor, tmp_path, monkeypatch):
    # The Python writer (PostgreSQL streams COPY output instead, also in chunks).
    monkeypatch.setattr(exports_module, "_lines_in_sql", lambda: False)
    chunk_sizes = []
    original = QuerySet.iterator

    def iterator(self, chunk_size=None):
        chunk_sizes.append((self.model.__name__, chunk_size))
        return original(self, chunk_size=chunk_size)

    monkeypatch.setattr(QuerySet, "iterator", iterator)
    seen = []
    conversations_export(actor=auditor, out_dir=tmp_path / "x", progress=seen.append)
    assert chunk_sizes == [("Message", CHUNK_SIZE), ("ConversationEvent", CHUNK_SIZE)]
    assert sum(seen) == 6 + ConversationEvent.objects.count()


def test_export_command_writes_and_records_as_the_operator(dialogs, team, tmp_path, monkeypatch):
    monkeypatch.setattr("getpass.getuser", lambda: "ops")
    out = tmp_path / "x"
    stdout = StringIO()
    call_command(
        "export_conversations",
        "--team",
        team.slug,
        "--out",
        str(out),
        "--since",
        "2000-01-01",
        verbosity=0,
        stdout=stdout,
    )
    export = ConversationExport.objects.get()
    assert export.actor is None
    assert export.actor_label == "manage.py:ops"
    assert export.filters["since"] == "2000-01-01T00:00:00+01:00"
    assert "Exported 5 messages" in stdout.getvalue()
    assert export.manifest_sha256 in stdout.getvalue()


def test_export_command_applies_the_users_rights(dialogs, marketing, tmp_path):
    with pytest.raises(CommandError, match="You may not export conversations"):
        call_command(
            "export_conversations",
            "--out",
            str(tmp_path / "x"),
            "--user",
            "marketing",
            verbosity=0,
        )
    assert not (tmp_path / "x").exists()


def test_export_command_refuses_a_bad_date(dialogs, tmp_path):
    with pytest.raises(CommandError, match="--since"):
        call_command(
            "export_conversations",
            "--out",
            str(tmp_path / "x"),
            "--since",
            "gestern",
            verbosity=0,
        )


def test_verify_command_prints_ok_or_the_first_mismatch(dialogs, auditor, tmp_path):
    export = conversations_export(actor=auditor, out_dir=tmp_path / "x")
    stdout = StringIO()
    call_command("verify_export", str(tmp_path / "x"), stdout=stdout)
    assert stdout.getvalue().startswith("OK: 6 messages")
    call_command(
        "verify_export",
        str(tmp_path / "x"),
        "--manifest-sha256",
        export.manifest_sha256,
        stdout=StringIO(),
    )

    _rewrite_line(tmp_path / "x" / "events.jsonl", 0, lambda row: row.update(kind="note"))
    with pytest.raises(CommandError) as error:
        call_command("verify_export", str(tmp_path / "x"))
    assert str(error.value).startswith("MISMATCH: events.jsonl line 1 (conversation ")
    assert error.value.returncode == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_export_outside_a_transaction_reads_one_snapshot(tmp_path):
    """On PostgreSQL the export runs in its own REPEATABLE READ transaction."""
    from django.db import connection

    from tests.factories import TeamFactory

    team = TeamFactory()
    account = ChannelAccountFactory(team=team)
    receive_text(account, reachable_contact(team), "Hallo")
    assert not connection.in_atomic_block
    export = conversations_export(actor=None, out_dir=tmp_path / "x")
    assert export.message_count == 1
    assert export_verify(tmp_path / "x").ok


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_second_session_reads_the_exports_snapshot(tmp_path, monkeypatch):
    """Outside a transaction the messages are read in a second session: on the same snapshot,
    so a change committed meanwhile is not exported (the export still verifies)."""
    import threading

    from django.db import connection

    from tests.factories import TeamFactory

    team = TeamFactory()
    message = receive_text(ChannelAccountFactory(team=team), reachable_contact(team), "Hallo")
    original = exports_module._write_messages

    def change_then_write(*args):
        def change() -> None:
            Message.objects.filter(pk=message.pk).update(body="Geändert")
            connection.close()

        # Another thread has its own session: its change commits after the snapshot was taken.
        writer = threading.Thread(target=change)
        writer.start()
        writer.join()
        return original(*args)

    monkeypatch.setattr(exports_module, "_write_messages", change_then_write)
    conversations_export(actor=None, out_dir=tmp_path / "x")

    assert [m["body"] for m in _lines(tmp_path / "x" / "messages.jsonl")] == ["Hallo"]
    assert Message.objects.get(pk=message.pk).body == "Geändert"
    assert export_verify(tmp_path / "x").ok
