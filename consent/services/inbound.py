"""What an inbound message means for consent: keywords, opt-in replies, possible withdrawals.

Messaging calls `consent_inbound_message` for every inbound text before automation runs.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from django.db import transaction
from django.utils import translation
from django.utils.translation import gettext as _

from consent import keywords
from consent.models import (
    Consent,
    ConsentAction,
    ConsentEvent,
    ConsentSource,
    ConsentStatus,
    Purpose,
    WithdrawalReview,
)
from consent.services.double_opt_in import opt_in_confirm, opt_in_open_request, opt_in_request
from consent.services.ledger import Evidence, consent_record
from crm.models import Contact


@dataclass
class InboundConsentOutcome:
    """What happened, and the confirmation the contact must receive (DESIGN: every keyword)."""

    kind: str  # withdraw | grant | pending | confirm | help | review | none
    purposes: list[Purpose] = field(default_factory=list)
    reply: str = ""
    review: WithdrawalReview | None = None

    @property
    def is_keyword(self) -> bool:
        return self.kind in {"withdraw", "grant", "pending", "confirm", "help"}


def _purposes_on_channel(contact: Contact, channel: str) -> list[Purpose]:
    return [
        purpose
        for purpose in Purpose.objects.filter(team_id=contact.team_id, is_active=True)
        if channel in (purpose.allowed_channels or [])
    ]


def _now_granted(event: ConsentEvent) -> bool:
    """Whether the grant decides the state now; a late, older one is only recorded, and on a
    double opt-in channel a grant without confirmation only makes it pending."""
    return Consent.objects.filter(last_event=event, status=ConsentStatus.GRANTED).exists()


def _evidence(text: str, message_ref: str) -> Evidence:
    return Evidence(message_text=text, inbound_message_ref=message_ref)


def _withdraw_all(
    contact: Contact, channel: str, text: str, message_ref: str, occurred_at: dt.datetime
) -> list[Purpose]:
    """STOP means stop everything on this channel, including purposes never granted, so a
    late-arriving older grant can never revive it."""
    purposes = _purposes_on_channel(contact, channel)
    for purpose in purposes:
        consent_record(
            contact=contact,
            purpose=purpose,
            channel=channel,
            action=ConsentAction.WITHDRAWN,
            source=ConsentSource.KEYWORD,
            evidence=_evidence(text, message_ref),
            occurred_at=occurred_at,
        )
    return purposes


def _grant_back(
    contact: Contact, channel: str, text: str, message_ref: str, occurred_at: dt.datetime
) -> list[Purpose]:
    """START/ANMELDEN re-grants what the contact withdrew on this channel."""
    withdrawn = Consent.objects.filter(
        contact=contact, channel=channel, status=ConsentStatus.WITHDRAWN
    ).select_related("purpose")
    granted: list[Purpose] = []
    for purpose in [consent.purpose for consent in withdrawn if consent.purpose.is_active]:
        event = consent_record(
            contact=contact,
            purpose=purpose,
            channel=channel,
            action=ConsentAction.GRANTED,
            source=ConsentSource.KEYWORD,
            evidence=_evidence(text, message_ref),
            occurred_at=occurred_at,
        )
        if _now_granted(event):
            granted.append(purpose)
    return granted


def _reply(contact: Contact, kind: str, purposes: list[Purpose]) -> str:
    names = ", ".join(purpose.name for purpose in purposes)
    with translation.override(contact.language or "de"):
        if kind == "withdraw":
            return _(
                "You have been unsubscribed and will receive no more messages here. "
                "Reply START to subscribe again."
            )
        if kind == "grant" and purposes:
            return _("You are subscribed to: %(names)s. Reply STOP to unsubscribe.") % {
                "names": names
            }
        if kind == "grant":
            return _("There is nothing to subscribe to again. Reply HELP for help.")
        if kind == "confirm":
            return _("Thank you, your subscription is confirmed: %(names)s. Reply STOP to end.") % {
                "names": names
            }
        if kind == "pending":
            return _("Please reply YES to confirm your subscription: %(names)s.") % {"names": names}
        return ""


@transaction.atomic
def consent_inbound_message(
    *,
    contact: Contact,
    channel: str,
    text: str,
    message_ref: str,
    occurred_at: dt.datetime,
) -> InboundConsentOutcome:
    """Apply one inbound message to consent; the caller sends `reply` and runs automation
    only when the outcome is not a keyword."""
    kind = keywords.keyword_kind(text)
    if kind == "withdraw":
        purposes = _withdraw_all(contact, channel, text, message_ref, occurred_at)
        return InboundConsentOutcome("withdraw", purposes, _reply(contact, "withdraw", purposes))
    if kind == "help":
        return InboundConsentOutcome("help")
    if kind == "grant" and keywords.fold(text) in keywords.CONFIRM_KEYWORDS:
        request = opt_in_open_request(contact=contact, channel=channel)
        if request is not None:
            opt_in_confirm(
                request=request, evidence=_evidence(text, message_ref), occurred_at=occurred_at
            )
            return InboundConsentOutcome(
                "confirm", [request.purpose], _reply(contact, "confirm", [request.purpose])
            )
    if kind == "grant":
        purposes = _grant_back(contact, channel, text, message_ref, occurred_at)
        return InboundConsentOutcome("grant", purposes, _reply(contact, "grant", purposes))

    purpose = keywords.purpose_for_keyword(text, _purposes_on_channel(contact, channel))
    if purpose is not None and purpose.needs_double_opt_in(channel):
        opt_in_request(
            contact=contact,
            purpose=purpose,
            channel=channel,
            evidence=_evidence(text, message_ref),
            source=ConsentSource.KEYWORD,
            occurred_at=occurred_at,
            send_confirmation=False,
        )
        return InboundConsentOutcome("pending", [purpose], _reply(contact, "pending", [purpose]))
    if purpose is not None:
        event = consent_record(
            contact=contact,
            purpose=purpose,
            channel=channel,
            action=ConsentAction.GRANTED,
            source=ConsentSource.KEYWORD,
            evidence=_evidence(text, message_ref),
            occurred_at=occurred_at,
        )
        # A keyword older than a withdrawal that already arrived must not claim a subscription.
        granted = [purpose] if _now_granted(event) else []
        return InboundConsentOutcome("grant", granted, _reply(contact, "grant", granted))

    phrase = keywords.withdrawal_phrase(text)
    if phrase:
        review = WithdrawalReview.objects.create(
            contact=contact,
            team_id=contact.team_id,
            channel=channel,
            text=text,
            inbound_message_ref=message_ref,
            matched=phrase[:200],
        )
        return InboundConsentOutcome("review", review=review)
    return InboundConsentOutcome("none")
