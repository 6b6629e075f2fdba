"""Hostile webhook requests, one table for both providers: each refusal answers with its status
and stores nothing; a replayed signed request stores nothing new.

test_webhook_views.py has single cases of these; the requests here are built with its fixtures,
vectors and signing helpers, and "stored" also counts the WhatsApp webhook inbox.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs

import pytest

from crm.models import Contact
from messaging.models import (
    Conversation,
    InboundWebhook,
    Message,
    QuarantinedPayload,
    StatusReceipt,
)
from messaging.webhooks.signatures import meta_signature, twilio_signature
from tests.messaging import test_webhook_views as views

pytestmark = pytest.mark.django_db

# That module's fixtures, requested here by name.
client = views.client
wa_account = views.wa_account
sms_account = views.sms_account

PUBLIC_BASE_URL = "https://crm.example.com"
STORED = (Message, Contact, Conversation, StatusReceipt, QuarantinedPayload, InboundWebhook)


def stored() -> dict[str, int]:
    return {model.__name__: model.objects.count() for model in STORED}


@dataclass(frozen=True)
class Attack:
    """How a request deviates from a correctly signed one to a known account."""

    secret: str | None = None  # sign with this instead of the account's; "" = no signature
    slug: str | None = None  # post to this account address instead of the account's
    json_body: bytes | None = None  # send this JSON body, correctly signed


def whatsapp_post(client, attack: Attack, relative: str = "whatsapp/inbound_text.json"):
    body = attack.json_body if attack.json_body is not None else views.fixture_bytes(relative)
    secret = views.APP_SECRET if attack.secret is None else attack.secret
    signature = meta_signature(body, secret) if secret else None
    path = f"/webhooks/whatsapp/{attack.slug}/" if attack.slug else views.WA_URL
    return views.post_meta(client, body, signature, path)


def twilio_post(client, attack: Attack, relative: str = "twilio/inbound_sms.json"):
    path = f"/webhooks/twilio/{attack.slug}/" if attack.slug else views.TWILIO_URL
    token = views.AUTH_TOKEN if attack.secret is None else attack.secret
    if attack.json_body is not None:
        # Twilio's JSON variant: the body's hash goes into the signed URL.
        digest = hashlib.sha256(attack.json_body).hexdigest()
        path = f"{path}?bodySHA256={digest}"
        body, content_type, params = attack.json_body, "application/json", {}
    else:
        body = views.TWILIO[relative]["form_body"]
        content_type = "application/x-www-form-urlencoded"
        params = {name: values[0] for name, values in parse_qs(body, True).items()}
    headers = {}
    if token:
        headers["X-Twilio-Signature"] = twilio_signature(PUBLIC_BASE_URL + path, params, token)
    return client.post(path, data=body, content_type=content_type, headers=headers)


Post = Callable[..., object]
PROVIDERS: dict[str, tuple[str, Post]] = {
    "whatsapp": ("wa_account", whatsapp_post),
    "twilio": ("sms_account", twilio_post),
}
ATTACKS = {
    "wrong-signature": (Attack(secret="guessed-secret"), 403, "signature_invalid"),
    "missing-signature": (Attack(secret=""), 403, "signature_invalid"),
    "unknown-account": (Attack(slug="nope"), 404, "not_found"),
    "invalid-json": (Attack(json_body=b'{"object": "whatsapp_business_account",'), 400, None),
    "json-array": (Attack(json_body=b"[]"), 400, None),
}


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("attack", ATTACKS)
def test_refused_request_has_its_status_and_stores_nothing(request, client, provider, attack):
    account_fixture, post = PROVIDERS[provider]
    request.getfixturevalue(account_fixture)
    deviation, status, code = ATTACKS[attack]

    response = post(client, deviation)

    assert response.status_code == status, response.content
    body = response.json()
    assert body["code"] == (code or "payload_invalid")
    assert body["detail"]
    assert not any(stored().values()), stored()


@pytest.mark.parametrize("provider", PROVIDERS)
def test_body_over_the_limit_is_413_and_stores_nothing(request, client, settings, provider):
    account_fixture, post = PROVIDERS[provider]
    request.getfixturevalue(account_fixture)
    settings.MESSAGING_WEBHOOK_MAX_BYTES = 200  # each fixture is larger, and signed

    response = post(client, Attack())

    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    assert not any(stored().values()), stored()


@pytest.mark.parametrize(
    ("provider", "relative", "kept_as"),
    [
        ("whatsapp", "whatsapp/inbound_text.json", "Message"),
        ("whatsapp", "whatsapp/status_delivered.json", "StatusReceipt"),
        ("twilio", "twilio/inbound_sms.json", "Message"),
        ("twilio", "twilio/status_delivered.json", "StatusReceipt"),
    ],
)
def test_a_replayed_signed_request_stores_nothing_new(request, client, provider, relative, kept_as):
    account_fixture, post = PROVIDERS[provider]
    request.getfixturevalue(account_fixture)

    first = post(client, Attack(), relative)
    after_first = stored()
    second = post(client, Attack(), relative)

    assert (first.status_code, second.status_code) == (200, 200)
    assert after_first[kept_as] == 1
    assert stored() == after_first
