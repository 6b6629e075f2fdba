"""Twilio SMS adapter against a local stub: request shape, answers, errors, timeouts."""

from __future__ import annotations

import base64
import json
import socket
from pathlib import Path

import httpx
import pytest

from messaging.providers import (
    OutboundMessage,
    ProviderError,
    ProviderTimeout,
    Signal,
    provider_for,
)
from messaging.providers.twilio_sms import TwilioSmsProvider, twilio_error_class
from tests.messaging.stub_server import StubServer

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "providers" / "twilio"
REQUEST = json.loads((FIXTURES / "outbound_create_message.request.json").read_text("utf-8"))
ACCOUNT_SID = "ACe268443e43d93dab7ebef303bbe9642f"
AUTH_TOKEN = "test-auth-token-secret"
CREDENTIALS = {
    "account_sid": ACCOUNT_SID,
    "auth_token": AUTH_TOKEN,
    "messaging_service_sid": REQUEST["form"]["MessagingServiceSid"],
}
MESSAGE_SID = "SM3f1c0e0c2b5d4c2f9a6e8b7d1c0a9f11"
CREATED = {
    "sid": MESSAGE_SID,
    "account_sid": ACCOUNT_SID,
    "status": "accepted",
    "num_segments": "0",
    "to": "+4915112345678",
}
MESSAGES_PATH = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"


@pytest.fixture
def stub():
    with StubServer() as server:
        yield server


@pytest.fixture
def provider(stub):
    return TwilioSmsProvider(base_url=stub.url)


def sms(**overrides) -> OutboundMessage:
    fields = {
        "to": REQUEST["form"]["To"],
        "text": REQUEST["form"]["Body"],
        "status_callback_url": REQUEST["form"]["StatusCallback"],
        "idempotency_key": "0b6f7c1e-8a55-4d0e-9a57-3c3f0f3d2b11",
    }
    return OutboundMessage(**{**fields, **overrides})


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def twilio_error(code: int, status: int, message: str = "error") -> dict:
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_create_request_has_the_documented_shape(stub, provider):
    stub.respond(201, json_body=CREATED)

    result = provider.send(sms(), CREDENTIALS)

    [request] = stub.requests
    assert f"{request.method} {request.path}" == REQUEST["_http"].replace(
        "https://api.twilio.com", ""
    )
    assert request.headers["authorization"] == basic(ACCOUNT_SID, AUTH_TOKEN)
    assert request.headers["content-type"] == REQUEST["_content_type"]
    assert request.headers["i-twilio-idempotency-token"] == "0b6f7c1e-8a55-4d0e-9a57-3c3f0f3d2b11"
    assert request.form() == {name: [value] for name, value in REQUEST["form"].items()}
    assert result.provider_message_id == MESSAGE_SID
    assert result.status == "accepted"
    assert result.raw == CREATED


def test_bare_number_sender_and_no_callback(stub, provider):
    stub.respond(201, json_body={**CREATED, "status": "queued"})
    credentials = {
        "account_sid": ACCOUNT_SID,
        "auth_token": AUTH_TOKEN,
        "from_number": "+4915790001",
    }

    result = provider.send(sms(status_callback_url="", idempotency_key=""), credentials)

    request = stub.requests[0]
    assert request.form() == {
        "To": [REQUEST["form"]["To"]],
        "From": ["+4915790001"],
        "Body": [REQUEST["form"]["Body"]],
    }
    assert "i-twilio-idempotency-token" not in request.headers
    assert result.status == "queued"


def test_api_key_authenticates_but_the_account_is_in_the_path(stub, provider):
    stub.respond(201, json_body=CREATED)
    credentials = {**CREDENTIALS, "api_key_sid": "SK0123", "api_key_secret": "key-secret"}

    provider.send(sms(), credentials)

    assert stub.requests[0].headers["authorization"] == basic("SK0123", "key-secret")
    assert stub.requests[0].path == MESSAGES_PATH


def test_registry_adapter_reads_base_url_from_settings(stub, settings):
    settings.TWILIO_API_BASE_URL = stub.url
    stub.respond(201, json_body=CREATED)

    provider_for("twilio_sms").send(sms(), CREDENTIALS)

    assert stub.requests[0].path == MESSAGES_PATH


def test_template_kind_sends_its_rendered_text(stub, provider):
    stub.respond(201, json_body=CREATED)

    provider.send(sms(kind="template", template_name="termin", template_language="de"), CREDENTIALS)

    assert stub.requests[0].form()["Body"] == [REQUEST["form"]["Body"]]


@pytest.mark.parametrize(
    ("code", "http_status", "retryable", "permanent", "signal"),
    [
        (21610, 400, False, True, Signal.OPT_OUT),
        (21614, 400, False, True, Signal.UNREACHABLE),
        (21211, 400, False, True, Signal.UNREACHABLE),
        (20429, 429, True, False, Signal.RATE_LIMITED),
        (20003, 401, False, False, Signal.CREDENTIALS),
        (21602, 400, False, True, None),  # unlisted 4xx (message body required): final
        (20500, 500, True, False, None),  # unlisted 5xx: retry
    ],
)
def test_api_errors_are_classified(stub, provider, code, http_status, retryable, permanent, signal):
    body = twilio_error(code, http_status, "Attempt to send to unsubscribed recipient")
    stub.respond(http_status, json_body=body)

    with pytest.raises(ProviderError) as caught:
        provider.send(sms(), CREDENTIALS)

    error = caught.value
    assert not isinstance(error, ProviderTimeout)
    assert error.code == str(code)
    assert (error.retryable, error.permanent, error.signal) == (retryable, permanent, signal)
    assert error.http_status == http_status
    assert error.message == "Attempt to send to unsubscribed recipient"
    assert error.raw == body
    assert AUTH_TOKEN not in str(error)


@pytest.mark.parametrize(
    ("fixture_name", "retryable", "permanent", "signal"),
    [
        ("status_failed_21610.json", False, True, Signal.OPT_OUT),
        ("status_undelivered_30003.json", True, False, None),
    ],
)
def test_status_callback_error_codes_use_the_same_table(fixture_name, retryable, permanent, signal):
    callback = json.loads((FIXTURES / fixture_name).read_text("utf-8"))

    error_class = twilio_error_class(callback["ErrorCode"])

    assert (error_class.retryable, error_class.permanent, error_class.signal) == (
        retryable,
        permanent,
        signal,
    )


def test_carrier_filtering_is_not_retried_unchanged():
    error_class = twilio_error_class("30007")

    assert not error_class.retryable
    assert error_class.signal == Signal.FILTERED


def test_service_unavailable_without_json_is_retryable(stub, provider):
    stub.respond(503, body=b"", headers={"Retry-After": "5", "Content-Type": "text/plain"})

    with pytest.raises(ProviderError) as caught:
        provider.send(sms(), CREDENTIALS)

    assert caught.value.code == "http_503"
    assert caught.value.retryable
    assert caught.value.retry_after == 5.0


def test_timeout_after_the_request_left_is_provider_timeout(stub):
    provider = TwilioSmsProvider(base_url=stub.url, timeout=httpx.Timeout(0.3))
    stub.respond(201, json_body=CREATED, delay=1.5)

    with pytest.raises(ProviderTimeout) as caught:
        provider.send(sms(), CREDENTIALS)

    assert len(stub.requests) == 1
    assert not caught.value.retryable
    assert not caught.value.permanent


def test_refused_connection_is_retryable_not_unknown():
    provider = TwilioSmsProvider(base_url=f"http://127.0.0.1:{closed_port()}")

    with pytest.raises(ProviderError) as caught:
        provider.send(sms(), CREDENTIALS)

    assert not isinstance(caught.value, ProviderTimeout)
    assert caught.value.retryable


def test_success_without_sid_is_unknown(stub, provider):
    stub.respond(201, body=b"not json", headers={"Content-Type": "text/plain"})

    with pytest.raises(ProviderTimeout) as caught:
        provider.send(sms(), CREDENTIALS)

    assert caught.value.code == "unreadable_response"


@pytest.mark.parametrize(
    ("credentials", "missing"),
    [
        ({"auth_token": AUTH_TOKEN, "from_number": "+4915790001"}, "account_sid"),
        ({"account_sid": ACCOUNT_SID, "from_number": "+4915790001"}, "auth_token"),
        ({"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN}, "messaging_service_sid"),
        ({**CREDENTIALS, "api_key_sid": "SK0123"}, "api_key_secret"),
    ],
)
def test_missing_credentials_send_nothing(stub, provider, credentials, missing):
    with pytest.raises(ProviderError) as caught:
        provider.send(sms(), credentials)

    assert caught.value.code == "credentials_missing"
    assert missing in caught.value.message
    assert stub.requests == []


@pytest.mark.parametrize("text", ["", "x" * 1601], ids=["empty", "too-long"])
def test_invalid_text_is_refused_before_sending(stub, provider, text):
    with pytest.raises(ProviderError) as caught:
        provider.send(sms(text=text), CREDENTIALS)

    assert caught.value.code == "invalid_message"
    assert caught.value.permanent
    assert stub.requests == []
