"""What every outbound provider adapter speaks: the message in, the result or an error out.

Adapters are model-independent: they get an `OutboundMessage` and the channel account's
credentials as a plain mapping, call the provider and answer with a `SendResult`, or raise a
`ProviderError` that says whether the outbox may retry. Secrets are never logged or put into
error messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, Literal, Protocol

from django.utils.translation import gettext as _

MessageKind = Literal["text", "template"]
SendStatus = Literal["sent", "queued", "accepted"]
MESSAGE_KINDS: Final = frozenset({"text", "template"})


@dataclass(frozen=True, kw_only=True)
class OutboundMessage:
    """One message as the provider should receive it, already rendered and passed by the gate.

    `to` is an E.164 number or a lower-case e-mail address. `idempotency_key` is our message's
    id (a uuid): adapters hand it to the provider where the provider supports one, so a resend
    of the same message is recognisable.
    """

    to: str
    kind: MessageKind = "text"
    text: str = ""
    template_name: str = ""
    template_language: str = ""
    body_parameters: list[str] = field(default_factory=list)
    button_payloads: list[str] = field(default_factory=list)
    preview_url: bool = False
    subject: str = ""
    html: str | None = None
    idempotency_key: str = ""
    callback_data: str = ""
    status_callback_url: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in MESSAGE_KINDS:
            raise ValueError(f"kind must be one of {sorted(MESSAGE_KINDS)}, not {self.kind!r}")


@dataclass(frozen=True)
class SendResult:
    """The provider took the message: its id (status webhooks match on it) and first status."""

    provider_message_id: str
    status: SendStatus
    raw: Mapping[str, Any] = field(default_factory=dict)


class Signal(StrEnum):
    """What a provider error means for the CRM beyond this one message."""

    OPT_OUT = "opt_out"  # the recipient opted out at the provider: record a withdrawal
    UNREACHABLE = "unreachable"  # the address cannot receive on this channel (fall back)
    WINDOW_CLOSED = "window_closed"  # WhatsApp 24-hour window closed: only templates
    RATE_LIMITED = "rate_limited"  # slow down and retry with backoff
    ENGAGEMENT_LIMIT = "engagement_limit"  # per-user marketing limit; not an opt-out
    FILTERED = "filtered"  # carrier/provider filtered the content; review before resending
    CREDENTIALS = "credentials"  # our account's credentials or configuration are wrong


@dataclass(frozen=True)
class ErrorClass:
    """How to treat a provider error code.

    `retryable`: the same request may succeed later; the outbox retries with backoff.
    `permanent`: this request can never succeed as it is; fail the message for good.
    Neither: fail this attempt without an automatic retry, but the message itself was fine
    (e.g. WhatsApp 131049, bad credentials).
    """

    retryable: bool = False
    permanent: bool = False
    signal: Signal | None = None


RETRYABLE: Final = ErrorClass(retryable=True)
PERMANENT: Final = ErrorClass(permanent=True)
NOT_NOW: Final = ErrorClass()


def classify_http_status(status: int) -> ErrorClass:
    """The fallback for an error code no table knows: 429 and 5xx retry, other 4xx are final."""
    if status == 429:
        return ErrorClass(retryable=True, signal=Signal.RATE_LIMITED)
    if status in (401, 403):
        return ErrorClass(signal=Signal.CREDENTIALS)
    if status >= 500:
        return RETRYABLE
    return PERMANENT


class ProviderError(Exception):
    """The provider refused the message or could not be reached.

    `code` is the provider's own error code as a string (e.g. "131047", "21610") or one of ours
    ("connect_failed", "invalid_message", "credentials_missing"); branch on it, never on the
    message text. `retryable`, `permanent` and `signal` come from its ErrorClass (see there);
    `retry_after` is the provider's hint in seconds, if any. `raw` is the provider's error body
    (no secrets), kept for the message record.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str = "provider_error",
        error_class: ErrorClass = NOT_NOW,
        http_status: int | None = None,
        retry_after: float | None = None,
        raw: Mapping[str, Any] | None = None,
    ) -> None:
        self.message = str(message)
        self.code = code
        self.retryable = error_class.retryable
        self.permanent = error_class.permanent
        self.signal = error_class.signal
        self.http_status = http_status
        self.retry_after = retry_after
        self.raw: Mapping[str, Any] = raw or {}
        super().__init__(self.message)

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"

    def __reduce__(self) -> tuple[Any, ...]:
        # Celery and multiprocessing pickle exceptions: rebuild with every attribute.
        return (type(self), (self.message,), self.__dict__.copy())


class ProviderTimeout(ProviderError):
    """The request may have left, but we do not know whether the provider accepted it.

    Raised when the provider did not answer in time after the request was sent, when the
    connection broke mid-request, or when a success answer could not be read. The caller must
    mark the message `unknown` and reconcile it (status webhooks, the provider's message log),
    and must NEVER blindly resend it: the recipient may already have it. Catch this before
    `ProviderError`. Connection failures before anything was sent are plain retryable
    `ProviderError`s instead.
    """

    def __init__(self, message: str | None = None, *, code: str = "timeout") -> None:
        super().__init__(
            str(
                message or _("The provider did not answer in time; the message may have been sent.")
            ),
            code=code,
        )


def invalid_message(message: str) -> ProviderError:
    """The message cannot be sent as built: a bug upstream, not a provider refusal."""
    return ProviderError(message, code="invalid_message", error_class=PERMANENT)


def require_credentials(credentials: Mapping[str, str], *names: str) -> list[str]:
    """The named credential values, or a non-retryable error naming (only) the missing keys."""
    missing = [name for name in names if not credentials.get(name)]
    if missing:
        raise ProviderError(
            _("The channel account lacks credentials: %(names)s.") % {"names": ", ".join(missing)},
            code="credentials_missing",
            error_class=ErrorClass(signal=Signal.CREDENTIALS),
        )
    return [credentials[name] for name in names]


class Provider(Protocol):
    """An outbound adapter (registered in messaging.providers.registry.PROVIDERS)."""

    def send(self, message: OutboundMessage, credentials: Mapping[str, str]) -> SendResult:
        """Hand `message` to the provider. Raise ProviderError / ProviderTimeout on failure."""
        ...
