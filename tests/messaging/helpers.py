"""Messaging test helpers: sendable templates, consented contacts, inbound messages.

Everything goes through the real services (approvals, consent, messaging), so chains,
projections and gate inputs stay true.
"""

from __future__ import annotations

import datetime as dt
import itertools

from django.utils import timezone

from approvals.models import TemplateCategory, TemplateVersion
from approvals.services import (
    policy_create,
    review_decide,
    template_create,
    template_provider_status_update,
    template_version_create,
    template_version_provider_submit,
    template_version_submit,
)
from crm import roles
from crm.models import Channel
from messaging.models import (
    ChannelAccount,
    Direction,
    Message,
    MessageKind,
    MessageStatus,
    SenderKind,
)
from messaging.services import conversation_for, message_record
from tests.approvals.review_helpers import group
from tests.factories import ContactFactory, ContactPointFactory, UserFactory

_names = itertools.count(1)

ADDRESSES = {
    Channel.WHATSAPP: "+4915112345{:03d}",
    Channel.SMS: "+4917012345{:03d}",
    Channel.EMAIL: "person{:03d}@example.org",
}


def sendable_version(
    team,
    *,
    channel: str = Channel.WHATSAPP,
    purpose=None,
    category: str | None = None,
    body: str = "Hallo {{ first_name }}, heute läuft ein neuer Film.",
    language: str = "de",
    name: str | None = None,
) -> TemplateVersion:
    """An approved (and, for WhatsApp, provider-approved) version, through the real services."""
    category = category or (TemplateCategory.MARKETING if purpose else TemplateCategory.UTILITY)
    reviewer = UserFactory(username=f"reviewer-{next(_names)}")
    reviewer.groups.add(group(roles.REVIEWER_EDITORIAL))
    from approvals.models import ApprovalPolicy

    if not ApprovalPolicy.objects.filter(team=team, category=category).exists():
        policy_create(
            team=team,
            category=category,
            name=f"Editorial {category}",
            stages=[("Editorial", group(roles.REVIEWER_EDITORIAL), 1)],
            actor=None,
        )
    from crm.services import team_member_add

    team_member_add(team=team, user=reviewer)
    template = template_create(
        team=team,
        name=name or f"message_{next(_names)}",
        channel=channel,
        category=category,
        language=language,
        purpose=purpose,
        actor=None,
    )
    fields = {"body": body}
    if channel == Channel.EMAIL:
        fields["subject"] = "Neues aus dem Kino"
    version = template_version_create(template=template, actor=None, **fields)
    version = template_version_submit(version=version, actor=None)
    review_decide(
        version=version,
        reviewer=reviewer,
        decision="approve",
        content_hash=version.content_hash,
    )
    if channel == Channel.WHATSAPP:
        template_version_provider_submit(version_id=version.pk)
        template_provider_status_update(status="APPROVED", name=template.name, language=language)
    version.refresh_from_db()
    return version


def reachable_contact(team, channel: str = Channel.WHATSAPP, **fields):
    """A contact with one address on `channel`."""
    contact = ContactFactory(team=team, **fields)
    number = next(_names)
    ContactPointFactory(
        contact=contact, channel=channel, address=ADDRESSES[channel].format(number % 1000)
    )
    return contact


def receive_text(
    account: ChannelAccount, contact, text: str = "Hallo", *, at: dt.datetime | None = None
) -> Message:
    """Record an inbound message (opens the service window) as the webhook service would."""
    from django.db import transaction

    with transaction.atomic():
        conversation = conversation_for(contact=contact, account=account)
        return message_record(
            conversation=conversation,
            direction=Direction.INBOUND,
            kind=MessageKind.TEXT,
            body=text,
            sender_kind=SenderKind.CONTACT,
            status=MessageStatus.RECEIVED,
            provider_message_id=f"in-{next(_names)}",
            occurred_at=at or timezone.now(),
        )


def exported_event(line: dict):
    """An exported event line (events.jsonl) as the object ConversationEvent.chain_payload
    hashes, to recompute a chain from an export."""
    from messaging.services import exports

    return exports._ExportedEvent(
        conversation_id=line["conversation"],
        sequence=line["sequence"],
        kind=line["kind"],
        message_id=line["message"],
        actor_label=line["actor_label"],
        data=line["data"],
        occurred_at=dt.datetime.fromisoformat(line["occurred_at"]),
        recorded_at=dt.datetime.fromisoformat(line["recorded_at"]),
    )
