"""Parsing every provider fixture into events, with exact values, and refusing bad shapes.

Fixtures are read as bytes from disk (they are the signed bodies); Twilio's JSON objects are
the form fields of the request.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.http import QueryDict
from django.utils import timezone

from crm.errors import DomainError
from messaging.webhooks import (
    DeliveryStatus,
    InboundMessage,
    StatusUpdate,
    WebhookPayloadInvalid,
    is_twilio_status_callback,
    parse_twilio_inbound,
    parse_twilio_status,
    parse_whatsapp,
    parse_whatsapp_body,
)

PROVIDERS = Path(__file__).resolve().parents[1] / "fixtures" / "providers"
WABA_ID = "113456789012345"
PHONE_NUMBER_ID = "118765432109876"
BUSINESS_NUMBER = "+4915735998877"
TWILIO_ACCOUNT = "ACe268443e43d93dab7ebef303bbe9642f"
TWILIO_NUMBER = "+4915735987654"
RECEIVED_AT = datetime(2025, 7, 9, 12, 0, tzinfo=UTC)


def raw(name: str) -> bytes:
    return (PROVIDERS / "whatsapp" / name).read_bytes()


def payload(name: str) -> dict:
    return json.loads(raw(name))


def twilio_params(name: str) -> dict[str, str]:
    return json.loads((PROVIDERS / "twilio" / name).read_bytes())


def at(unix_seconds: int) -> datetime:
    return datetime.fromtimestamp(unix_seconds, tz=UTC)


def only_message(name: str) -> InboundMessage:
    batch = parse_whatsapp_body(raw(name))
    assert batch.statuses == batch.errors == batch.template_statuses == []
    assert batch.template_qualities == batch.ignored_fields == []
    assert len(batch.messages) == 1
    return batch.messages[0]


def only_status(name: str) -> StatusUpdate:
    batch = parse_whatsapp_body(raw(name))
    assert batch.messages == batch.errors == batch.template_statuses == []
    assert len(batch.statuses) == 1
    return batch.statuses[0]


WHATSAPP_WEBHOOK_FILES = {
    "inbound_text.json",
    "inbound_text_reply_context.json",
    "inbound_interactive_button_reply.json",
    "inbound_template_quick_reply_button.json",
    "inbound_text_referral_ad.json",
    "inbound_batch_two_messages.json",
    "status_sent.json",
    "status_delivered.json",
    "status_read.json",
    "status_failed_131026.json",
    "status_failed_131049.json",
    "template_status_approved.json",
    "template_status_rejected.json",
    "template_status_paused.json",
    "template_quality_update.json",
}
TWILIO_WEBHOOK_FILES = {
    "inbound_sms.json",
    "inbound_stop.json",
    "status_queued.json",
    "status_sent.json",
    "status_delivered.json",
    "status_undelivered_30003.json",
    "status_failed_21610.json",
}


def test_every_webhook_fixture_is_covered_here():
    """A new fixture file must get an exact-value test below (the handshake is in signatures)."""
    whatsapp = {path.name for path in (PROVIDERS / "whatsapp").glob("*.json")}
    assert whatsapp == WHATSAPP_WEBHOOK_FILES | {"verification_handshake.json"}
    twilio = {path.name for path in (PROVIDERS / "twilio").glob("*.json")}
    assert twilio == TWILIO_WEBHOOK_FILES | {"outbound_create_message.request.json"}


# --- WhatsApp: inbound messages ------------------------------------------------------------


def test_whatsapp_inbound_text():
    message = only_message("inbound_text.json")
    assert message.provider == "whatsapp_cloud"
    assert message.channel == "whatsapp"
    assert message.provider_message_id == (
        "wamid.HBgNNDkxNTExMjM0NTY3OBUCABIYFEFCRDIwRUUwQ0Q2Qjc5OUNFMENFAA=="
    )
    assert message.from_address == "+4915112345678"
    assert message.to_address == BUSINESS_NUMBER
    assert message.phone_number_id == PHONE_NUMBER_ID
    assert message.account_id == WABA_ID
    assert message.profile_name == "Jana Schröder"
    assert message.kind == "text"
    assert message.text == "Guten Morgen! Ist mein Termin am Freitag um 14 Uhr bestätigt?"
    assert message.payload is None
    assert message.reply_to_provider_id is None
    assert message.referral is None
    assert message.opt_out_type is None
    assert message.occurred_at == at(1752048000) == datetime(2025, 7, 9, 8, 0, tzinfo=UTC)
    assert message.occurred_at.utcoffset() == timedelta(0)
    assert (
        message.raw
        == payload("inbound_text.json")["entry"][0]["changes"][0]["value"]["messages"][0]
    )


def test_whatsapp_inbound_text_reply_context():
    message = only_message("inbound_text_reply_context.json")
    assert message.provider_message_id == (
        "wamid.HBgNNDkxNjA5ODc2NTQzMhUCABIYFDBCNkJCQkU5RjE5MDYzRUFDQTY4AA=="
    )
    assert message.from_address == "+4916098765432"
    assert message.profile_name == "Lukas Becker"
    assert message.kind == "text"
    assert message.text == "Danke, passt so. Bitte schicken Sie mir noch die Rechnung."
    assert message.reply_to_provider_id == (
        "wamid.HBgNNDkxNjA5ODc2NTQzMhUCABEYEjUyQjIzMThEMDkyNkMyMDIzQQA="
    )
    assert message.occurred_at == at(1752048600)


def test_whatsapp_interactive_button_reply():
    message = only_message("inbound_interactive_button_reply.json")
    assert message.provider_message_id == (
        "wamid.HBgNNDkxNjA5ODc2NTQzMhUCABIYFDRFM0JCNTBCRTY2NUI3MkM5QzQ5AA=="
    )
    assert message.from_address == "+4916098765432"
    assert message.kind == "interactive"
    assert message.text == "Termin bestätigen"
    assert message.payload == "appt-4711-confirm"
    assert message.reply_to_provider_id == (
        "wamid.HBgNNDkxNjA5ODc2NTQzMhUCABEYEjQ2MjFDRjdFOTVFRDE1RUYxMgA="
    )
    assert message.occurred_at == at(1752048900)


def test_whatsapp_template_quick_reply_button():
    message = only_message("inbound_template_quick_reply_button.json")
    assert message.provider_message_id == (
        "wamid.HBgNNDkxNTExMjM0NTY3OBUCABIYFDkyM0NBRTYxQUU0OUY2MUU5RUIzAA=="
    )
    assert message.from_address == "+4915112345678"
    assert message.profile_name == "Jana Schröder"
    assert message.kind == "button"
    assert message.text == "Termin verschieben"
    assert message.payload == "APPT_4711_RESCHEDULE"
    assert message.reply_to_provider_id == (
        "wamid.HBgNNDkxNTExMjM0NTY3OBUCABEYEjA2QUMwRkE5OEQxNzhEMjUwQQA="
    )
    assert message.occurred_at == at(1752049200)


def test_whatsapp_text_after_click_to_whatsapp_ad_keeps_referral():
    message = only_message("inbound_text_referral_ad.json")
    assert message.provider_message_id == (
        "wamid.HBgNNDkxNzYxMjM0NTY3OBUCABIYFEU0Mjc0NkQ4OEI0ODNBQjJCNDMwAA=="
    )
    assert message.from_address == "+4917612345678"
    assert message.profile_name == "Anna Weiß"
    assert message.text == "Hallo! Ich möchte einen Termin für den Frühjahrs-Check."
    assert message.reply_to_provider_id is None
    assert message.occurred_at == at(1752049800)
    assert message.referral is not None
    assert message.referral["source_type"] == "ad"
    assert message.referral["source_id"] == "120212345678901234"
    assert message.referral["source_url"] == "https://fb.me/4xKq7Lm2Z"
    assert message.referral["headline"] == "Frühjahrs-Check für Ihr Fahrrad"
    assert message.referral["ctwa_clid"].startswith("ARAkLkA8rmlFeiCktEJQ")


def test_whatsapp_batch_yields_every_message_with_its_own_profile_name():
    batch = parse_whatsapp_body(raw("inbound_batch_two_messages.json"))
    assert batch.statuses == []
    assert [m.provider_message_id for m in batch.messages] == [
        "wamid.HBgNNDkxNTExMjM0NTY3OBUCABIYFEI0OUFFMzVCM0YyMEE2RDFBNUY4AA==",
        "wamid.HBgNNDkxNjA5ODc2NTQzMhUCABIYFENEM0UzQjhDQ0Y5RUREODcyNDIzAA==",
    ]
    assert [m.from_address for m in batch.messages] == ["+4915112345678", "+4916098765432"]
    assert [m.profile_name for m in batch.messages] == ["Jana Schröder", "Lukas Becker"]
    assert [m.text for m in batch.messages] == [
        "Noch eine Frage: Kann ich bar zahlen?",
        "Rechnung ist angekommen, vielen Dank!",
    ]
    assert [m.occurred_at for m in batch.messages] == [at(1752051600), at(1752051601)]


def test_whatsapp_every_entry_and_change_is_read():
    """Two entries, the second with two changes (messages + statuses): nothing is skipped."""
    text = payload("inbound_text.json")
    batch_value = payload("inbound_batch_two_messages.json")["entry"][0]["changes"][0]
    status_change = payload("status_read.json")["entry"][0]["changes"][0]
    template_change = payload("template_status_approved.json")["entry"][0]["changes"][0]
    second_entry = {"id": "999", "changes": [batch_value, status_change, template_change]}
    text["entry"].append(second_entry)

    batch = parse_whatsapp(text)

    assert [m.text for m in batch.messages] == [
        "Guten Morgen! Ist mein Termin am Freitag um 14 Uhr bestätigt?",
        "Noch eine Frage: Kann ich bar zahlen?",
        "Rechnung ist angekommen, vielen Dank!",
    ]
    assert [m.account_id for m in batch.messages] == [WABA_ID, "999", "999"]
    assert [s.status for s in batch.statuses] == [DeliveryStatus.READ]
    assert [t.event for t in batch.template_statuses] == ["APPROVED"]
    assert batch.template_statuses[0].account_id == "999"
    assert batch.template_statuses[0].occurred_at is None  # this entry has no `time`


@pytest.mark.parametrize(
    ("kind", "content"),
    [
        ("image", {"image": {"id": "1234", "mime_type": "image/jpeg", "caption": "Foto"}}),
        ("document", {"document": {"id": "99", "filename": "rechnung.pdf"}}),
        ("audio", {"audio": {"id": "77", "voice": True}}),
        ("location", {"location": {"latitude": 52.5, "longitude": 13.4}}),
        ("sticker", {"sticker": {"id": "5"}}),
        ("unsupported", {"errors": [{"code": 131051, "title": "Message type unknown"}]}),
    ],
)
def test_whatsapp_other_message_kinds_keep_kind_with_empty_text(kind, content):
    data = payload("inbound_text.json")
    message = data["entry"][0]["changes"][0]["value"]["messages"][0]
    del message["text"]
    message.update({"type": kind, **content})

    [parsed] = parse_whatsapp(data).messages

    assert parsed.kind == kind
    assert parsed.text == ""
    assert parsed.payload is None
    assert parsed.from_address == "+4915112345678"
    assert parsed.raw[kind if kind != "unsupported" else "errors"]


def test_whatsapp_list_reply_gives_title_and_id():
    data = payload("inbound_interactive_button_reply.json")
    message = data["entry"][0]["changes"][0]["value"]["messages"][0]
    message["interactive"] = {
        "type": "list_reply",
        "list_reply": {"id": "slot-fri-14", "title": "Freitag 14 Uhr", "description": "Filiale"},
    }
    [parsed] = parse_whatsapp(data).messages
    assert (parsed.kind, parsed.text, parsed.payload) == (
        "interactive",
        "Freitag 14 Uhr",
        "slot-fri-14",
    )


def test_whatsapp_unknown_interactive_type_has_empty_text():
    data = payload("inbound_interactive_button_reply.json")
    message = data["entry"][0]["changes"][0]["value"]["messages"][0]
    message["interactive"] = {"type": "nfm_reply", "nfm_reply": {"response_json": "{}"}}
    [parsed] = parse_whatsapp(data).messages
    assert (parsed.kind, parsed.text, parsed.payload) == ("interactive", "", None)


def test_whatsapp_profile_name_missing_contacts():
    data = payload("inbound_text.json")
    del data["entry"][0]["changes"][0]["value"]["contacts"]
    [parsed] = parse_whatsapp(data).messages
    assert parsed.profile_name == ""


def test_whatsapp_integer_timestamp_is_accepted():
    data = payload("inbound_text.json")
    data["entry"][0]["changes"][0]["value"]["messages"][0]["timestamp"] = 1752048000
    [parsed] = parse_whatsapp(data).messages
    assert parsed.occurred_at == at(1752048000)


# --- WhatsApp: statuses --------------------------------------------------------------------

MARKETING_WAMID = "wamid.HBgNNDkxNTExMjM0NTY3OBUCABEYEjA2QUMwRkE5OEQxNzhEMjUwQQA="


@pytest.mark.parametrize(
    ("name", "status", "unix_seconds"),
    [
        ("status_sent.json", DeliveryStatus.SENT, 1752045000),
        ("status_delivered.json", DeliveryStatus.DELIVERED, 1752045010),
        ("status_read.json", DeliveryStatus.READ, 1752045600),
    ],
)
def test_whatsapp_receipts(name, status, unix_seconds):
    update = only_status(name)
    assert update.provider == "whatsapp_cloud"
    assert update.channel == "whatsapp"
    assert update.provider_message_id == MARKETING_WAMID
    assert update.status == status
    assert update.status == status.value  # StrEnum: compares equal to the plain string
    assert update.provider_status == status.value
    assert update.occurred_at == at(unix_seconds)
    assert update.recipient == "+4915112345678"
    assert update.phone_number_id == PHONE_NUMBER_ID
    assert update.account_id == WABA_ID
    assert update.callback_data == "crm:message:8f3c2a"
    assert update.error_code is None
    assert update.error_title == update.error_details == ""
    assert update.raw["pricing"]["category"] == "marketing"


def test_whatsapp_failed_131049():
    update = only_status("status_failed_131049.json")
    assert update.provider_message_id == (
        "wamid.HBgNNDkxNzYxMjM0NTY3OBUCABEYEkE2RjQxNDk0MzZGNDUyNTY5RgA="
    )
    assert update.status == DeliveryStatus.FAILED
    assert update.occurred_at == at(1752053000)
    assert update.recipient == "+4917612345678"
    assert update.error_code == "131049"
    assert update.error_title == (
        "This message was not delivered to maintain healthy ecosystem engagement."
    )
    assert update.error_details == (
        "In order to maintain healthy ecosystem engagement, the message failed to be delivered."
    )
    assert update.callback_data is None


def test_whatsapp_failed_131026():
    update = only_status("status_failed_131026.json")
    assert update.provider_message_id == (
        "wamid.HBgNNDkxNTkwMDAwMDAwMBUCABEYEkMxQ0ZBOUM5MzM2QzAwQjc2NwA="
    )
    assert update.status == DeliveryStatus.FAILED
    assert update.occurred_at == at(1752053100)
    assert update.recipient == "+4915900000000"
    assert update.error_code == "131026"
    assert update.error_title == "Message undeliverable"
    assert update.error_details == "Message Undeliverable."


def test_whatsapp_status_outside_our_lifecycle_is_kept_with_status_none():
    data = payload("status_read.json")
    data["entry"][0]["changes"][0]["value"]["statuses"][0]["status"] = "played"
    [update] = parse_whatsapp(data).statuses
    assert update.status is None
    assert update.provider_status == "played"


def test_whatsapp_value_errors_become_provider_error_events():
    data = payload("status_sent.json")
    value = data["entry"][0]["changes"][0]["value"]
    del value["statuses"]
    value["errors"] = [
        {
            "code": 131000,
            "title": "Something went wrong",
            "message": "Something went wrong",
            "error_data": {"details": "Unknown error"},
            "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/",
        }
    ]
    batch = parse_whatsapp(data)
    assert batch.messages == batch.statuses == []
    [error] = batch.errors
    assert error.code == "131000"
    assert error.title == error.message == "Something went wrong"
    assert error.details == "Unknown error"
    assert error.href.startswith("https://developers.facebook.com/")
    assert error.phone_number_id == PHONE_NUMBER_ID
    assert error.account_id == WABA_ID


# --- WhatsApp: template events -------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "event", "template_id", "template_name", "reason", "category", "unix_seconds"),
    [
        (
            "template_status_approved.json",
            "APPROVED",
            "1052893041278364",
            "termin_erinnerung",
            "NONE",
            "UTILITY",
            1752055200,
        ),
        (
            "template_status_rejected.json",
            "REJECTED",
            "1052893041278365",
            "fruehjahrs_aktion",
            "INCORRECT_CATEGORY",
            "UTILITY",
            1752055300,
        ),
        (
            "template_status_paused.json",
            "PAUSED",
            "1052893041278366",
            "newsletter_juli",
            "NONE",
            "MARKETING",
            1752055400,
        ),
    ],
)
def test_whatsapp_template_status(
    name, event, template_id, template_name, reason, category, unix_seconds
):
    batch = parse_whatsapp_body(raw(name))
    assert batch.messages == batch.statuses == batch.template_qualities == []
    [status] = batch.template_statuses
    assert status.event == event
    assert status.provider_template_id == template_id
    assert isinstance(status.provider_template_id, str)
    assert status.name == template_name
    assert status.language == "de"
    assert status.reason == reason
    assert status.category == category
    assert status.account_id == WABA_ID
    assert status.occurred_at == at(unix_seconds)
    assert status.disable_info is None
    if event == "PAUSED":
        assert status.other_info == {
            "title": "FIRST_PAUSE",
            "description": (
                "Your WhatsApp message template has been paused for 3 hours due to low quality."
            ),
        }
    else:
        assert status.other_info is None


def test_whatsapp_template_quality_update():
    batch = parse_whatsapp_body(raw("template_quality_update.json"))
    assert batch.template_statuses == batch.messages == []
    [quality] = batch.template_qualities
    assert quality.provider_template_id == "1052893041278366"
    assert quality.name == "newsletter_juli"
    assert quality.language == "de"
    assert quality.previous_quality_score == "GREEN"
    assert quality.new_quality_score == "YELLOW"
    assert quality.account_id == WABA_ID
    assert quality.occurred_at == at(1752055350)


def test_whatsapp_template_id_as_digit_string_is_accepted():
    data = payload("template_status_approved.json")
    data["entry"][0]["changes"][0]["value"]["message_template_id"] = "1052893041278364"
    [status] = parse_whatsapp(data).template_statuses
    assert status.provider_template_id == "1052893041278364"


def test_whatsapp_unhandled_field_is_listed_not_refused():
    data = payload("template_status_approved.json")
    data["entry"][0]["changes"][0]["field"] = "account_update"
    batch = parse_whatsapp(data)
    assert batch.ignored_fields == ["account_update"]
    assert batch.template_statuses == []


# --- WhatsApp: malformed payloads ----------------------------------------------------------


def _mutated(name: str, mutate) -> dict:
    data = copy.deepcopy(payload(name))
    mutate(data)
    return data


def _value(data: dict) -> dict:
    return data["entry"][0]["changes"][0]["value"]


def _message(data: dict) -> dict:
    return _value(data)["messages"][0]


def _status(data: dict) -> dict:
    return _value(data)["statuses"][0]


MALFORMED_WHATSAPP = [
    ("not-an-object", lambda: ["object", "entry"], "JSON object"),
    ("null", lambda: None, "JSON object"),
    ("missing-object", lambda: _mutated("inbound_text.json", lambda d: d.pop("object")), "object"),
    (
        "wrong-object",
        lambda: _mutated("inbound_text.json", lambda d: d.update(object="page")),
        "whatsapp_business_account",
    ),
    ("missing-entry", lambda: _mutated("inbound_text.json", lambda d: d.pop("entry")), "entry"),
    (
        "entry-not-list",
        lambda: _mutated("inbound_text.json", lambda d: d.update(entry={"id": "1"})),
        "entry",
    ),
    ("entry-empty", lambda: _mutated("inbound_text.json", lambda d: d.update(entry=[])), "entry"),
    (
        "entry-item-not-object",
        lambda: _mutated("inbound_text.json", lambda d: d.update(entry=["x"])),
        "entry[0]",
    ),
    (
        "entry-missing-changes",
        lambda: _mutated("inbound_text.json", lambda d: d["entry"][0].pop("changes")),
        "entry[0].changes",
    ),
    (
        "change-missing-field",
        lambda: _mutated("inbound_text.json", lambda d: d["entry"][0]["changes"][0].pop("field")),
        "entry[0].changes[0].field",
    ),
    (
        "value-not-object",
        lambda: _mutated(
            "inbound_text.json", lambda d: d["entry"][0]["changes"][0].update(value=[1])
        ),
        "entry[0].changes[0].value",
    ),
    (
        "missing-metadata",
        lambda: _mutated("inbound_text.json", lambda d: _value(d).pop("metadata")),
        "value.metadata",
    ),
    (
        "missing-phone-number-id",
        lambda: _mutated(
            "inbound_text.json", lambda d: _value(d)["metadata"].pop("phone_number_id")
        ),
        "metadata.phone_number_id",
    ),
    (
        "messages-not-list",
        lambda: _mutated("inbound_text.json", lambda d: _value(d).update(messages={"id": "x"})),
        "value.messages",
    ),
    (
        "message-missing-id",
        lambda: _mutated("inbound_text.json", lambda d: _message(d).pop("id")),
        "messages[0].id",
    ),
    (
        "message-id-number",
        lambda: _mutated("inbound_text.json", lambda d: _message(d).update(id=123)),
        "messages[0].id",
    ),
    (
        "from-with-plus",
        lambda: _mutated("inbound_text.json", lambda d: _message(d).update({"from": "+4915112"})),
        "messages[0].from",
    ),
    (
        "timestamp-iso",
        lambda: _mutated(
            "inbound_text.json", lambda d: _message(d).update(timestamp="2025-07-09T08:00:00Z")
        ),
        "messages[0].timestamp",
    ),
    (
        "timestamp-float",
        lambda: _mutated("inbound_text.json", lambda d: _message(d).update(timestamp=1752048000.5)),
        "messages[0].timestamp",
    ),
    (
        "timestamp-missing",
        lambda: _mutated("inbound_text.json", lambda d: _message(d).pop("timestamp")),
        "messages[0].timestamp",
    ),
    (
        "text-without-body",
        lambda: _mutated("inbound_text.json", lambda d: _message(d).update(text={})),
        "messages[0].text.body",
    ),
    (
        "text-missing",
        lambda: _mutated("inbound_text.json", lambda d: _message(d).pop("text")),
        "messages[0].text",
    ),
    (
        "type-missing",
        lambda: _mutated("inbound_text.json", lambda d: _message(d).pop("type")),
        "messages[0].type",
    ),
    (
        "interactive-without-reply",
        lambda: _mutated(
            "inbound_interactive_button_reply.json",
            lambda d: _message(d)["interactive"].pop("button_reply"),
        ),
        "interactive.button_reply",
    ),
    (
        "context-not-object",
        lambda: _mutated(
            "inbound_text_reply_context.json", lambda d: _message(d).update(context="wamid")
        ),
        "messages[0].context",
    ),
    (
        "contacts-not-list",
        lambda: _mutated("inbound_text.json", lambda d: _value(d).update(contacts="Jana")),
        "value.contacts",
    ),
    (
        "status-missing-status",
        lambda: _mutated("status_sent.json", lambda d: _status(d).pop("status")),
        "statuses[0].status",
    ),
    (
        "status-missing-id",
        lambda: _mutated("status_sent.json", lambda d: _status(d).pop("id")),
        "statuses[0].id",
    ),
    (
        "status-errors-not-list",
        lambda: _mutated("status_failed_131026.json", lambda d: _status(d).update(errors={})),
        "statuses[0].errors",
    ),
    (
        "template-id-not-numeric",
        lambda: _mutated(
            "template_status_approved.json",
            lambda d: _value(d).update(message_template_id="abc"),
        ),
        "value.message_template_id",
    ),
    (
        "template-id-bool",
        lambda: _mutated(
            "template_status_approved.json", lambda d: _value(d).update(message_template_id=True)
        ),
        "value.message_template_id",
    ),
    (
        "template-missing-name",
        lambda: _mutated(
            "template_status_approved.json", lambda d: _value(d).pop("message_template_name")
        ),
        "value.message_template_name",
    ),
    (
        "template-entry-time-text",
        lambda: _mutated(
            "template_status_approved.json", lambda d: d["entry"][0].update(time="yesterday")
        ),
        "entry[0].time",
    ),
    (
        "quality-missing-new-score",
        lambda: _mutated(
            "template_quality_update.json", lambda d: _value(d).pop("new_quality_score")
        ),
        "value.new_quality_score",
    ),
]


@pytest.mark.parametrize(
    ("build", "mentions"),
    [pytest.param(build, mentions, id=name) for name, build, mentions in MALFORMED_WHATSAPP],
)
def test_whatsapp_malformed_payload_is_refused_with_a_clear_message(build, mentions):
    with pytest.raises(WebhookPayloadInvalid) as caught:
        parse_whatsapp(build())
    error = caught.value
    assert isinstance(error, DomainError)
    assert error.code == "payload_invalid"
    assert error.status_code == 400
    assert mentions in error.message


def test_whatsapp_malformed_item_late_in_a_batch_refuses_the_whole_payload():
    data = payload("inbound_batch_two_messages.json")
    del _value(data)["messages"][1]["id"]
    with pytest.raises(
        WebhookPayloadInvalid, match=r"entry\[0\]\.changes\[0\]\.value\.messages\[1\]\.id"
    ):
        parse_whatsapp(data)


@pytest.mark.parametrize(
    "body",
    [b"", b"{", b"not json", b"\xff\xfe{}", b'{"object": "whatsapp_business_account", "entry": ['],
    ids=["empty", "truncated", "text", "bad-utf8", "truncated-envelope"],
)
def test_whatsapp_body_that_is_not_json_is_refused(body):
    with pytest.raises(WebhookPayloadInvalid, match="not valid JSON"):
        parse_whatsapp_body(body)


# --- Twilio: incoming messages -------------------------------------------------------------


def test_twilio_inbound_sms():
    params = twilio_params("inbound_sms.json")
    assert is_twilio_status_callback(params) is False

    message = parse_twilio_inbound(params, received_at=RECEIVED_AT)

    assert message.provider == "twilio_sms"
    assert message.channel == "sms"
    assert message.provider_message_id == "SM6356112d777f3912c86af647c3fad624"
    assert message.from_address == "+4915112345678"
    assert message.to_address == TWILIO_NUMBER
    assert message.account_id == TWILIO_ACCOUNT
    assert message.kind == "text"
    assert message.text == "Hallo, können wir den Termin auf Montag verschieben? Grüße, Jana"
    assert message.opt_out_type is None
    assert message.occurred_at == RECEIVED_AT
    assert message.phone_number_id is None
    assert message.raw == params


def test_twilio_inbound_stop_keeps_opt_out_type():
    params = twilio_params("inbound_stop.json")
    assert is_twilio_status_callback(params) is False
    message = parse_twilio_inbound(params, received_at=RECEIVED_AT)
    assert message.provider_message_id == "SMcd08ed459bb2d27f50078696e4641d3b"
    assert message.from_address == "+4916098765432"
    assert message.to_address == TWILIO_NUMBER
    assert message.text == "STOP"
    assert message.opt_out_type == "STOP"


@pytest.mark.parametrize(
    ("given", "expected"),
    [("START", "START"), ("help", "HELP"), ("Stop", "STOP"), ("", None), (None, None)],
)
def test_twilio_opt_out_type_is_normalised(given, expected):
    params = twilio_params("inbound_stop.json")
    params.pop("OptOutType")
    if given is not None:
        params["OptOutType"] = given
    assert parse_twilio_inbound(params).opt_out_type == expected


def test_twilio_inbound_from_a_replayed_form_body():
    """The view hands over request.POST (a QueryDict); same result as the plain mapping."""
    params = twilio_params("inbound_sms.json")
    form = QueryDict(mutable=True)
    form.update(params)
    assert parse_twilio_inbound(form, received_at=RECEIVED_AT) == parse_twilio_inbound(
        params, received_at=RECEIVED_AT
    )


def test_twilio_inbound_defaults_to_now_in_utc():
    before = timezone.now()
    message = parse_twilio_inbound(twilio_params("inbound_sms.json"))
    assert before <= message.occurred_at <= timezone.now()
    assert message.occurred_at.utcoffset() == timedelta(0)


def test_twilio_received_at_is_converted_to_utc():
    berlin = timezone.get_fixed_timezone(120)
    local = datetime(2025, 7, 9, 14, 0, tzinfo=berlin)
    message = parse_twilio_inbound(twilio_params("inbound_sms.json"), received_at=local)
    assert message.occurred_at == RECEIVED_AT
    assert message.occurred_at.tzinfo == UTC


def test_twilio_naive_received_at_is_a_programming_error():
    with pytest.raises(ValueError, match="aware"):
        parse_twilio_inbound(twilio_params("inbound_sms.json"), received_at=datetime(2025, 7, 9))


def test_twilio_inbound_with_media_is_kind_media():
    params = twilio_params("inbound_sms.json")
    params.update(NumMedia="1", MediaUrl0="https://api.twilio.com/x.jpg", Body="")
    message = parse_twilio_inbound(params)
    assert (message.kind, message.text) == ("media", "")


def test_twilio_inbound_deprecated_sms_sid_is_used_without_message_sid():
    params = twilio_params("inbound_sms.json")
    params.pop("MessageSid")
    assert parse_twilio_inbound(params).provider_message_id == "SM6356112d777f3912c86af647c3fad624"


def test_twilio_inbound_without_body_has_empty_text():
    params = twilio_params("inbound_sms.json")
    params.pop("Body")
    assert parse_twilio_inbound(params).text == ""


MALFORMED_TWILIO_INBOUND = [
    ("missing-sids", lambda p: [p.pop("MessageSid"), p.pop("SmsSid")], "MessageSid"),
    ("empty-sid", lambda p: p.update(MessageSid=" "), "MessageSid"),
    ("missing-from", lambda p: p.pop("From"), "From"),
    ("from-national", lambda p: p.update(From="015112345678"), "E.164"),
    ("from-letters", lambda p: p.update(From="+49abc"), "E.164"),
    ("from-list", lambda p: p.update(From=["+4915112345678"]), "From"),
    ("num-media-text", lambda p: p.update(NumMedia="one"), "NumMedia"),
]


@pytest.mark.parametrize(
    ("mutate", "mentions"),
    [
        pytest.param(mutate, mentions, id=name)
        for name, mutate, mentions in MALFORMED_TWILIO_INBOUND
    ],
)
def test_twilio_malformed_inbound_is_refused(mutate, mentions):
    params = twilio_params("inbound_sms.json")
    mutate(params)
    with pytest.raises(WebhookPayloadInvalid) as caught:
        parse_twilio_inbound(params)
    assert caught.value.code == "payload_invalid"
    assert mentions in caught.value.message


# --- Twilio: status callbacks --------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "sid", "status", "recipient", "error_code"),
    [
        (
            "status_queued.json",
            "SMbfc18160908af7e3e3c3b1e24e3638cc",
            DeliveryStatus.QUEUED,
            "+4915112345678",
            None,
        ),
        (
            "status_sent.json",
            "SMbfc18160908af7e3e3c3b1e24e3638cc",
            DeliveryStatus.SENT,
            "+4915112345678",
            None,
        ),
        (
            "status_delivered.json",
            "SMbfc18160908af7e3e3c3b1e24e3638cc",
            DeliveryStatus.DELIVERED,
            "+4915112345678",
            None,
        ),
        (
            "status_undelivered_30003.json",
            "SMaaace541c00b36b2cb293ac102501f28",
            DeliveryStatus.UNDELIVERED,
            "+4917612345678",
            "30003",
        ),
        (
            "status_failed_21610.json",
            "SM317f6c5ea50886bb41e3b790558e1ae8",
            DeliveryStatus.FAILED,
            "+4916098765432",
            "21610",
        ),
    ],
)
def test_twilio_status_callbacks(name, sid, status, recipient, error_code):
    params = twilio_params(name)
    assert is_twilio_status_callback(params) is True

    update = parse_twilio_status(params, received_at=RECEIVED_AT)

    assert update.provider == "twilio_sms"
    assert update.channel == "sms"
    assert update.provider_message_id == sid
    assert update.status == status
    assert update.provider_status == status.value
    assert update.recipient == recipient
    assert update.error_code == error_code
    assert update.account_id == TWILIO_ACCOUNT
    assert update.occurred_at == RECEIVED_AT
    assert update.raw == params


@pytest.mark.parametrize(
    ("twilio_status", "ours"),
    [
        ("accepted", DeliveryStatus.QUEUED),
        ("scheduled", DeliveryStatus.QUEUED),
        ("queued", DeliveryStatus.QUEUED),
        ("sending", DeliveryStatus.QUEUED),
        ("sent", DeliveryStatus.SENT),
        ("partially_delivered", DeliveryStatus.SENT),
        ("delivered", DeliveryStatus.DELIVERED),
        ("read", DeliveryStatus.READ),
        ("undelivered", DeliveryStatus.UNDELIVERED),
        ("failed", DeliveryStatus.FAILED),
        ("canceled", DeliveryStatus.FAILED),
        ("Delivered", DeliveryStatus.DELIVERED),
        ("some_future_status", None),
    ],
)
def test_twilio_message_status_mapping(twilio_status, ours):
    params = twilio_params("status_sent.json")
    params["MessageStatus"] = twilio_status
    update = parse_twilio_status(params)
    assert update.status == ours
    assert update.provider_status == twilio_status.lower()


def test_twilio_status_falls_back_to_deprecated_sms_status():
    params = twilio_params("status_delivered.json")
    params.pop("MessageStatus")
    assert is_twilio_status_callback(params) is True
    assert parse_twilio_status(params).status == DeliveryStatus.DELIVERED


def test_twilio_empty_error_code_means_none():
    params = twilio_params("status_delivered.json")
    params["ErrorCode"] = ""
    assert parse_twilio_status(params).error_code is None


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, False),
        ({"MessageSid": "SM1", "Body": "Hi"}, False),
        ({"MessageSid": "SM1", "MessageStatus": "received"}, False),
        ({"MessageSid": "SM1", "SmsStatus": "receiving"}, False),
        ({"MessageSid": "SM1", "MessageStatus": ""}, False),
        ({"MessageSid": "SM1", "MessageStatus": ["sent"]}, False),
        ({"MessageSid": "SM1", "MessageStatus": "sent"}, True),
        ({"MessageSid": "SM1", "SmsStatus": "undelivered"}, True),
    ],
)
def test_is_twilio_status_callback(params, expected):
    assert is_twilio_status_callback(params) is expected


MALFORMED_TWILIO_STATUS = [
    ("missing-status", lambda p: [p.pop("MessageStatus"), p.pop("SmsStatus")], "MessageStatus"),
    ("inbound-status", lambda p: p.update(MessageStatus="received"), "incoming message"),
    ("missing-sids", lambda p: [p.pop("MessageSid"), p.pop("SmsSid")], "MessageSid"),
    ("error-code-text", lambda p: p.update(ErrorCode="unsubscribed"), "ErrorCode"),
    ("status-not-string", lambda p: p.update(MessageStatus=1), "MessageStatus"),
]


@pytest.mark.parametrize(
    ("mutate", "mentions"),
    [pytest.param(mutate, mentions, id=name) for name, mutate, mentions in MALFORMED_TWILIO_STATUS],
)
def test_twilio_malformed_status_is_refused(mutate, mentions):
    params = twilio_params("status_failed_21610.json")
    mutate(params)
    with pytest.raises(WebhookPayloadInvalid) as caught:
        parse_twilio_status(params)
    assert caught.value.code == "payload_invalid"
    assert mentions in caught.value.message
