"""Reads of the consent app that combine several models (no writes)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _

from consent.models import (
    Consent,
    ConsentEvent,
    ConsentStatus,
    ConsentText,
    DataSubjectRequest,
    Purpose,
    RetentionPolicy,
    RetentionRun,
    Suppression,
    WithdrawalReview,
)
from crm import selectors as crm_selectors
from crm.errors import NotFoundInScope
from crm.ledger import ChainBreak, iter_chains, verify_chain
from crm.models import Channel, Contact, ContactPoint, ContactQuerySet
from crm.segments import SegmentRulesInvalid

if TYPE_CHECKING:
    from crm.selectors import AnyUser

LEDGER_VERIFY_CHUNK_SIZE = 2000


@dataclass(frozen=True)
class LedgerVerification:
    """The outcome of recomputing the consent ledger: counts, and the first broken link."""

    events: int
    chains: int
    broken: ChainBreak | None = None

    @property
    def ok(self) -> bool:
        return self.broken is None


def _evidence_break(contact_id: int, event: ConsentEvent) -> ChainBreak | None:
    """The event's evidence must still be what the chain sealed.

    Erased evidence keeps only its digest, which must still equal the sealed one.
    """
    evidence = event.evidence
    if evidence.digest != event.evidence_digest:
        return ChainBreak(contact_id, event.pk, _("evidence digest does not match the event"))
    if evidence.erased_at is None and evidence.compute_digest() != evidence.digest:
        return ChainBreak(contact_id, event.pk, _("evidence does not match its digest"))
    return None


def _chain_break(contact_id: int, events: list[ConsentEvent]) -> ChainBreak | None:
    """The earliest problem in one contact's chain: a hash link or an evidence mismatch."""
    hash_break = verify_chain(contact_id, events)
    for event in events:
        if hash_break is not None and event.pk == hash_break.entry_id:
            return hash_break
        evidence_break = _evidence_break(contact_id, event)
        if evidence_break is not None:
            return evidence_break
    return hash_break


def consent_ledger_verify(
    contact_id: int | None = None,
    *,
    chunk_size: int = LEDGER_VERIFY_CHUNK_SIZE,
    progress: Callable[[int], None] | None = None,
) -> LedgerVerification:
    """Recompute every contact's hash chain (or one contact's) and each event's evidence digest.

    Streams the ledger in (contact, sequence) order; stops at the first broken link.
    `progress` is called with the number of events checked per chain.
    """
    events = ConsentEvent.objects.select_related("evidence").order_by("contact_id", "sequence")
    if contact_id is not None:
        if not Contact.objects.filter(pk=contact_id).exists():
            raise NotFoundInScope(_("There is no contact with id %(id)s.") % {"id": contact_id})
        events = events.filter(contact_id=contact_id)
    checked = chains = 0
    for chain_contact_id, chain in iter_chains(
        events.iterator(chunk_size=chunk_size), "contact_id"
    ):
        broken = _chain_break(chain_contact_id, chain)
        if broken is not None:
            return LedgerVerification(events=checked, chains=chains, broken=broken)
        checked += len(chain)
        chains += 1
        if progress is not None:
            progress(len(chain))
    return LedgerVerification(events=checked, chains=chains)


def consent_ledger_size(contact_id: int | None = None) -> int:
    """How many events `consent_ledger_verify` will read (for a progress bar)."""
    events = ConsentEvent.objects.all()
    if contact_id is not None:
        events = events.filter(contact_id=contact_id)
    return events.count()


def purposes_visible_to(user: AnyUser) -> QuerySet[Purpose]:
    return Purpose.objects.filter(team_id__in=crm_selectors.visible_team_ids(user)).select_related(
        "team"
    )


def consent_texts_visible_to(user: AnyUser) -> QuerySet[ConsentText]:
    return ConsentText.objects.filter(
        purpose__team_id__in=crm_selectors.visible_team_ids(user)
    ).select_related("purpose", "created_by")


def consents_visible_to(user: AnyUser) -> QuerySet[Consent]:
    """Current consent state rows of contacts the user may see."""
    return Consent.objects.filter(
        contact__team_id__in=crm_selectors.visible_team_ids(user)
    ).select_related("purpose", "contact", "last_event")


def consent_events_visible_to(user: AnyUser) -> QuerySet[ConsentEvent]:
    """The ledger, with evidence and purpose loaded (one query per page)."""
    return ConsentEvent.objects.filter(
        team_id__in=crm_selectors.visible_team_ids(user)
    ).select_related("evidence", "evidence__consent_text", "purpose", "contact")


def suppressions_visible_to(user: AnyUser) -> QuerySet[Suppression]:
    """Entries added by the user's teams; entries of no team (system) only for all-team readers."""
    scope = Q(team_id__in=crm_selectors.visible_team_ids(user))
    if crm_selectors.user_sees_all_teams(user):
        scope |= Q(team__isnull=True)
    return Suppression.objects.filter(scope).select_related("team")


def withdrawal_reviews_visible_to(user: AnyUser) -> QuerySet[WithdrawalReview]:
    return WithdrawalReview.objects.filter(
        team_id__in=crm_selectors.visible_team_ids(user)
    ).select_related("contact", "decided_by")


def consent_state_for(contact: Contact) -> list[Consent]:
    """The contact's current state per purpose and channel, with the deciding events."""
    return list(
        Consent.objects.filter(contact=contact)
        .select_related("purpose", "last_event", "last_event__evidence")
        .order_by("purpose__name", "channel")
    )


class AudienceQuerySet(ContactQuerySet):
    """The contacts of an audience; its size is counted on the projection alone.

    Each contact has at most one Consent row per (purpose, channel) (a unique constraint),
    so counting the audience's projection rows counts its contacts: one index-only count of
    `consent_audience_reachable`, without reading a contact. Only the queryset that
    contacts_with_grant returns counts that way; anything derived from it (a filter, `&`, a
    slice) is a plain Contact queryset that counts by SQL over its own conditions.
    """

    _projection: QuerySet[Consent] | None = None

    def count(self) -> int:
        if self._projection is not None and self._result_cache is None:
            return self._projection.count()
        return super().count()


def audience_consents(
    *, team_id: int, purpose_id: int, channel: str, at: dt.datetime | None = None
) -> QuerySet[Consent]:
    """The projection rows of an audience: current grants of reachable contacts in the team.

    Answered by the partial index `consent_audience_reachable`; `team` and `reachable` are kept
    true by consent_reachability_refresh on every write path of their inputs.
    """
    return Consent.objects.granted(at or timezone.now()).filter(
        purpose_id=purpose_id, channel=channel, team_id=team_id, reachable=True
    )


def contacts_with_grant(
    *, team_id: int, purpose: Purpose | int, channel: str, at: dt.datetime | None = None
) -> QuerySet[Contact]:
    """The audience for (purpose, channel): contacts of the team that may be messaged there.

    A contact qualifies with a current, unexpired grant, processing not restricted, not
    erased, and at least one address on the channel that is not on the suppression list. All
    of that is read from the Consent projection's audience columns (see audience_consents);
    `.count()` on the result is one index-only count. contacts_with_grant_recomputed answers
    the same from the source tables, to verify.
    """
    if isinstance(purpose, Purpose) and purpose.team_id != team_id:
        # Another team's purpose has no audience here (contacts moved away keep old rows).
        return Contact.objects.none()
    purpose_id = purpose if isinstance(purpose, int) else purpose.pk
    rows = audience_consents(team_id=team_id, purpose_id=purpose_id, channel=channel, at=at)
    audience = AudienceQuerySet(model=Contact).filter(pk__in=rows.values("contact_id"))
    audience._projection = rows
    return audience


def contacts_with_grant_recomputed(
    *, team_id: int, purpose: Purpose | int, channel: str, at: dt.datetime | None = None
) -> QuerySet[Contact]:
    """contacts_with_grant worked out from the contacts, addresses and suppression list.

    Slower (it joins three tables and anti-joins the suppression list); used to verify that
    the projection's audience columns agree with their sources.
    """
    if isinstance(purpose, Purpose) and purpose.team_id != team_id:
        return Contact.objects.none()
    at = at or timezone.now()
    purpose_id = purpose if isinstance(purpose, int) else purpose.pk
    granted = Consent.objects.granted(at).filter(
        contact_id=OuterRef("pk"), purpose_id=purpose_id, channel=channel
    )
    suppressed = Suppression.objects.filter(address_hash=OuterRef("address_hash"))
    reachable = ContactPoint.objects.filter(contact_id=OuterRef("pk"), channel=channel).filter(
        ~Exists(suppressed)
    )
    return Contact.objects.filter(
        Exists(granted),
        Exists(reachable),
        team_id=team_id,
        is_restricted=False,
        erased_at__isnull=True,
    )


CONSENT_CONDITION_OPS: Final = frozenset({"granted", "not_granted", "withdrawn", "pending"})


def consent_condition_validate(condition: dict[str, Any]) -> None:
    """Segment rule ``{"field": "consent", "op": ..., "purpose": "<key>", "channel": ...}``.

    `channel` may be left out to mean any channel.
    """
    key = condition.get("purpose")
    if not isinstance(key, str) or not key.strip():
        raise SegmentRulesInvalid(
            _("A consent condition needs “purpose”: the key of a purpose, e.g. “newsletter”.")
        )
    channel = condition.get("channel")
    if channel is not None and channel not in Channel.values:
        raise SegmentRulesInvalid(
            _("“%(channel)s” is not a channel. Channels: %(known)s.")
            % {"channel": channel, "known": ", ".join(Channel.values)}
        )


def consent_condition_q(condition: dict[str, Any], team_id: int) -> Q:
    """EXISTS over the contact's consent rows for the team's purpose with that key."""
    rows = Consent.objects.filter(
        contact_id=OuterRef("pk"),
        purpose__team_id=team_id,
        purpose__key=condition["purpose"].strip(),
    )
    if condition.get("channel"):
        rows = rows.filter(channel=condition["channel"])
    op = condition["op"]
    if op in ("granted", "not_granted"):
        current = Exists(rows.granted())
        return Q(current) if op == "granted" else ~Q(current)
    status = ConsentStatus.WITHDRAWN if op == "withdrawn" else ConsentStatus.PENDING
    return Q(Exists(rows.filter(status=status)))


def suppressed_hashes(hashes: Iterable[str]) -> set[str]:
    """Which of these address hashes are on the suppression list (one query per 1,000)."""
    wanted = sorted(set(hashes))
    found: set[str] = set()
    for start in range(0, len(wanted), 1000):
        chunk = wanted[start : start + 1000]
        found.update(
            Suppression.objects.filter(address_hash__in=chunk).values_list(
                "address_hash", flat=True
            )
        )
    return found


def data_subject_requests_visible_to(user: AnyUser) -> QuerySet[DataSubjectRequest]:
    return DataSubjectRequest.objects.filter(
        team_id__in=crm_selectors.visible_team_ids(user)
    ).select_related("team", "contact", "handled_by")


def data_subject_requests_overdue(
    requests: QuerySet[DataSubjectRequest], at: dt.datetime | None = None
) -> QuerySet[DataSubjectRequest]:
    """Open cases past their due date (GDPR Art. 12(3): one month)."""
    return requests.filter(status=DataSubjectRequest.Status.OPEN, due_at__lt=at or timezone.now())


def retention_policies_visible_to(user: AnyUser) -> QuerySet[RetentionPolicy]:
    """Global policies (no team) and those of the user's visible teams."""
    return RetentionPolicy.objects.filter(
        Q(team__isnull=True) | Q(team_id__in=crm_selectors.visible_team_ids(user))
    ).select_related("team")


def retention_runs_visible_to(user: AnyUser) -> QuerySet[RetentionRun]:
    return RetentionRun.objects.filter(
        Q(policy__team__isnull=True) | Q(policy__team_id__in=crm_selectors.visible_team_ids(user))
    ).select_related("policy", "policy__team")
