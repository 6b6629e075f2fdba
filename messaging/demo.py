"""Demo data for messaging: console senders, automation rules and a few live conversations.

Conversations are made the way real ones are: inbound messages go through the webhook
service (consent keywords, hand-off words, automation), replies through the send gate with
the console provider. Registered as a crm demo step from MessagingConfig.ready(); accounts
and rules that exist are kept, and conversations are only played once per account.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Final

from django.utils import timezone
from django.utils.translation import gettext as _

from approvals.models import MessageTemplate
from consent.models import Consent, ConsentStatus
from crm.demo import DemoContext, DemoStep
from crm.models import Channel, Contact, Team
from messaging.errors import SendRefused
from messaging.models import (
    AgentPresence,
    AutomationRule,
    ChannelAccount,
    PresenceStatus,
    RuleAction,
)
from messaging.services import message_send
from messaging.services.automation import automation_rule_create
from messaging.services.conversations import agent_presence_set
from messaging.services.inbound import inbound_message_receive
from messaging.webhooks.events import PROVIDER_WHATSAPP, InboundMessage


@dataclass(frozen=True)
class DemoAccount:
    team_slug: str
    slug: str
    name: str
    channel: str
    address: str


DEMO_ACCOUNTS: Final = (
    DemoAccount(
        "kino-nord", "kino-nord-whatsapp", "Kino Nord WhatsApp", Channel.WHATSAPP, "+4940123450"
    ),
    DemoAccount("kino-nord", "kino-nord-sms", "Kino Nord SMS", Channel.SMS, "+4940123451"),
    DemoAccount(
        "kino-nord",
        "kino-nord-mail",
        "Kino Nord Newsletter",
        Channel.EMAIL,
        "programm@kino-nord.example.com",
    ),
    DemoAccount(
        "apotheke-am-markt", "apotheke-sms", "Apotheke am Markt SMS", Channel.SMS, "+4930987650"
    ),
)
# What demo contacts write, in order, to the Kino Nord WhatsApp number.
DEMO_DIALOGS: Final = (
    ("Hallo, was läuft heute Abend?", "TIPP"),
    ("Kann mich ein Berater anrufen? Es geht um eine Gruppenbuchung.",),
    ("Hallo! Gibt es noch Karten für Sonntag?",),
    ("STOPP",),
)


def _accounts(ctx: DemoContext) -> dict[str, ChannelAccount]:
    accounts = {}
    for spec in DEMO_ACCOUNTS:
        team = ctx.teams.get(spec.team_slug)
        if team is None:
            continue
        account, _created = ChannelAccount.objects.get_or_create(
            slug=spec.slug,
            defaults={
                "team": team,
                "name": spec.name,
                "channel": spec.channel,
                "provider": "console",
                "address": spec.address,
                "quiet_hours_start": dt.time(21, 0),
                "quiet_hours_end": dt.time(8, 0),
                "first_response_minutes": 30,
            },
        )
        accounts[spec.slug] = account
    return accounts


def _rules(team: Team) -> int:
    template = MessageTemplate.objects.filter(team=team, name="filmtipp_woche").first()
    if template is None or AutomationRule.objects.filter(team=team).exists():
        return 0
    automation_rule_create(
        team=team,
        actor=None,
        name=_("Film tip on request"),
        keywords=["TIPP", "PROGRAMM"],
        action=RuleAction.REPLY_TEMPLATE,
        template=template,
    )
    return 1


def _agents(ctx: DemoContext) -> None:
    agent = ctx.users.get("agent")
    if agent is not None and not AgentPresence.objects.filter(user=agent).exists():
        agent_presence_set(user=agent, status=PresenceStatus.AVAILABLE, capacity=5, actor=agent)


def _dialog_contacts(account: ChannelAccount, count: int) -> list[Contact]:
    """Contacts with a WhatsApp address, consented to film tips first (TIPP answers them)."""
    consented = Consent.objects.filter(
        contact__team=account.team,
        channel=Channel.WHATSAPP,
        status=ConsentStatus.GRANTED,
        purpose__key="film-tipps",
    ).values("contact_id")
    with_address = Contact.objects.filter(
        team=account.team, points__channel=Channel.WHATSAPP, erased_at__isnull=True
    )
    picked = list(with_address.filter(pk__in=consented).order_by("pk")[:2])
    picked += list(
        with_address.exclude(pk__in=[c.pk for c in picked]).order_by("pk")[: count - len(picked)]
    )
    return picked


def _play(account: ChannelAccount, ctx: DemoContext) -> int:
    if account.conversations.exists():
        return 0
    now = timezone.now()
    messages = 0
    for number, (contact, texts) in enumerate(
        zip(_dialog_contacts(account, len(DEMO_DIALOGS)), DEMO_DIALOGS, strict=False)
    ):
        address = (
            contact.points.filter(channel=Channel.WHATSAPP)
            .values_list("address", flat=True)
            .first()
        )
        for step, text in enumerate(texts):
            inbound_message_receive(
                account=account,
                inbound=InboundMessage(
                    provider=PROVIDER_WHATSAPP,
                    channel=Channel.WHATSAPP,
                    provider_message_id=f"wamid.demo-{account.pk}-{number}-{step}",
                    from_address=address,
                    to_address=account.address,
                    occurred_at=now - dt.timedelta(minutes=40 - number * 5 - step),
                    kind="text",
                    text=text,
                    profile_name=contact.first_name,
                ),
            )
            messages += 1
    # The agent answers the third contact inside the service window.
    agent = ctx.users.get("agent")
    conversation = account.conversations.order_by("pk")[2:3].first()
    if agent is not None and conversation is not None:
        try:
            message_send(
                contact=conversation.contact,
                account=account,
                actor=agent,
                text=_("Yes, there are still tickets for Sunday. Shall I reserve two for you?"),
            )
            messages += 1
        except SendRefused as refusal:
            ctx.say(f"demo reply refused: {refusal.code}")
    return messages


def messaging_demo_step(ctx: DemoContext) -> None:
    accounts = _accounts(ctx)
    rules = sum(_rules(team) for team in ctx.teams.values())
    _agents(ctx)
    whatsapp = accounts.get("kino-nord-whatsapp")
    messages = _play(whatsapp, ctx) if whatsapp else 0
    ctx.say(
        _(
            "Messaging: %(accounts)d channel accounts, %(rules)d automation rules new, "
            "%(messages)d dialog messages."
        )
        % {"accounts": len(accounts), "rules": rules, "messages": messages}
    )


DEMO_STEP: Final = DemoStep("messaging", messaging_demo_step)
