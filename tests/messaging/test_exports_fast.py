"""The fast paths of the auditor export: PostgreSQL writes the rows (byte-identical to the
Python writer) and the verifier reads with orjson (hashing exactly like canonical_json)."""

import datetime as dt
import json

import pytest

from crm.ledger import canonical_json
from messaging.models import Message
from messaging.services import exports as exports_module
from messaging.services.exports import conversations_export, export_verify
from tests.factories import ChannelAccountFactory
from tests.messaging.helpers import reachable_contact, receive_text

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
    assert exports_module._canonical(payload, exact=True) == canonical_json(payload)


@pytest.mark.parametrize(
    "variables",
    [
        {"preis": 19.99, "klein": 1e-05, "gross": 1e16},
        {"riesig": 123456789012345678901234567890},
        {"liste": [0.5, -2.5e-7]},
    ],
)
def test_lines_with_floats_or_huge_integers_are_read_by_json(tmp_path, variables):
    """orjson spells floats differently and reads huge integers as floats: such lines take
    json's exact path, so their hashes still match canonical_json."""
    (tmp_path / "x.jsonl").write_text(
        json.dumps({"variables": variables}, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    [(line, row, exact)] = list(exports_module._JsonlReader(tmp_path, "x.jsonl"))
    assert (line, row, exact) == (1, {"variables": variables}, False)
    assert exports_module._canonical(row, exact) == canonical_json(row)


def test_lines_are_split_across_read_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(exports_module, "READ_BLOCK", 7)
    rows = [{"id": index, "text": "ä" * index} for index in range(20)]
    data = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode()
    (tmp_path / "x.jsonl").write_bytes(data + b'{"last": true}')
    reader = exports_module._JsonlReader(tmp_path, "x.jsonl")
    assert [row for _line, row, _exact in reader] == [*rows, {"last": True}]
    assert (reader.rows, reader.bytes) == (21, len(data) + 14)
