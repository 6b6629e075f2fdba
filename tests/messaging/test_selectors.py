"""Messaging reads: team scope, inbox views and their query counts, compliance context."""

import datetime as dt

import pytest
from django.contrib.auth.models import AnonymousUser
from django.utils import timezone

from approvals.services import template_version_create
from crm import roles
from crm.models import Channel
from messaging.errors import InboxViewInvalid
from messaging.models import Conversation, RuleAction
from messaging.selectors import (
    automation_rules_visible_to,
    channel_accounts_visible_to,
    conversation_compliance_context,
    conversation_events_visible_to,
    conversations_visible_to,
    inbox,
    messages_visible_to,
)
from messaging.services import (
    automation_rule_create,
    conversation_assign,
    conversation_hand_off,
    conversation_resolve,
)
from tests.consent.helpers import grant_consent, withdraw_consent
from tests.factories import ChannelAccountFactory, PurposeFactory
from tests.messaging.helpers import reachable_contact, receive_text, sendable_version

pytestmark = pytest.mark.django_db


@pytest.fixture
def account(team):
    return ChannelAccountFactory(team=team)


@pytest.fixture
def foreign_account(other_team):
    return ChannelAccountFactory(team=other_team)


def conversation_on(account, text: str = "Hallo") -> Conversation:
    message = receive_text(account, reachable_contact(account.team, account.channel), text)
    return Conversation.objects.get(pk=message.conversation_id)


@pytest.fixture
def two_teams(account, foreign_account):
    """One conversation and one rule in each team."""
    mine, theirs = conversation_on(account), conversation_on(foreign_account)
    for team in (account.team, foreign_account.team):
        automation_rule_create(
            team=team, actor=None, name="escalate", keywords=["agent"], action=RuleAction.HAND_OFF
        )
    return mine, theirs


def test_an_agent_sees_only_the_conversations_of_their_team(agent, two_teams):
    mine, _theirs = two_teams

    assert list(conversations_visible_to(agent)) == [mine]
    assert {m.conversation_id for m in messages_visible_to(agent)} == {mine.pk}
    assert {e.conversation_id for e in conversation_events_visible_to(agent)} == {mine.pk}
    assert [a.team_id for a in channel_accounts_visible_to(agent)] == [mine.team_id]
    assert {r.team_id for r in automation_rules_visible_to(agent)} == {mine.team_id}


def test_an_outsider_sees_only_their_own_team(outsider, two_teams):
    _mine, theirs = two_teams

    assert list(conversations_visible_to(outsider)) == [theirs]
    assert {m.conversation_id for m in messages_visible_to(outsider)} == {theirs.pk}


def test_auditors_see_every_team_and_strangers_nothing(auditor, make_user, two_teams):
    stranger = make_user("stranger", roles.AGENT)

    assert set(conversations_visible_to(auditor)) == set(two_teams)
    assert conversation_events_visible_to(auditor).count() == 2
    assert automation_rules_visible_to(auditor).count() == 2
    assert not conversations_visible_to(stranger).exists()
    assert not messages_visible_to(AnonymousUser()).exists()
    assert not channel_accounts_visible_to(stranger).exists()


def test_inbox_views(agent, make_user, account, team, foreign_account):
    colleague = make_user("colleague", roles.AGENT, team)
    mine = conversation_assign(conversation=conversation_on(account), agent=agent, actor=agent)
    theirs = conversation_assign(
        conversation=conversation_on(account), agent=colleague, actor=agent
    )
    queued = conversation_hand_off(conversation=conversation_on(account), reason="requested")
    bot = conversation_on(account)
    done = conversation_resolve(
        conversation=conversation_assign(
            conversation=conversation_on(account), agent=agent, actor=agent
        ),
        actor=agent,
    )
    conversation_hand_off(conversation=conversation_on(foreign_account), reason="requested")
    later = timezone.now() + dt.timedelta(hours=2)

    assert list(inbox(agent, view="mine")) == [mine]
    assert list(inbox(agent, view="unassigned")) == [queued]
    assert set(inbox(agent, view="overdue", now=later)) == {mine, theirs, queued}
    assert set(inbox(agent, view="all")) == {mine, theirs, queued, bot}
    assert done not in set(inbox(agent, view="all"))


def test_inbox_filters_by_team_and_channel(agent, account, team, other_team):
    sms_account = ChannelAccountFactory(team=team, channel=Channel.SMS)
    whatsapp = conversation_on(account)
    sms = conversation_on(sms_account)

    assert list(inbox(agent, view="all", channel=Channel.SMS)) == [sms]
    assert set(inbox(agent, view="all", team_id=team.pk)) == {whatsapp, sms}
    assert list(inbox(agent, view="all", team_id=other_team.pk)) == []


def test_an_unknown_inbox_view_is_refused(agent):
    with pytest.raises(InboxViewInvalid) as refused:
        inbox(agent, view="everything")

    assert refused.value.field == "view"


@pytest.mark.parametrize("view", ["mine", "unassigned", "overdue", "all"])
def test_the_inbox_query_count_does_not_grow_with_conversations(
    agent, account, view, django_assert_max_num_queries
):
    for _ in range(12):
        conversation_assign(conversation=conversation_on(account), agent=agent, actor=agent)
    conversation_hand_off(conversation=conversation_on(account), reason="requested")
    later = timezone.now() + dt.timedelta(hours=2)
    agent.__dict__.pop("_crm_member_team_ids", None)

    with django_assert_max_num_queries(3):
        rows = [
            (c.team.name, c.contact.first_name, c.account.name, getattr(c.assigned_to, "pk", None))
            for c in inbox(agent, view=view, now=later)
        ]

    assert rows


@pytest.fixture
def purposes(team):
    granted = PurposeFactory(team=team, name="Kinoprogramm", frequency_cap=None)
    withdrawn = PurposeFactory(team=team, name="Gewinnspiele", frequency_cap=None)
    return granted, withdrawn


def test_compliance_context_names_consents_window_and_usable_templates(
    team, other_team, account, purposes
):
    granted, withdrawn = purposes
    contact = reachable_contact(team)
    grant_consent(contact, granted, "whatsapp")
    grant_consent(contact, withdrawn, "whatsapp")
    withdraw_consent(contact, withdrawn, "whatsapp")
    grant_consent(contact, withdrawn, "email")  # another channel: not this dialog's
    service = sendable_version(team, body="Ihr Ticket ist bereit.")
    programme = sendable_version(team, purpose=granted)
    newer = template_version_create(template=programme.template, actor=None, body="Entwurf")
    sendable_version(team, purpose=withdrawn)  # no consent
    sendable_version(team, channel=Channel.SMS)  # another channel
    sendable_version(other_team)  # another team
    received = receive_text(account, contact, "Hallo")
    conversation = Conversation.objects.get(pk=received.conversation_id)

    context = conversation_compliance_context(conversation)

    assert [c["purpose_name"] for c in context["consents"]] == ["Kinoprogramm"]
    assert context["consents"][0]["purpose"] == granted.pk
    assert context["service_window"]["open"] is True
    assert context["service_window"]["ends_at"] == conversation.service_window_ends_at
    assert context["free_text_allowed"] is True
    versions = {entry["version"] for entry in context["templates"]}
    assert versions == {service.pk, programme.pk}
    assert newer.pk not in versions
    entry = next(e for e in context["templates"] if e["version"] == programme.pk)
    assert (entry["purpose"], entry["purpose_name"]) == (granted.pk, "Kinoprogramm")


def test_compliance_context_after_the_window_closed(team, account, purposes):
    granted, _withdrawn = purposes
    contact = reachable_contact(team)
    grant_consent(contact, granted, "whatsapp")
    sendable_version(team, purpose=granted)
    received = receive_text(account, contact, "Hallo")
    conversation = Conversation.objects.get(pk=received.conversation_id)

    context = conversation_compliance_context(
        conversation, at=timezone.now() + dt.timedelta(hours=25)
    )

    assert context["service_window"]["open"] is False
    assert context["free_text_allowed"] is False
    assert len(context["templates"]) == 1
    assert len(context["consents"]) == 1
