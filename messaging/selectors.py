"""Reads of the messaging app: scoped to the caller's teams first (auditors see all)."""

from __future__ import annotations

import datetime as dt
import time
from typing import TYPE_CHECKING, Any, Final

from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from approvals.models import MessageTemplate, TemplateVersion, VersionState
from approvals.selectors import is_sendable
from consent.models import ConsentStatus
from consent.selectors import consent_state_for
from crm import selectors as crm_selectors
from crm.models import Channel
from messaging.errors import InboxViewInvalid
from messaging.models import (
    AutomationRule,
    ChannelAccount,
    Conversation,
    ConversationEvent,
    ConversationExport,
    ConversationStatus,
    Handler,
    Message,
)

if TYPE_CHECKING:
    from crm.selectors import AnyUser

INBOX_VIEWS: Final = ("mine", "unassigned", "overdue", "all")


def conversations_visible_to(user: AnyUser) -> QuerySet[Conversation]:
    return Conversation.objects.filter(
        team_id__in=crm_selectors.visible_team_ids(user)
    ).select_related("team", "contact", "account", "assigned_to")


def messages_visible_to(user: AnyUser) -> QuerySet[Message]:
    return Message.objects.filter(team_id__in=crm_selectors.visible_team_ids(user)).select_related(
        "conversation", "contact", "account", "template_version", "purpose", "sender"
    )


def conversation_events_visible_to(user: AnyUser) -> QuerySet[ConversationEvent]:
    return ConversationEvent.objects.filter(
        conversation__team_id__in=crm_selectors.visible_team_ids(user)
    ).select_related("conversation", "message", "actor")


def channel_accounts_visible_to(user: AnyUser) -> QuerySet[ChannelAccount]:
    return ChannelAccount.objects.filter(
        team_id__in=crm_selectors.visible_team_ids(user)
    ).select_related("team")


def automation_rules_visible_to(user: AnyUser) -> QuerySet[AutomationRule]:
    return AutomationRule.objects.filter(
        team_id__in=crm_selectors.visible_team_ids(user)
    ).select_related("team", "account", "template")


def _overdue(at: dt.datetime) -> Q:
    """A person owes the first response and its target time has passed."""
    return Q(
        handler=Handler.HUMAN,
        first_response_at__isnull=True,
        first_response_due_at__lt=at,
    ) & ~Q(status=ConversationStatus.RESOLVED)


def conversations_overdue(now: dt.datetime | None = None) -> QuerySet[Conversation]:
    """Every team's conversations whose first human response is late (for alerts and tasks)."""
    return (
        Conversation.objects.filter(_overdue(now or timezone.now()))
        .select_related("team", "contact", "account", "assigned_to")
        .order_by("first_response_due_at", "id")
    )


def inbox(
    user: AnyUser,
    *,
    view: str,
    team_id: int | None = None,
    channel: str | None = None,
    now: dt.datetime | None = None,
) -> QuerySet[Conversation]:
    """The conversations a view of the agent inbox lists (resolved ones are not in it).

    mine: assigned to the user; unassigned: handed to people, waiting for an agent (the
    queue); overdue: first response late; all: everything open or waiting.
    """
    if view not in INBOX_VIEWS:
        raise InboxViewInvalid(
            _("Unknown view “%(view)s”; choose one of: %(views)s.")
            % {"view": view, "views": ", ".join(INBOX_VIEWS)},
            field="view",
        )
    conversations = conversations_visible_to(user).exclude(status=ConversationStatus.RESOLVED)
    if team_id is not None:
        conversations = conversations.filter(team_id=team_id)
    if channel is not None:
        conversations = conversations.filter(channel=channel)
    if view == "mine":
        return conversations.filter(assigned_to_id=user.pk)
    if view == "unassigned":
        return conversations.filter(handler=Handler.HUMAN, assigned_to__isnull=True).order_by(
            "handed_off_at", "id"
        )
    if view == "overdue":
        return conversations.filter(_overdue(now or timezone.now())).order_by(
            "first_response_due_at", "id"
        )
    return conversations


def latest_sendable_version(
    template: MessageTemplate, at: dt.datetime | None = None
) -> TemplateVersion | None:
    """The highest-numbered version of the template that may be sent at `at` (default now)."""
    versions = (
        TemplateVersion.objects.filter(template=template, state=VersionState.APPROVED)
        .select_related("template", "template__purpose")
        .order_by("-number")
    )
    return next((version for version in versions if is_sendable(version, at)), None)


def _template_entry(version: TemplateVersion) -> dict[str, Any]:
    template = version.template
    return {
        "template": template.pk,
        "name": template.name,
        "language": template.language,
        "category": template.category,
        "version": version.pk,
        "number": version.number,
        "purpose": template.purpose_id,
        "purpose_name": template.purpose.name if template.purpose else None,
        "valid_until": version.valid_until,
    }


def conversation_compliance_context(
    conversation: Conversation, at: dt.datetime | None = None
) -> dict[str, Any]:
    """What allows this dialog now: the contact's granted consents on the channel, the
    24-hour service window, whether free text may be sent, and the templates that may be
    used (latest sendable version each; their purpose consented, or none needed)."""
    at = at or timezone.now()
    consents = [
        consent
        for consent in consent_state_for(conversation.contact)
        if consent.channel == conversation.channel
        and consent.status == ConsentStatus.GRANTED
        and (consent.valid_until is None or consent.valid_until > at)
    ]
    window_ends_at = conversation.service_window_ends_at
    window_open = window_ends_at is not None and window_ends_at > at
    if conversation.channel == Channel.WHATSAPP:
        free_text = window_open
    else:
        # Other channels have no window; free text answers only people who wrote (send gate).
        free_text = conversation.last_inbound_at is not None
    granted_purposes = [consent.purpose_id for consent in consents]
    versions = (
        TemplateVersion.objects.filter(
            template__team_id=conversation.team_id,
            template__channel=conversation.channel,
            template__is_active=True,
            state=VersionState.APPROVED,
        )
        .filter(Q(template__purpose__isnull=True) | Q(template__purpose_id__in=granted_purposes))
        .select_related("template", "template__purpose")
        .order_by("template__name", "template__language", "template_id", "-number")
    )
    templates: list[dict[str, Any]] = []
    seen: set[int] = set()
    for version in versions:
        if version.template_id in seen or not is_sendable(version, at):
            continue
        seen.add(version.template_id)
        templates.append(_template_entry(version))
    return {
        "at": at,
        "channel": conversation.channel,
        "consents": [
            {
                "purpose": consent.purpose_id,
                "purpose_key": consent.purpose.key,
                "purpose_name": consent.purpose.name,
                "since": consent.since,
                "valid_until": consent.valid_until,
                "event": consent.last_event_id,
            }
            for consent in consents
        ],
        "service_window": {"open": window_open, "ends_at": window_ends_at},
        "free_text_allowed": free_text,
        "templates": templates,
    }


def exports_visible_to(user: Any) -> QuerySet[ConversationExport]:
    """Who sees all teams sees every export; anyone else only the exports they made."""
    exports = ConversationExport.objects.select_related("actor")
    if crm_selectors.user_sees_all_teams(user):
        return exports
    if not user.is_authenticated:
        return exports.none()
    return exports.filter(actor=user)


def is_overdue(conversation: Conversation, now: dt.datetime) -> bool:
    """The inbox's rule for one loaded conversation: a person owes the first response late."""
    due = conversation.first_response_due_at
    return bool(
        due is not None
        and due < now
        and conversation.handler == Handler.HUMAN
        and conversation.first_response_at is None
        and conversation.status != ConversationStatus.RESOLVED
    )


# How long a process trusts an account it read for a webhook URL (see webhook_account).
ACCOUNT_CACHE_SECONDS: Final = 5.0
# (slug, provider) -> (monotonic expiry, account); dict reads and writes are atomic for threads.
_webhook_accounts: dict[tuple[str, str], tuple[float, ChannelAccount]] = {}


def webhook_account(slug: str, provider: str) -> ChannelAccount | None:
    """The active account behind a webhook URL, remembered for ACCOUNT_CACHE_SECONDS.

    A provider posts to the same URL all day: its query (ORM and round trip) was a large share
    of each request's CPU. A save or delete in this process forgets the account at once
    (receivers.forget_webhook_accounts); other processes see a deactivation within
    ACCOUNT_CACHE_SECONDS. Unknown slugs are not remembered.
    """
    key = (slug, provider)
    now = time.monotonic()
    cached = _webhook_accounts.get(key)
    if cached is not None and cached[0] > now:
        return cached[1]
    account = (
        ChannelAccount.objects.select_related("team")
        .filter(slug=slug, provider=provider, is_active=True)
        .first()
    )
    if account is not None:
        _webhook_accounts[key] = (now + ACCOUNT_CACHE_SECONDS, account)
    return account


def webhook_accounts_forget() -> None:
    # Slugs and providers can change too: forgetting everything is simplest and rare.
    _webhook_accounts.clear()
