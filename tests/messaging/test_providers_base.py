"""The provider registry, the console adapter and the shared error contract."""

from __future__ import annotations

import logging
import pickle

import pytest

from crm.errors import DomainError
from messaging.providers import (
    PROVIDERS,
    ErrorClass,
    OutboundMessage,
    ProviderError,
    ProviderTimeout,
    ProviderUnknown,
    Signal,
    console,
    provider_for,
)
from messaging.providers.base import classify_http_status
from messaging.providers.console import ConsoleProvider
from messaging.providers.smtp import SmtpEmailProvider
from messaging.providers.twilio_sms import TwilioSmsProvider
from messaging.providers.whatsapp import WhatsAppCloudProvider


@pytest.fixture(autouse=True)
def _empty_console_outbox():
    console.outbox_clear()
    yield
    console.outbox_clear()


@pytest.mark.parametrize(
    ("kind", "adapter"),
    [
        ("console", ConsoleProvider),
        ("whatsapp_cloud", WhatsAppCloudProvider),
        ("twilio_sms", TwilioSmsProvider),
        ("smtp_email", SmtpEmailProvider),
    ],
)
def test_registry_builds_each_adapter(kind, adapter):
    provider = provider_for(kind)

    assert isinstance(provider, adapter)
    assert callable(provider.send)


def test_registry_lists_exactly_the_four_kinds():
    assert set(PROVIDERS) == {"console", "whatsapp_cloud", "twilio_sms", "smtp_email"}


@pytest.mark.parametrize("kind", ["telegram", "", None, "Console"])
def test_unknown_kind_is_a_clear_domain_error(kind):
    with pytest.raises(ProviderUnknown) as caught:
        provider_for(kind)

    assert isinstance(caught.value, DomainError)
    assert caught.value.code == "provider_unknown"
    assert caught.value.field == "provider"
    assert "console, smtp_email, twilio_sms, whatsapp_cloud" in caught.value.message


def test_console_records_and_answers_with_a_fake_id(caplog):
    caplog.set_level(logging.INFO, logger="messaging.providers.console")
    message = OutboundMessage(to="+4916098765432", text="Hallo Jana", idempotency_key="msg-1")

    result = provider_for("console").send(message, {"access_token": "console-secret-token"})

    assert result.provider_message_id.startswith("console-")
    assert result.status == "sent"
    assert [(r.provider_message_id, r.message) for r in console.outbox] == [
        (result.provider_message_id, message)
    ]
    assert "Hallo Jana" in caplog.text
    assert "console-secret-token" not in caplog.text


def test_console_ids_are_unique_and_outbox_clears():
    provider = ConsoleProvider()
    message = OutboundMessage(to="jana@example.com", text="Hallo")

    ids = {provider.send(message, {}).provider_message_id for _ in range(3)}
    assert len(ids) == 3
    assert len(console.outbox) == 3

    console.outbox_clear()
    assert console.outbox == []


def test_provider_timeout_is_a_provider_error_that_never_retries():
    error = ProviderTimeout()

    assert isinstance(error, ProviderError)
    assert error.code == "timeout"
    assert not error.retryable
    assert not error.permanent
    assert "may have been sent" in error.message


@pytest.mark.parametrize(
    "error",
    [
        ProviderError(
            "User has stopped receipt of marketing messages",
            code="131050",
            error_class=ErrorClass(permanent=True, signal=Signal.OPT_OUT),
            http_status=400,
            retry_after=None,
            raw={"error": {"code": 131050}},
        ),
        ProviderTimeout(code="connection_lost"),
    ],
)
def test_errors_survive_pickling_with_every_attribute(error):
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own object

    assert type(copy) is type(error)
    assert copy.__dict__ == error.__dict__
    assert str(copy) == str(error)


@pytest.mark.parametrize(
    ("status", "retryable", "permanent"),
    [
        (429, True, False),
        (500, True, False),
        (503, True, False),
        (400, False, True),
        (401, False, False),
    ],
)
def test_http_status_fallback(status, retryable, permanent):
    error_class = classify_http_status(status)

    assert (error_class.retryable, error_class.permanent) == (retryable, permanent)
