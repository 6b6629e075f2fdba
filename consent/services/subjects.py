"""Data-subject requests (GDPR Art. 15-21) as cases, and what executing each kind does.

A case is opened when the request arrives (due one month later, Art. 12(3)), the requester's
identity is checked, and only then is it executed: access/portability writes a JSON export,
erasure pseudonymises the contact and suppresses its addresses, restriction stops processing,
objection withdraws every marketing purpose. The consent ledger is never changed: it holds only
ids and hashes, so it stays as proof after erasure and its chains still verify.

Apps to the right plug in through the registries below (consent never imports them): messaging
adds its messages to the export and pseudonymises message bodies on erasure.
"""

from __future__ import annotations

import calendar
import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.core.files.base import ContentFile
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from consent.models import (
    Consent,
    ConsentAction,
    ConsentEvent,
    ConsentEvidence,
    ConsentSource,
    ConsentStatus,
    DataSubjectRequest,
    OptInRequest,
    Purpose,
    Suppression,
    WithdrawalReview,
)
from consent.services.ledger import FUTURE_TOLERANCE, Evidence, consent_record, suppression_add
from crm import privacy
from crm import selectors as crm_selectors
from crm import services as crm_services
from crm.errors import DomainError, PermissionRefused
from crm.models import Contact, ContactPoint

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

# Sections later apps add to the access export: callable(contact) -> (section name, JSON data).
ACCESS_EXPORT_SECTIONS: list[Callable[[Contact], tuple[str, Any]]] = []
# Called inside the erasure (and retention pseudonymisation) transaction, after the crm side
# is pseudonymised: messaging pseudonymises message bodies here.
ERASURE_HOOKS: list[Callable[[Contact], None]] = []

EXPORT_FORMAT_VERSION = 1
# GDPR Art. 12(3): answer within one month of receipt.
DSR_DUE_MONTHS = 1

OPEN_PERM = "consent.add_datasubjectrequest"
HANDLE_PERM = "consent.change_datasubjectrequest"

# The evidence fields that are personal data; `digest` and `consent_text` stay as proof.
EVIDENCE_BLANK: dict[str, Any] = {
    "ip_address": None,
    "user_agent": "",
    "source_url": "",
    "message_text": "",
    "note": "",
    "inbound_message_ref": "",
}


class SubjectRequestInvalid(DomainError):
    code = "dsr_invalid"


class SubjectRequestClosed(DomainError):
    code = "dsr_closed"
    status_code = 409


class IdentityNotVerified(DomainError):
    code = "identity_not_verified"
    status_code = 409


@dataclass(frozen=True)
class ErasureResult:
    """What an erasure did, for the case's outcome."""

    addresses_suppressed: int
    consents_withdrawn: int
    evidence_blanked: int


def add_months(value: dt.datetime, months: int) -> dt.datetime:
    """The same day `months` later, clamped to the month's end (31 Jan + 1 month = 28/29 Feb)."""
    index = value.month - 1 + months
    year, month = value.year + index // 12, index % 12 + 1
    return value.replace(
        year=year, month=month, day=min(value.day, calendar.monthrange(year, month)[1])
    )


def _actor_label(actor: AbstractBaseUser | None) -> str:
    return actor.get_username() if actor is not None else "system"


def _ensure_may(actor: AbstractBaseUser | None, perm: str, team_id: int) -> None:
    if actor is not None and not crm_selectors.user_may_write(actor, perm, team_id):
        raise PermissionRefused(_("You may not handle data-subject requests of this team."))


def _locked_open(request: DataSubjectRequest, actor: AbstractBaseUser | None) -> DataSubjectRequest:
    _ensure_may(actor, HANDLE_PERM, request.team_id)
    # Lock: two people must not execute (or reject) the same case at once.
    locked = (
        DataSubjectRequest.objects.select_for_update().select_related("contact").get(pk=request.pk)
    )
    if locked.status != DataSubjectRequest.Status.OPEN:
        raise SubjectRequestClosed(
            _("This request is already closed: %(status)s.")
            % {"status": locked.get_status_display()}
        )
    return locked


@transaction.atomic
def dsr_open(
    *,
    contact: Contact,
    kind: str,
    actor: AbstractBaseUser | None,
    received_at: dt.datetime | None = None,
    identity_method: str = "",
) -> DataSubjectRequest:
    """Record a data-subject request as a case, due one month after receipt (Art. 12(3)).

    An `identity_method` given here marks the identity as verified on intake (for example,
    the request came from the address on file).
    """
    if kind not in DataSubjectRequest.Kind.values:
        raise SubjectRequestInvalid(
            _("Unknown kind of request “%(kind)s”.") % {"kind": kind}, field="kind"
        )
    _ensure_may(actor, OPEN_PERM, contact.team_id)
    now = timezone.now()
    received_at = received_at or now
    if received_at > now + FUTURE_TOLERANCE:
        raise SubjectRequestInvalid(
            _("A request cannot be received in the future."), field="received_at"
        )
    identity_method = identity_method.strip()
    return DataSubjectRequest.objects.create(
        team_id=contact.team_id,
        contact=contact,
        kind=kind,
        received_at=received_at,
        due_at=add_months(received_at, DSR_DUE_MONTHS),
        identity_verified=bool(identity_method),
        identity_method=identity_method[:200],
    )


@transaction.atomic
def dsr_verify_identity(
    *, request: DataSubjectRequest, actor: AbstractBaseUser | None, method: str
) -> DataSubjectRequest:
    """Record how the requester proved to be the data subject; needed before execution."""
    method = (method or "").strip()
    if not method:
        raise SubjectRequestInvalid(
            _("Say how the identity was verified (e.g. “reply from the address on file”)."),
            field="method",
        )
    request = _locked_open(request, actor)
    request.identity_verified = True
    request.identity_method = method[:200]
    request.save(update_fields=["identity_verified", "identity_method", "updated_at"])
    return request


@transaction.atomic
def dsr_reject(
    *, request: DataSubjectRequest, actor: AbstractBaseUser | None, reason: str
) -> DataSubjectRequest:
    """Close a case without acting on it (e.g. identity could not be verified), with a reason."""
    reason = (reason or "").strip()
    if not reason:
        raise SubjectRequestInvalid(_("A rejection needs a reason."), field="reason")
    request = _locked_open(request, actor)
    _complete(request, actor, DataSubjectRequest.Status.REJECTED, reason)
    return request


def _complete(
    request: DataSubjectRequest, actor: AbstractBaseUser | None, status: str, outcome: str
) -> None:
    request.status = status
    request.outcome = outcome
    request.completed_at = timezone.now()
    request.handled_by = actor
    request.handled_by_label = _actor_label(actor)
    # Only the closing fields: erasure may have scrubbed other fields of this row meanwhile.
    request.save(
        update_fields=[
            "status",
            "outcome",
            "completed_at",
            "handled_by",
            "handled_by_label",
            "result_file",
            "updated_at",
        ]
    )


@transaction.atomic
def dsr_execute(
    *, request: DataSubjectRequest, actor: AbstractBaseUser | None
) -> DataSubjectRequest:
    """Carry out an open, identity-verified request and close the case with its outcome."""
    request = _locked_open(request, actor)
    if not request.identity_verified:
        raise IdentityNotVerified(
            _("Verify the requester's identity before executing the request.")
        )
    contact = request.contact
    kinds = DataSubjectRequest.Kind
    if request.kind == kinds.ACCESS:
        export = contact_access_export(contact)
        body = json.dumps(export, indent=2, ensure_ascii=False).encode("utf-8")
        request.result_file.save(f"dsr-{request.pk}-access.json", ContentFile(body), save=False)
        outcome = gettext("Access export written (%(sections)d sections).") % {
            "sections": len(export)
        }
    elif request.kind == kinds.ERASURE:
        result = contact_erase(contact=contact, actor=actor, request=request)
        outcome = gettext(
            "Personal data pseudonymised; %(addresses)d addresses suppressed, %(consents)d "
            "consents withdrawn, %(evidence)d evidence records blanked."
        ) % {
            "addresses": result.addresses_suppressed,
            "consents": result.consents_withdrawn,
            "evidence": result.evidence_blanked,
        }
    elif request.kind == kinds.RESTRICTION:
        contact_restrict(contact=contact, actor=actor)
        outcome = gettext("Processing restricted: the contact is kept but not messaged.")
    else:
        count = contact_object(contact=contact, actor=actor, request=request)
        outcome = gettext("Objection recorded; %(count)d marketing consents withdrawn.") % {
            "count": count
        }
    _complete(request, actor, DataSubjectRequest.Status.COMPLETED, outcome)
    return request


def _iso(value: dt.datetime | dt.date | None) -> str | None:
    return value.isoformat() if value is not None else None


def _evidence_export(evidence: ConsentEvidence) -> dict[str, Any]:
    text = evidence.consent_text
    return {
        "digest": evidence.digest,
        "consent_text": None
        if text is None
        else {
            "purpose": text.purpose.key,
            "version": text.version,
            "language": text.language,
            "wording": text.body,
            "content_hash": text.content_hash,
        },
        "ip_address": evidence.ip_address,
        "user_agent": evidence.user_agent,
        "source_url": evidence.source_url,
        "message_text": evidence.message_text,
        "inbound_message_ref": evidence.inbound_message_ref,
        "note": evidence.note,
        "collected_at": _iso(evidence.collected_at),
        "recorded_by": evidence.actor_label,
        "erased_at": _iso(evidence.erased_at),
    }


def _history_export(rows: QuerySet, fields: list[str]) -> list[dict[str, Any]]:
    return [
        {
            "changed_at": _iso(row.history_date),
            "change": row.get_history_type_display(),
            "reason": row.history_change_reason or "",
            "changed_by": row.history_user.get_username() if row.history_user else "",
            **{name: getattr(row, name) for name in fields},
        }
        for row in rows.select_related("history_user").order_by("history_date", "history_id")
    ]


CONTACT_EXPORT_FIELDS = [*crm_services.CONTACT_FIELDS, "is_restricted", "erased_at"]
POINT_EXPORT_FIELDS = ["channel", "address", "is_primary"]


def contact_access_export(contact: Contact) -> dict[str, Any]:
    """Everything held about one contact (GDPR Art. 15 and 20), as JSON-serialisable data.

    Contact, addresses, tags, consent state, the consent ledger with its evidence and the
    wording agreed to, opt-in requests, earlier requests, edit history, plus the sections
    that later apps register in ACCESS_EXPORT_SECTIONS.
    """
    events = (
        ConsentEvent.objects.filter(contact=contact)
        .select_related("purpose", "evidence", "evidence__consent_text__purpose")
        .order_by("sequence")
    )
    export: dict[str, Any] = {
        "export": {
            "format_version": EXPORT_FORMAT_VERSION,
            "generated_at": _iso(timezone.now()),
            "contact_id": contact.pk,
            "team": contact.team.name,
        },
        "contact": {
            "id": contact.pk,
            **{name: getattr(contact, name) for name in CONTACT_EXPORT_FIELDS},
            "created_at": _iso(contact.created_at),
            "updated_at": _iso(contact.updated_at),
        },
        "contact_points": [
            {name: getattr(point, name) for name in POINT_EXPORT_FIELDS}
            | {"created_at": _iso(point.created_at)}
            for point in ContactPoint.objects.filter(contact=contact).order_by("channel", "id")
        ],
        "tags": sorted(contact.tags.values_list("name", flat=True)),
        "consents": [
            {
                "purpose": consent.purpose.key,
                "purpose_name": consent.purpose.name,
                "channel": consent.channel,
                "status": consent.status,
                "since": _iso(consent.since),
                "valid_until": _iso(consent.valid_until),
            }
            for consent in Consent.objects.filter(contact=contact)
            .select_related("purpose")
            .order_by("purpose__key", "channel")
        ],
        "consent_events": [
            {
                "sequence": event.sequence,
                "purpose": event.purpose.key,
                "channel": event.channel,
                "action": event.action,
                "source": event.source,
                "occurred_at": _iso(event.occurred_at),
                "recorded_at": _iso(event.recorded_at),
                "previous_hash": event.previous_hash,
                "hash": event.hash,
                "evidence": _evidence_export(event.evidence),
            }
            for event in events
        ],
        "opt_in_requests": [
            {
                "purpose": request.purpose.key,
                "channel": request.channel,
                "requested_at": _iso(request.created_at),
                "expires_at": _iso(request.expires_at),
                "confirmed_at": _iso(request.confirmed_at),
            }
            for request in OptInRequest.objects.filter(contact=contact)
            .select_related("purpose")
            .order_by("created_at")
        ],
        "possible_withdrawals": [
            {
                "channel": review.channel,
                "text": review.text,
                "status": review.status,
                "received_at": _iso(review.created_at),
            }
            for review in WithdrawalReview.objects.filter(contact=contact).order_by("created_at")
        ],
        "data_subject_requests": [
            {
                "id": case.pk,
                "kind": case.kind,
                "status": case.status,
                "received_at": _iso(case.received_at),
                "due_at": _iso(case.due_at),
                "completed_at": _iso(case.completed_at),
                "outcome": case.outcome,
            }
            for case in DataSubjectRequest.objects.filter(contact=contact).order_by("received_at")
        ],
        "history": {
            "contact": _history_export(
                Contact.history.filter(id=contact.pk), CONTACT_EXPORT_FIELDS
            ),
            "contact_points": _history_export(
                ContactPoint.history.filter(contact_id=contact.pk), ["id", *POINT_EXPORT_FIELDS]
            ),
        },
    }
    for section in ACCESS_EXPORT_SECTIONS:
        name, data = section(contact)
        if name in export:
            raise ValueError(f"access export section {name!r} is registered twice")
        export[name] = data
    # One round through JSON: dates, decimals and lazy strings become plain JSON values.
    return json.loads(json.dumps(export, cls=DjangoJSONEncoder))


def evidence_blank(evidence: QuerySet[ConsentEvidence], *, now: dt.datetime | None = None) -> int:
    """Blank the personal data of consent evidence, keeping its digest (the chain's proof)."""
    return evidence.filter(erased_at__isnull=True).update(
        **EVIDENCE_BLANK, erased_at=now or timezone.now()
    )


def contact_consents_end(
    *, contact: Contact, action: str, source: str, note: str, actor: AbstractBaseUser | None
) -> int:
    """Append `action` (withdrawn / expired) for every consent of the contact still in force.

    Channels a purpose no longer allows cannot be recorded by consent_record; those rows are
    skipped (they cannot be messaged either).
    """
    ended = 0
    open_rows = (
        Consent.objects.filter(contact=contact)
        .exclude(status__in=[ConsentStatus.WITHDRAWN, ConsentStatus.EXPIRED])
        .select_related("purpose")
        .order_by("purpose_id", "channel")
    )
    for consent in open_rows:
        if consent.channel not in (consent.purpose.allowed_channels or []):
            continue
        consent_record(
            contact=contact,
            purpose=consent.purpose,
            channel=consent.channel,
            action=action,
            source=source,
            evidence=Evidence(note=note),
            actor=actor,
        )
        ended += 1
    return ended


def contact_pseudonymise_all(
    *, contact: Contact, actor: AbstractBaseUser | None, now: dt.datetime
) -> int:
    """Pseudonymise everything consent and crm hold about a contact; returns evidence blanked.

    Shared by erasure and retention: evidence and review texts blanked, the crm side
    pseudonymised (fields, addresses, history), then the ERASURE_HOOKS of later apps. Earlier
    access exports of the contact are deleted once the transaction commits.
    """
    blanked = evidence_blank(ConsentEvidence.objects.filter(event__contact=contact), now=now)
    WithdrawalReview.objects.filter(contact=contact).update(
        text="", matched="", inbound_message_ref=""
    )
    found = privacy.contact_pseudonymise(contact=contact, actor=actor, erased_at=now)
    cases = DataSubjectRequest.objects.filter(contact=contact)
    for case in cases:
        cleaned = privacy.scrub_text(case.identity_method, found.terms)
        if cleaned != case.identity_method:
            cases.filter(pk=case.pk).update(identity_method=cleaned)
    _delete_exports(cases.exclude(result_file=""))
    for hook in ERASURE_HOOKS:
        hook(contact)
    return blanked


def _delete_exports(cases: QuerySet[DataSubjectRequest]) -> None:
    for case in cases:
        storage, name = case.result_file.storage, case.result_file.name
        transaction.on_commit(lambda storage=storage, name=name: storage.delete(name))
    cases.update(result_file="")


@transaction.atomic
def contact_erase(
    *,
    contact: Contact,
    actor: AbstractBaseUser | None,
    request: DataSubjectRequest | None = None,
) -> ErasureResult:
    """GDPR Art. 17: suppress the contact's addresses, withdraw its consents, pseudonymise it.

    The consent events stay (ids and hashes only) and still verify; the suppression list keeps
    the address hashes so the addresses are never messaged again. Idempotent.
    """
    _ensure_may(actor, HANDLE_PERM, contact.team_id)
    contact = Contact.objects.select_for_update().get(pk=contact.pk)
    now = timezone.now()
    note = (
        gettext("Erasure request #%(id)s") % {"id": request.pk}
        if request is not None
        else gettext("Erasure")
    )
    # Every address the contact has or had, taken before pseudonymising replaces them.
    addresses = privacy.contact_addresses(contact)
    for channel, address in addresses:
        suppression_add(
            address=address,
            channel=channel,
            reason=Suppression.Reason.ERASURE,
            team=contact.team,
            note=note,
        )
    # Withdraw first: the withdrawal events are recorded while the contact is still whole.
    withdrawn = contact_consents_end(
        contact=contact,
        action=ConsentAction.WITHDRAWN,
        source=ConsentSource.DATA_SUBJECT_REQUEST,
        note=note,
        actor=actor,
    )
    blanked = contact_pseudonymise_all(contact=contact, actor=actor, now=now)
    return ErasureResult(
        addresses_suppressed=len(addresses), consents_withdrawn=withdrawn, evidence_blanked=blanked
    )


@transaction.atomic
def contact_restrict(*, contact: Contact, actor: AbstractBaseUser | None) -> Contact:
    """GDPR Art. 18: keep the contact, stop processing it (no messages, no new grants)."""
    return privacy.contact_restriction_set(
        contact=contact, restricted=True, actor=actor, perm=HANDLE_PERM
    )


@transaction.atomic
def contact_restriction_lift(*, contact: Contact, actor: AbstractBaseUser | None) -> Contact:
    """End a restriction (Art. 18(3): tell the data subject before lifting it)."""
    return privacy.contact_restriction_set(
        contact=contact, restricted=False, actor=actor, perm=HANDLE_PERM
    )


@transaction.atomic
def contact_object(
    *,
    contact: Contact,
    actor: AbstractBaseUser | None,
    request: DataSubjectRequest | None = None,
) -> int:
    """GDPR Art. 21: withdraw every marketing purpose of the team on every channel it allows.

    Also where no consent row exists yet, so the ledger shows the objection for each channel
    and only a fresh, newer consent can grant again. Returns how many withdrawals were recorded.
    """
    _ensure_may(actor, HANDLE_PERM, contact.team_id)
    note = (
        gettext("Objection request #%(id)s") % {"id": request.pk}
        if request is not None
        else gettext("Objection")
    )
    current = {
        (purpose_id, channel): status
        for purpose_id, channel, status in Consent.objects.filter(contact=contact).values_list(
            "purpose_id", "channel", "status"
        )
    }
    withdrawn = 0
    marketing = Purpose.objects.filter(team_id=contact.team_id, is_marketing=True).order_by("pk")
    for purpose in marketing:
        for channel in sorted(set(purpose.allowed_channels or [])):
            if current.get((purpose.pk, channel)) == ConsentStatus.WITHDRAWN:
                continue
            consent_record(
                contact=contact,
                purpose=purpose,
                channel=channel,
                action=ConsentAction.WITHDRAWN,
                source=ConsentSource.DATA_SUBJECT_REQUEST,
                evidence=Evidence(note=note),
                actor=actor,
            )
            withdrawn += 1
    return withdrawn
