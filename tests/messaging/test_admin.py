"""The messaging admin: the inbox and its filters, the conversation page (timeline, compliance
context, reply through the send gate, note, take over / hand back / resolve), read-only
ledgers, channel accounts without secrets, presence, automation rules and the auditor export."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest
from django.contrib.messages import get_messages
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import formats, timezone

from crm import roles
from crm.services import user_time_zone_set
from messaging.models import (
    AgentPresence,
    AutomationRule,
    ChannelAccount,
    Conversation,
    ConversationEvent,
    ConversationExport,
    Direction,
    Handler,
    Message,
    OutboxEntry,
)
from messaging.services import conversation_hand_off, conversation_take_over
from tests.consent.helpers import grant_consent
from tests.factories import ChannelAccountFactory, PurposeFactory
from tests.messaging.helpers import reachable_contact, receive_text, sendable_version

pytestmark = pytest.mark.django_db

INBOX = reverse("admin:messaging_conversation_changelist")
EXPORT_ADD = reverse("admin:messaging_conversationexport_add")
ACCOUNT_ADD = reverse("admin:messaging_channelaccount_add")


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def page_url(conversation) -> str:
    return reverse("admin:messaging_conversation_change", args=[conversation.pk])


def messages_of(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def listed(response) -> set[int]:
    assert response.status_code == 200
    return {conversation.pk for conversation in response.context["cl"].result_list}


def snapshot(conversation) -> dict:
    return Conversation.objects.filter(pk=conversation.pk).values().get()


def counts() -> tuple[int, int, int]:
    return Message.objects.count(), ConversationEvent.objects.count(), OutboxEntry.objects.count()


@pytest.fixture
def account(team):
    return ChannelAccountFactory(team=team)


@pytest.fixture
def dialog(account, team):
    """A conversation the contact opened (the 24-hour window is open)."""
    return receive_text(account, reachable_contact(team), "Wann läuft der Film?").conversation


@pytest.fixture
def other_dialog(other_team):
    account = ChannelAccountFactory(team=other_team)
    return receive_text(account, reachable_contact(other_team), "Guten Tag").conversation


@pytest.mark.parametrize("persona", ["agent", "marketing", "auditor"])
def test_inbox_renders_for_every_reader(request, persona, dialog, other_dialog):
    user = request.getfixturevalue(persona)

    response = client_for(user).get(INBOX)

    expected = {dialog.pk, other_dialog.pk} if persona == "auditor" else {dialog.pk}
    assert listed(response) == expected
    assert str(dialog.contact) in response.content.decode()


def test_inbox_filters_mine_unassigned_and_overdue(agent, team, account):
    mine = receive_text(account, reachable_contact(team)).conversation
    conversation_take_over(conversation=mine, actor=agent)
    queued = receive_text(account, reachable_contact(team)).conversation
    conversation_hand_off(conversation=queued, reason="requested")
    late = receive_text(account, reachable_contact(team)).conversation
    conversation_hand_off(conversation=late, reason="requested")
    Conversation.objects.filter(pk=late.pk).update(
        first_response_due_at=timezone.now() - dt.timedelta(minutes=1)
    )
    bot = receive_text(account, reachable_contact(team)).conversation
    client = client_for(agent)

    assert listed(client.get(INBOX, {"inbox": "mine"})) == {mine.pk}
    assert listed(client.get(INBOX, {"inbox": "unassigned"})) == {queued.pk, late.pk}
    overdue = client.get(INBOX, {"inbox": "overdue"})
    assert listed(overdue) == {late.pk}
    assert "overdue-badge" in overdue.content.decode()
    assert listed(client.get(INBOX, {"handler": Handler.BOT})) == {bot.pk}
    assert listed(client.get(INBOX, {"inbox": "all", "status": "open"})) == {
        mine.pk,
        queued.pk,
        late.pk,
        bot.pk,
    }
    assert listed(client.get(INBOX, {"channel": "sms"})) == set()


def test_inbox_narrows_to_a_period(auditor, team, account):
    recent = receive_text(account, reachable_contact(team)).conversation
    old = receive_text(account, reachable_contact(team)).conversation
    Conversation.objects.filter(pk=old.pk).update(
        last_message_at=timezone.now() - dt.timedelta(days=60)
    )
    since = (timezone.now() - dt.timedelta(days=7)).isoformat()  # as the filter's links say

    response = client_for(auditor).get(INBOX, {"inbox": "all", "last_message_at__gte": since})

    assert listed(response) == {recent.pk}


def test_inbox_shows_times_in_the_users_time_zone(agent, dialog):
    user_time_zone_set(user=agent, time_zone="America/New_York")
    dialog.refresh_from_db()
    zone = zoneinfo.ZoneInfo("America/New_York")

    response = client_for(agent).get(INBOX)

    expected = formats.localize(timezone.localtime(dialog.last_message_at, zone))
    assert expected in response.content.decode()


def test_inbox_query_count_is_flat(agent, team, account, django_assert_max_num_queries):
    client = client_for(agent)
    for _ in range(3):
        receive_text(account, reachable_contact(team))
    client.get(INBOX)  # warm caches (content types) that a live server keeps anyway
    with CaptureQueriesContext(connection) as few:
        assert client.get(INBOX).status_code == 200
    for _ in range(20):
        conversation = receive_text(account, reachable_contact(team)).conversation
        conversation_take_over(conversation=conversation, actor=agent)

    with django_assert_max_num_queries(len(few.captured_queries)):
        response = client.get(INBOX)

    assert len(response.context["cl"].result_list) == 23


def test_conversation_page_shows_timeline_and_compliance_context(agent, team, account, dialog):
    purpose = PurposeFactory(team=team, allowed_channels=["whatsapp"], name="Filmtipps")
    version = sendable_version(team, purpose=purpose, name="filmtipp")
    grant_consent(dialog.contact, purpose, "whatsapp")
    client = client_for(agent)
    client.post(page_url(dialog), {"action": "note", "text": "Stammgast"})

    response = client.get(page_url(dialog))

    assert response.status_code == 200
    page = response.content.decode()
    assert "Wann läuft der Film?" in page
    assert "Stammgast" in page
    timeline = response.context["timeline"]
    assert [entry["style"] for entry in timeline] == ["inbound", "note"]
    compliance = response.context["compliance"]
    assert compliance["service_window"]["open"] is True
    assert compliance["free_text_allowed"] is True
    assert [entry["purpose_name"] for entry in compliance["consents"]] == ["Filmtipps"]
    assert [entry["version"] for entry in compliance["templates"]] == [version.pk]
    assert "Open until" in page
    assert "filmtipp" in page
    assert response.context["reply_form"] is not None
    assert "text" in response.context["reply_form"].fields


def test_reply_form_sends_through_the_gate(agent, dialog):
    response = client_for(agent).post(
        page_url(dialog), {"action": "reply", "text": "Heute um 20 Uhr."}
    )

    assert response.status_code == 302
    reply = Message.objects.get(direction=Direction.OUTBOUND)
    assert reply.body == "Heute um 20 Uhr."
    assert reply.sender == agent
    assert reply.gate_decision["allowed"] is True
    assert OutboxEntry.objects.filter(message=reply).exists()
    assert any("accepted for sending" in text for text in messages_of(response))


def test_reply_with_an_approved_template_and_variables(agent, team, dialog):
    version = sendable_version(team, body="Hallo {{ first_name }}, {{ film }} läuft heute.")

    response = client_for(agent).post(
        page_url(dialog),
        {"action": "reply", "template_version": version.pk, "variables": "film=Metropolis"},
    )

    assert response.status_code == 302, response.context["reply_form"].errors
    reply = Message.objects.get(direction=Direction.OUTBOUND)
    assert reply.template_version == version
    assert "Metropolis läuft heute" in reply.body


def test_a_refused_reply_shows_the_reason_and_changes_nothing(agent, account, dialog):
    ChannelAccount.objects.filter(pk=account.pk).update(is_active=False)
    before, totals = snapshot(dialog), counts()

    response = client_for(agent).post(
        page_url(dialog), {"action": "reply", "text": "Heute um 20 Uhr."}
    )

    assert response.status_code == 200
    assert "The channel account is switched off." in messages_of(response)
    # The agent's text stays in the form to send again.
    assert response.context["reply_form"].data["text"] == "Heute um 20 Uhr."
    assert snapshot(dialog) == before
    assert counts() == totals


def test_free_text_is_not_offered_when_the_window_is_closed(agent, dialog):
    Conversation.objects.filter(pk=dialog.pk).update(
        service_window_ends_at=timezone.now() - dt.timedelta(minutes=1)
    )
    totals = counts()
    client = client_for(agent)

    page = client.get(page_url(dialog))
    assert "text" not in page.context["reply_form"].fields
    assert "Closed since" in page.content.decode()

    response = client.post(page_url(dialog), {"action": "reply", "text": "Hallo"})
    assert response.status_code == 200
    assert response.context["reply_form"].errors
    assert counts() == totals


def test_take_over_hand_back_and_resolve_on_the_page(agent, dialog):
    client = client_for(agent)

    client.post(page_url(dialog), {"action": "take_over"})
    dialog.refresh_from_db()
    assert (dialog.handler, dialog.assigned_to) == (Handler.HUMAN, agent)

    client.post(page_url(dialog), {"action": "hand_back"})
    dialog.refresh_from_db()
    assert (dialog.handler, dialog.assigned_to) == (Handler.BOT, None)

    response = client.post(page_url(dialog), {"action": "resolve"})
    dialog.refresh_from_db()
    assert dialog.status == "resolved"
    assert "The conversation is resolved." in messages_of(response)
    kinds = list(dialog.events.order_by("sequence").values_list("kind", flat=True))
    assert kinds == ["message_in", "handed_off", "assigned", "handed_back", "resolved"]
    timeline = client.get(page_url(dialog)).context["timeline"]
    assigned = next(entry for entry in timeline if entry["event"].kind == "assigned")
    assert assigned["data"]["agent"] == "agent"
    assert [entry["style"] for entry in timeline][-1] == "change"


def test_a_refused_state_change_is_reported_and_changes_nothing(agent, dialog):
    before, totals = snapshot(dialog), counts()

    response = client_for(agent).post(page_url(dialog), {"action": "hand_back"})

    assert response.status_code == 302
    assert "The conversation is already handled by the bot." in messages_of(response)
    assert snapshot(dialog) == before
    assert counts() == totals


def test_note_is_added_on_the_page(agent, dialog):
    response = client_for(agent).post(page_url(dialog), {"action": "note", "text": "Rückruf"})

    assert response.status_code == 302
    note = Message.objects.get(direction=Direction.NOTE)
    assert note.body == "Rückruf"
    assert not OutboxEntry.objects.filter(message=note).exists()


def test_marketing_may_reply_but_not_change_the_conversation(marketing, dialog):
    client = client_for(marketing)
    page = client.get(page_url(dialog))
    assert page.context["reply_form"] is not None
    assert page.context["may_change"] is False
    before = snapshot(dialog)

    assert client.post(page_url(dialog), {"action": "take_over"}).status_code == 403
    assert snapshot(dialog) == before


def test_auditor_reads_the_page_and_changes_nothing(auditor, dialog):
    client = client_for(auditor)
    before, totals = snapshot(dialog), counts()

    page = client.get(page_url(dialog))
    assert page.status_code == 200
    assert page.context["reply_form"] is None
    assert page.context["note_form"] is None
    assert page.context["may_change"] is False

    posts = [
        client.post(page_url(dialog), {"action": action, "text": "x"})
        for action in ("take_over", "hand_back", "resolve", "reply", "note")
    ]
    assert [response.status_code for response in posts] == [403] * 5
    assert snapshot(dialog) == before
    assert counts() == totals


def test_outsider_gets_404_for_another_teams_conversation(outsider, dialog):
    client = client_for(outsider)
    before = snapshot(dialog)

    assert client.get(page_url(dialog)).status_code == 404
    assert client.post(page_url(dialog), {"action": "resolve"}).status_code == 404
    assert listed(client.get(INBOX)) == set()
    assert snapshot(dialog) == before


def test_user_without_messaging_roles_is_refused(make_user, team, dialog):
    editor = make_user("plain_editor", roles.EDITOR, team)
    assert client_for(editor).get(page_url(dialog)).status_code == 403


@pytest.mark.parametrize(
    "name",
    [
        "message",
        "conversationevent",
        "statusreceipt",
        "outboxentry",
        "quarantinedpayload",
        "conversationexport",
    ],
)
def test_ledgers_and_logs_are_read_only(auditor, agent, dialog, name):
    changelist = reverse(f"admin:messaging_{name}_changelist")
    assert client_for(auditor).get(changelist).status_code == 200
    add = client_for(agent).get(reverse(f"admin:messaging_{name}_add"))
    assert add.status_code == 403


def test_message_and_event_pages_are_scoped_and_read_only(agent, outsider, dialog):
    message = dialog.messages.get()
    event = dialog.events.get()
    message_url = reverse("admin:messaging_message_change", args=[message.pk])
    event_url = reverse("admin:messaging_conversationevent_change", args=[event.pk])

    assert client_for(agent).get(message_url).status_code == 200
    assert client_for(agent).get(event_url).status_code == 200
    assert client_for(agent).post(message_url, {"body": "x"}).status_code == 403
    assert client_for(outsider).get(message_url).status_code == 404
    message.refresh_from_db()
    assert message.body == "Wann läuft der Film?"


def test_channel_account_shows_which_secrets_are_set_but_never_their_values(
    make_user, team, monkeypatch
):
    monkeypatch.setenv("WA_ADMIN_ACCESS_TOKEN", "super-secret-token")
    monkeypatch.delenv("WA_ADMIN_APP_SECRET", raising=False)
    superuser = make_user("boss", is_superuser=True)
    account = ChannelAccountFactory(
        team=team, provider="whatsapp_cloud", credentials_env="WA_ADMIN", external_id="99"
    )

    response = client_for(superuser).get(
        reverse("admin:messaging_channelaccount_change", args=[account.pk])
    )

    page = response.content.decode()
    assert response.status_code == 200
    assert "<code>WA_ADMIN_ACCESS_TOKEN</code>: set" in page
    assert "<code>WA_ADMIN_APP_SECRET</code>: not set" in page
    assert "super-secret-token" not in page


def test_channel_account_form_checks_provider_and_channel(make_user, team):
    superuser = make_user("boss", is_superuser=True)
    from crm.services import team_member_add

    team_member_add(team=team, user=superuser)
    form = {
        "team": team.pk,
        "name": "SMS",
        "slug": "sms-main",
        "channel": "sms",
        "provider": "whatsapp_cloud",
        "first_response_minutes": 60,
        "messages_per_second": 10,
        "is_active": "on",
    }
    client = client_for(superuser)

    refused = client.post(ACCOUNT_ADD, form)
    created = client.post(ACCOUNT_ADD, {**form, "provider": "twilio_sms"})

    assert refused.status_code == 200
    assert "cannot send on the channel" in str(refused.context["adminform"].form.errors)
    assert created.status_code == 302
    assert list(ChannelAccount.objects.values_list("provider", flat=True)) == ["twilio_sms"]


def test_agent_sets_own_presence_in_admin(agent, make_user, team):
    client = client_for(agent)
    response = client.post(
        reverse("admin:messaging_agentpresence_add"), {"status": "available", "capacity": 4}
    )
    assert response.status_code == 302
    presence = AgentPresence.objects.get()
    assert (presence.user, presence.status, presence.capacity) == (agent, "available", 4)

    colleague = make_user("colleague", roles.AGENT, team)
    other = AgentPresence.objects.create(user=colleague)
    other_url = reverse("admin:messaging_agentpresence_change", args=[other.pk])
    assert client.get(other_url).status_code == 404


def test_automation_rule_is_created_through_the_service(marketing, team):
    response = client_for(marketing).post(
        reverse("admin:messaging_automationrule_add"),
        {
            "team": team.pk,
            "name": "Mensch",
            "keywords": "BERATUNG, Hilfe",
            "action": "hand_off",
            "priority": 10,
            "is_active": "on",
        },
    )

    assert response.status_code == 302
    rule = AutomationRule.objects.get()
    assert rule.keywords == ["BERATUNG", "Hilfe"]
    assert rule.history.get().history_user == marketing


def test_auditor_exports_and_downloads_in_admin(auditor, team, dialog, other_dialog):
    client = client_for(auditor)
    assert client.get(EXPORT_ADD).status_code == 200

    response = client.post(EXPORT_ADD, {"team": team.pk})

    export = ConversationExport.objects.get()
    assert response.status_code == 302
    assert response.url == reverse("admin:messaging_conversationexport_change", args=[export.pk])
    assert export.conversation_count == 1
    page = client.get(response.url).content.decode()
    file_url = reverse("admin:messaging_conversationexport_file", args=[export.pk, "manifest.json"])
    assert file_url in page
    download = client.get(file_url)
    assert download.status_code == 200
    assert b"chain_heads" in b"".join(download.streaming_content)
    missing = reverse("admin:messaging_conversationexport_file", args=[export.pk, "passwd"])
    assert client.get(missing).status_code == 404


def test_export_refuses_a_contact_outside_the_teams_and_non_auditors(
    auditor, marketing, team, dialog, other_dialog
):
    refused = client_for(auditor).post(
        EXPORT_ADD, {"team": team.pk, "contact": other_dialog.contact_id}
    )
    assert refused.status_code == 200
    assert refused.context["form"].errors
    assert client_for(marketing).get(EXPORT_ADD).status_code == 403
    assert client_for(marketing).post(EXPORT_ADD, {}).status_code == 403
    assert not ConversationExport.objects.exists()


def test_export_files_need_the_export_permission(auditor, marketing, dialog):
    client_for(auditor).post(EXPORT_ADD, {})
    export = ConversationExport.objects.get()
    file_url = reverse("admin:messaging_conversationexport_file", args=[export.pk, "manifest.json"])

    assert client_for(marketing).get(file_url).status_code == 403
