"""SMTP e-mail adapter: headers on the locmem backend, error mapping against a local SMTP stub."""

from __future__ import annotations

import socket
import socketserver
import threading
import time

import pytest

from messaging.providers import OutboundMessage, ProviderError, ProviderTimeout, Signal
from messaging.providers.smtp import SmtpEmailProvider

SMTP_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
CREDENTIALS = {"from_email": "Kino Nord <news@kino.example>", "reply_to": "team@kino.example"}
UNSUBSCRIBE = {
    "List-Unsubscribe": "<https://crm.example.com/u/abc>, <mailto:unsubscribe@kino.example>",
    "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
}


def email(**overrides) -> OutboundMessage:
    fields = {
        "to": "jana@example.com",
        "subject": "Ihr Termin",
        "text": "Ihr Termin am Freitag ist bestätigt.",
        "html": "<p>Ihr Termin am Freitag ist <b>bestätigt</b>.</p>",
        "idempotency_key": "crm:message:8f3c2a",
        "headers": UNSUBSCRIBE,
    }
    return OutboundMessage(**{**fields, **overrides})


def test_locmem_send_carries_headers_and_alternatives(mailoutbox):
    result = SmtpEmailProvider().send(email(), CREDENTIALS)

    [sent] = mailoutbox
    assert sent.to == ["jana@example.com"]
    assert sent.from_email == "Kino Nord <news@kino.example>"
    assert sent.reply_to == ["team@kino.example"]
    assert sent.subject == "Ihr Termin"
    assert sent.body == "Ihr Termin am Freitag ist bestätigt."
    assert sent.alternatives[0][1] == "text/html"
    mime = sent.message()
    assert mime["List-Unsubscribe"] == UNSUBSCRIBE["List-Unsubscribe"]
    assert mime["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert mime["Message-ID"] == "<crm-message-8f3c2a@kino.example>"
    assert result.provider_message_id == "<crm-message-8f3c2a@kino.example>"
    assert result.status == "sent"


def test_a_resend_has_the_same_message_id(mailoutbox):
    provider = SmtpEmailProvider()
    first = provider.send(email(), CREDENTIALS)
    second = provider.send(email(), CREDENTIALS)

    assert first.provider_message_id == second.provider_message_id
    assert mailoutbox[0].message()["Message-ID"] == mailoutbox[1].message()["Message-ID"]


def test_without_key_or_sender_uses_default_from_and_a_fresh_id(mailoutbox, settings):
    settings.DEFAULT_FROM_EMAIL = "Dialog CRM <noreply@crm.example>"

    result = SmtpEmailProvider().send(email(idempotency_key="", html=None), {})

    assert mailoutbox[0].from_email == "Dialog CRM <noreply@crm.example>"
    assert result.provider_message_id.endswith("@crm.example>")
    assert mailoutbox[0].alternatives == []


@pytest.mark.parametrize(
    "message",
    [
        email(text="", html=None),
        email(subject="Hallo\r\nBcc: everyone@example.com"),
        email(headers={"List-Unsubscribe": "<https://x>\nBcc: everyone@example.com"}),
    ],
    ids=["no-body", "subject-injection", "header-injection"],
)
def test_invalid_emails_are_refused_and_nothing_is_sent(mailoutbox, message):
    with pytest.raises(ProviderError) as caught:
        SmtpEmailProvider().send(message, CREDENTIALS)

    assert caught.value.code == "invalid_message"
    assert caught.value.permanent
    assert mailoutbox == []


class SmtpStub(socketserver.ThreadingTCPServer):
    """Just enough of an SMTP server to drive smtplib: replies can be replaced per verb."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), SmtpStubHandler)
        self.replies: dict[str, str] = {}
        self.delay_after_data = 0.0
        self.received: list[bytes] = []
        self.thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def port(self) -> int:
        return self.server_address[1]


class SmtpStubHandler(socketserver.StreamRequestHandler):
    def reply(self, verb: str, default: str) -> None:
        self.wfile.write((self.server.replies.get(verb, default) + "\r\n").encode())

    def handle(self) -> None:
        self.reply("GREETING", "220 stub ESMTP")
        while line := self.rfile.readline():
            verb = line.decode().split(" ", 1)[0].split(":", 1)[0].strip().upper()
            if verb == "EHLO":
                self.wfile.write(b"250-stub\r\n250 AUTH PLAIN LOGIN\r\n")
            elif verb == "AUTH":
                self.reply("AUTH", "235 2.7.0 ok")
            elif verb in ("MAIL", "RCPT", "RSET", "NOOP"):
                self.reply(verb, "250 ok")
            elif verb == "DATA":
                self.reply("DATA", "354 go ahead")
                data = b""
                while not data.endswith(b"\r\n.\r\n"):
                    chunk = self.rfile.readline()
                    if not chunk:
                        return
                    data += chunk
                self.server.received.append(data)
                time.sleep(self.server.delay_after_data)
                self.reply("DATA_END", "250 queued")
            elif verb == "QUIT":
                self.reply("QUIT", "221 bye")
                return
            else:
                self.wfile.write(b"502 not implemented\r\n")


@pytest.fixture
def smtp_stub(settings):
    server = SmtpStub()
    server.thread.start()
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = server.port
    settings.EMAIL_USE_TLS = False
    settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = ""
    settings.EMAIL_HOST_PASSWORD = ""
    yield server
    server.shutdown()
    server.server_close()


def smtp_provider(timeout: float = 2.0) -> SmtpEmailProvider:
    return SmtpEmailProvider(backend=SMTP_BACKEND, timeout=timeout)


def test_real_smtp_dialogue_sends_the_headers(smtp_stub):
    result = smtp_provider().send(email(), CREDENTIALS)

    [data] = smtp_stub.received
    assert b"Message-ID: <crm-message-8f3c2a@kino.example>" in data
    assert b"List-Unsubscribe-Post: List-Unsubscribe=One-Click" in data
    assert result.provider_message_id == "<crm-message-8f3c2a@kino.example>"


@pytest.mark.parametrize(
    ("verb", "reply", "code", "retryable", "permanent", "signal"),
    [
        ("RCPT", "550 5.1.1 no such user", "550", False, True, Signal.UNREACHABLE),
        ("RCPT", "450 4.2.0 mailbox busy", "450", True, False, None),
        ("MAIL", "553 5.7.1 sender rejected", "553", False, True, None),
        ("DATA_END", "451 4.3.0 try again later", "451", True, False, None),
        ("DATA_END", "554 5.6.0 content rejected", "554", False, True, None),
        ("GREETING", "421 4.3.2 too busy", "421", True, False, None),
    ],
)
def test_smtp_replies_are_classified(smtp_stub, verb, reply, code, retryable, permanent, signal):
    smtp_stub.replies[verb] = reply

    with pytest.raises(ProviderError) as caught:
        smtp_provider().send(email(), CREDENTIALS)

    error = caught.value
    assert not isinstance(error, ProviderTimeout)
    assert error.code == code
    assert (error.retryable, error.permanent, error.signal) == (retryable, permanent, signal)
    assert reply.split(" ", 1)[1] in error.message


def test_rejected_login_is_a_credentials_problem(smtp_stub, settings):
    settings.EMAIL_HOST_USER = "crm"
    settings.EMAIL_HOST_PASSWORD = "smtp-password-secret"
    smtp_stub.replies["AUTH"] = "535 5.7.8 authentication failed"

    with pytest.raises(ProviderError) as caught:
        smtp_provider().send(email(), CREDENTIALS)

    assert caught.value.code == "535"
    assert caught.value.signal == Signal.CREDENTIALS
    assert not caught.value.retryable
    assert "smtp-password-secret" not in str(caught.value)


def test_no_answer_after_the_data_is_unknown(smtp_stub):
    smtp_stub.delay_after_data = 1.5

    with pytest.raises(ProviderTimeout):
        smtp_provider(timeout=0.3).send(email(), CREDENTIALS)

    assert len(smtp_stub.received) == 1  # the server has the message; it may deliver it


def test_refused_connection_is_retryable(settings):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        settings.EMAIL_PORT = sock.getsockname()[1]
    settings.EMAIL_HOST = "127.0.0.1"

    with pytest.raises(ProviderError) as caught:
        smtp_provider().send(email(), CREDENTIALS)

    assert not isinstance(caught.value, ProviderTimeout)
    assert caught.value.code == "connect_failed"
    assert caught.value.retryable


def test_silent_server_at_connect_is_retryable(settings):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        settings.EMAIL_HOST, settings.EMAIL_PORT = listener.getsockname()

        with pytest.raises(ProviderError) as caught:
            smtp_provider(timeout=0.3).send(email(), CREDENTIALS)

    # No greeting, so nothing was sent: safe to retry.
    assert not isinstance(caught.value, ProviderTimeout)
    assert caught.value.retryable
