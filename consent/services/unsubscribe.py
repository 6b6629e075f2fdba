"""Unsubscribe links in e-mails: no login, one button, and RFC 8058 one-click.

The link carries a signed (contact, purpose, channel) triple. The signature is the only
authorisation, so the link never expires: a withdrawal must stay as easy as the grant was
(GDPR Art. 7(3)), also from an old e-mail.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.core import signing
from django.db import transaction
from django.urls import reverse
from django.utils.translation import gettext_lazy as _

from consent.models import (
    Consent,
    ConsentAction,
    ConsentEvent,
    ConsentSource,
    ConsentStatus,
    Purpose,
)
from consent.services.ledger import Evidence, consent_record
from crm.errors import DomainError
from crm.models import Channel, Contact

# A salt separates these signatures from every other use of SECRET_KEY; it is not a secret.
TOKEN_SALT = "consent.unsubscribe"  # noqa: S105


class UnsubscribeTokenInvalid(DomainError):
    """Tampered, truncated or naming something that no longer exists. Nothing is recorded."""

    code = "unsubscribe_token_invalid"


@dataclass(frozen=True)
class UnsubscribeTarget:
    """What one unsubscribe link withdraws."""

    contact: Contact
    purpose: Purpose
    channel: str


def _signer() -> signing.Signer:
    return signing.Signer(salt=TOKEN_SALT)


def unsubscribe_token(contact: Contact, purpose: Purpose, channel: str) -> str:
    """A signed, non-expiring token naming one purpose on one channel of one contact."""
    return _signer().sign_object([contact.pk, purpose.pk, channel], compress=True)


def unsubscribe_url(contact: Contact, purpose: Purpose, channel: str) -> str:
    """The absolute /u/<token>/ link to put into a message."""
    path = reverse("consent:unsubscribe", args=[unsubscribe_token(contact, purpose, channel)])
    return settings.PUBLIC_BASE_URL.rstrip("/") + path


def unsubscribe_headers(contact: Contact, purpose: Purpose, channel: str) -> dict[str, str]:
    """RFC 8058 one-click headers for an outgoing e-mail (mail clients POST to the link)."""
    return {
        "List-Unsubscribe": f"<{unsubscribe_url(contact, purpose, channel)}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }


def unsubscribe_target(token: str) -> UnsubscribeTarget:
    """Decode a token; raises UnsubscribeTokenInvalid for anything not signed by us."""
    invalid = UnsubscribeTokenInvalid(_("This unsubscribe link is not valid."))
    try:
        payload = _signer().unsign_object(token)
    except signing.BadSignature as exc:
        raise invalid from exc
    if not (isinstance(payload, list) and len(payload) == 3):
        raise invalid
    contact_id, purpose_id, channel = payload
    if channel not in Channel.values:
        raise invalid
    contact = Contact.objects.filter(pk=contact_id).first()
    purpose = Purpose.objects.filter(pk=purpose_id).first()
    if contact is None or purpose is None or purpose.team_id != contact.team_id:
        raise invalid
    return UnsubscribeTarget(contact=contact, purpose=purpose, channel=channel)


def unsubscribe_is_withdrawn(target: UnsubscribeTarget) -> bool:
    """Whether the purpose is already withdrawn on that channel (the page says so)."""
    return Consent.objects.filter(
        contact=target.contact,
        purpose=target.purpose,
        channel=target.channel,
        status=ConsentStatus.WITHDRAWN,
    ).exists()


@transaction.atomic
def unsubscribe_apply(token: str, evidence: Evidence) -> ConsentEvent:
    """Withdraw the token's purpose on its channel; idempotent.

    A repeated click (or a mail client's repeated one-click POST) returns the withdrawal
    already recorded instead of appending another one. Never granted at all still records a
    withdrawal, so a late-arriving older grant cannot revive the purpose.
    """
    target = unsubscribe_target(token)
    # Serialise with consent_record, which locks the same contact row.
    Contact.objects.select_for_update().filter(pk=target.contact.pk).first()
    current = (
        Consent.objects.select_related("last_event")
        .filter(contact=target.contact, purpose=target.purpose, channel=target.channel)
        .first()
    )
    if (
        current is not None
        and current.status == ConsentStatus.WITHDRAWN
        and current.last_event.action == ConsentAction.WITHDRAWN
    ):
        return current.last_event
    return consent_record(
        contact=target.contact,
        purpose=target.purpose,
        channel=target.channel,
        action=ConsentAction.WITHDRAWN,
        source=ConsentSource.UNSUBSCRIBE_LINK,
        evidence=evidence,
    )
