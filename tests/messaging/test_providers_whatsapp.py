"""WhatsApp Cloud API adapter against a local stub: request shape, answers, errors, timeouts."""

from __future__ import annotations

import json
import logging
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
from messaging.providers.whatsapp import WhatsAppCloudProvider, whatsapp_error_class
from tests.messaging.stub_server import StubServer

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "providers" / "whatsapp"
TOKEN = "EAAG-test-access-token-secret"
CREDENTIALS = {"phone_number_id": "106540352242922", "access_token": TOKEN}


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


SEND_RESPONSE = fixture("outbound/send.response.json")
WAMID = SEND_RESPONSE["messages"][0]["id"]


@pytest.fixture
def stub():
    with StubServer() as server:
        yield server


@pytest.fixture
def provider(stub):
    return WhatsAppCloudProvider(base_url=stub.url, api_version="v26.0")


def text_message(**overrides) -> OutboundMessage:
    fields = {
        "to": "+4916098765432",
        "text": "Ihre Rechnung finden Sie hier: https://crm.example.com/r/4711",
        "idempotency_key": "crm:message:1f0c9e",
    }
    return OutboundMessage(**{**fields, **overrides})


def template_message(**overrides) -> OutboundMessage:
    fields = {
        "to": "+4915112345678",
        "kind": "template",
        "template_name": "termin_erinnerung",
        "template_language": "de",
        "body_parameters": ["Jana", "Freitag, 11. Juli, 14:00 Uhr"],
        "button_payloads": ["APPT_4711_CONFIRM", "APPT_4711_RESCHEDULE"],
        "idempotency_key": "crm:message:8f3c2a",
    }
    return OutboundMessage(**{**fields, **overrides})


def graph_error(code: int, message: str = "error", details: str = "details") -> dict:
    return {
        "error": {
            "message": f"(#{code}) {message}",
            "type": "OAuthException",
            "code": code,
            "error_data": {"messaging_product": "whatsapp", "details": details},
            "fbtrace_id": "AbCdEfGh123",
        }
    }


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_text_request_has_the_documented_shape(stub, provider):
    stub.respond(200, json_body=SEND_RESPONSE)

    result = provider.send(text_message(), CREDENTIALS)

    [request] = stub.requests
    assert request.method == "POST"
    assert request.path == "/v26.0/106540352242922/messages"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["content-type"] == "application/json"
    # Our idempotency key rides in the documented echo field (no idempotency header exists).
    expected = {**fixture("outbound/send_text.request.json")}
    expected["biz_opaque_callback_data"] = "crm:message:1f0c9e"
    assert request.json() == expected
    assert result.provider_message_id == WAMID
    assert result.status == "accepted"
    assert result.raw == SEND_RESPONSE


def test_text_without_key_is_exactly_the_fixture(stub, provider):
    stub.respond(200, json_body=SEND_RESPONSE)

    provider.send(text_message(idempotency_key=""), CREDENTIALS)

    assert stub.requests[0].json() == fixture("outbound/send_text.request.json")


def test_template_request_is_exactly_the_fixture(stub, provider):
    stub.respond(200, json_body=SEND_RESPONSE)

    result = provider.send(template_message(), CREDENTIALS)

    assert stub.requests[0].json() == fixture("outbound/send_template.request.json")
    assert result.provider_message_id == WAMID


def test_explicit_callback_data_wins_over_the_key(stub, provider):
    stub.respond(200, json_body=SEND_RESPONSE)

    provider.send(text_message(callback_data="campaign:7"), CREDENTIALS)

    assert stub.requests[0].json()["biz_opaque_callback_data"] == "campaign:7"


def test_template_without_parameters_sends_no_components(stub, provider):
    stub.respond(200, json_body=SEND_RESPONSE)

    provider.send(template_message(body_parameters=[], button_payloads=[]), CREDENTIALS)

    template = stub.requests[0].json()["template"]
    assert template == {
        "name": "termin_erinnerung",
        "language": {"policy": "deterministic", "code": "de"},
    }


def test_registry_adapter_reads_base_url_and_version_from_settings(stub, settings):
    settings.WHATSAPP_GRAPH_BASE_URL = stub.url + "/"
    settings.WHATSAPP_GRAPH_API_VERSION = "v27.0"
    stub.respond(200, json_body=SEND_RESPONSE)

    provider_for("whatsapp_cloud").send(text_message(), CREDENTIALS)

    assert stub.requests[0].path == "/v27.0/106540352242922/messages"


def test_default_api_version_is_pinned():
    assert WhatsAppCloudProvider().api_version == "v26.0"


@pytest.mark.parametrize(
    ("code", "http_status", "retryable", "permanent", "signal"),
    [
        (130429, 400, True, False, Signal.RATE_LIMITED),
        (131048, 400, True, False, Signal.RATE_LIMITED),
        (131056, 400, True, False, Signal.RATE_LIMITED),
        (131047, 400, False, True, Signal.WINDOW_CLOSED),
        (131026, 400, False, True, Signal.UNREACHABLE),
        (131049, 400, False, False, Signal.ENGAGEMENT_LIMIT),
        (131050, 400, False, True, Signal.OPT_OUT),
        (131000, 500, True, False, None),
        (190, 401, False, False, Signal.CREDENTIALS),
        (100, 400, False, True, None),  # unlisted 4xx (invalid parameter): final
        (2, 503, True, False, None),  # unlisted 5xx: retry
    ],
)
def test_graph_errors_are_classified(
    stub, provider, code, http_status, retryable, permanent, signal
):
    body = graph_error(code, "Re-engagement message", "More than 24 hours have passed")
    stub.respond(http_status, json_body=body)

    with pytest.raises(ProviderError) as caught:
        provider.send(text_message(), CREDENTIALS)

    error = caught.value
    assert not isinstance(error, ProviderTimeout)
    assert error.code == str(code)
    assert (error.retryable, error.permanent, error.signal) == (retryable, permanent, signal)
    assert error.http_status == http_status
    assert "More than 24 hours have passed" in error.message
    assert error.raw == body
    assert TOKEN not in str(error)


def test_status_webhook_error_codes_use_the_same_table():
    for name, signal in [
        ("status_failed_131026.json", Signal.UNREACHABLE),
        ("status_failed_131049.json", Signal.ENGAGEMENT_LIMIT),
    ]:
        status = fixture(name)["entry"][0]["changes"][0]["value"]["statuses"][0]
        assert whatsapp_error_class(status["errors"][0]["code"]).signal == signal


def test_gateway_error_without_json_is_retryable(stub, provider):
    stub.respond(502, body=b"<html>Bad Gateway</html>", headers={"Content-Type": "text/html"})

    with pytest.raises(ProviderError) as caught:
        provider.send(text_message(), CREDENTIALS)

    assert caught.value.code == "http_502"
    assert caught.value.retryable
    assert not caught.value.permanent


def test_retry_after_header_is_passed_on(stub, provider):
    stub.respond(429, json_body=graph_error(130429), headers={"Retry-After": "30"})

    with pytest.raises(ProviderError) as caught:
        provider.send(text_message(), CREDENTIALS)

    assert caught.value.retryable
    assert caught.value.retry_after == 30.0


def test_timeout_after_the_request_left_is_provider_timeout(stub):
    provider = WhatsAppCloudProvider(base_url=stub.url, timeout=httpx.Timeout(0.3))
    stub.respond(200, json_body=SEND_RESPONSE, delay=1.5)

    with pytest.raises(ProviderTimeout) as caught:
        provider.send(text_message(), CREDENTIALS)

    # The stub got the request: the message may be out, so it must be reconciled, not resent.
    assert len(stub.requests) == 1
    assert caught.value.code == "timeout"
    assert not caught.value.retryable
    assert not caught.value.permanent


def test_refused_connection_is_retryable_not_unknown():
    provider = WhatsAppCloudProvider(base_url=f"http://127.0.0.1:{closed_port()}")

    with pytest.raises(ProviderError) as caught:
        provider.send(text_message(), CREDENTIALS)

    assert not isinstance(caught.value, ProviderTimeout)
    assert caught.value.code == "connect_failed"
    assert caught.value.retryable


def test_success_without_message_id_is_unknown(stub, provider):
    stub.respond(200, json_body={"messaging_product": "whatsapp", "messages": []})

    with pytest.raises(ProviderTimeout) as caught:
        provider.send(text_message(), CREDENTIALS)

    assert caught.value.code == "unreadable_response"


@pytest.mark.parametrize("missing", ["phone_number_id", "access_token"])
def test_missing_credentials_send_nothing(stub, provider, missing):
    credentials = {**CREDENTIALS, missing: ""}

    with pytest.raises(ProviderError) as caught:
        provider.send(text_message(), credentials)

    assert caught.value.code == "credentials_missing"
    assert caught.value.signal == Signal.CREDENTIALS
    assert not caught.value.retryable
    assert missing in caught.value.message
    assert stub.requests == []


@pytest.mark.parametrize(
    "message",
    [
        text_message(text=""),
        text_message(text="x" * 4097),
        template_message(template_name=""),
        template_message(template_language=""),
        text_message(callback_data="x" * 513),
    ],
    ids=["empty-text", "text-too-long", "no-template-name", "no-language", "callback-too-long"],
)
def test_invalid_messages_are_refused_before_sending(stub, provider, message):
    with pytest.raises(ProviderError) as caught:
        provider.send(message, CREDENTIALS)

    assert caught.value.code == "invalid_message"
    assert caught.value.permanent
    assert stub.requests == []


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="kind"):
        OutboundMessage(to="+4916098765432", kind="voice", text="hi")


def test_access_token_is_never_logged(stub, provider, caplog):
    caplog.set_level(logging.DEBUG)
    stub.respond(200, json_body=SEND_RESPONSE)
    provider.send(text_message(), CREDENTIALS)
    stub.respond(400, json_body=graph_error(131047))
    with pytest.raises(ProviderError):
        provider.send(text_message(), CREDENTIALS)

    assert caplog.records  # httpx did log the requests
    assert TOKEN not in caplog.text


def test_shared_client_is_used_when_given(stub):
    with httpx.Client(timeout=5) as client:
        provider = WhatsAppCloudProvider(base_url=stub.url, client=client)
        stub.respond(200, json_body=SEND_RESPONSE)
        stub.respond(200, json_body=SEND_RESPONSE)
        provider.send(text_message(), CREDENTIALS)
        provider.send(template_message(), CREDENTIALS)

    assert [r.json()["type"] for r in stub.requests] == ["text", "template"]
