"""The messaging demo: senders, a TIPP rule and conversations played through the real services."""

from __future__ import annotations

import pytest

from consent.models import ConsentSource
from crm.demo import demo_seed
from crm.ledger import verify_chain
from messaging.models import (
    AutomationRule,
    ChannelAccount,
    Conversation,
    ConversationEvent,
    Handler,
    Message,
)

pytestmark = pytest.mark.django_db


def counts() -> tuple[int, ...]:
    return (
        ChannelAccount.objects.count(),
        AutomationRule.objects.count(),
        Conversation.objects.count(),
        Message.objects.count(),
        ConversationEvent.objects.count(),
    )


@pytest.fixture
def seeded(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        demo_seed(contacts=60, password="demo-password")


def test_demo_plays_conversations_once(seeded, django_capture_on_commit_callbacks):
    before = counts()
    assert before[0] == 4
    assert before[2] == 4
    with django_capture_on_commit_callbacks(execute=True):
        demo_seed(contacts=60, password="demo-password")
    assert counts() == before


def test_demo_conversations_show_hand_off_bot_reply_and_stop(seeded):
    conversations = list(Conversation.objects.order_by("pk"))
    assert conversations[1].handler == Handler.HUMAN
    assert conversations[1].assigned_to.username == "agent"
    assert Message.objects.filter(sender_kind="bot", origin__startswith="rule:").exists()
    stopped = conversations[3].contact
    assert stopped.consent_events.filter(source=ConsentSource.KEYWORD).exists()
    assert Message.objects.filter(sender_kind="agent", status="sent").count() == 1


def test_demo_chains_verify(seeded):
    for conversation in Conversation.objects.all():
        events = ConversationEvent.objects.filter(conversation=conversation).order_by("sequence")
        assert verify_chain(conversation.pk, events) is None
