"""Agent journey in a real browser: an overdue hand-off in the inbox, take it over, answer with
free text inside the WhatsApp service window, see the answer on the timeline, hand back."""

from __future__ import annotations

import datetime as dt
import itertools
import re
from unittest import mock

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from crm import roles
from crm.models import Channel
from crm.services import contact_create
from messaging.models import Conversation, Direction, Handler, Message, MessageStatus
from messaging.services import inbound_message_receive
from messaging.webhooks.events import InboundMessage
from tests.factories import ChannelAccountFactory

pytestmark = pytest.mark.django_db(transaction=True)

REPLY = "Guten Tag Frau Vogel, ich rufe Sie heute bis 18 Uhr unter dieser Nummer an."
_message_ids = itertools.count(1)


def receive(account, sender: str, text: str, at: dt.datetime) -> Message:
    """A WhatsApp message through the real inbound service, as if it arrived at `at`: the
    service reads the clock for the hand-off's due time, so the clock reads `at` meanwhile."""
    inbound = InboundMessage(
        provider=account.provider,
        channel=account.channel,
        provider_message_id=f"wamid.journey-{next(_message_ids)}",
        from_address=sender,
        to_address=account.address,
        occurred_at=at,
        kind="text",
        text=text,
    )
    with mock.patch("django.utils.timezone.now", return_value=at):
        return inbound_message_receive(account=account, inbound=inbound)


@pytest.fixture
def overdue_conversation(make_user, team):
    """Lena asked for an adviser 40 minutes ago (target: 15 minutes) and nobody was
    available, so her conversation waits overdue; Jonas's question is still with the bot."""
    make_user("agent", roles.AGENT, team)
    account = ChannelAccountFactory(
        team=team, name="Kino Nord WhatsApp", slug="kino-wa", first_response_minutes=15
    )
    for first, last, number in (
        ("Lena", "Vogel", "0151 22220001"),
        ("Jonas", "Becker", "0151 22220002"),
    ):
        contact_create(
            team=team,
            actor=None,
            points=[(Channel.WHATSAPP, number)],
            first_name=first,
            last_name=last,
        )
    now = timezone.now()
    waiting = receive(
        account, "+4915122220001", "Kann mich ein Berater anrufen?", now - dt.timedelta(minutes=40)
    ).conversation
    receive(account, "+4915122220002", "Wann läuft Dune?", now)
    waiting.refresh_from_db()
    assert waiting.handler == Handler.HUMAN
    assert waiting.assigned_to is None
    assert waiting.first_response_due_at < now
    return waiting


def test_agent_answers_an_overdue_conversation_and_hands_back(overdue_conversation, journey, page):
    waiting = overdue_conversation
    journey.login("agent")

    # The inbox marks the overdue conversation; the overdue view lists only it.
    page.goto("/admin/messaging/conversation/")
    rows = page.locator("#result_list tbody tr")
    expect(rows).to_have_count(2)
    lena = rows.filter(has_text="Lena Vogel")
    expect(lena.locator(".overdue-badge")).to_have_text("overdue")
    expect(rows.filter(has_text="Jonas Becker").locator(".overdue-badge")).to_have_count(0)
    journey.shot("inbox")
    page.click("#changelist-filter a:text-is('first response overdue')")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Lena Vogel")
    journey.shot("inbox overdue view")

    # The conversation page: the request on the timeline, overdue, window open, free text.
    rows.first.locator("th a, td a").first.click()
    page.wait_for_url(re.compile(rf"/admin/messaging/conversation/{waiting.pk}/change/"))
    expect(page.locator("#conversation-status")).to_have_text("Open · Human")
    expect(page.locator(".conversation-facts .overdue-badge")).to_be_visible()
    expect(page.locator("#timeline li.inbound")).to_contain_text("Kann mich ein Berater anrufen?")
    expect(page.locator("#service-window")).to_contain_text("Open until")
    expect(page.locator("#service-window")).to_contain_text("Free text may be sent.")
    journey.shot("overdue conversation")

    page.click("input[type=submit][value='Take over']")
    expect(page.locator("ul.messagelist li.success")).to_have_text(
        "You took over the conversation."
    )
    expect(page.locator("#conversation-status")).to_have_text("Open · Human · assigned to agent")
    journey.shot("taken over")

    page.fill("#reply-form textarea[name=text]", REPLY)
    page.click("#reply-form input[type=submit][value='Send']")
    expect(page.locator("ul.messagelist li.success")).to_have_text(
        "The message was accepted for sending (Queued)."
    )
    answer = page.locator("#timeline li.outbound").last
    expect(answer.locator(".body")).to_have_text(REPLY)
    expect(page.locator("#timeline li", has_text=REPLY)).to_have_count(1)
    # Delivered by the (console) provider once the send committed, before the page reloaded.
    expect(answer.locator(".meta").first).to_contain_text("agent · Sent")
    expect(page.locator(".conversation-facts .overdue-badge")).to_have_count(0)
    journey.shot("reply on the timeline")
    sent = Message.objects.get(conversation=waiting, direction=Direction.OUTBOUND)
    assert (sent.body, sent.status, sent.template_version) == (REPLY, MessageStatus.SENT, None)
    waiting.refresh_from_db()
    assert waiting.first_response_at is not None
    assert waiting.first_response_due_at is None

    page.click("input[type=submit][value='Hand back to the bot']")
    expect(page.locator("ul.messagelist li.success")).to_have_text("Handed back to the bot.")
    expect(page.locator("#conversation-status")).to_have_text("Open · Bot")
    expect(page.locator("input[type=submit][value='Take over']")).to_be_visible()
    journey.shot("handed back to the bot")
    waiting.refresh_from_db()
    assert (waiting.handler, waiting.assigned_to) == (Handler.BOT, None)

    page.goto("/admin/messaging/conversation/?inbox=overdue")
    expect(page.locator("#result_list tbody tr")).to_have_count(0)
    assert not Conversation.objects.filter(handler=Handler.HUMAN).exists()
