"""The fast paths of the auditor export: PostgreSQL writes the rows (byte-identical to the
Python writer) and the verifier reads with orjson, handing whatever orjson cannot vouch for
to an exact walk with json and canonical_json."""

import datetime as dt
import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from crm.ledger import GENESIS_HASH, canonical_json, chain_hash, sha256_hex
from messaging.models import ConversationEvent, Message
from messaging.services import exports as exports_module
from messaging.services.exports import conversations_export, export_verify
from messaging.services.ledger import content_hash
from tests.factories import ChannelAccountFactory
from tests.messaging.helpers import exported_event, reachable_contact, receive_text

pytestmark = pytest.mark.django_db

# Every character class the writers escape or quote differently: JSON escapes, CSV
# separators and line breaks, formula starts, non-ASCII and characters outside the BMP.
AWKWARD_BODIES = [
    'Sie sagte "Hallo", dann ging sie.',
    "Zeile eins\nZeile zwei\r\nZeile drei\rEnde",
    "Tab\there, backslash \\ and \\n literally, control \x01\x1f, delete \x7f",
    '=HYPERLINK("http://evil.example")',
    "+49 30 123456",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(A1)",
    "\tbeginnt mit Tab",
    "\rbeginnt mit CR",
    "Grüße aus Köln 😀 \u2028 ende",
    "'schon zitiert",
    " ",
]


def _awkward_conversations(team) -> None:
    account = ChannelAccountFactory(team=team)
    for index, body in enumerate(AWKWARD_BODIES):
        contact = reachable_contact(team, first_name=f"Kontakt{index}")
        message = receive_text(account, contact, body)
        receive_text(account, contact, "Noch eine Frage, bitte.")
        if index % 2:
            # A time without microseconds: isoformat() leaves them out.
            Message.objects.filter(pk=message.pk).update(
                delivered_at=dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)
            )


@pytest.mark.postgres
def test_postgresql_writes_the_same_bytes_as_python(team, tmp_path, monkeypatch):
    _awkward_conversations(team)
    conversations_export(actor=None, out_dir=tmp_path / "sql")
    monkeypatch.setattr(exports_module, "_lines_in_sql", lambda: False)
    conversations_export(actor=None, out_dir=tmp_path / "python")

    for name in exports_module.DATA_FILES:
        assert (tmp_path / "sql" / name).read_bytes() == (tmp_path / "python" / name).read_bytes()
    manifests = [
        json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("sql", "python")
    ]
    for key in ("files", "counts", "chain_heads"):
        assert manifests[0][key] == manifests[1][key]
    assert manifests[0]["counts"]["messages"] == 2 * len(AWKWARD_BODIES)
    assert export_verify(tmp_path / "sql").ok


def test_awkward_text_round_trips_and_verifies(team, auditor, tmp_path):
    _awkward_conversations(team)
    conversations_export(actor=auditor, out_dir=tmp_path / "x")
    # Not splitlines(): it would also split at U+2028 inside a body.
    lines = (tmp_path / "x" / "messages.jsonl").read_bytes().decode().split("\n")[:-1]
    bodies = {json.loads(line)["body"] for line in lines}
    assert set(AWKWARD_BODIES) <= bodies
    assert export_verify(tmp_path / "x").ok


@pytest.mark.parametrize(
    "payload",
    [
        {"b": 1, "a": "x", "ä": [1, {"z": None, "y": True}], "😀": '\x00\x1f\x7f\u2028"\\/'},
        {"data": {"status": "sent", "gate": {"allowed": False, "reason": "no consent"}}},
        {"n": -9223372036854775808, "m": 18446744073709551615, "empty": {}, "list": []},
    ],
)
def test_canonical_spelling_equals_canonical_json(payload):
    assert exports_module._canonical_fast(payload) == canonical_json(payload)


def _sealed_export(directory, variables, spelled_variables=None):
    """A one-message export written by hand: its message's variables are `variables`,
    spelled in messages.jsonl as `spelled_variables` (JSON text) when given."""
    body_hash = content_hash(subject="", body="Hallo", variables=variables)
    at = "2025-03-01T12:00:00+00:00"
    event = {
        "conversation": 7,
        "sequence": 1,
        "kind": "message_in",
        "message": 70,
        "actor_label": "",
        "data": {"body_hash": body_hash},
        "occurred_at": at,
        "recorded_at": at,
        "previous_hash": GENESIS_HASH,
    }
    stand_in = exported_event(event)
    event["hash"] = chain_hash(GENESIS_HASH, ConversationEvent.chain_payload(stand_in))
    message = json.dumps(
        {
            "id": 70,
            "conversation": 7,
            "subject": "",
            "body": "Hallo",
            "variables": "VARIABLES",
            "body_hash": body_hash,
        }
    ).replace('"VARIABLES"', spelled_variables or json.dumps(variables))
    directory.mkdir()
    files = {
        "messages.jsonl": (message + "\n").encode(),
        "events.jsonl": (json.dumps(event) + "\n").encode(),
        "messages.csv": b"",
        "events.csv": b"",
    }
    for name, data in files.items():
        (directory / name).write_bytes(data)
    manifest = {
        "format_version": exports_module.EXPORT_FORMAT_VERSION,
        "counts": {"conversations": 1, "messages": 1, "events": 1},
        "files": {
            name: {"sha256": sha256_hex(data), "bytes": len(data), "rows": data.count(b"\n")}
            for name, data in files.items()
        },
        "chain_heads": {"7": {"sequence": 1, "hash": event["hash"]}},
    }
    (directory / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    "variables",
    [
        {"preis": 19.99, "klein": 1e-05, "gross": 1e16},
        {"riesig": 123456789012345678901234567890},
        {"liste": [0.5, -2.5e-7]},
    ],
)
def test_floats_and_huge_integers_verify(tmp_path, variables):
    """orjson spells some floats differently from json and reads huge integers as floats:
    the fast walk does not accept such hashes, the exact walk (json) does."""
    _sealed_export(tmp_path / "x", variables)
    result = export_verify(tmp_path / "x")
    assert result.ok, result.first_mismatch


def test_text_holding_e_plus_stays_on_the_fast_walk(tmp_path):
    """Only a float spelled "…e+…" needs the exact walk, not a text that holds "e+"."""
    _sealed_export(tmp_path / "x", {"formel": "one+two", "preis": "1e+16"})
    manifest = json.loads((tmp_path / "x" / "manifest.json").read_text())
    with ThreadPoolExecutor(1) as hasher:
        walked = exports_module._walk_fast(tmp_path / "x", manifest, hasher)
    assert walked["conversations"] == 1


def test_a_float_respelled_as_a_huge_integer_is_refused(tmp_path):
    """orjson reads the integer as the very float that was sealed; json, as canonical_json
    hashes, reads an integer: the content no longer matches its hash."""
    sealed = 123456789012345678901234567890.0
    _sealed_export(tmp_path / "x", {"riesig": sealed}, '{"riesig": 123456789012345678901234567890}')
    assert exports_module.orjson.loads(b"123456789012345678901234567890") == sealed

    assert export_verify(tmp_path / "x").first_mismatch == (
        "messages.jsonl line 1 (message 70, conversation 7): subject, body and variables do "
        "not match body_hash."
    )


@pytest.mark.parametrize("fast", [True, False])
def test_lines_are_split_across_read_blocks(tmp_path, monkeypatch, fast):
    monkeypatch.setattr(exports_module, "READ_BLOCK", 7)
    rows = [{"id": index, "text": "ä" * index} for index in range(20)]
    data = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode()
    (tmp_path / "x.jsonl").write_bytes(data + b'{"last": true}')
    with ThreadPoolExecutor(1) as hasher:
        reader = exports_module._JsonlReader(tmp_path, "x.jsonl", fast, hasher)
        assert [row for _line, row in reader] == [*rows, {"last": True}]
        assert reader.summary() == {
            "sha256": sha256_hex(data + b'{"last": true}'),
            "bytes": len(data) + 14,
            "rows": 21,
        }


def _exported(team, tmp_path):
    _awkward_conversations(team)
    conversations_export(actor=None, out_dir=tmp_path / "x")
    return tmp_path / "x", json.loads((tmp_path / "x" / "manifest.json").read_text())


def test_the_fast_payload_is_the_models_chain_payload(team, tmp_path):
    directory, _manifest = _exported(team, tmp_path)
    for line in (directory / "events.jsonl").read_text().split("\n")[:-1]:
        event = json.loads(line)
        stand_in = exported_event(event)
        assert exports_module._fast_payload(event["conversation"], event) == (
            ConversationEvent.chain_payload(stand_in)
        )


def test_the_fast_walk_vouches_for_an_intact_export(team, tmp_path):
    """Not only the exact walk: an intact export never needs the second, slower walk."""
    directory, manifest = _exported(team, tmp_path)
    with ThreadPoolExecutor(1) as hasher:
        fast = exports_module._walk_fast(directory, manifest, hasher)
        exact = exports_module._walk_exactly(directory, manifest, hasher)
    assert fast == exact
    assert fast["conversations"] == len(AWKWARD_BODIES)


# Changes to an intact export that the exact walk refuses: (file, line, change of that line).
TAMPERINGS = {
    "event data": ("events.jsonl", 1, lambda row: row["data"].update(status="read")),
    "event sequence as a float": ("events.jsonl", 0, lambda row: row.update(sequence=1.0)),
    "event time as a number": ("events.jsonl", 0, lambda row: row.update(occurred_at=0)),
    "event without a kind": ("events.jsonl", 0, lambda row: row.pop("kind")),
    "event previous hash": ("events.jsonl", 1, lambda row: row.update(previous_hash="0" * 64)),
    "message body": ("messages.jsonl", 0, lambda row: row.update(body=row["body"] + "!")),
    "message id as a float": ("messages.jsonl", 0, lambda row: row.update(id=float(row["id"]))),
    "message of no conversation": ("messages.jsonl", 1, lambda row: row.update(conversation=0)),
    "message marked erased": ("messages.jsonl", 0, lambda row: row.update(erased_at="2025")),
    "message variables": ("messages.jsonl", 0, lambda row: row.update(variables={"x": 1})),
    "message as a list": ("messages.jsonl", 0, lambda row: row.clear()),
}


@pytest.mark.parametrize("tampering", TAMPERINGS)
def test_the_fast_walk_refuses_what_the_exact_walk_refuses(team, tmp_path, tampering):
    """The fast walk only says yes or hands over: whatever it accepts, the exact walk accepts."""
    directory, manifest = _exported(team, tmp_path)
    name, index, change = TAMPERINGS[tampering]
    path = directory / name
    lines = path.read_bytes().split(b"\n")
    row = json.loads(lines[index])
    change(row)
    lines[index] = json.dumps(row, ensure_ascii=False).encode() if row else b"[]"
    path.write_bytes(b"\n".join(lines))

    with ThreadPoolExecutor(1) as hasher:
        with pytest.raises(exports_module._Mismatch):
            exports_module._walk_exactly(directory, manifest, hasher)
        with pytest.raises(
            (exports_module._Unvouched, exports_module._Mismatch, KeyError, ValueError)
        ):
            exports_module._walk_fast(directory, manifest, hasher)
    assert not export_verify(directory).ok
