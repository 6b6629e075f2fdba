"""Campaigns: create, dry-run, launch, and the batched fan-out through the send gate.

The audience is resolved in SQL (consent join: current grant for purpose + channel, not
suppressed, not restricted) and frozen as CampaignRecipient rows at launch. Batches claim
pending recipients and call `message_send`, the one send gate; the unique (campaign, contact)
row and its status make a relaunch after a crash send nothing twice.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Final

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, F, OuterRef, Q, QuerySet, prefetch_related_objects
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from kombu.exceptions import OperationalError as KombuOperationalError

from approvals.models import TemplateVersion
from approvals.selectors import sendability
from consent.models import Purpose, Suppression
from consent.selectors import contacts_with_grant
from crm import selectors as crm_selectors
from crm.errors import DomainError, PermissionRefused
from crm.models import Contact, ContactPoint, Segment, Team
from messaging.errors import SendRefused
from messaging.models import (
    CAMPAIGN_TRANSITIONS,
    Campaign,
    CampaignRecipient,
    CampaignState,
    CampaignStateChange,
    CampaignTemplate,
    ChannelAccount,
    ChannelMode,
    EventType,
    RecipientStatus,
    SenderKind,
)
from messaging.services.events import event_publish
from messaging.services.gate import (
    GateDecision,
    SendRequest,
    frozen_instance,
    send_gate_evaluate_many,
)
from messaging.services.send import message_send

if TYPE_CHECKING:
    from django.contrib.auth.base_user import AbstractBaseUser

logger = logging.getLogger(__name__)

BATCH_SIZE: Final = 500
ADD_PERM: Final = "messaging.add_campaign"
CHANGE_PERM: Final = "messaging.change_campaign"
# Dry-run buckets: why a contact of the segment would not get the campaign.
NO_CONSENT: Final = "no_consent"
SUPPRESSED: Final = "suppressed"
RESTRICTED: Final = "restricted"
NO_ADDRESS: Final = "no_address"
TEMPLATE_NOT_SENDABLE: Final = "template_not_sendable"


class CampaignInvalid(DomainError):
    code = "campaign_invalid"


class CampaignRefused(DomainError):
    code = "campaign_refused"
    status_code = 409


@dataclasses.dataclass(frozen=True)
class TemplateChoice:
    """One channel of a campaign: the account it sends from and the version it sends."""

    account: ChannelAccount
    template_version: TemplateVersion


@dataclasses.dataclass(frozen=True)
class BatchResult:
    processed: int
    pending: int
    # Seconds until the next batch, so the batch's messages keep to the throttle.
    next_delay: float | None


def _ensure_may(actor: AbstractBaseUser | None, perm: str, team_id: int) -> None:
    if actor is not None and not crm_selectors.user_may_write(actor, perm, team_id):
        raise PermissionRefused(_("You may not manage campaigns of this team."))


def _actor_label(actor: AbstractBaseUser | None) -> str:
    return actor.get_username() if actor is not None else "system"


def _validated_templates(
    *, team: Team, channel_mode: str, templates: Sequence[TemplateChoice]
) -> Purpose:
    """The campaign's purpose, after checking every (account, version) pair can be sent."""
    if not templates:
        raise CampaignInvalid(
            _("Choose a template version for at least one channel."), field="templates"
        )
    if channel_mode == ChannelMode.FIXED and len(templates) != 1:
        raise CampaignInvalid(
            _("A campaign on one fixed channel has exactly one template version."),
            field="templates",
        )
    channels = [choice.account.channel for choice in templates]
    if len(set(channels)) != len(channels):
        raise CampaignInvalid(_("Each channel may appear only once."), field="templates")
    purposes = set()
    for choice in templates:
        version = TemplateVersion.objects.select_related("template", "template__purpose").get(
            pk=choice.template_version.pk
        )
        if choice.account.team_id != team.pk or version.template.team_id != team.pk:
            raise CampaignInvalid(
                _("Accounts and templates must belong to the campaign's team."), field="templates"
            )
        if version.template.channel != choice.account.channel:
            raise CampaignInvalid(
                _("The template of %(channel)s is not written for that channel.")
                % {"channel": choice.account.get_channel_display()},
                field="templates",
            )
        refusal = sendability(version)
        if refusal is not None:
            raise CampaignInvalid(
                _("Template version %(version)s cannot be sent (%(reason)s).")
                % {"version": version.pk, "reason": refusal},
                field="templates",
            )
        purposes.add(version.template.purpose)
    if None in purposes or len(purposes) != 1:
        raise CampaignInvalid(
            _("All templates of a campaign need the same consent purpose."), field="templates"
        )
    return purposes.pop()


def _apply(
    campaign: Campaign,
    *,
    name: str,
    segment: Segment | None,
    channel_mode: str,
    scheduled_at: dt.datetime | None,
    throttle_per_second: int | None,
    templates: Sequence[TemplateChoice],
) -> Campaign:
    if not (name or "").strip():
        raise CampaignInvalid(_("A campaign needs a name."), field="name")
    if segment is not None and segment.team_id != campaign.team_id:
        raise CampaignInvalid(_("The segment belongs to another team."), field="segment")
    if channel_mode not in ChannelMode.values:
        raise CampaignInvalid(_("Unknown channel choice."), field="channel_mode")
    if throttle_per_second is not None and throttle_per_second < 1:
        raise CampaignInvalid(_("The throttle must be at least 1."), field="throttle_per_second")
    campaign.purpose = _validated_templates(
        team=campaign.team, channel_mode=channel_mode, templates=templates
    )
    campaign.name = name.strip()
    campaign.segment = segment
    campaign.channel_mode = channel_mode
    campaign.scheduled_at = scheduled_at
    campaign.throttle_per_second = throttle_per_second
    campaign.save()
    campaign.templates.all().delete()
    CampaignTemplate.objects.bulk_create(
        CampaignTemplate(
            campaign=campaign,
            account=choice.account,
            channel=choice.account.channel,
            template_version=choice.template_version,
            position=position,
        )
        for position, choice in enumerate(templates)
    )
    return campaign


@transaction.atomic
def campaign_create(
    *,
    team: Team,
    actor: AbstractBaseUser | None,
    name: str,
    templates: Sequence[TemplateChoice],
    segment: Segment | None = None,
    channel_mode: str = ChannelMode.FIXED,
    scheduled_at: dt.datetime | None = None,
    throttle_per_second: int | None = None,
) -> Campaign:
    """A draft campaign; every version must be sendable on its account's channel, same purpose."""
    _ensure_may(actor, ADD_PERM, team.pk)
    campaign = Campaign(team=team, created_by=actor)
    return _apply(
        campaign,
        name=name,
        segment=segment,
        channel_mode=channel_mode,
        scheduled_at=scheduled_at,
        throttle_per_second=throttle_per_second,
        templates=templates,
    )


@transaction.atomic
def campaign_update(
    *,
    campaign: Campaign,
    actor: AbstractBaseUser | None,
    name: str,
    templates: Sequence[TemplateChoice],
    segment: Segment | None = None,
    channel_mode: str = ChannelMode.FIXED,
    scheduled_at: dt.datetime | None = None,
    throttle_per_second: int | None = None,
) -> Campaign:
    """Replace a draft's settings with the same checks as on creation; launched ones are fixed."""
    _ensure_may(actor, CHANGE_PERM, campaign.team_id)
    locked = Campaign.objects.select_for_update().select_related("team").get(pk=campaign.pk)
    if locked.state != CampaignState.DRAFT:
        raise CampaignRefused(_("Only a draft campaign can be changed."))
    return _apply(
        locked,
        name=name,
        segment=segment,
        channel_mode=channel_mode,
        scheduled_at=scheduled_at,
        throttle_per_second=throttle_per_second,
        templates=templates,
    )


@transaction.atomic
def campaign_transition(
    *, campaign: Campaign, to: str, actor: AbstractBaseUser | None, reason: str = ""
) -> Campaign:
    """Move a campaign to `to`: the only code that writes Campaign.state (with its trail row)."""
    locked = Campaign.objects.select_for_update().get(pk=campaign.pk)
    if to not in CAMPAIGN_TRANSITIONS[locked.state]:
        raise CampaignRefused(
            _("A %(from)s campaign cannot become %(to)s.") % {"from": locked.state, "to": to}
        )
    now = timezone.now()
    previous = locked.state
    locked.state = to
    locked.state_reason = reason
    fields = ["state", "state_reason", "updated_at"]
    if to == CampaignState.RUNNING and locked.launched_at is None:
        locked.launched_at = now
        fields.append("launched_at")
    if not CAMPAIGN_TRANSITIONS[to]:
        locked.finished_at = now
        fields.append("finished_at")
    locked.save(update_fields=fields)
    CampaignStateChange.objects.create(
        campaign=locked,
        from_state=previous,
        to_state=to,
        actor=actor,
        actor_label=_actor_label(actor),
        reason=reason,
    )
    return locked


def campaign_templates(campaign: Campaign) -> list[CampaignTemplate]:
    """The campaign's channels in fallback order, with account, version, template and its
    purpose loaded (what the send gate reads)."""
    return list(
        campaign.templates.select_related(
            "account", "template_version__template__purpose"
        ).order_by("position", "id")
    )


def _not_sendable(templates: Iterable[CampaignTemplate]) -> str | None:
    for choice in templates:
        refusal = sendability(choice.template_version)
        if refusal is not None:
            return refusal
    return None


def _base_contacts(campaign: Campaign) -> QuerySet[Contact]:
    """The segment (or the whole team), erased contacts left out."""
    if campaign.segment_id is not None:
        contacts = crm_selectors.segment_contacts(campaign.segment)
    else:
        contacts = Contact.objects.filter(team_id=campaign.team_id)
    return contacts.filter(erased_at__isnull=True)


def campaign_audience(campaign: Campaign, channel: str) -> QuerySet[Contact]:
    """Contacts of the segment who may get the campaign on `channel`: one SQL query.

    The segment's rules are ANDed into the grant query itself rather than joined as a second
    scan of the contacts, which would double the work at a million contacts.
    """
    granted = contacts_with_grant(
        team_id=campaign.team_id, purpose=campaign.purpose_id, channel=channel
    )
    if campaign.segment_id is not None:
        granted &= crm_selectors.segment_contacts(campaign.segment)
    return granted


def _freeze(campaign: Campaign, templates: Sequence[CampaignTemplate]) -> int:
    """Write the recipients inside the database, one INSERT … SELECT per pass.

    An existing (campaign, contact) row is kept as it is (ON CONFLICT DO NOTHING), so
    insertion order decides the channel: first contacts on their preferred channel, then
    everyone else in the campaign's fallback order. No contact id travels through Python.
    Returns how many recipients the campaign has: those it had (none at a launch, which holds
    the campaign's row) plus those inserted, rather than counting a million fresh rows again.
    """
    passes: list[tuple[CampaignTemplate, QuerySet[Contact]]] = []
    if campaign.channel_mode == ChannelMode.PREFERRED:
        passes += [
            (t, campaign_audience(campaign, t.channel).filter(preferred_channel=t.channel))
            for t in templates
        ]
    passes += [(t, campaign_audience(campaign, t.channel)) for t in templates]
    meta = CampaignRecipient._meta
    columns = ", ".join(
        meta.get_field(name).column
        for name in ("campaign", "contact", "account", "channel", "status", "reason")
    )
    count = campaign.recipients.count()
    with connection.cursor() as cursor:
        for choice, contacts in passes:
            # Ordering is meaningless for an insert and would sort the whole audience.
            audience = contacts.order_by().values(contact=F("pk")).query
            audience_sql, audience_params = audience.sql_with_params()
            cursor.execute(
                f"INSERT INTO {meta.db_table} ({columns}) "  # noqa: S608 - names from the model
                f"SELECT %s, audience.contact, %s, %s, %s, '' FROM ({audience_sql}) AS audience "
                # WHERE true: without it SQLite reads ON CONFLICT as a join constraint.
                "WHERE true ON CONFLICT DO NOTHING",
                [
                    campaign.pk,
                    choice.account_id,
                    choice.channel,
                    RecipientStatus.PENDING,
                    *audience_params,
                ],
            )
            count += cursor.rowcount
    return count


def campaign_dry_run(campaign: Campaign) -> dict[str, int]:
    """How many contacts of the segment would get the campaign, and why the others would not.

    Each contact lands in exactly one bucket (first match: restricted, no address on any of
    the campaign's channels, every address suppressed, no current grant), counted in SQL.
    """
    channels = [t.channel for t in campaign.templates.all()]
    base = _base_contacts(campaign)
    eligible = Q(pk__in=[])
    for channel in channels:
        eligible |= Q(pk__in=campaign_audience(campaign, channel).values("pk"))
    points = ContactPoint.objects.filter(contact_id=OuterRef("pk"), channel__in=channels)
    suppressed = Suppression.objects.filter(address_hash=OuterRef("address_hash"))
    not_eligible = base.exclude(eligible)
    restricted = Q(is_restricted=True)
    has_address = Exists(points)
    unsuppressed = Exists(points.filter(~Exists(suppressed)))
    return {
        "total": base.count(),
        "eligible": base.filter(eligible).count(),
        RESTRICTED: not_eligible.filter(restricted).count(),
        NO_ADDRESS: not_eligible.exclude(restricted).exclude(has_address).count(),
        SUPPRESSED: not_eligible.exclude(restricted)
        .filter(has_address)
        .exclude(unsuppressed)
        .count(),
        NO_CONSENT: not_eligible.exclude(restricted).filter(unsuppressed).count(),
    }


def _enqueue_batch(campaign_id: int, countdown: float | None = None) -> None:
    """Queue the campaign's next batch as a new chain; any older queued batch task of the
    campaign is superseded (it finds another chain recorded and does nothing)."""
    from messaging.tasks import send_campaign_batch as send_campaign_batch_task

    chain = uuid.uuid4()
    Campaign.objects.filter(pk=campaign_id).update(
        next_batch_due_at=timezone.now() + dt.timedelta(seconds=countdown or 0),
        batch_chain=chain,
    )

    def enqueue() -> None:
        try:
            send_campaign_batch_task.apply_async((campaign_id, str(chain)), countdown=countdown)
        except (KombuOperationalError, OSError):
            # The batch (or launch) is committed and its messages wait in the outbox: a broker
            # outage must not fail it. The campaign stays running with its next batch overdue;
            # campaigns_resume_stalled queues it again once the broker is back.
            logger.warning(
                "campaign %s: next batch not queued, broker unavailable; the stalled-campaign "
                "sweep queues it again",
                campaign_id,
            )

    transaction.on_commit(enqueue)


def campaigns_resume_stalled(*, now: dt.datetime | None = None) -> int:
    """Queue the next batch of every running campaign whose batch is overdue by more than
    MESSAGING_CAMPAIGN_STALL_SECONDS (its task lost with the broker or a dead worker);
    returns how many were queued again."""
    now = now or timezone.now()
    overdue_before = now - dt.timedelta(seconds=settings.MESSAGING_CAMPAIGN_STALL_SECONDS)
    stalled = Campaign.objects.filter(
        state=CampaignState.RUNNING, next_batch_due_at__lt=overdue_before
    )
    resumed = 0
    for campaign_id in list(stalled.values_list("pk", flat=True)):
        with transaction.atomic():
            # SKIP LOCKED: a batch that is running right now holds the row; it is not stalled.
            locked = stalled.select_for_update(skip_locked=True).filter(pk=campaign_id).first()
            if locked is None:
                continue
            logger.warning(
                "campaign %s: next batch overdue since %s, queued again",
                campaign_id,
                locked.next_batch_due_at.isoformat(),
            )
            _enqueue_batch(campaign_id)
            resumed += 1
    return resumed


def _start(campaign: Campaign, actor: AbstractBaseUser | None) -> Campaign:
    templates = campaign_templates(campaign)
    campaign = campaign_transition(campaign=campaign, to=CampaignState.RUNNING, actor=actor)
    count = _freeze(campaign, templates)
    Campaign.objects.filter(pk=campaign.pk).update(recipients_count=count)
    campaign.recipients_count = count
    _enqueue_batch(campaign.pk)
    return campaign


@transaction.atomic
def campaign_launch(*, campaign: Campaign, actor: AbstractBaseUser | None) -> Campaign:
    """Start (or schedule) a campaign; on a running one, restart the fan-out after a crash.

    Refused while a template version is not sendable. The audience is frozen in the same
    transaction as the move to running, so a crash never leaves a half-frozen audience.
    """
    _ensure_may(actor, CHANGE_PERM, campaign.team_id)
    locked = Campaign.objects.select_for_update().get(pk=campaign.pk)
    if locked.state == CampaignState.RUNNING:
        # Relaunch: pending recipients continue; processed ones are never sent again.
        _enqueue_batch(locked.pk)
        return locked
    if locked.state not in (CampaignState.DRAFT, CampaignState.SCHEDULED):
        raise CampaignRefused(_("Only a draft or scheduled campaign can be launched."))
    refusal = _not_sendable(campaign_templates(locked))
    if refusal is not None:
        raise CampaignRefused(
            _("A template version of this campaign cannot be sent (%(reason)s).")
            % {"reason": refusal}
        )
    if locked.scheduled_at is not None and locked.scheduled_at > timezone.now():
        if locked.state == CampaignState.SCHEDULED:
            return locked
        # The due time waits in the database; the beat task start_due_campaigns starts it
        # (no long Celery ETAs, which a broker restart could lose or a worker hold for hours).
        return campaign_transition(campaign=locked, to=CampaignState.SCHEDULED, actor=actor)
    return _start(locked, actor)


def campaigns_start_due(*, now: dt.datetime | None = None) -> int:
    """Start every scheduled campaign whose time has come; returns how many started."""
    now = now or timezone.now()
    due = Campaign.objects.filter(state=CampaignState.SCHEDULED, scheduled_at__lte=now).values_list(
        "pk", flat=True
    )
    started = 0
    for campaign_id in list(due):
        campaign = campaign_start_due(campaign_id=campaign_id, now=now)
        started += campaign is not None and campaign.state == CampaignState.RUNNING
    return started


@transaction.atomic
def campaign_start_due(*, campaign_id: int, now: dt.datetime | None = None) -> Campaign | None:
    """Start a scheduled campaign once its time has come (the periodic sweep calls this)."""
    campaign = Campaign.objects.select_for_update().filter(pk=campaign_id).first()
    if campaign is None or campaign.state != CampaignState.SCHEDULED:
        return campaign
    if campaign.scheduled_at is not None and campaign.scheduled_at > (now or timezone.now()):
        return campaign
    refusal = _not_sendable(campaign_templates(campaign))
    if refusal is not None:
        return campaign_transition(
            campaign=campaign, to=CampaignState.STOPPED, actor=None, reason=refusal
        )
    return _start(campaign, None)


@transaction.atomic
def campaign_pause(*, campaign: Campaign, actor: AbstractBaseUser | None) -> Campaign:
    """Pause: the batch in progress finishes, no further batch sends."""
    _ensure_may(actor, CHANGE_PERM, campaign.team_id)
    return campaign_transition(campaign=campaign, to=CampaignState.PAUSED, actor=actor)


@transaction.atomic
def campaign_resume(*, campaign: Campaign, actor: AbstractBaseUser | None) -> Campaign:
    """Resume a paused campaign where it stopped, unless a version is no longer sendable."""
    _ensure_may(actor, CHANGE_PERM, campaign.team_id)
    campaign = Campaign.objects.select_for_update().get(pk=campaign.pk)
    if campaign.state != CampaignState.PAUSED:
        # A draft starts through campaign_launch, which freezes the audience first.
        raise CampaignRefused(_("Only a paused campaign can be resumed."))
    refusal = _not_sendable(campaign_templates(campaign))
    if refusal is not None:
        raise CampaignRefused(
            _("A template version of this campaign cannot be sent (%(reason)s).")
            % {"reason": refusal}
        )
    campaign = campaign_transition(campaign=campaign, to=CampaignState.RUNNING, actor=actor)
    _enqueue_batch(campaign.pk)
    return campaign


@transaction.atomic
def campaign_cancel(*, campaign: Campaign, actor: AbstractBaseUser | None) -> Campaign:
    """Cancel for good: pending recipients stay unsent."""
    _ensure_may(actor, CHANGE_PERM, campaign.team_id)
    return campaign_transition(campaign=campaign, to=CampaignState.CANCELLED, actor=actor)


def campaign_throttle(campaign: Campaign, templates: Sequence[CampaignTemplate]) -> int:
    """Messages per second: the campaign's own, else the slowest account's documented rate."""
    if campaign.throttle_per_second:
        return campaign.throttle_per_second
    return max(1, min((t.account.messages_per_second for t in templates), default=1))


def campaign_batch_decisions(
    recipients: Sequence[CampaignRecipient],
    templates: Sequence[CampaignTemplate],
    at: dt.datetime,
) -> list[GateDecision]:
    """The send gate's decisions for a batch of recipients (contact loaded), in one go."""
    # The gate reads each version's template and purpose: loaded here once per channel (no
    # query when already loaded), not by the gate for every recipient's request.
    prefetch_related_objects([t.template_version for t in templates], "template__purpose")
    by_account = {t.account_id: (t.account, t.template_version) for t in templates}
    requests = []
    for recipient in recipients:
        account, version = by_account[recipient.account_id]
        requests.append(
            frozen_instance(
                SendRequest, contact=recipient.contact, account=account, template_version=version
            )
        )
    return send_gate_evaluate_many(requests, at=at)


def _send_one(
    recipient: CampaignRecipient,
    choice: CampaignTemplate,
    origin: str,
    decision: GateDecision,
    now: dt.datetime,
) -> None:
    """Settle one recipient on the batch's gate decision; the caller saves the recipients."""
    recipient.processed_at = now
    if not decision.allowed:
        recipient.status, recipient.reason = RecipientStatus.REFUSED, decision.reason or ""
        return
    try:
        # A savepoint per recipient: a failure must not undo the batch's other sends.
        with transaction.atomic():
            message = message_send(
                contact=recipient.contact,
                account=choice.account,
                actor=None,
                sender_kind=SenderKind.CAMPAIGN,
                template_version=choice.template_version,
                origin=origin,
                decision=decision,
            )
    except SendRefused as refused:
        recipient.status, recipient.reason = RecipientStatus.REFUSED, refused.code
    except DomainError as error:
        # Rendering and input errors: the gate allowed it, but nothing could be sent.
        recipient.status, recipient.reason = RecipientStatus.FAILED, error.code
    else:
        recipient.status, recipient.message = RecipientStatus.SENT, message


@transaction.atomic
def campaign_send_batch(
    *, campaign_id: int, batch_size: int = BATCH_SIZE, chain: uuid.UUID | str | None = None
) -> BatchResult:
    """Send one batch of pending recipients and schedule the next one, keeping to the throttle.

    Does nothing unless the campaign is running (pause and cancel act here), nor when `chain`
    (given by queued batch tasks) is no longer the campaign's chain. A version that stopped
    being sendable stops the campaign with the reason. The gate decides the whole batch at
    once; refusals are recorded with the batch's outcomes in one bulk update.
    """
    campaign = Campaign.objects.select_for_update().filter(pk=campaign_id).first()
    if campaign is None or campaign.state != CampaignState.RUNNING:
        return BatchResult(processed=0, pending=0, next_delay=None)
    if chain is not None and str(campaign.batch_chain) != str(chain):
        logger.info("campaign %s: batch task of a superseded chain skipped", campaign_id)
        return BatchResult(processed=0, pending=0, next_delay=None)
    templates = campaign_templates(campaign)
    refusal = _not_sendable(templates)
    if refusal is not None:
        campaign_transition(campaign=campaign, to=CampaignState.STOPPED, actor=None, reason=refusal)
        return BatchResult(processed=0, pending=0, next_delay=None)
    by_account = {t.account_id: t for t in templates}
    # SKIP LOCKED: a second worker on the same campaign claims other rows, never these.
    claimed = list(
        campaign.recipients.select_for_update(skip_locked=True, of=("self",))
        .filter(status=RecipientStatus.PENDING)
        .select_related("contact")
        .order_by("id")[:batch_size]
    )
    origin = f"campaign:{campaign.pk}"
    now = timezone.now()
    decisions = campaign_batch_decisions(claimed, templates, now)
    for recipient, decision in zip(claimed, decisions, strict=True):
        _send_one(recipient, by_account[recipient.account_id], origin, decision, now)
    CampaignRecipient.objects.bulk_update(
        claimed, ["status", "reason", "message", "processed_at"], batch_size=BATCH_SIZE
    )
    outcomes = Counter(recipient.status for recipient in claimed)
    Campaign.objects.filter(pk=campaign.pk).update(
        sent_count=F("sent_count") + outcomes[RecipientStatus.SENT],
        refused_count=F("refused_count") + outcomes[RecipientStatus.REFUSED],
        failed_count=F("failed_count") + outcomes[RecipientStatus.FAILED],
    )
    pending = campaign.recipients.filter(status=RecipientStatus.PENDING).count()
    if not pending:
        campaign_transition(campaign=campaign, to=CampaignState.COMPLETED, actor=None)
        event_publish(
            team_id=campaign.team_id,
            event_type=EventType.CAMPAIGN_COMPLETED,
            data={"campaign": campaign.pk},
        )
        return BatchResult(processed=len(claimed), pending=0, next_delay=None)
    delay = len(claimed) / campaign_throttle(campaign, templates)
    _enqueue_batch(campaign.pk, countdown=delay)
    return BatchResult(processed=len(claimed), pending=pending, next_delay=delay)
