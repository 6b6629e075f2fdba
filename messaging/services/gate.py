"""The send gate: the one place that decides whether a message may leave, and why.

Every outbound path (API, admin, campaigns, automation, double opt-in, agents) reaches it
through `message_send`, and the delivery worker asks it again when it claims a queued message,
so a STOP received mid-campaign stops the rest. The decision and the inputs it saw are stored
on the message (`Message.gate_decision`).
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass, field
from typing import Any, Final

from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from approvals import selectors as approval_selectors
from approvals.models import TemplateVersion
from consent.models import Consent, ConsentStatus, Purpose
from consent.services import is_suppressed
from crm.hashing import address_hash
from crm.models import Channel, Contact, ContactPoint
from messaging.models import (
    COUNTED_STATUSES,
    ChannelAccount,
    Conversation,
    Direction,
    Message,
)

# Refusal reasons (machine readable, stable; API clients branch on them).
ACCOUNT_INACTIVE: Final = "account_inactive"
ACCOUNT_OTHER_TEAM: Final = "account_other_team"
CHANNEL_MISMATCH: Final = "channel_mismatch"
CONTACT_ERASED: Final = "contact_erased"
CONTACT_RESTRICTED: Final = "contact_restricted"
NO_ADDRESS: Final = "no_address"
SUPPRESSED: Final = "suppressed"
NO_CONSENT: Final = "no_consent"
OUTSIDE_SERVICE_WINDOW: Final = "outside_service_window"
NO_DIALOG: Final = "no_dialog"
FREQUENCY_CAP: Final = "frequency_cap"
QUIET_HOURS: Final = "quiet_hours"

REASON_MESSAGES: Final[dict[str, Any]] = {
    ACCOUNT_INACTIVE: _("The channel account is switched off."),
    ACCOUNT_OTHER_TEAM: _("The channel account belongs to another team than the contact."),
    CHANNEL_MISMATCH: _("The template is for another channel than the account."),
    CONTACT_ERASED: _("The contact's data was erased on request."),
    CONTACT_RESTRICTED: _("Processing of this contact's data is restricted."),
    NO_ADDRESS: _("The contact has no address on this channel."),
    SUPPRESSED: _("The address is on the suppression list."),
    NO_CONSENT: _("The contact has no current consent for this purpose on this channel."),
    approval_selectors.TEMPLATE_NOT_APPROVED: _("The template version is not approved."),
    approval_selectors.TEMPLATE_EXPIRED: _("The template version's approval has expired."),
    approval_selectors.TEMPLATE_NOT_YET_VALID: _("The template version is not valid yet."),
    approval_selectors.PROVIDER_NOT_APPROVED: _(
        "The provider has not approved the template version."
    ),
    approval_selectors.TEMPLATE_INACTIVE: _("The template is switched off."),
    OUTSIDE_SERVICE_WINDOW: _(
        "The 24-hour service window is closed: only an approved template may be sent."
    ),
    NO_DIALOG: _("Free text goes only to contacts who wrote to us; send an approved template."),
    FREQUENCY_CAP: _("The contact already received the most messages allowed for this purpose."),
    QUIET_HOURS: _("Deferred until the contact's quiet hours end."),
}


@dataclass(frozen=True)
class GateDecision:
    """Allowed or refused (with `reason`), possibly deferred, and everything it was based on."""

    allowed: bool
    reason: str | None = None
    deferred_until: dt.datetime | None = None
    decided_at: dt.datetime | None = None
    checks: list[str] = field(default_factory=list)
    inputs: dict[str, Any] = field(default_factory=dict)

    @property
    def message(self) -> str:
        return str(REASON_MESSAGES.get(self.reason or "", "")) if self.reason else ""

    def as_record(self) -> dict[str, Any]:
        """JSON for the message row and the API's 422 body."""
        return {
            "allowed": self.allowed,
            "reason": self.reason,
            "message": self.message,
            "deferred_until": self.deferred_until.isoformat() if self.deferred_until else None,
            "decided_at": self.decided_at.isoformat() if self.decided_at else None,
            "checks": self.checks,
            "inputs": self.inputs,
        }


@dataclass(frozen=True, kw_only=True)
class SendRequest:
    """What is to be sent, to whom, through which account (already loaded objects)."""

    contact: Contact
    account: ChannelAccount
    template_version: TemplateVersion | None = None
    conversation: Conversation | None = None
    address: str | None = None
    # A double opt-in confirmation asks for consent; it cannot require it.
    opt_in_confirmation: bool = False
    # Re-checks of a queued message must not count the message itself against the cap.
    message_id: int | None = None

    @property
    def purpose(self) -> Purpose | None:
        """Whose consent is needed: the template's purpose; none for service messages."""
        if self.template_version is None:
            return None
        return self.template_version.template.purpose


def primary_address(contact: Contact, channel: str) -> str | None:
    return (
        ContactPoint.objects.filter(contact=contact, channel=channel)
        .order_by("-is_primary", "id")
        .values_list("address", flat=True)
        .first()
    )


class _Evaluation:
    """Runs the checks in the order the rules give and collects what each one saw."""

    def __init__(self, request: SendRequest, at: dt.datetime) -> None:
        self.request = request
        self.at = at
        self.checks: list[str] = []
        self.inputs: dict[str, Any] = {}

    def refuse(self, reason: str) -> GateDecision:
        return GateDecision(
            allowed=False,
            reason=reason,
            decided_at=self.at,
            checks=self.checks,
            inputs=self.inputs,
        )

    def run(self) -> GateDecision:
        request = self.request
        contact, account, version = request.contact, request.account, request.template_version
        for check in (
            self._account,
            self._contact,
            self._address,
            self._consent,
            self._template,
            self._service_window,
            self._frequency_cap,
        ):
            reason = check()
            if reason:
                return self.refuse(reason)
        deferred_until = self._quiet_hours()
        self.inputs.update(
            contact=contact.pk,
            account=account.pk,
            template_version=version.pk if version else None,
            purpose=request.purpose.pk if request.purpose else None,
        )
        return GateDecision(
            allowed=True,
            reason=QUIET_HOURS if deferred_until else None,
            deferred_until=deferred_until,
            decided_at=self.at,
            checks=self.checks,
            inputs=self.inputs,
        )

    def _account(self) -> str | None:
        self.checks.append("account")
        account, version = self.request.account, self.request.template_version
        if not account.is_active:
            return ACCOUNT_INACTIVE
        if account.team_id != self.request.contact.team_id:
            return ACCOUNT_OTHER_TEAM
        if version is not None and version.template.channel != account.channel:
            return CHANNEL_MISMATCH
        return None

    def _contact(self) -> str | None:
        self.checks.append("contact")
        contact = self.request.contact
        if contact.erased_at is not None:
            return CONTACT_ERASED
        if contact.is_restricted:
            return CONTACT_RESTRICTED
        return None

    def _address(self) -> str | None:
        self.checks.append("suppression")
        address = self.request.address or primary_address(
            self.request.contact, self.request.account.channel
        )
        if not address:
            return NO_ADDRESS
        self.inputs["address_hash"] = address_hash(address)
        if is_suppressed(address):
            return SUPPRESSED
        return None

    def _consent(self) -> str | None:
        purpose = self.request.purpose
        if purpose is None or self.request.opt_in_confirmation:
            self.inputs["consent"] = "opt_in_confirmation" if purpose else "not_required"
            return None
        self.checks.append("consent")
        consent = (
            Consent.objects.filter(
                contact=self.request.contact,
                purpose=purpose,
                channel=self.request.account.channel,
                status=ConsentStatus.GRANTED,
            )
            .filter(Q(valid_until__isnull=True) | Q(valid_until__gt=self.at))
            .values("pk", "last_event_id", "since", "valid_until")
            .first()
        )
        if consent is None:
            return NO_CONSENT
        self.inputs["consent"] = {
            "id": consent["pk"],
            "event": consent["last_event_id"],
            "since": consent["since"].isoformat(),
            "valid_until": consent["valid_until"].isoformat() if consent["valid_until"] else None,
        }
        return None

    def _template(self) -> str | None:
        version = self.request.template_version
        if version is None:
            return None
        self.checks.append("template")
        self.inputs["template_state"] = version.state
        return approval_selectors.sendability(version, self.at)

    def _service_window(self) -> str | None:
        if self.request.template_version is not None:
            return None
        self.checks.append("service_window")
        conversation = self.request.conversation
        window_end = conversation.service_window_ends_at if conversation else None
        self.inputs["service_window_ends_at"] = window_end.isoformat() if window_end else None
        if self.request.account.channel == Channel.WHATSAPP:
            return None if window_end and window_end > self.at else OUTSIDE_SERVICE_WINDOW
        # Other channels have no window, but free text is a reply: only to people who wrote
        # (and the confirmation someone asked for when subscribing).
        if self.request.opt_in_confirmation:
            return None
        return None if conversation and conversation.last_inbound_at else NO_DIALOG

    def _frequency_cap(self) -> str | None:
        purpose = self.request.purpose
        if purpose is None or not purpose.frequency_cap:
            return None
        self.checks.append("frequency_cap")
        since = self.at - dt.timedelta(hours=purpose.frequency_period_hours)
        recent = Message.objects.filter(
            contact=self.request.contact,
            purpose=purpose,
            direction=Direction.OUTBOUND,
            created_at__gte=since,
            status__in=COUNTED_STATUSES,
        )
        if self.request.message_id is not None:
            recent = recent.exclude(pk=self.request.message_id)
        count = recent.count()
        self.inputs["frequency"] = {
            "sent": count,
            "cap": purpose.frequency_cap,
            "hours": purpose.frequency_period_hours,
        }
        return FREQUENCY_CAP if count >= purpose.frequency_cap else None

    def _quiet_hours(self) -> dt.datetime | None:
        """When the quiet hours end, if a consent-based message falls into them."""
        account = self.request.account
        start, end = account.quiet_hours_start, account.quiet_hours_end
        if self.request.purpose is None or start is None or end is None or start == end:
            return None
        self.checks.append("quiet_hours")
        zone = zoneinfo.ZoneInfo(self.request.contact.time_zone or "Europe/Berlin")
        local = self.at.astimezone(zone)
        now = local.time()
        inside = (start <= now < end) if start < end else (now >= start or now < end)
        if not inside:
            return None
        end_day = local.date() if now < end else local.date() + dt.timedelta(days=1)
        resume = dt.datetime.combine(end_day, end, tzinfo=zone).astimezone(dt.UTC)
        self.inputs["quiet_hours"] = {"zone": str(zone), "until": resume.isoformat()}
        return resume


def send_gate_evaluate(request: SendRequest, *, at: dt.datetime | None = None) -> GateDecision:
    """Decide whether `request` may be sent at `at` (default now); refusals name their reason.

    Order: account, contact restricted/erased, suppressed address, consent for the template's
    purpose on the channel (not for service messages and opt-in confirmations), template
    sendable, service window for free text, frequency cap; quiet hours defer, never refuse.
    """
    return _Evaluation(request, at or timezone.now()).run()
