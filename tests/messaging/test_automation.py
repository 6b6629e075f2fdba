"""Automation: keyword rules answer with approved templates through the gate, hand off, or
give the default reply; refused replies never break inbound processing. Rule validation."""

import logging

import pytest

from approvals.services import (
    review_decide,
    template_update,
    template_version_create,
    template_version_submit,
)
from crm import roles
from crm.errors import PermissionRefused
from crm.models import Channel
from messaging.errors import AutomationRuleInvalid
from messaging.models import (
    AutomationRule,
    Conversation,
    Direction,
    EventKind,
    Handler,
    Message,
    MessageStatus,
    RuleAction,
    SenderKind,
)
from messaging.providers.console import outbox, outbox_clear
from messaging.services import (
    automation_rule_create,
    automation_rule_update,
    automation_run,
    conversation_inbound_received,
    conversation_take_over,
)
from tests.approvals.review_helpers import group
from tests.consent.helpers import grant_consent
from tests.factories import ChannelAccountFactory, PurposeFactory, UserFactory
from tests.messaging.helpers import reachable_contact, receive_text, sendable_version

pytestmark = pytest.mark.django_db


@pytest.fixture
def account(team):
    return ChannelAccountFactory(team=team)


@pytest.fixture
def contact(team):
    return reachable_contact(team)


@pytest.fixture(autouse=True)
def _empty_console_outbox():
    outbox_clear()
    yield
    outbox_clear()


def rule(team, *, keywords=(), action=RuleAction.REPLY_TEMPLATE, template=None, **fields):
    return automation_rule_create(
        team=team,
        actor=None,
        name=fields.pop("name", f"rule {'/'.join(keywords) or action}"),
        keywords=list(keywords),
        action=action,
        template=template,
        **fields,
    )


def inbound(account, contact, text: str) -> Conversation:
    message = receive_text(account, contact, text)
    conversation_inbound_received(conversation=message.conversation, message=message)
    return Conversation.objects.get(pk=message.conversation_id)


def bot_replies(conversation: Conversation) -> list[Message]:
    return list(
        conversation.messages.filter(direction=Direction.OUTBOUND, sender_kind=SenderKind.BOT)
    )


def approve_next_version(template, body: str):
    """A further approved version of an existing template (SMS: no provider stage)."""
    reviewer = UserFactory(username=f"second-reviewer-{template.pk}-{body[:5]}")
    reviewer.groups.add(group(roles.REVIEWER_EDITORIAL))
    from crm.services import team_member_add

    team_member_add(team=template.team, user=reviewer)
    version = template_version_create(template=template, actor=None, body=body)
    version = template_version_submit(version=version, actor=None)
    review_decide(
        version=version, reviewer=reviewer, decision="approve", content_hash=version.content_hash
    )
    version.refresh_from_db()
    return version


def test_a_keyword_is_answered_with_the_approved_template_through_the_gate(
    team, account, contact, django_capture_on_commit_callbacks
):
    version = sendable_version(team, body="Heute: {{ first_name }}, Kino um 20 Uhr.")
    film = rule(team, keywords=["Film", "Kino"], template=version.template)

    with django_capture_on_commit_callbacks(execute=True):
        conversation = inbound(account, contact, "Welcher FILM läuft heute?")

    [reply] = bot_replies(conversation)
    assert reply.status == MessageStatus.SENT
    assert reply.template_version == version
    assert reply.origin == f"rule:{film.pk}"
    assert reply.gate_decision["allowed"] is True
    assert reply.sender is None
    assert len(outbox) == 1
    assert conversation.handler == Handler.BOT


def test_keywords_match_whole_words_only(team, account, contact):
    version = sendable_version(team)
    rule(team, keywords=["Kino"], template=version.template)

    conversation = inbound(account, contact, "Kinokarten bitte")

    assert bot_replies(conversation) == []


def test_the_latest_sendable_version_is_sent(team):
    account = ChannelAccountFactory(team=team, channel=Channel.SMS)
    contact = reachable_contact(team, Channel.SMS)
    first = sendable_version(team, channel=Channel.SMS, body="Programm: Version eins")
    template = first.template
    rule(team, keywords=["programm"], template=template)
    pending = template_version_create(template=template, actor=None, body="Version zwei")
    template_version_submit(version=pending, actor=None)

    conversation = inbound(account, contact, "Programm?")
    assert [reply.template_version for reply in bot_replies(conversation)] == [first]

    second = approve_next_version(template, "Version drei")
    inbound(account, contact, "Programm!")
    assert bot_replies(conversation)[-1].template_version == second


def test_the_first_matching_rule_by_priority_wins(team, account, contact):
    low = sendable_version(team, body="Allgemein")
    high = sendable_version(team, body="Preise")
    rule(team, keywords=["preis"], template=low.template, priority=200, name="general")
    rule(team, keywords=["tickets"], template=high.template, priority=10, name="prices")

    conversation = inbound(account, contact, "Was kosten Tickets, welcher Preis?")

    assert [reply.template_version for reply in bot_replies(conversation)] == [high]


def test_a_hand_off_rule_hands_the_conversation_to_people(team, account, contact):
    escalate = rule(team, keywords=["Beschwerde"], action=RuleAction.HAND_OFF)

    conversation = inbound(account, contact, "Ich habe eine Beschwerde.")

    assert conversation.handler == Handler.HUMAN
    event = conversation.events.get(kind=EventKind.HANDED_OFF)
    assert event.data == {"reason": f"rule:{escalate.pk}"}
    assert bot_replies(conversation) == []


def test_without_a_keyword_match_the_default_reply_lists_the_options(team, account, contact):
    version = sendable_version(team, body="Schreiben Sie FILM für das Programm oder AGENT.")
    rule(team, keywords=["film"], template=sendable_version(team).template)
    default = rule(team, action=RuleAction.DEFAULT_REPLY, template=version.template)

    conversation = inbound(account, contact, "Guten Tag")

    [reply] = bot_replies(conversation)
    assert (reply.template_version, reply.origin) == (version, f"rule:{default.pk}")


def test_no_rule_means_no_reply(team, account, contact):
    conversation = inbound(account, contact, "Guten Tag")

    assert bot_replies(conversation) == []


def test_a_refused_reply_is_logged_and_does_not_break_inbound(team, account, contact, caplog):
    purpose = PurposeFactory(team=team, allowed_channels=["whatsapp"])
    version = sendable_version(team, purpose=purpose)
    offer = rule(team, keywords=["angebot"], template=version.template)

    with caplog.at_level(logging.INFO, logger="messaging.services.automation"):
        conversation = inbound(account, contact, "Angebot?")

    assert bot_replies(conversation) == []
    assert f"automation rule {offer.pk}: reply not sent (no_consent)" in caplog.text
    assert not Message.objects.filter(direction=Direction.OUTBOUND).exists()
    assert conversation.events.filter(kind=EventKind.MESSAGE_OUT).count() == 0


def test_a_consented_purpose_template_is_sent(team, account, contact):
    purpose = PurposeFactory(team=team, allowed_channels=["whatsapp"], frequency_cap=None)
    grant_consent(contact, purpose, "whatsapp")
    version = sendable_version(team, purpose=purpose)
    rule(team, keywords=["angebot"], template=version.template)

    conversation = inbound(account, contact, "Angebot?")

    assert [reply.purpose for reply in bot_replies(conversation)] == [purpose]


def test_stop_gets_no_default_reply(team, account, contact):
    rule(team, action=RuleAction.DEFAULT_REPLY, template=sendable_version(team).template)

    conversation = inbound(account, contact, "STOP")

    assert bot_replies(conversation) == []


def test_human_conversations_get_no_bot_reply(team, account, contact, agent):
    rule(team, action=RuleAction.DEFAULT_REPLY, template=sendable_version(team).template)
    message = receive_text(account, contact, "Hallo")
    conversation_take_over(conversation=message.conversation, actor=agent)

    conversation = inbound(account, contact, "Noch da?")

    assert bot_replies(conversation) == []
    assert automation_run(conversation=conversation, message=message) is None


def test_rules_of_other_accounts_and_teams_do_not_answer(team, other_team, account, contact):
    version = sendable_version(team)
    elsewhere = ChannelAccountFactory(team=team)
    rule(team, keywords=["film"], template=version.template, account=elsewhere)
    foreign = sendable_version(other_team)
    rule(other_team, keywords=["film"], template=foreign.template)

    conversation = inbound(account, contact, "film")

    assert bot_replies(conversation) == []


def test_a_rule_without_a_sendable_version_sends_nothing(team, account, contact):
    version = sendable_version(team)
    rule(team, keywords=["film"], template=version.template)
    template_update(template=version.template, actor=None, is_active=False)

    conversation = inbound(account, contact, "film")

    assert bot_replies(conversation) == []


def test_marketing_creates_a_rule_with_clean_keywords(team, marketing):
    version = sendable_version(team)

    created = automation_rule_create(
        team=team,
        actor=marketing,
        name="  Programm ",
        keywords=[" Film ", "film", "KINO  heute"],
        action=RuleAction.REPLY_TEMPLATE,
        template=version.template,
    )

    assert created.name == "Programm"
    assert created.keywords == ["Film", "KINO heute"]
    assert created.history.first().history_user == marketing


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"keywords": "film"}, "keywords"),
        ({"keywords": []}, "keywords"),
        ({"keywords": ["film", ""]}, "keywords"),
        ({"keywords": ["film", 3]}, "keywords"),
        ({"keywords": ["!!!"]}, "keywords"),
        ({"keywords": ["STOP"]}, "keywords"),
        ({"keywords": ["x" * 61]}, "keywords"),
        ({"name": ""}, "name"),
        ({"action": "dance"}, "action"),
        ({"priority": -1}, "priority"),
        ({"priority": "1"}, "priority"),
        ({"template": None}, "template"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_invalid_rules_are_refused(team, fields, field):
    template = sendable_version(team).template
    values = {
        "name": "Programm",
        "keywords": ["film"],
        "action": RuleAction.REPLY_TEMPLATE,
        "template": template,
        **fields,
    }

    with pytest.raises(AutomationRuleInvalid) as refused:
        automation_rule_create(team=team, actor=None, **values)

    assert refused.value.field == field
    assert not AutomationRule.objects.exists()


def test_a_template_of_another_team_is_refused(team, other_team):
    foreign = sendable_version(other_team).template

    with pytest.raises(AutomationRuleInvalid) as refused:
        rule(team, keywords=["film"], template=foreign)

    assert refused.value.field == "template"
    assert not AutomationRule.objects.exists()


def test_an_account_of_another_team_is_refused(team, other_team):
    template = sendable_version(team).template

    with pytest.raises(AutomationRuleInvalid) as refused:
        rule(
            team,
            keywords=["film"],
            template=template,
            account=ChannelAccountFactory(team=other_team),
        )

    assert refused.value.field == "account"


def test_a_template_for_another_channel_than_the_account_is_refused(team):
    template = sendable_version(team, channel=Channel.SMS).template

    with pytest.raises(AutomationRuleInvalid) as refused:
        rule(team, keywords=["film"], template=template, account=ChannelAccountFactory(team=team))

    assert refused.value.field == "template"


def test_a_hand_off_takes_no_template_and_a_default_reply_no_keywords(team):
    template = sendable_version(team).template

    with pytest.raises(AutomationRuleInvalid) as hand_off:
        rule(team, keywords=["agent"], action=RuleAction.HAND_OFF, template=template)
    with pytest.raises(AutomationRuleInvalid) as default:
        rule(team, keywords=["x"], action=RuleAction.DEFAULT_REPLY, template=template)

    assert (hand_off.value.field, default.value.field) == ("template", "keywords")
    assert not AutomationRule.objects.exists()


def test_a_keyword_is_unique_among_the_teams_active_rules(team, other_team):
    template = sendable_version(team).template
    first = rule(team, keywords=["Film"], template=template, name="first")

    with pytest.raises(AutomationRuleInvalid) as refused:
        rule(team, keywords=["kino", "FILM"], action=RuleAction.HAND_OFF, name="second")
    assert refused.value.field == "keywords"
    assert AutomationRule.objects.count() == 1

    # Another team, an inactive rule, or a rule on another channel may use it.
    rule(other_team, keywords=["film"], action=RuleAction.HAND_OFF)
    automation_rule_update(rule=first, actor=None, is_active=False)
    rule(team, keywords=["film"], template=template, name="third")
    sms = sendable_version(team, channel=Channel.SMS).template
    rule(team, keywords=["film"], template=sms, name="sms")
    assert AutomationRule.objects.filter(team=team, is_active=True).count() == 2


def test_updating_a_rule_is_checked_like_creating_it(team, marketing):
    template = sendable_version(team).template
    film = rule(team, keywords=["film"], template=template)
    rule(team, keywords=["kino"], action=RuleAction.HAND_OFF)

    with pytest.raises(AutomationRuleInvalid):
        automation_rule_update(rule=film, actor=marketing, keywords=["film", "kino"])
    updated = automation_rule_update(rule=film, actor=marketing, keywords=["filme"], priority=5)

    assert (updated.keywords, updated.priority) == (["filme"], 5)
    film.refresh_from_db()
    assert film.keywords == ["filme"]


@pytest.mark.parametrize("who", ["agent", "outsider"])
def test_rules_need_the_role_and_the_team(team, agent, outsider, who):
    actor = {"agent": agent, "outsider": outsider}[who]
    template = sendable_version(team).template

    with pytest.raises(PermissionRefused):
        automation_rule_create(
            team=team,
            actor=actor,
            name="x",
            keywords=["film"],
            action=RuleAction.REPLY_TEMPLATE,
            template=template,
        )

    assert not AutomationRule.objects.exists()
