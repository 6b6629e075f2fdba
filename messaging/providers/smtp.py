"""E-mail through Django's mail backend (any SMTP server configured by EMAIL_URL).

Credentials (all optional): `from_email` (else DEFAULT_FROM_EMAIL) and `reply_to`. Extra
headers such as `List-Unsubscribe` / `List-Unsubscribe-Post` come with the message.

Idempotency: SMTP has none. The Message-ID is derived from our idempotency key, so a resent copy
carries the same Message-ID and the recipient's mail client (and our bounce handling) can
recognise it. Retry rule: the server never accepted a message it answered 4xx/5xx for, so 4xx
and connection failures before sending retry, 5xx is final; a timeout or dropped connection
while sending may have happened after the server accepted it, so it is a ProviderTimeout.
"""

from __future__ import annotations

import re
import smtplib
from collections.abc import Mapping
from contextlib import suppress
from email.utils import make_msgid, parseaddr

from django.conf import settings
from django.core.mail import BadHeaderError, EmailMultiAlternatives, get_connection
from django.core.mail.backends.base import BaseEmailBackend
from django.utils.translation import gettext as _

from messaging.providers.base import (
    NOT_NOW,
    PERMANENT,
    RETRYABLE,
    ErrorClass,
    OutboundMessage,
    ProviderError,
    ProviderTimeout,
    SendResult,
    Signal,
    invalid_message,
)

_UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9._+=-]")


def message_id_for(idempotency_key: str, from_email: str) -> str:
    """A Message-ID that is the same for every send of one message (random without a key)."""
    domain = parseaddr(from_email)[1].rpartition("@")[2] or "dialog-crm.invalid"
    if not idempotency_key:
        return make_msgid(domain=domain)
    return f"<{_UNSAFE_ID_CHARS.sub('-', idempotency_key)}@{domain}>"


def build_email(
    message: OutboundMessage, credentials: Mapping[str, str], *, connection: BaseEmailBackend
) -> EmailMultiAlternatives:
    """The e-mail for `message`: plain text, optional HTML alternative, our headers."""
    if not message.text and not message.html:
        raise invalid_message(_("An e-mail needs a text or an HTML body."))
    from_email = credentials.get("from_email") or settings.DEFAULT_FROM_EMAIL
    headers = {"Message-ID": message_id_for(message.idempotency_key, from_email)}
    headers.update(message.headers)
    reply_to = [credentials["reply_to"]] if credentials.get("reply_to") else None
    email = EmailMultiAlternatives(
        subject=message.subject,
        body=message.text,
        from_email=from_email,
        to=[message.to],
        reply_to=reply_to,
        headers=headers,
        connection=connection,
    )
    if message.html:
        email.attach_alternative(message.html, "text/html")
    return email


class SmtpEmailProvider:
    """Sends one e-mail per call through the configured (or the given) Django mail backend."""

    def __init__(self, *, backend: str | None = None, timeout: float | None = None) -> None:
        self.backend = backend
        # Without a timeout smtplib waits forever on a silent server.
        self.timeout = (
            timeout
            or getattr(settings, "EMAIL_TIMEOUT", None)
            or settings.MESSAGING_PROVIDER_TIMEOUT
        )

    def send(self, message: OutboundMessage, credentials: Mapping[str, str]) -> SendResult:
        connection = get_connection(self.backend, fail_silently=False, timeout=self.timeout)
        email = build_email(message, credentials, connection=connection)
        try:
            connection.open()
        except smtplib.SMTPAuthenticationError as exc:
            credentials_wrong = ErrorClass(signal=Signal.CREDENTIALS)
            raise _smtp_error(exc.smtp_code, exc.smtp_error, credentials_wrong) from exc
        except smtplib.SMTPResponseException as exc:
            raise _smtp_error(exc.smtp_code, exc.smtp_error) from exc
        except OSError as exc:  # refused, unreachable, connect timeout: nothing was sent
            raise ProviderError(
                _("The mail server could not be reached: %(error)s")
                % {"error": type(exc).__name__},
                code="connect_failed",
                error_class=RETRYABLE,
            ) from exc
        try:
            sent = email.send()
        except BadHeaderError as exc:
            raise invalid_message(_("An e-mail header contains a line break.")) from exc
        except smtplib.SMTPRecipientsRefused as exc:
            code, reply = next(iter(exc.recipients.values()), (0, b""))
            unreachable = ErrorClass(permanent=True, signal=Signal.UNREACHABLE)
            raise _smtp_error(code, reply, unreachable if code >= 500 else None) from exc
        except smtplib.SMTPResponseException as exc:
            raise _smtp_error(exc.smtp_code, exc.smtp_error) from exc
        except OSError as exc:  # timeout or dropped connection mid-dialogue
            raise ProviderTimeout(code="connection_lost") from exc
        finally:
            with suppress(smtplib.SMTPException, OSError):
                connection.close()
        if not sent:
            raise invalid_message(_("The e-mail has no recipient."))
        return SendResult(
            provider_message_id=email.extra_headers["Message-ID"],
            status="sent",
            raw={"message_id": email.extra_headers["Message-ID"]},
        )


def _smtp_error(
    code: int, reply: bytes | str, error_class: ErrorClass | None = None
) -> ProviderError:
    if error_class is None:
        error_class = RETRYABLE if 400 <= code < 500 else PERMANENT if code >= 500 else NOT_NOW
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return ProviderError(
        text or _("The mail server refused the message."), code=str(code), error_class=error_class
    )
