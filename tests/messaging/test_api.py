"""The messaging REST API: sending through the gate (201 or 422 with the gate's reason), the
hand-off actions, scoping (another team's conversations are 404), the auditor's read-only
access and exports, presence, automation rules and flat query counts on the lists."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from crm import roles
from messaging.models import (
    AgentPresence,
    AutomationRule,
    Conversation,
    ConversationEvent,
    ConversationExport,
    Direction,
    Handler,
    Message,
    OutboxEntry,
)
from messaging.services import conversation_hand_off
from tests.consent.helpers import grant_consent
from tests.factories import ChannelAccountFactory, PurposeFactory
from tests.messaging.helpers import reachable_contact, receive_text, sendable_version

pytestmark = pytest.mark.django_db

MESSAGES = "/api/v1/messages/"
CONVERSATIONS = "/api/v1/conversations/"
EVENTS = "/api/v1/conversation-events/"
PRESENCE = "/api/v1/agent-presence/me/"
EXPORTS = "/api/v1/conversation-exports/"


def conversation_url(conversation, action: str = "") -> str:
    return f"{CONVERSATIONS}{conversation.pk}/" + (f"{action}/" if action else "")


def snapshot(conversation) -> dict:
    return Conversation.objects.filter(pk=conversation.pk).values().get()


def counts() -> tuple[int, int, int]:
    return Message.objects.count(), ConversationEvent.objects.count(), OutboxEntry.objects.count()


@pytest.fixture
def account(team):
    return ChannelAccountFactory(team=team)


@pytest.fixture
def purpose(team):
    return PurposeFactory(team=team, allowed_channels=["whatsapp"])


@pytest.fixture
def contact(team):
    return reachable_contact(team)


@pytest.fixture
def dialog(account, contact):
    """A conversation the contact opened (the 24-hour window is open)."""
    return receive_text(account, contact, "Hallo, ich habe eine Frage").conversation


@pytest.fixture
def other_dialog(other_team):
    account = ChannelAccountFactory(team=other_team)
    return receive_text(account, reachable_contact(other_team), "Guten Tag").conversation


@pytest.fixture
def agent_b(make_user, other_team):
    return make_user("agent_b", roles.AGENT, other_team)


def test_send_with_consent_answers_201_with_the_message(
    api_client_for, marketing, account, contact, purpose, team
):
    version = sendable_version(team, purpose=purpose)
    grant_consent(contact, purpose, "whatsapp")

    response = api_client_for(marketing).post(
        MESSAGES,
        {"contact": contact.pk, "account": account.pk, "template_version": version.pk},
        format="json",
    )

    assert response.status_code == 201, response.data
    message = Message.objects.get(pk=response.data["id"])
    assert response.data["direction"] == Direction.OUTBOUND
    assert response.data["status"] == "queued"
    assert response.data["gate_decision"]["allowed"] is True
    assert message.sender == marketing
    assert message.sender_kind == "api"
    assert OutboxEntry.objects.filter(message=message).exists()


def test_send_without_consent_is_422_no_consent_and_stores_nothing(
    api_client_for, marketing, account, contact, purpose, team
):
    version = sendable_version(team, purpose=purpose)
    before = counts()

    response = api_client_for(marketing).post(
        MESSAGES,
        {"contact": contact.pk, "account": account.pk, "template_version": version.pk},
        format="json",
    )

    assert response.status_code == 422
    assert response.data["code"] == "no_consent"
    assert response.data["detail"]
    assert response.data["decision"]["allowed"] is False
    assert response.data["decision"]["reason"] == "no_consent"
    assert "consent" in response.data["decision"]["checks"]
    assert counts() == before


def test_free_text_outside_the_service_window_is_422_and_stores_nothing(
    api_client_for, agent, account, contact
):
    before = counts()

    response = api_client_for(agent).post(
        MESSAGES,
        {"contact": contact.pk, "account": account.pk, "text": "Hallo!"},
        format="json",
    )

    assert response.status_code == 422
    assert response.data["code"] == "outside_service_window"
    assert response.data["decision"]["reason"] == "outside_service_window"
    assert counts() == before


def test_agent_reply_in_an_open_window_is_sent_as_the_agent(api_client_for, agent, dialog):
    response = api_client_for(agent).post(
        MESSAGES,
        {
            "contact": dialog.contact_id,
            "account": dialog.account_id,
            "text": "Gern, worum geht es?",
        },
        format="json",
    )

    assert response.status_code == 201, response.data
    assert response.data["conversation"] == dialog.pk
    assert response.data["body"] == "Gern, worum geht es?"
    assert response.data["sender_kind"] == "agent"


def test_send_needs_text_or_template(api_client_for, agent, dialog):
    response = api_client_for(agent).post(
        MESSAGES, {"contact": dialog.contact_id, "account": dialog.account_id}, format="json"
    )

    assert response.status_code == 400
    assert response.data["code"] == "message_invalid"
    assert "text" in response.data


def test_send_to_another_teams_contact_reads_as_unknown(api_client_for, agent, other_dialog):
    before = counts()

    response = api_client_for(agent).post(
        MESSAGES,
        {"contact": other_dialog.contact_id, "account": other_dialog.account_id, "text": "Hi"},
        format="json",
    )

    assert response.status_code == 400
    assert {"contact", "account"} <= set(response.data)
    assert counts() == before


def test_take_over_assigns_the_agent_and_records_it(api_client_for, agent, dialog):
    response = api_client_for(agent).post(conversation_url(dialog, "take-over"))

    assert response.status_code == 200, response.data
    assert response.data["handler"] == Handler.HUMAN
    assert response.data["assigned_to"] == agent.pk
    assert response.data["assigned_to_name"] == "agent"
    kinds = list(dialog.events.order_by("sequence").values_list("kind", flat=True))
    assert kinds[-2:] == ["handed_off", "assigned"]


def test_assign_hand_back_and_resolve(api_client_for, agent, make_user, team, dialog):
    colleague = make_user("colleague", roles.AGENT, team)
    client = api_client_for(agent)

    assigned = client.post(conversation_url(dialog, "assign"), {"agent": colleague.pk})
    assert assigned.status_code == 200, assigned.data
    assert assigned.data["assigned_to"] == colleague.pk
    assert assigned.data["handler"] == Handler.HUMAN

    handed_back = client.post(conversation_url(dialog, "hand-back"))
    assert handed_back.status_code == 200
    assert handed_back.data["handler"] == Handler.BOT
    assert handed_back.data["assigned_to"] is None

    resolved = client.post(conversation_url(dialog, "resolve"))
    assert resolved.status_code == 200
    assert resolved.data["status"] == "resolved"
    kinds = list(dialog.events.order_by("sequence").values_list("kind", flat=True))
    assert kinds[-4:] == ["handed_off", "assigned", "handed_back", "resolved"]


def test_assigning_someone_who_is_no_agent_of_the_team_changes_nothing(
    api_client_for, agent, marketing, dialog
):
    before = snapshot(dialog)

    response = api_client_for(agent).post(
        conversation_url(dialog, "assign"), {"agent": marketing.pk}
    )

    assert response.status_code == 409
    assert response.data["code"] == "conversation_refused"
    assert "agent" in response.data
    assert snapshot(dialog) == before


def test_resolving_twice_is_409_and_changes_nothing(api_client_for, agent, dialog):
    client = api_client_for(agent)
    client.post(conversation_url(dialog, "resolve"))
    before, events = snapshot(dialog), dialog.events.count()

    response = client.post(conversation_url(dialog, "resolve"))

    assert response.status_code == 409
    assert snapshot(dialog) == before
    assert dialog.events.count() == events


def test_note_is_added_to_the_timeline_and_never_sent(api_client_for, agent, dialog):
    response = api_client_for(agent).post(
        conversation_url(dialog, "notes"), {"text": "Ruft morgen zurück."}
    )

    assert response.status_code == 201, response.data
    assert response.data["direction"] == Direction.NOTE
    note = Message.objects.get(pk=response.data["id"])
    assert note.body == "Ruft morgen zurück."
    assert not OutboxEntry.objects.filter(message=note).exists()
    assert dialog.events.order_by("-sequence").first().kind == "note"


def test_empty_note_is_400(api_client_for, agent, dialog):
    before = counts()
    response = api_client_for(agent).post(conversation_url(dialog, "notes"), {"text": ""})
    assert response.status_code == 400
    assert counts() == before


def test_agent_of_team_a_cannot_read_team_bs_conversations_or_messages(
    api_client_for, agent, dialog, other_dialog
):
    client = api_client_for(agent)
    other_message = other_dialog.messages.get()

    assert client.get(conversation_url(other_dialog)).status_code == 404
    assert client.get(f"{MESSAGES}{other_message.pk}/").status_code == 404
    assert client.get(f"{EVENTS}{other_dialog.events.get().pk}/").status_code == 404
    conversations = [row["id"] for row in client.get(CONVERSATIONS).data["results"]]
    messages = [row["id"] for row in client.get(MESSAGES).data["results"]]
    assert conversations == [dialog.pk]
    assert other_message.pk not in messages


def test_agent_of_team_b_cannot_act_on_team_as_conversation(api_client_for, agent_b, dialog):
    before, events = snapshot(dialog), dialog.events.count()
    client = api_client_for(agent_b)

    for action in ("take-over", "resolve", "hand-back"):
        assert client.post(conversation_url(dialog, action)).status_code == 404
    assert client.post(conversation_url(dialog, "notes"), {"text": "x"}).status_code == 404
    assert snapshot(dialog) == before
    assert dialog.events.count() == events


def test_auditor_reads_every_team_and_every_write_is_403(
    api_client_for, auditor, dialog, other_dialog, account
):
    client = api_client_for(auditor)
    before, totals = snapshot(dialog), counts()

    listed = {row["id"] for row in client.get(CONVERSATIONS).data["results"]}
    assert {dialog.pk, other_dialog.pk} <= listed
    assert client.get(conversation_url(dialog)).status_code == 200
    assert client.get(MESSAGES).status_code == 200
    assert client.get(EVENTS).status_code == 200
    for action in ("take-over", "hand-back", "resolve", "notes"):
        assert client.post(conversation_url(dialog, action), {"text": "x"}).status_code == 403
    send = client.post(
        MESSAGES,
        {"contact": dialog.contact_id, "account": account.pk, "text": "Hallo"},
        format="json",
    )
    assert send.status_code == 403
    assert client.post("/api/v1/automation-rules/", {}, format="json").status_code == 403
    assert snapshot(dialog) == before
    assert counts() == totals


def test_messages_are_never_changed_or_deleted_over_the_api(api_client_for, agent, dialog):
    message = dialog.messages.get()
    client = api_client_for(agent)

    assert client.patch(f"{MESSAGES}{message.pk}/", {"body": "x"}).status_code == 405
    assert client.delete(f"{MESSAGES}{message.pk}/").status_code == 405
    message.refresh_from_db()
    assert message.body == "Hallo, ich habe eine Frage"


def test_conversation_filters(api_client_for, agent, make_user, team, account):
    first = receive_text(account, reachable_contact(team)).conversation
    second = receive_text(account, reachable_contact(team)).conversation
    conversation_hand_off(conversation=second, reason="requested")
    client = api_client_for(agent)

    def ids(query: str) -> set[int]:
        response = client.get(f"{CONVERSATIONS}?{query}")
        assert response.status_code == 200, response.data
        return {row["id"] for row in response.data["results"]}

    assert ids("handler=human") == {second.pk}
    assert ids("handler=bot") == {first.pk}
    assert ids("unassigned=true&handler=human") == {second.pk}
    assert ids("status=open") == {first.pk, second.pk}
    assert ids("channel=sms") == set()
    assert ids(f"team={team.pk}") == {first.pk, second.pk}
    client.post(conversation_url(first, "take-over"))
    assert ids(f"assigned_to={agent.pk}") == {first.pk}


def test_overdue_filter_and_flag_follow_the_inbox(api_client_for, agent, team, account):
    waiting = receive_text(account, reachable_contact(team)).conversation
    conversation_hand_off(conversation=waiting, reason="requested")
    fresh = receive_text(account, reachable_contact(team)).conversation
    conversation_hand_off(conversation=fresh, reason="requested")
    # The first one has waited past its target.
    Conversation.objects.filter(pk=waiting.pk).update(
        first_response_due_at=timezone.now() - dt.timedelta(minutes=5)
    )
    client = api_client_for(agent)

    overdue = client.get(f"{CONVERSATIONS}?overdue=true").data["results"]
    on_time = client.get(f"{CONVERSATIONS}?overdue=false").data["results"]

    assert [row["id"] for row in overdue] == [waiting.pk]
    assert overdue[0]["overdue"] is True
    assert [row["id"] for row in on_time] == [fresh.pk]
    assert on_time[0]["overdue"] is False


def test_messages_filter_by_conversation_direction_and_status(
    api_client_for, agent, dialog, account
):
    client = api_client_for(agent)
    client.post(conversation_url(dialog, "notes"), {"text": "intern"})
    receive_text(account, reachable_contact(dialog.team), "Andere Unterhaltung")

    rows = client.get(f"{MESSAGES}?conversation={dialog.pk}").data["results"]
    notes = client.get(f"{MESSAGES}?conversation={dialog.pk}&direction=note").data["results"]
    received = client.get(f"{MESSAGES}?status=received&direction=inbound").data["results"]

    assert {row["conversation"] for row in rows} == {dialog.pk}
    assert len(rows) == 2
    assert [row["body"] for row in notes] == ["intern"]
    assert len(received) == 2


def test_events_filter_by_conversation_and_show_the_chain(api_client_for, agent, dialog, account):
    receive_text(account, reachable_contact(dialog.team))
    client = api_client_for(agent)
    client.post(conversation_url(dialog, "take-over"))

    rows = client.get(f"{EVENTS}?conversation={dialog.pk}").data["results"]

    assert {row["conversation"] for row in rows} == {dialog.pk}
    assert sorted(row["sequence"] for row in rows) == [1, 2, 3]
    assert all(len(row["hash"]) == 64 for row in rows)
    assert "body" not in rows[0]["data"]


def test_channel_accounts_never_show_secrets(api_client_for, marketing, team, monkeypatch):
    monkeypatch.setenv("WA_TEST_ACCESS_TOKEN", "super-secret-token")
    account = ChannelAccountFactory(
        team=team, provider="whatsapp_cloud", credentials_env="WA_TEST", external_id="1234"
    )

    response = api_client_for(marketing).get(f"/api/v1/channel-accounts/{account.pk}/")

    assert response.status_code == 200
    assert response.data["credentials_env"] == "WA_TEST"
    assert "super-secret-token" not in response.content.decode()


def test_agent_reads_and_sets_own_presence(api_client_for, agent):
    client = api_client_for(agent)

    assert client.get(PRESENCE).data["status"] == "offline"
    assert not AgentPresence.objects.exists()

    response = client.put(PRESENCE, {"status": "available", "capacity": 3}, format="json")

    assert response.status_code == 200, response.data
    presence = AgentPresence.objects.get(user=agent)
    assert (presence.status, presence.capacity) == ("available", 3)
    assert client.get(PRESENCE).data == response.data


def test_presence_refuses_bad_input_and_the_auditor_cannot_set_it(api_client_for, agent, auditor):
    assert api_client_for(agent).put(PRESENCE, {"status": "busy"}, format="json").status_code == 400
    refused = api_client_for(auditor).put(PRESENCE, {"status": "available"}, format="json")
    assert refused.status_code == 403
    assert not AgentPresence.objects.exists()


def test_marketing_creates_an_automation_rule_through_the_service(
    api_client_for, marketing, team, account
):
    client = api_client_for(marketing)

    created = client.post(
        "/api/v1/automation-rules/",
        {
            "team": team.pk,
            "account": account.pk,
            "name": "Beratung",
            "keywords": ["BERATUNG"],
            "action": "hand_off",
        },
        format="json",
    )
    clash = client.post(
        "/api/v1/automation-rules/",
        {"team": team.pk, "name": "Nochmal", "keywords": ["beratung"], "action": "hand_off"},
        format="json",
    )

    assert created.status_code == 201, created.data
    assert created.data["keywords"] == ["BERATUNG"]
    assert clash.status_code == 400
    assert clash.data["code"] == "automation_rule_invalid"
    assert list(AutomationRule.objects.values_list("name", flat=True)) == ["Beratung"]


def test_agent_may_read_but_not_create_automation_rules(api_client_for, agent, team):
    client = api_client_for(agent)
    assert client.get("/api/v1/automation-rules/").status_code == 200
    response = client.post(
        "/api/v1/automation-rules/",
        {"team": team.pk, "name": "X", "keywords": ["X"], "action": "hand_off"},
        format="json",
    )
    assert response.status_code == 403
    assert not AutomationRule.objects.exists()


def test_auditor_exports_and_downloads_the_files(api_client_for, auditor, dialog, team):
    client = api_client_for(auditor)

    response = client.post(EXPORTS, {"team": team.pk}, format="json")

    assert response.status_code == 201, response.data
    export = ConversationExport.objects.get()
    assert response.data["id"] == export.pk
    assert response.data["conversation_count"] == 1
    assert export.actor == auditor
    names = {file["name"] for file in response.data["files"]}
    assert "manifest.json" in names
    manifest = next(f for f in response.data["files"] if f["name"] == "manifest.json")
    download = client.get(manifest["url"])
    assert download.status_code == 200
    assert b"chain_heads" in b"".join(download.streaming_content)
    assert client.get(f"{EXPORTS}{export.pk}/files/..%2Fsecret/").status_code == 404
    assert [row["id"] for row in client.get(EXPORTS).data["results"]] == [export.pk]


def test_only_auditors_export(api_client_for, marketing, agent, dialog):
    for user in (marketing, agent):
        client = api_client_for(user)
        assert client.post(EXPORTS, {}, format="json").status_code == 403
        assert client.get(EXPORTS).status_code == 403
    assert not ConversationExport.objects.exists()


@pytest.mark.parametrize("url", [CONVERSATIONS, MESSAGES, EVENTS])
def test_list_query_count_is_flat(
    url, api_client_for, agent, team, account, django_assert_max_num_queries
):
    client = api_client_for(agent)
    receive_text(account, reachable_contact(team))
    with django_assert_max_num_queries(20) as small:
        assert client.get(url).status_code == 200
    for _ in range(15):
        conversation = receive_text(account, reachable_contact(team)).conversation
        conversation_hand_off(conversation=conversation, reason="requested")

    with django_assert_max_num_queries(len(small.captured_queries)):
        response = client.get(url)

    assert response.status_code == 200
    assert len(response.data["results"]) >= 16
