"""Double opt-in: a `requested` event, a confirmation message, and a `confirmed` event.

E-mail confirms through a signed, expiring link (/c/<token>/); SMS and WhatsApp confirm by
replying YES / JA (see services.inbound). The confirmation message is transactional: it needs
no marketing consent and carries no advertising.
"""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.core import signing
from django.db import transaction
from django.utils import timezone
from django.utils.module_loading import import_string
from django.utils.translation import gettext_lazy as _

from consent.models import ConsentAction, ConsentEvent, ConsentSource, OptInRequest, Purpose
from consent.services.ledger import Evidence, consent_record
from crm.errors import DomainError
from crm.models import Contact

# A salt separates these signatures from every other use of SECRET_KEY; it is not a secret.
TOKEN_SALT = "consent.opt-in"  # noqa: S105


class OptInRateLimited(DomainError):
    code = "opt_in_rate_limited"
    status_code = 429


class OptInTokenInvalid(DomainError):
    """Expired, tampered or already used: the page says which, and nothing is recorded."""

    code = "opt_in_token_invalid"

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def _recent_requests(contact: Contact, purpose: Purpose, channel: str) -> int:
    since = timezone.now() - dt.timedelta(hours=24)
    return OptInRequest.objects.filter(
        contact=contact, purpose=purpose, channel=channel, created_at__gte=since
    ).count()


@transaction.atomic
def opt_in_request(
    *,
    contact: Contact,
    purpose: Purpose,
    channel: str,
    evidence: Evidence,
    source: str = ConsentSource.WEB_FORM,
    actor: object | None = None,
    occurred_at: dt.datetime | None = None,
    send_confirmation: bool = True,
) -> OptInRequest:
    """Record `requested` and send the confirmation after commit; rate limited per contact.

    `send_confirmation=False` when the caller delivers the confirmation itself (a keyword
    opt-in answered in the same conversation).
    """
    if _recent_requests(contact, purpose, channel) >= settings.CONSENT_OPT_IN_MAX_PER_DAY:
        raise OptInRateLimited(
            _("A confirmation was already sent several times today. Please try again tomorrow.")
        )
    event = consent_record(
        contact=contact,
        purpose=purpose,
        channel=channel,
        action=ConsentAction.REQUESTED,
        source=source,
        evidence=evidence,
        actor=actor,
        occurred_at=occurred_at,
    )
    request = OptInRequest.objects.create(
        request_event=event,
        contact=contact,
        purpose=purpose,
        channel=channel,
        expires_at=timezone.now() + dt.timedelta(hours=settings.CONSENT_OPT_IN_TTL_HOURS),
    )
    if send_confirmation:
        request_id = request.pk
        transaction.on_commit(lambda: opt_in_send_confirmation(request_id=request_id))
    return request


def opt_in_send_confirmation(*, request_id: int) -> None:
    """Hand the confirmation to the configured sender (e-mail by default; messaging
    replaces it with its send path)."""
    request = OptInRequest.objects.select_related("contact", "purpose").get(pk=request_id)
    sender = import_string(settings.CONSENT_CONFIRMATION_SENDER)
    sender(request=request, token=opt_in_token(request))


def opt_in_token(request: OptInRequest) -> str:
    return signing.dumps({"r": request.pk}, salt=TOKEN_SALT, compress=True)


def opt_in_request_from_token(token: str) -> OptInRequest:
    max_age = dt.timedelta(hours=settings.CONSENT_OPT_IN_TTL_HOURS)
    try:
        payload = signing.loads(token, salt=TOKEN_SALT, max_age=max_age)
    except signing.SignatureExpired as exc:
        raise OptInTokenInvalid(_("This confirmation link has expired."), reason="expired") from exc
    except signing.BadSignature as exc:
        raise OptInTokenInvalid(
            _("This confirmation link is not valid."), reason="invalid"
        ) from exc
    request = (
        OptInRequest.objects.select_related("contact", "purpose")
        .filter(pk=payload.get("r"))
        .first()
    )
    if request is None:
        raise OptInTokenInvalid(_("This confirmation link is not valid."), reason="invalid")
    _ensure_usable(request)
    return request


def _ensure_usable(request: OptInRequest) -> None:
    if request.confirmed_event_id is not None:
        raise OptInTokenInvalid(_("This subscription was already confirmed."), reason="used")
    if request.expires_at <= timezone.now():
        raise OptInTokenInvalid(_("This confirmation link has expired."), reason="expired")


def opt_in_open_request(*, contact: Contact, channel: str) -> OptInRequest | None:
    """The newest unconfirmed, unexpired request on this channel (for YES / JA replies)."""
    return (
        OptInRequest.objects.select_related("purpose")
        .filter(
            contact=contact,
            channel=channel,
            confirmed_event__isnull=True,
            expires_at__gt=timezone.now(),
        )
        .order_by("-created_at")
        .first()
    )


@transaction.atomic
def opt_in_confirm(
    *, request: OptInRequest, evidence: Evidence, occurred_at: dt.datetime | None = None
) -> ConsentEvent:
    """Record `confirmed` once; a second use of the same request is refused."""
    request = (
        OptInRequest.objects.select_for_update()
        .select_related("contact", "purpose")
        .get(pk=request.pk)
    )
    _ensure_usable(request)
    requested_evidence = request.request_event.evidence
    event = consent_record(
        contact=request.contact,
        purpose=request.purpose,
        channel=request.channel,
        action=ConsentAction.CONFIRMED,
        source=ConsentSource.DOUBLE_OPT_IN,
        evidence=Evidence(
            consent_text=requested_evidence.consent_text,
            ip_address=evidence.ip_address,
            user_agent=evidence.user_agent,
            source_url=evidence.source_url,
            message_text=evidence.message_text,
            inbound_message_ref=evidence.inbound_message_ref,
            note=evidence.note,
        ),
        occurred_at=occurred_at,
    )
    request.confirmed_event = event
    request.confirmed_at = event.occurred_at
    request.save(update_fields=["confirmed_event", "confirmed_at", "updated_at"])
    return event
