"""The webhook endpoints against the real provider fixtures and signature vectors.

Every request is replayed byte for byte as the provider signed it (tests/fixtures/providers);
the accounts read the vectors' app secret and auth token from the environment, as in production.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest
from django.test import Client

from approvals.models import ProviderStatus
from consent.models import Consent, ConsentStatus
from crm.models import Contact
from messaging.models import (
    Conversation,
    Direction,
    Message,
    MessageStatus,
    QuarantinedPayload,
    StatusReceipt,
)
from messaging.providers import SendResult
from messaging.services import inbound, message_deliver, message_send
from messaging.webhooks.signatures import meta_signature, twilio_signature
from tests.consent.helpers import grant_consent
from tests.factories import (
    ChannelAccountFactory,
    ContactFactory,
    ContactPointFactory,
    PurposeFactory,
)
from tests.messaging.helpers import receive_text, sendable_version

pytestmark = pytest.mark.django_db

PROVIDERS = Path(__file__).resolve().parents[1] / "fixtures" / "providers"
VECTORS = json.loads((PROVIDERS / "signatures" / "vectors.json").read_bytes())
META = {vector["file"]: vector for vector in VECTORS["whatsapp"]["vectors"]}
TWILIO = {vector["file"]: vector for vector in VECTORS["twilio"]["vectors"]}
APP_SECRET = VECTORS["whatsapp"]["app_secret"]
AUTH_TOKEN = VECTORS["twilio"]["auth_token"]
HANDSHAKE = json.loads((PROVIDERS / "whatsapp" / "verification_handshake.json").read_bytes())

WA_URL = "/webhooks/whatsapp/wa-main/"
TWILIO_URL = "/webhooks/twilio/1/"
# The phone number id and sender of the WhatsApp fixtures.
PHONE_NUMBER_ID = "118765432109876"
JANA = "+4915112345678"
JANA_WAMID = "wamid.HBgNNDkxNTExMjM0NTY3OBUCABIYFEFCRDIwRUUwQ0Q2Qjc5OUNFMENFAA=="
OUR_WAMID = "wamid.HBgNNDkxNTExMjM0NTY3OBUCABEYEjA2QUMwRkE5OEQxNzhEMjUwQQA="
SMS_SENDER = "+4916098765432"


def fixture_bytes(relative: str) -> bytes:
    return (PROVIDERS / relative).read_bytes()


def queues_inbox_processing(callback) -> bool:
    return getattr(callback, "func", None) is inbound._inbound_webhook_dispatch


class CommittingClient(Client):
    """Queues an accepted webhook's processing (an eager task in tests) when the request
    ends, as the real commit would. Other on-commit work (e.g. delivering a keyword reply)
    stays unrun, as everywhere in the suite: the test's own transaction never commits."""

    def __init__(self, capture_on_commit, **kwargs) -> None:
        super().__init__(**kwargs)
        self.capture_on_commit = capture_on_commit

    def request(self, **request):
        with self.capture_on_commit() as callbacks:
            response = super().request(**request)
        for callback in filter(queues_inbox_processing, callbacks):
            callback()
        return response


@pytest.fixture
def client(django_capture_on_commit_callbacks):
    # CSRF is enforced as for any browser: the webhooks must not depend on a token.
    return CommittingClient(django_capture_on_commit_callbacks, enforce_csrf_checks=True)


@pytest.fixture
def wa_account(team, monkeypatch):
    monkeypatch.setenv("WA_TEST_APP_SECRET", APP_SECRET)
    monkeypatch.setenv("WA_TEST_VERIFY_TOKEN", HANDSHAKE["configured_verify_token"])
    return ChannelAccountFactory(
        team=team,
        slug="wa-main",
        channel="whatsapp",
        provider="whatsapp_cloud",
        credentials_env="WA_TEST",
        external_id=PHONE_NUMBER_ID,
        address="+4915735998877",
    )


@pytest.fixture
def sms_account(team, monkeypatch, settings):
    # The Twilio vectors were signed for https://crm.example.com/webhooks/twilio/1/.
    settings.PUBLIC_BASE_URL = "https://crm.example.com"
    monkeypatch.setenv("TW_TEST_AUTH_TOKEN", AUTH_TOKEN)
    return ChannelAccountFactory(
        team=team,
        slug="1",
        channel="sms",
        provider="twilio_sms",
        credentials_env="TW_TEST",
        address="+4915735987654",
    )


def post_meta(client, body: bytes, signature: str | None = None, url: str = WA_URL):
    headers = {} if signature is None else {"X-Hub-Signature-256": signature}
    return client.post(url, data=body, content_type="application/json", headers=headers)


def post_meta_fixture(client, relative: str, url: str = WA_URL):
    return post_meta(client, fixture_bytes(relative), META[relative]["x_hub_signature_256"], url)


def post_twilio_fixture(client, relative: str):
    vector = TWILIO[relative]
    return client.post(
        TWILIO_URL,
        data=vector["form_body"],
        content_type="application/x-www-form-urlencoded",
        headers={"X-Twilio-Signature": vector["x_twilio_signature"]},
    )


def post_twilio_params(client, params: dict, path: str = TWILIO_URL):
    """Form fields signed by the test with the vectors' auth token for the public URL."""
    signature = twilio_signature(f"https://crm.example.com{path}", params, AUTH_TOKEN)
    return client.post(path, data=params, headers={"X-Twilio-Signature": signature})


def inbound_text_body(text: str) -> bytes:
    """inbound_text.json with another text, written now (the test signs it itself)."""
    payload = json.loads(fixture_bytes("whatsapp/inbound_text.json"))
    message = payload["entry"][0]["changes"][0]["value"]["messages"][0]
    message["text"]["body"] = text
    # Meta's timestamps are whole seconds: round up so the message is not older than the grant.
    message["timestamp"] = str(int(time.time()) + 1)
    return json.dumps(payload, ensure_ascii=False).encode("utf-8")


def nothing_stored() -> bool:
    return not (
        Message.objects.exists()
        or Contact.objects.exists()
        or Conversation.objects.exists()
        or StatusReceipt.objects.exists()
        or QuarantinedPayload.objects.exists()
    )


class FixedIdProvider:
    """Accepts a message under the provider id the fixtures' receipts refer to."""

    def __init__(self, provider_message_id: str) -> None:
        self.provider_message_id = provider_message_id

    def send(self, message, credentials):
        return SendResult(provider_message_id=self.provider_message_id, status="sent")


def sent_message(monkeypatch, account, contact, provider_message_id: str) -> Message:
    """A reply the provider accepted as `provider_message_id`, through message_deliver."""
    receive_text(account, contact)
    message = message_send(contact=contact, account=account, actor=None, text="Bis Freitag!")
    monkeypatch.setattr(
        "messaging.services.delivery.provider_for",
        lambda kind: FixedIdProvider(provider_message_id),
    )
    assert message_deliver(message_id=message.pk) == "sent"
    message.refresh_from_db()
    return message


# --- WhatsApp: handshake and signatures --------------------------------------------------------


def test_handshake_echoes_the_challenge_for_the_configured_token(client, wa_account):
    response = client.get(WA_URL, HANDSHAKE["query"])
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    assert response.content.decode() == HANDSHAKE["expected_response"]["body"]


def test_handshake_with_a_wrong_token_is_403(client, wa_account):
    query = {**HANDSHAKE["query"], "hub.verify_token": "guessed"}
    response = client.get(WA_URL, query)
    assert response.status_code == 403
    assert HANDSHAKE["query"]["hub.challenge"] not in response.content.decode()


def test_signed_inbound_stores_message_conversation_and_new_contact_without_consent(
    client, wa_account, team
):
    response = post_meta_fixture(client, "whatsapp/inbound_text.json")

    assert response.status_code == 200
    message = Message.objects.get()
    assert message.direction == Direction.INBOUND
    assert message.status == MessageStatus.RECEIVED
    assert message.provider_message_id == JANA_WAMID
    assert message.body == "Guten Morgen! Ist mein Termin am Freitag um 14 Uhr bestätigt?"
    assert message.account == wa_account
    contact = message.contact
    assert contact.team == team
    assert contact.first_name == "Jana Schröder"
    assert list(contact.points.values_list("channel", "address")) == [("whatsapp", JANA)]
    assert not Consent.objects.filter(contact=contact).exists()
    conversation = Conversation.objects.get()
    assert conversation.contact == contact
    assert conversation.service_window_ends_at is not None
    assert not QuarantinedPayload.objects.exists()


def test_inbound_from_a_known_address_is_filed_under_that_contact(client, wa_account, team):
    contact = ContactFactory(team=team)
    ContactPointFactory(contact=contact, channel="whatsapp", address=JANA)

    post_meta_fixture(client, "whatsapp/inbound_text.json")

    assert Message.objects.get().contact == contact
    assert Contact.objects.count() == 1


def test_tampered_body_is_403_and_stores_nothing(client, wa_account):
    # Same JSON value, compacted: different bytes under the file's signature.
    negative = VECTORS["whatsapp"]["negative_vectors"][0]
    signature = META["whatsapp/inbound_text.json"]["x_hub_signature_256"]
    response = post_meta(client, negative["raw_body"].encode("utf-8"), signature)
    assert response.status_code == 403
    assert response.json()["code"] == "signature_invalid"
    assert nothing_stored()


def test_missing_signature_is_403_and_stores_nothing(client, wa_account):
    response = post_meta(client, fixture_bytes("whatsapp/inbound_text.json"))
    assert response.status_code == 403
    assert nothing_stored()


def test_account_without_an_app_secret_refuses_every_post(client, wa_account, monkeypatch):
    monkeypatch.delenv("WA_TEST_APP_SECRET")
    response = post_meta_fixture(client, "whatsapp/inbound_text.json")
    assert response.status_code == 403
    assert nothing_stored()


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"\xff\xfe", b'{"object": "page", "entry": []}', b"[]"],
    ids=["broken-json", "not-utf8", "other-object", "not-an-object"],
)
def test_signed_but_malformed_payload_is_400_with_a_json_error(client, wa_account, body):
    response = post_meta(client, body, meta_signature(body, APP_SECRET))
    assert response.status_code == 400
    assert response.json()["code"] == "payload_invalid"
    assert response.json()["detail"]
    assert nothing_stored()


@pytest.mark.parametrize(
    "change",
    [{"slug": "other"}, {"provider": "console"}, {"is_active": False}],
    ids=["unknown-slug", "other-provider", "inactive"],
)
def test_unknown_account_is_404_and_stores_nothing(client, wa_account, change):
    for name, value in change.items():
        setattr(wa_account, name, value)
    wa_account.save()
    response = post_meta_fixture(client, "whatsapp/inbound_text.json")
    assert response.status_code == 404
    assert nothing_stored()


def test_deactivating_a_remembered_account_answers_404_at_once(client, wa_account):
    assert post_meta_fixture(client, "whatsapp/inbound_text.json").status_code == 200
    wa_account.is_active = False
    wa_account.save()
    response = post_meta_fixture(client, "whatsapp/inbound_batch_two_messages.json")
    assert response.status_code == 404


def test_webhooks_skip_the_browser_middleware_but_keep_strict_headers(client, wa_account):
    response = post_meta_fixture(client, "whatsapp/inbound_text.json")
    assert response.status_code == 200
    assert not response.cookies
    assert response.headers["X-Frame-Options"] == "DENY"
    assert (
        response.headers["Content-Security-Policy"] == "default-src 'none'; frame-ancestors 'none'"
    )
    assert int(response.headers["Content-Length"]) == len(response.content)


def test_webhook_errors_follow_the_callers_language(client, wa_account):
    response = client.post(
        "/webhooks/whatsapp/other/",
        data=b"{}",
        content_type="application/json",
        headers={"Accept-Language": "de"},
    )
    assert (response.status_code, response.json()["detail"]) == (404, "Unbekannte Webhook-Adresse.")
    response = client.post("/webhooks/whatsapp/other/", data=b"{}", content_type="application/json")
    assert response.json()["detail"] == "Unknown webhook address."


def test_a_webhook_path_that_resolves_to_no_view_takes_the_full_stack(client, wa_account):
    # CommonMiddleware, skipped by the short path, still adds the missing slash.
    response = client.get(WA_URL.rstrip("/"))
    assert (response.status_code, response.headers["Location"]) == (301, WA_URL)


def test_body_over_the_limit_is_413_and_stores_nothing(client, wa_account, settings):
    body = fixture_bytes("whatsapp/inbound_text.json")
    settings.MESSAGING_WEBHOOK_MAX_BYTES = len(body) - 1
    response = post_meta(client, body, meta_signature(body, APP_SECRET))
    assert response.status_code == 413
    assert nothing_stored()


def test_other_methods_are_405(client, wa_account):
    assert client.put(WA_URL).status_code == 405


# --- WhatsApp: processing -----------------------------------------------------------------------


def test_duplicate_delivery_is_200_and_stores_one_message(client, wa_account):
    first = post_meta_fixture(client, "whatsapp/inbound_text.json")
    second = post_meta_fixture(client, "whatsapp/inbound_text.json")

    assert (first.status_code, second.status_code) == (200, 200)
    assert Message.objects.count() == 1
    assert Contact.objects.count() == 1


@pytest.mark.parametrize(
    "relative",
    [
        "whatsapp/inbound_text_reply_context.json",
        "whatsapp/inbound_interactive_button_reply.json",
        "whatsapp/inbound_template_quick_reply_button.json",
        "whatsapp/inbound_text_referral_ad.json",
    ],
)
def test_every_inbound_fixture_is_stored(client, wa_account, relative):
    response = post_meta_fixture(client, relative)
    assert response.status_code == 200
    assert Message.objects.filter(direction=Direction.INBOUND).count() == 1
    assert not QuarantinedPayload.objects.exists()


def test_batch_stores_every_message(client, wa_account):
    response = post_meta_fixture(client, "whatsapp/inbound_batch_two_messages.json")
    assert response.status_code == 200
    assert response.json()["status"] == "accepted"
    assert Message.objects.count() == 2
    assert Contact.objects.count() == 2


def test_one_failing_item_is_quarantined_and_the_other_is_stored(client, wa_account, monkeypatch):
    real = inbound.conversation_inbound_received

    def fail_for_one_sender(*, conversation, message):
        if message.contact.points.filter(address=SMS_SENDER).exists():
            raise RuntimeError("automation broke")
        real(conversation=conversation, message=message)

    monkeypatch.setattr(inbound, "conversation_inbound_received", fail_for_one_sender)
    body = fixture_bytes("whatsapp/inbound_batch_two_messages.json")

    response = post_meta_fixture(client, "whatsapp/inbound_batch_two_messages.json")

    assert response.status_code == 200
    stored = Message.objects.get()
    assert stored.contact.points.get().address == JANA
    # The failed item left nothing behind (its contact was rolled back with it).
    assert Contact.objects.count() == 1
    quarantined = QuarantinedPayload.objects.get()
    assert quarantined.account == wa_account
    assert quarantined.provider == "whatsapp_cloud"
    assert quarantined.body == body.decode("utf-8")
    assert quarantined.content_type == "application/json"
    assert "automation broke" in quarantined.error


def test_item_for_another_phone_number_is_quarantined_not_filed(client, wa_account):
    wa_account.external_id = "999999999999999"
    wa_account.save()
    response = post_meta_fixture(client, "whatsapp/inbound_text.json")
    assert response.status_code == 200
    assert not Message.objects.exists()
    assert "WebhookMisrouted" in QuarantinedPayload.objects.get().error


def test_stop_on_whatsapp_withdraws_consent_and_confirms(client, wa_account, team):
    purpose = PurposeFactory(team=team, allowed_channels=["whatsapp", "sms"])
    contact = ContactFactory(team=team)
    ContactPointFactory(contact=contact, channel="whatsapp", address=JANA)
    grant_consent(contact, purpose, "whatsapp")
    body = inbound_text_body("STOP")

    response = post_meta(client, body, meta_signature(body, APP_SECRET))

    assert response.status_code == 200
    consent = Consent.objects.get(contact=contact, purpose=purpose, channel="whatsapp")
    assert consent.status == ConsentStatus.WITHDRAWN
    reply = Message.objects.get(direction=Direction.OUTBOUND)
    assert reply.origin == "consent_keyword"
    assert reply.sender_kind == "system"
    assert reply.status in (MessageStatus.QUEUED, MessageStatus.SENT)
    assert "START" in reply.body


def test_status_callbacks_out_of_order_never_move_back(client, wa_account, team, monkeypatch):
    contact = ContactFactory(team=team)
    ContactPointFactory(contact=contact, channel="whatsapp", address=JANA)
    message = sent_message(monkeypatch, wa_account, contact, OUR_WAMID)

    for relative in ("whatsapp/status_read.json", "whatsapp/status_sent.json"):
        assert post_meta_fixture(client, relative).status_code == 200
    post_meta_fixture(client, "whatsapp/status_delivered.json")

    message.refresh_from_db()
    assert message.status == MessageStatus.READ
    assert message.read_at is not None
    assert StatusReceipt.objects.filter(message=message).count() == 3


def test_repeated_status_callback_is_recorded_once(client, wa_account, team, monkeypatch):
    contact = ContactFactory(team=team)
    ContactPointFactory(contact=contact, channel="whatsapp", address=JANA)
    sent_message(monkeypatch, wa_account, contact, OUR_WAMID)
    for _ in range(2):
        assert post_meta_fixture(client, "whatsapp/status_delivered.json").status_code == 200
    assert StatusReceipt.objects.filter(provider_status="delivered").count() == 1


def test_status_for_an_unknown_message_is_kept_and_applied_once_it_is_sent(
    client, wa_account, team, monkeypatch
):
    assert post_meta_fixture(client, "whatsapp/status_delivered.json").status_code == 200
    receipt = StatusReceipt.objects.get()
    assert receipt.message is None
    assert not receipt.applied

    contact = ContactFactory(team=team)
    ContactPointFactory(contact=contact, channel="whatsapp", address=JANA)
    message = sent_message(monkeypatch, wa_account, contact, OUR_WAMID)

    receipt.refresh_from_db()
    assert receipt.message == message
    assert message.status == MessageStatus.DELIVERED


def test_template_status_webhook_updates_the_provider_status(client, wa_account, team):
    version = sendable_version(team, name="newsletter_juli")
    assert version.provider_status == ProviderStatus.APPROVED

    response = post_meta_fixture(client, "whatsapp/template_status_paused.json")

    assert response.status_code == 200
    version.refresh_from_db()
    assert version.provider_status == ProviderStatus.PAUSED
    assert not QuarantinedPayload.objects.exists()


def test_template_quality_event_is_logged_only(client, wa_account, caplog):
    with caplog.at_level(logging.INFO, logger="messaging.services.inbound"):
        response = post_meta_fixture(client, "whatsapp/template_quality_update.json")
    assert response.status_code == 200
    assert "GREEN -> YELLOW" in caplog.text
    assert nothing_stored()


# --- Twilio ---------------------------------------------------------------------------------


def test_twilio_signed_inbound_is_stored_and_answered_with_empty_twiml(client, sms_account):
    response = post_twilio_fixture(client, "twilio/inbound_sms.json")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/xml")
    assert b"<Response/>" in response.content
    message = Message.objects.get()
    assert message.channel == "sms"
    assert message.provider_message_id == "SM6356112d777f3912c86af647c3fad624"
    assert message.contact.points.get().address == "+4915112345678"
    assert not Consent.objects.exists()


def test_twilio_tampered_params_are_403(client, sms_account):
    vector = VECTORS["twilio"]["negative_vectors"][0]
    response = client.post(
        TWILIO_URL,
        data=vector["params"],
        headers={"X-Twilio-Signature": vector["x_twilio_signature"]},
    )
    assert response.status_code == 403
    assert nothing_stored()


def test_twilio_signature_is_checked_against_the_public_url(client, sms_account, settings):
    # Behind a TLS proxy the request arrives as http; the signed URL is the public https one.
    settings.PUBLIC_BASE_URL = "http://crm.example.com"
    response = post_twilio_fixture(client, "twilio/inbound_sms.json")
    assert response.status_code == 403
    assert nothing_stored()


def test_twilio_without_signature_is_403(client, sms_account):
    response = client.post(TWILIO_URL, data=TWILIO["twilio/inbound_sms.json"]["params"])
    assert response.status_code == 403
    assert nothing_stored()


def test_twilio_unknown_account_is_404(client, sms_account):
    sms_account.is_active = False
    sms_account.save()
    assert post_twilio_fixture(client, "twilio/inbound_sms.json").status_code == 404
    assert nothing_stored()


def test_twilio_status_callback_finds_the_message_by_the_key_in_its_url(client, sms_account, team):
    contact = ContactFactory(team=team)
    ContactPointFactory(contact=contact, channel="sms", address="+4915112345678")
    receive_text(sms_account, contact)
    message = message_send(contact=contact, account=sms_account, actor=None, text="Bis bald")
    assert message.provider_message_id is None
    params = TWILIO["twilio/status_sent.json"]["params"]

    response = post_twilio_params(client, params, f"{TWILIO_URL}?m={message.idempotency_key}")

    assert response.status_code == 200
    message.refresh_from_db()
    assert message.provider_message_id == params["MessageSid"]
    assert message.status == MessageStatus.SENT


def test_twilio_json_webhook_is_verified_by_its_body_hash(client, sms_account):
    vector = VECTORS["twilio"]["json_body_vector"]
    path = vector["url"].removeprefix("https://crm.example.com")
    response = client.post(
        path,
        data=vector["raw_body"].encode("utf-8"),
        content_type="application/json",
        headers={"X-Twilio-Signature": vector["x_twilio_signature"]},
    )
    assert response.status_code == 200
    receipt = StatusReceipt.objects.get()
    assert (receipt.provider_message_id, receipt.provider_status) == (
        "SM6356112d777f3912c86af647c3fad624",
        "delivered",
    )


def test_twilio_21610_fails_the_message_and_withdraws_consent(
    client, sms_account, team, monkeypatch
):
    purpose = PurposeFactory(team=team, allowed_channels=["sms"])
    contact = ContactFactory(team=team)
    ContactPointFactory(contact=contact, channel="sms", address=SMS_SENDER)
    grant_consent(contact, purpose, "sms")
    message = sent_message(monkeypatch, sms_account, contact, "SM317f6c5ea50886bb41e3b790558e1ae8")

    response = post_twilio_fixture(client, "twilio/status_failed_21610.json")

    assert response.status_code == 200
    message.refresh_from_db()
    assert message.status == MessageStatus.FAILED
    assert message.error_code == "21610"
    consent = Consent.objects.get(contact=contact, purpose=purpose, channel="sms")
    assert consent.status == ConsentStatus.WITHDRAWN

    # A late "delivered" for the same message does not undo the final failure.
    late = {**TWILIO["twilio/status_failed_21610.json"]["params"]}
    late.update(MessageStatus="delivered", SmsStatus="delivered")
    del late["ErrorCode"]
    assert post_twilio_params(client, late).status_code == 200
    message.refresh_from_db()
    assert message.status == MessageStatus.FAILED
    assert StatusReceipt.objects.filter(message=message, provider_status="delivered").exists()


def test_stop_by_sms_withdraws_consent_and_confirms(client, sms_account, team):
    purpose = PurposeFactory(team=team, allowed_channels=["sms"])
    contact = ContactFactory(team=team)
    ContactPointFactory(contact=contact, channel="sms", address=SMS_SENDER)
    grant_consent(contact, purpose, "sms")

    response = post_twilio_fixture(client, "twilio/inbound_stop.json")

    assert response.status_code == 200
    consent = Consent.objects.get(contact=contact, purpose=purpose, channel="sms")
    assert consent.status == ConsentStatus.WITHDRAWN
    reply = Message.objects.get(direction=Direction.OUTBOUND)
    assert reply.origin == "consent_keyword"
    assert reply.status in (MessageStatus.QUEUED, MessageStatus.SENT)
    assert reply.gate_decision["request"]["address"] == SMS_SENDER
