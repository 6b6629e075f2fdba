"""The consent write API. `consent_record` is the only code that writes the consent ledger.

It appends the event to the contact's hash chain and updates the projection in the same
transaction, under a lock on the contact, so the chain has no forks and the projection never
disagrees with the ledger.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from consent.models import (
    PROJECTION_STATUS,
    Consent,
    ConsentAction,
    ConsentEvent,
    ConsentEvidence,
    ConsentSource,
    ConsentStatus,
    ConsentText,
    Purpose,
    Suppression,
)
from consent.signals import consent_changed
from crm import selectors as crm_selectors
from crm.errors import DomainError, PermissionRefused
from crm.hashing import address_hash
from crm.ledger import GENESIS_HASH
from crm.models import Channel, Contact, Team

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser


class ConsentInvalid(DomainError):
    code = "consent_invalid"


class EvidenceMissing(DomainError):
    code = "evidence_missing"


# Clocks differ; an event stamped a little ahead of ours is still accepted.
FUTURE_TOLERANCE = dt.timedelta(minutes=5)

# Sources whose grants must name the consent text the contact saw.
TEXT_REQUIRED_SOURCES = frozenset({ConsentSource.WEB_FORM, ConsentSource.API, ConsentSource.IMPORT})


@dataclass(frozen=True)
class Evidence:
    """What backs a consent event. Personal data; stored apart from the ledger."""

    consent_text: ConsentText | None = None
    ip_address: str | None = None
    user_agent: str = ""
    source_url: str = ""
    message_text: str = ""
    inbound_message_ref: str = ""
    note: str = ""
    collected_at: dt.datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _check_evidence(*, action: str, source: str, evidence: Evidence, purpose: Purpose) -> None:
    if source == ConsentSource.AGENT and not evidence.note.strip():
        raise EvidenceMissing(
            _("An agent's consent change needs a note saying how the contact asked."),
            field="note",
        )
    if action not in (ConsentAction.GRANTED, ConsentAction.CONFIRMED):
        return
    if source in TEXT_REQUIRED_SOURCES and evidence.consent_text is None:
        raise EvidenceMissing(
            _("A grant needs the version of the consent text the contact agreed to."),
            field="consent_text",
        )
    if source == ConsentSource.IMPORT and evidence.collected_at is None:
        raise EvidenceMissing(
            _("An imported grant needs the date the consent was collected."), field="collected_at"
        )
    if source == ConsentSource.KEYWORD and not evidence.inbound_message_ref:
        raise EvidenceMissing(
            _("A keyword grant needs the inbound message it came from."),
            field="inbound_message_ref",
        )
    if evidence.consent_text is not None and evidence.consent_text.purpose_id != purpose.pk:
        raise ConsentInvalid(
            _("The consent text belongs to another purpose."), field="consent_text"
        )


def _validate(
    *, contact: Contact, purpose: Purpose, channel: str, action: str, source: str
) -> None:
    if action not in ConsentAction.values:
        raise ConsentInvalid(_("Unknown action “%(v)s”.") % {"v": action}, field="action")
    if source not in ConsentSource.values:
        raise ConsentInvalid(_("Unknown source “%(v)s”.") % {"v": source}, field="source")
    if purpose.team_id != contact.team_id:
        raise ConsentInvalid(_("The purpose belongs to another team."), field="purpose")
    if channel not in Channel.values:
        raise ConsentInvalid(_("Unknown channel “%(v)s”.") % {"v": channel}, field="channel")
    granting = action in (ConsentAction.GRANTED, ConsentAction.CONFIRMED, ConsentAction.REQUESTED)
    # Withdrawing is always possible (Art. 7(3)), even after a purpose dropped the channel.
    if granting and channel not in (purpose.allowed_channels or []):
        raise ConsentInvalid(
            _("“%(purpose)s” may not be collected on %(channel)s.")
            % {"purpose": purpose.name, "channel": channel},
            field="channel",
        )
    if granting and not purpose.is_active:
        raise ConsentInvalid(_("This purpose is no longer active."), field="purpose")
    if granting and contact.erased_at is not None:
        raise ConsentInvalid(_("The contact was erased."), field="contact")
    if granting and contact.is_restricted:
        raise ConsentInvalid(
            _("Processing is restricted for this contact (GDPR Art. 18)."), field="contact"
        )


def _projected_status(
    *, purpose: Purpose, channel: str, action: str, source: str, current: Consent | None
) -> str | None:
    """The status the event leads to, or None where it leaves a valid grant untouched."""
    unconfirmed = action == ConsentAction.REQUESTED or (
        # UWG §7: on a double opt-in channel only the confirmation grants.
        action == ConsentAction.GRANTED
        and purpose.needs_double_opt_in(channel)
        and source != ConsentSource.DOUBLE_OPT_IN
    )
    if unconfirmed:
        # A reconfirmation request does not take away a consent that is still valid.
        granted_now = current is not None and current.status == ConsentStatus.GRANTED
        return None if granted_now else ConsentStatus.PENDING
    return PROJECTION_STATUS[action]


def _event_wins(new: ConsentEvent, current: Consent | None) -> bool:
    """Latest `occurred_at` wins; on a tie a withdrawal wins (never message on a doubt)."""
    if current is None:
        return True
    deciding = current.last_event
    if new.occurred_at != deciding.occurred_at:
        return new.occurred_at > deciding.occurred_at
    return deciding.action != ConsentAction.WITHDRAWN or new.action == ConsentAction.WITHDRAWN


def _actor_label(actor: AbstractBaseUser | None) -> str:
    return actor.get_username() if actor is not None else ""


def _ensure_may_record(actor: AbstractBaseUser | None, contact: Contact) -> None:
    if actor is not None and not crm_selectors.user_may_write(
        actor, "consent.add_consentevent", contact.team_id
    ):
        raise PermissionRefused(_("You may not record consent for this team."))


@transaction.atomic
def consent_record(
    *,
    contact: Contact,
    purpose: Purpose,
    channel: str,
    action: str,
    source: str,
    evidence: Evidence,
    actor: AbstractBaseUser | None = None,
    occurred_at: dt.datetime | None = None,
) -> ConsentEvent:
    """Append one consent event to the contact's chain and update the projection.

    Refuses (and writes nothing) on an unknown purpose or channel, missing evidence, or a
    contact of another team. A late event older than the deciding one is recorded in the
    ledger but does not change the current state.
    """
    _ensure_may_record(actor, contact)
    now = timezone.now()
    occurred_at = occurred_at or now
    if occurred_at > now + FUTURE_TOLERANCE:
        raise ConsentInvalid(_("The event lies in the future."), field="occurred_at")
    # Lock the contact: its chain must not fork when two events arrive at once.
    contact = Contact.objects.select_for_update().get(pk=contact.pk)
    _validate(contact=contact, purpose=purpose, channel=channel, action=action, source=source)
    _check_evidence(action=action, source=source, evidence=evidence, purpose=purpose)

    stored_evidence = ConsentEvidence(
        consent_text=evidence.consent_text,
        ip_address=evidence.ip_address or None,
        user_agent=evidence.user_agent[:500],
        source_url=evidence.source_url[:500],
        message_text=evidence.message_text,
        inbound_message_ref=evidence.inbound_message_ref[:200],
        note=evidence.note,
        collected_at=evidence.collected_at,
        actor=actor,
        actor_label=_actor_label(actor),
    )
    stored_evidence.digest = stored_evidence.compute_digest()
    stored_evidence.save()

    last = (
        ConsentEvent.objects.filter(contact=contact)
        .order_by("-sequence")
        .values("sequence", "hash")
        .first()
    )
    event = ConsentEvent(
        contact=contact,
        team_id=contact.team_id,
        purpose=purpose,
        channel=channel,
        action=action,
        source=source,
        evidence=stored_evidence,
        evidence_digest=stored_evidence.digest,
        occurred_at=occurred_at,
        recorded_at=now,
        sequence=(last["sequence"] + 1) if last else 1,
    )
    event.seal(last["hash"] if last else GENESIS_HASH)
    event.save()
    _project(event=event, purpose=purpose)
    consent_changed.send(sender=ConsentEvent, event=event)
    return event


def _project(*, event: ConsentEvent, purpose: Purpose) -> None:
    current = (
        Consent.objects.select_for_update()
        .select_related("last_event")
        .filter(contact_id=event.contact_id, purpose=purpose, channel=event.channel)
        .first()
    )
    if not _event_wins(event, current):
        return
    status = _projected_status(
        purpose=purpose,
        channel=event.channel,
        action=event.action,
        source=event.source,
        current=current,
    )
    if status is None:
        return
    valid_until = (
        purpose.valid_until(event.occurred_at) if status == ConsentStatus.GRANTED else None
    )
    if current is None:
        Consent.objects.create(
            contact_id=event.contact_id,
            purpose=purpose,
            channel=event.channel,
            status=status,
            since=event.occurred_at,
            valid_until=valid_until,
            last_event=event,
        )
        return
    if current.status != status:
        current.since = event.occurred_at
    current.status = status
    current.valid_until = valid_until if status == ConsentStatus.GRANTED else None
    current.last_event = event
    current.save(update_fields=["status", "since", "valid_until", "last_event", "updated_at"])


def suppression_add(
    *,
    address: str,
    channel: str = "",
    reason: str = Suppression.Reason.MANUAL,
    team: Team | None = None,
    note: str = "",
) -> Suppression:
    """Never message this address again, in any team. Idempotent."""
    entry, _created = Suppression.objects.get_or_create(
        address_hash=address_hash(address),
        defaults={"channel": channel, "reason": reason, "team": team, "note": note},
    )
    return entry


def is_suppressed(address: str) -> bool:
    return Suppression.objects.filter(address_hash=address_hash(address)).exists()
