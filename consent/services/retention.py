"""Retention: apply each active RetentionPolicy and record what it did in a RetentionRun.

Data classes and what "pseudonymise" / "delete" mean for each:

- consent_evidence: the personal part of evidence older than `keep_days` is blanked; the
  digest stays, so the ledger still proves evidence existed. Evidence rows cannot be deleted
  (the ledger points at them), so both actions blank. Evidence of a consent still in force is
  kept however old it is: it is the proof of that consent (GDPR Art. 7(1)).
- inactive_contacts: contacts not updated and without consent events for `keep_days` (and
  with no consent in force, no open data-subject request and no activity reported by a later
  app) are pseudonymised like an erasure, minus the suppression list: nobody asked to be
  suppressed, and their consents end as `expired` (not `withdrawn`: they did not withdraw).
  "delete" deletes a contact only if it has no consent events and no request cases; the
  ledger is proof, so such contacts are pseudonymised instead.
- messages: handled by the app that owns messages through RETENTION_HANDLERS["messages"];
  without one the run is recorded with `{"skipped": "no handler"}`.

A team's own active policy for a data class replaces the global one (team empty) for that team.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.db.models import Exists, OuterRef, ProtectedError, Q, QuerySet
from django.utils import timezone

from consent.models import (
    Consent,
    ConsentAction,
    ConsentEvent,
    ConsentEvidence,
    ConsentSource,
    ConsentStatus,
    DataSubjectRequest,
    RetentionPolicy,
    RetentionRun,
)
from consent.services.subjects import (
    EVIDENCE_BLANK,
    contact_consents_end,
    contact_pseudonymise_all,
    evidence_blank,
)
from crm import privacy
from crm.models import Contact

if TYPE_CHECKING:
    from collections.abc import Sequence

logger = logging.getLogger(__name__)

BATCH_SIZE = 500

# handler(policy, cutoff, dry_run=...) -> (records affected, details for the run).
RetentionHandler = Callable[..., tuple[int, dict[str, Any]]]
# Later apps register handlers for their data classes here (messaging: "messages").
RETENTION_HANDLERS: dict[str, RetentionHandler] = {}
# Later apps report contacts active since a cutoff (e.g. with messages): callable(cutoff)
# -> contact ids (a values_list queryset or any iterable). Those contacts are not inactive.
CONTACT_ACTIVITY_SOURCES: list[Callable[[dt.datetime], Iterable[int]]] = []


def _team_scope(policy: RetentionPolicy, team_lookup: str) -> Q:
    """The policy's own team, or (global policy) every team without its own active policy."""
    if policy.team_id is not None:
        return Q(**{team_lookup: policy.team_id})
    own = RetentionPolicy.objects.filter(
        data_class=policy.data_class, is_active=True, team__isnull=False
    ).values("team_id")
    return ~Q(**{f"{team_lookup}__in": own})


def _evidence_due(policy: RetentionPolicy, cutoff: dt.datetime) -> QuerySet[ConsentEvidence]:
    # Everything behind a consent still in force (its request, grant, confirmation) is proof.
    in_force = Consent.objects.filter(
        contact_id=OuterRef("event__contact_id"),
        purpose_id=OuterRef("event__purpose_id"),
        channel=OuterRef("event__channel"),
        status__in=[ConsentStatus.GRANTED, ConsentStatus.PENDING],
    )
    not_blank = Q()
    for name, blank in EVIDENCE_BLANK.items():
        not_blank |= Q(**{f"{name}__isnull": False}) if blank is None else ~Q(**{name: blank})
    return ConsentEvidence.objects.filter(
        _team_scope(policy, "event__team_id"),
        not_blank,
        ~Exists(in_force),
        erased_at__isnull=True,
        event__occurred_at__lt=cutoff,
    )


def _apply_consent_evidence(
    policy: RetentionPolicy, cutoff: dt.datetime, *, now: dt.datetime, dry_run: bool
) -> tuple[int, dict[str, Any]]:
    due = _evidence_due(policy, cutoff)
    if dry_run:
        return due.count(), {}
    blanked = 0
    while True:
        ids = list(due.order_by("pk").values_list("pk", flat=True)[:BATCH_SIZE])
        if not ids:
            return blanked, {"blanked": blanked}
        with transaction.atomic():
            blanked += evidence_blank(ConsentEvidence.objects.filter(pk__in=ids), now=now)


def _inactive_contacts(
    policy: RetentionPolicy, cutoff: dt.datetime, now: dt.datetime
) -> QuerySet[Contact]:
    recent_events = ConsentEvent.objects.filter(contact_id=OuterRef("pk")).filter(
        Q(occurred_at__gte=cutoff) | Q(recorded_at__gte=cutoff)
    )
    in_force = Consent.objects.filter(contact_id=OuterRef("pk")).granted(at=now)
    open_cases = DataSubjectRequest.objects.filter(
        contact_id=OuterRef("pk"), status=DataSubjectRequest.Status.OPEN
    )
    contacts = Contact.objects.filter(
        _team_scope(policy, "team_id"), erased_at__isnull=True, updated_at__lt=cutoff
    ).filter(~Exists(recent_events), ~Exists(in_force), ~Exists(open_cases))
    for source in CONTACT_ACTIVITY_SOURCES:
        contacts = contacts.exclude(pk__in=source(cutoff))
    return contacts


def _retire_contact(contact_id: int, policy: RetentionPolicy, *, now: dt.datetime) -> str | None:
    """Delete or pseudonymise one inactive contact; returns which, or None if it moved on."""
    with transaction.atomic():
        contact = Contact.objects.select_for_update().filter(pk=contact_id).first()
        if contact is None or contact.erased_at is not None:
            return None
        has_proof = (
            ConsentEvent.objects.filter(contact=contact).exists()
            or DataSubjectRequest.objects.filter(contact=contact).exists()
        )
        if policy.action == RetentionPolicy.Action.DELETE and not has_proof:
            try:
                # A savepoint: rows of later apps may still protect the contact.
                with transaction.atomic():
                    privacy.contact_purge(contact=contact)
                return "deleted"
            except ProtectedError:
                logger.info("retention: contact %s is referenced; pseudonymised", contact_id)
        note = f"retention policy #{policy.pk}"
        contact_consents_end(
            contact=contact,
            action=ConsentAction.EXPIRED,
            source=ConsentSource.SYSTEM,
            note=note,
            actor=None,
        )
        contact_pseudonymise_all(contact=contact, actor=None, now=now)
        return "pseudonymised"


def _apply_inactive_contacts(
    policy: RetentionPolicy, cutoff: dt.datetime, *, now: dt.datetime, dry_run: bool
) -> tuple[int, dict[str, Any]]:
    contacts = _inactive_contacts(policy, cutoff, now)
    if dry_run:
        return contacts.count(), {}
    counts = {"deleted": 0, "pseudonymised": 0}
    last_pk = 0
    while True:
        ids = list(
            contacts.filter(pk__gt=last_pk).order_by("pk").values_list("pk", flat=True)[:BATCH_SIZE]
        )
        if not ids:
            return counts["deleted"] + counts["pseudonymised"], counts
        for contact_id in ids:
            done = _retire_contact(contact_id, policy, now=now)
            if done:
                counts[done] += 1
        last_pk = ids[-1]


BUILTIN_HANDLERS: dict[str, Callable[..., tuple[int, dict[str, Any]]]] = {
    RetentionPolicy.DataClass.CONSENT_EVIDENCE: _apply_consent_evidence,
    RetentionPolicy.DataClass.INACTIVE_CONTACTS: _apply_inactive_contacts,
}


def _apply_one(
    policy: RetentionPolicy, *, now: dt.datetime, dry_run: bool
) -> tuple[int, dict[str, Any]]:
    cutoff = now - dt.timedelta(days=policy.keep_days)
    builtin = BUILTIN_HANDLERS.get(policy.data_class)
    if builtin is not None:
        affected, details = builtin(policy, cutoff, now=now, dry_run=dry_run)
    else:
        handler = RETENTION_HANDLERS.get(policy.data_class)
        if handler is None:
            return 0, {"skipped": "no handler"}
        affected, details = handler(policy, cutoff, dry_run=dry_run)
    return affected, {**details, "cutoff": cutoff.isoformat(), "action": policy.action}


def retention_apply(
    *,
    now: dt.datetime | None = None,
    policies: Sequence[RetentionPolicy] | QuerySet[RetentionPolicy] | None = None,
    dry_run: bool = False,
) -> list[RetentionRun]:
    """Apply every active policy (or the given ones) and record one RetentionRun per policy.

    Each contact and each evidence batch is its own transaction, so a failure keeps what was
    done; a policy that fails is recorded with its error and the others still run. With
    `dry_run` nothing changes and the returned runs (unsaved) say how many rows would be hit.
    """
    now = now or timezone.now()
    if policies is None:
        policies = RetentionPolicy.objects.filter(is_active=True).order_by("data_class", "pk")
    runs = []
    for policy in policies:
        try:
            affected, details = _apply_one(policy, now=now, dry_run=dry_run)
        except Exception as exc:
            # The task runs unattended: record the failure and let the next policy run.
            logger.exception("retention policy %s failed", policy.pk)
            affected, details = 0, {"error": f"{type(exc).__name__}: {exc}"}
        run = RetentionRun(policy=policy, ran_at=now, affected=affected, details=details)
        if dry_run:
            run.details = {**details, "dry_run": True}
        else:
            run.save()
        runs.append(run)
    return runs
