"""Campaigns: audience from the consent join, batched fan-out through the send gate, pause,
cancel, approval guard, throttle, crash-safe relaunch, dry run, admin and API permissions."""

from __future__ import annotations

import datetime as dt

import pytest
from django.conf import settings as django_settings
from django.db.models import Count
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from approvals.services import template_version_retire
from consent.services import contact_restrict, suppression_add
from crm.errors import PermissionRefused
from crm.models import Channel, ContactPoint
from messaging.models import (
    Campaign,
    CampaignRecipient,
    CampaignState,
    CampaignStateChange,
    ChannelMode,
    Message,
    RecipientStatus,
)
from messaging.services import (
    CampaignInvalid,
    CampaignRefused,
    TemplateChoice,
    campaign_cancel,
    campaign_create,
    campaign_dry_run,
    campaign_launch,
    campaign_pause,
    campaign_resume,
    campaign_send_batch,
    campaign_update,
    campaigns_resume_stalled,
)
from tests.consent.helpers import grant_consent, withdraw_consent
from tests.factories import (
    ChannelAccountFactory,
    ContactPointFactory,
    PurposeFactory,
    SegmentFactory,
    TeamFactory,
)
from tests.messaging.helpers import reachable_contact, sendable_version

pytestmark = pytest.mark.django_db

WA = Channel.WHATSAPP


def _campaign(team, purpose, *, channel=WA, account=None, actor=None, **fields):
    account = account or ChannelAccountFactory(team=team, channel=channel)
    version = sendable_version(team, channel=channel, purpose=purpose)
    return campaign_create(
        team=team,
        actor=actor,
        name="Herbstprogramm",
        templates=[TemplateChoice(account=account, template_version=version)],
        **fields,
    )


def _consented(team, purpose, n, channel=WA):
    contacts = [reachable_contact(team, channel) for _ in range(n)]
    for contact in contacts:
        grant_consent(contact, purpose, channel)
    return contacts


def _messages_per_contact(campaign):
    return dict(
        Message.objects.filter(origin=f"campaign:{campaign.pk}")
        .values_list("conversation__contact_id")
        .annotate(n=Count("id"))
    )


def test_audience_is_exactly_the_consented_unsuppressed_unrestricted_contacts(team):
    purpose = PurposeFactory(team=team)
    eligible = _consented(team, purpose, 2)
    withdrawn, suppressed, restricted = _consented(team, purpose, 3)
    withdraw_consent(withdrawn, purpose, WA)
    suppression_add(address=ContactPoint.objects.get(contact=suppressed).address)
    contact_restrict(contact=restricted, actor=None)
    reachable_contact(team)  # never consented
    _consented(team, purpose, 1, channel=Channel.EMAIL)  # consented on another channel
    campaign = _campaign(team, purpose)

    campaign = campaign_launch(campaign=campaign, actor=None)

    assert campaign.state == CampaignState.RUNNING
    frozen = set(campaign.recipients.values_list("contact_id", flat=True))
    assert frozen == {c.pk for c in eligible}
    assert campaign.recipients_count == 2


def test_segment_limits_the_audience(team):
    purpose = PurposeFactory(team=team)
    inside, outside = _consented(team, purpose, 2)
    inside.language, outside.language = "de", "en"
    inside.save()
    outside.save()
    segment = SegmentFactory(
        team=team, rules={"conditions": [{"field": "language", "op": "eq", "value": "de"}]}
    )
    campaign = campaign_launch(campaign=_campaign(team, purpose, segment=segment), actor=None)

    assert list(campaign.recipients.values_list("contact_id", flat=True)) == [inside.pk]


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(histories=st.lists(st.lists(st.booleans(), max_size=4), min_size=1, max_size=5))
def test_frozen_recipients_match_the_consent_history_model(team, histories):
    """Each contact's grant/withdraw sequence: the last action decides, no action means none."""
    purpose = PurposeFactory(team=team)
    expected = set()
    for history in histories:
        contact = reachable_contact(team)
        for grant in history:
            (grant_consent if grant else withdraw_consent)(contact, purpose, WA)
        if history and history[-1]:
            expected.add(contact.pk)
    campaign = campaign_launch(campaign=_campaign(team, purpose), actor=None)

    assert set(campaign.recipients.values_list("contact_id", flat=True)) == expected


def test_campaign_sends_every_recipient_once_with_its_origin(
    team, django_capture_on_commit_callbacks
):
    purpose = PurposeFactory(team=team)
    contacts = _consented(team, purpose, 3)
    campaign = _campaign(team, purpose)

    with django_capture_on_commit_callbacks(execute=True):
        campaign_launch(campaign=campaign, actor=None)

    campaign.refresh_from_db()
    assert campaign.state == CampaignState.COMPLETED
    assert (campaign.sent_count, campaign.refused_count, campaign.failed_count) == (3, 0, 0)
    assert campaign.progress == 1.0
    assert _messages_per_contact(campaign) == {c.pk: 1 for c in contacts}
    recipient = campaign.recipients.first()
    assert recipient.status == RecipientStatus.SENT
    assert recipient.message.sender_kind == "campaign"


def test_relaunch_after_a_crash_sends_no_duplicates(team, django_capture_on_commit_callbacks):
    purpose = PurposeFactory(team=team)
    contacts = _consented(team, purpose, 5)
    campaign = campaign_launch(campaign=_campaign(team, purpose), actor=None)
    campaign_send_batch(campaign_id=campaign.pk, batch_size=2)
    # The worker died here; the same batch is redelivered and an operator relaunches.
    campaign_send_batch(campaign_id=campaign.pk, batch_size=2)

    with django_capture_on_commit_callbacks(execute=True):
        campaign_launch(campaign=campaign, actor=None)
        campaign_launch(campaign=campaign, actor=None)

    campaign.refresh_from_db()
    assert campaign.state == CampaignState.COMPLETED
    assert campaign.recipients.count() == 5
    assert _messages_per_contact(campaign) == {c.pk: 1 for c in contacts}
    assert campaign.sent_count == 5


def _overdue_by_the_stall_limit():
    stall = dt.timedelta(seconds=django_settings.MESSAGING_CAMPAIGN_STALL_SECONDS + 1)
    return timezone.now() + stall


def test_a_lost_batch_task_is_queued_again_by_the_stalled_campaign_sweep(
    team, django_capture_on_commit_callbacks
):
    purpose = PurposeFactory(team=team)
    contacts = _consented(team, purpose, 3)
    # The launch's on-commit publish never runs here: its task is lost, as in a broker outage.
    campaign = campaign_launch(campaign=_campaign(team, purpose), actor=None)
    campaign.refresh_from_db()
    assert campaign.next_batch_due_at is not None

    assert campaigns_resume_stalled() == 0  # overdue, but not yet by the stall limit
    with django_capture_on_commit_callbacks(execute=True):
        assert campaigns_resume_stalled(now=_overdue_by_the_stall_limit()) == 1

    campaign.refresh_from_db()
    assert campaign.state == CampaignState.COMPLETED
    assert _messages_per_contact(campaign) == {c.pk: 1 for c in contacts}


def test_a_late_batch_task_of_a_superseded_chain_sends_nothing(team):
    purpose = PurposeFactory(team=team)
    _consented(team, purpose, 3)
    campaign = campaign_launch(campaign=_campaign(team, purpose), actor=None)
    campaign.refresh_from_db()
    lost_chain = campaign.batch_chain
    campaigns_resume_stalled(now=_overdue_by_the_stall_limit())
    campaign.refresh_from_db()
    assert campaign.batch_chain != lost_chain

    # The "lost" task turns up after all: it must not start a second chain of batches.
    assert campaign_send_batch(campaign_id=campaign.pk, chain=lost_chain).processed == 0
    assert campaign.recipients.filter(status=RecipientStatus.PENDING).count() == 3
    assert campaign_send_batch(campaign_id=campaign.pk, chain=campaign.batch_chain).processed == 3


def test_the_stalled_campaign_sweep_waits_for_the_limit_and_leaves_paused_ones_alone(team):
    purpose = PurposeFactory(team=team)
    _consented(team, purpose, 2)
    paused = campaign_launch(campaign=_campaign(team, purpose), actor=None)
    campaign_pause(campaign=paused, actor=None)
    punctual = campaign_launch(campaign=_campaign(team, purpose), actor=None)
    punctual.refresh_from_db()
    chain = punctual.batch_chain

    assert campaigns_resume_stalled() == 0
    assert campaigns_resume_stalled(now=_overdue_by_the_stall_limit()) == 1  # the running one
    paused.refresh_from_db()
    punctual.refresh_from_db()
    assert paused.state == CampaignState.PAUSED
    assert punctual.batch_chain != chain


def test_the_beat_schedule_runs_the_stalled_campaign_sweep_every_minute():
    from config.celery import app

    entry = django_settings.CELERY_BEAT_SCHEDULE["messaging-resume-stalled-campaigns"]
    assert entry["task"] == "messaging.tasks.resume_stalled_campaigns"
    assert entry["task"] in app.tasks
    assert entry["schedule"] == 60


def test_pause_stops_after_the_current_batch_and_resume_continues(
    team, django_capture_on_commit_callbacks
):
    purpose = PurposeFactory(team=team)
    _consented(team, purpose, 4)
    campaign = campaign_launch(campaign=_campaign(team, purpose), actor=None)
    campaign_send_batch(campaign_id=campaign.pk, batch_size=2)
    campaign_pause(campaign=campaign, actor=None)

    result = campaign_send_batch(campaign_id=campaign.pk, batch_size=2)

    assert result.processed == 0
    assert campaign.recipients.filter(status=RecipientStatus.PENDING).count() == 2
    with django_capture_on_commit_callbacks(execute=True):
        campaign_resume(campaign=campaign, actor=None)
    campaign.refresh_from_db()
    assert campaign.state == CampaignState.COMPLETED
    assert campaign.sent_count == 4


def test_cancel_leaves_pending_recipients_unsent(team):
    purpose = PurposeFactory(team=team)
    _consented(team, purpose, 3)
    campaign = campaign_launch(campaign=_campaign(team, purpose), actor=None)
    campaign_send_batch(campaign_id=campaign.pk, batch_size=1)

    campaign_cancel(campaign=campaign, actor=None)
    campaign_send_batch(campaign_id=campaign.pk, batch_size=5)

    campaign.refresh_from_db()
    assert campaign.state == CampaignState.CANCELLED
    assert campaign.finished_at is not None
    assert campaign.sent_count == 1
    assert campaign.recipients.filter(status=RecipientStatus.PENDING).count() == 2
    with pytest.raises(CampaignRefused):
        campaign_resume(campaign=campaign, actor=None)


def test_stop_between_batches_refuses_that_recipient_with_no_consent(team):
    purpose = PurposeFactory(team=team)
    _consented(team, purpose, 2)
    campaign = campaign_launch(campaign=_campaign(team, purpose), actor=None)
    campaign_send_batch(campaign_id=campaign.pk, batch_size=1)
    first = campaign.recipients.get(status=RecipientStatus.SENT).contact
    second = campaign.recipients.get(status=RecipientStatus.PENDING).contact
    withdraw_consent(second, purpose, WA)

    campaign_send_batch(campaign_id=campaign.pk, batch_size=1)

    refused = campaign.recipients.get(contact=second)
    assert (refused.status, refused.reason, refused.message) == (
        RecipientStatus.REFUSED,
        "no_consent",
        None,
    )
    campaign.refresh_from_db()
    assert (campaign.sent_count, campaign.refused_count) == (1, 1)
    assert campaign.state == CampaignState.COMPLETED
    assert _messages_per_contact(campaign) == {first.pk: 1}


def test_version_retired_mid_campaign_stops_it_with_the_reason(team):
    purpose = PurposeFactory(team=team)
    _consented(team, purpose, 2)
    campaign = campaign_launch(campaign=_campaign(team, purpose), actor=None)
    campaign_send_batch(campaign_id=campaign.pk, batch_size=1)
    template_version_retire(version=campaign.templates.get().template_version, actor=None)

    result = campaign_send_batch(campaign_id=campaign.pk, batch_size=1)

    campaign.refresh_from_db()
    assert result.processed == 0
    assert campaign.state == CampaignState.STOPPED
    assert campaign.state_reason == "template_not_approved"
    assert campaign.sent_count == 1
    assert campaign.state_changes.last().to_state == CampaignState.STOPPED


def test_launch_is_refused_when_the_version_is_no_longer_sendable(team):
    purpose = PurposeFactory(team=team)
    _consented(team, purpose, 1)
    campaign = _campaign(team, purpose)
    template_version_retire(version=campaign.templates.get().template_version, actor=None)

    with pytest.raises(CampaignRefused):
        campaign_launch(campaign=campaign, actor=None)

    campaign.refresh_from_db()
    assert campaign.state == CampaignState.DRAFT
    assert CampaignRecipient.objects.count() == 0
    assert CampaignStateChange.objects.count() == 0


def test_next_batch_waits_as_long_as_the_throttle_needs(team):
    purpose = PurposeFactory(team=team)
    _consented(team, purpose, 5)
    account = ChannelAccountFactory(team=team, messages_per_second=4)
    default = campaign_launch(campaign=_campaign(team, purpose, account=account), actor=None)
    own = campaign_launch(
        campaign=_campaign(team, purpose, account=account, throttle_per_second=1), actor=None
    )

    assert campaign_send_batch(campaign_id=default.pk, batch_size=2).next_delay == 0.5
    assert campaign_send_batch(campaign_id=own.pk, batch_size=3).next_delay == 3.0


def test_scheduled_campaign_waits_for_its_time(team):
    from django.utils import timezone

    purpose = PurposeFactory(team=team)
    _consented(team, purpose, 1)
    later = timezone.now() + timezone.timedelta(hours=2)
    campaign = campaign_launch(campaign=_campaign(team, purpose, scheduled_at=later), actor=None)

    assert campaign.state == CampaignState.SCHEDULED
    assert campaign.recipients.count() == 0


def test_preferred_channel_with_fallback_among_consented_channels(team):
    purpose = PurposeFactory(team=team)
    wa_account = ChannelAccountFactory(team=team, channel=WA)
    mail_account = ChannelAccountFactory(team=team, channel=Channel.EMAIL)
    prefers_mail = reachable_contact(team, WA, preferred_channel=Channel.EMAIL)
    ContactPointFactory(contact=prefers_mail, channel=Channel.EMAIL, address="mail-fan@example.org")
    for channel in (WA, Channel.EMAIL):
        grant_consent(prefers_mail, purpose, channel)
    prefers_sms_mail_only = reachable_contact(team, Channel.EMAIL, preferred_channel="sms")
    grant_consent(prefers_sms_mail_only, purpose, Channel.EMAIL)
    no_preference = _consented(team, purpose, 1)[0]
    campaign = campaign_create(
        team=team,
        actor=None,
        name="Mehrkanal",
        channel_mode=ChannelMode.PREFERRED,
        templates=[
            TemplateChoice(wa_account, sendable_version(team, channel=WA, purpose=purpose)),
            TemplateChoice(
                mail_account,
                sendable_version(
                    team,
                    channel=Channel.EMAIL,
                    purpose=purpose,
                    body="Hallo {{ first_name }}. Abmelden: {{ unsubscribe_url }}",
                ),
            ),
        ],
    )

    campaign = campaign_launch(campaign=campaign, actor=None)

    channels = dict(campaign.recipients.values_list("contact_id", "channel"))
    assert channels == {
        prefers_mail.pk: Channel.EMAIL,
        prefers_sms_mail_only.pk: Channel.EMAIL,
        no_preference.pk: WA,
    }


def test_dry_run_counts_each_contact_once_by_reason(team):
    purpose = PurposeFactory(team=team)
    _consented(team, purpose, 2)
    suppressed, restricted = _consented(team, purpose, 2)
    suppression_add(address=ContactPoint.objects.get(contact=suppressed).address)
    contact_restrict(contact=restricted, actor=None)
    reachable_contact(team)  # no consent
    reachable_contact(team, Channel.EMAIL)  # no WhatsApp address
    campaign = _campaign(team, purpose)

    counts = campaign_dry_run(campaign)

    assert counts == {
        "total": 6,
        "eligible": 2,
        "restricted": 1,
        "no_address": 1,
        "suppressed": 1,
        "no_consent": 1,
    }
    assert CampaignRecipient.objects.count() == 0


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"channel": Channel.EMAIL}, "templates"),
        ({"other_team_account": True}, "templates"),
        ({"retired": True}, "templates"),
        ({"name": " "}, "name"),
    ],
)
def test_invalid_campaigns_are_refused_and_nothing_is_written(team, change, field):
    purpose = PurposeFactory(team=team)
    version = sendable_version(team, channel=WA, purpose=purpose)
    account = ChannelAccountFactory(team=team, channel=change.get("channel", WA))
    if change.get("other_team_account"):
        account = ChannelAccountFactory(team=TeamFactory(), channel=WA)
    if change.get("retired"):
        template_version_retire(version=version, actor=None)

    with pytest.raises(CampaignInvalid) as refused:
        campaign_create(
            team=team,
            actor=None,
            name=change.get("name", "Herbst"),
            templates=[TemplateChoice(account, version)],
        )

    assert refused.value.field == field
    assert Campaign.objects.count() == 0


def test_template_without_purpose_cannot_make_a_campaign(team):
    version = sendable_version(team, channel=WA)
    with pytest.raises(CampaignInvalid):
        campaign_create(
            team=team,
            actor=None,
            name="Service",
            templates=[TemplateChoice(ChannelAccountFactory(team=team), version)],
        )
    assert Campaign.objects.count() == 0


def test_roles_without_campaign_rights_cannot_create_or_launch(team, marketing, agent, editor):
    purpose = PurposeFactory(team=team)
    campaign = _campaign(team, purpose, actor=marketing)
    for user in (agent, editor):
        with pytest.raises(PermissionRefused):
            campaign_launch(campaign=campaign, actor=user)
        with pytest.raises(PermissionRefused):
            _campaign(team, purpose, actor=user)
    campaign.refresh_from_db()
    assert campaign.state == CampaignState.DRAFT
    assert Campaign.objects.count() == 1


def _api_body(team, purpose):
    account = ChannelAccountFactory(team=team)
    version = sendable_version(team, channel=WA, purpose=purpose)
    return {
        "team": team.pk,
        "name": "Herbst per API",
        "templates": [{"account": account.pk, "template_version": version.pk}],
    }


def test_api_creates_dry_runs_and_launches_a_campaign(
    team, marketing, api_client_for, django_capture_on_commit_callbacks
):
    purpose = PurposeFactory(team=team)
    contacts = _consented(team, purpose, 2)
    reachable_contact(team)
    client = api_client_for(marketing)

    created = client.post("/api/v1/campaigns/", _api_body(team, purpose), format="json")
    assert created.status_code == 201, created.data
    pk = created.data["id"]
    assert created.data["state"] == CampaignState.DRAFT
    assert created.data["purpose"] == purpose.pk

    dry = client.post(f"/api/v1/campaigns/{pk}/dry-run/")
    assert dry.status_code == 200
    assert (dry.data["eligible"], dry.data["no_consent"]) == (2, 1)

    with django_capture_on_commit_callbacks(execute=True):
        launched = client.post(f"/api/v1/campaigns/{pk}/launch/")
    assert launched.status_code == 200
    detail = client.get(f"/api/v1/campaigns/{pk}/")
    assert detail.data["state"] == CampaignState.COMPLETED
    assert detail.data["progress"] == 1.0
    assert _messages_per_contact(Campaign.objects.get(pk=pk)) == {c.pk: 1 for c in contacts}


def test_api_refused_transition_is_409_and_changes_nothing(team, marketing, api_client_for):
    campaign = _campaign(team, PurposeFactory(team=team))

    response = api_client_for(marketing).post(f"/api/v1/campaigns/{campaign.pk}/resume/")

    assert response.status_code == 409
    assert response.data["code"] == "campaign_refused"
    campaign.refresh_from_db()
    assert campaign.state == CampaignState.DRAFT


def test_api_invalid_campaign_is_400_with_the_field(team, marketing, api_client_for):
    purpose = PurposeFactory(team=team)
    body = _api_body(team, purpose)
    body["templates"][0]["account"] = ChannelAccountFactory(team=team, channel="sms").pk

    response = api_client_for(marketing).post("/api/v1/campaigns/", body, format="json")

    assert response.status_code == 400
    assert "templates" in response.data
    assert Campaign.objects.count() == 0


@pytest.mark.parametrize("persona", ["agent", "editor", "auditor"])
def test_api_roles_without_campaign_rights_get_403(team, persona, request, api_client_for):
    user = request.getfixturevalue(persona)
    campaign = _campaign(team, PurposeFactory(team=team))
    client = api_client_for(user)

    assert client.post(f"/api/v1/campaigns/{campaign.pk}/launch/").status_code in (403, 404)
    assert client.post("/api/v1/campaigns/", {}, format="json").status_code == 403
    campaign.refresh_from_db()
    assert campaign.state == CampaignState.DRAFT


def test_api_other_teams_campaign_is_404_for_an_outsider(team, outsider, api_client_for):
    campaign = _campaign(team, PurposeFactory(team=team))
    client = api_client_for(outsider)

    assert client.get(f"/api/v1/campaigns/{campaign.pk}/").status_code == 404
    assert client.post(f"/api/v1/campaigns/{campaign.pk}/launch/").status_code == 404
    campaign.refresh_from_db()
    assert campaign.state == CampaignState.DRAFT


def _admin_client(user):
    from django.test import Client

    client = Client()
    client.force_login(user)
    return client


def test_admin_shows_a_progress_bar_on_running_campaigns(team, marketing):
    from django.urls import reverse

    purpose = PurposeFactory(team=team)
    _consented(team, purpose, 4)
    campaign = campaign_launch(campaign=_campaign(team, purpose), actor=None)
    campaign_send_batch(campaign_id=campaign.pk, batch_size=1)

    response = _admin_client(marketing).get(reverse("admin:messaging_campaign_changelist"))

    assert response.status_code == 200
    assert '<progress value="25" max="100"' in response.content.decode()
    detail = _admin_client(marketing).get(
        reverse("admin:messaging_campaign_change", args=[campaign.pk])
    )
    assert "Next batch due at" in detail.content.decode()


def test_admin_actions_call_the_services_and_report_refusals(team, marketing):
    from django.contrib.messages import get_messages
    from django.urls import reverse

    purpose = PurposeFactory(team=team)
    _consented(team, purpose, 1)
    campaign = _campaign(team, purpose)
    client = _admin_client(marketing)
    url = reverse("admin:messaging_campaign_changelist")

    dry = client.post(url, {"action": "dry_run", "_selected_action": [campaign.pk]}, follow=True)
    assert any("eligible: 1" in str(m) for m in get_messages(dry.wsgi_request))
    client.post(url, {"action": "launch", "_selected_action": [campaign.pk]})
    campaign.refresh_from_db()
    assert campaign.state == CampaignState.RUNNING

    refused = client.post(url, {"action": "resume", "_selected_action": [campaign.pk]}, follow=True)
    assert any("paused" in str(m) for m in get_messages(refused.wsgi_request))
    campaign.refresh_from_db()
    assert campaign.state == CampaignState.RUNNING


def test_admin_creates_a_draft_through_the_service(team, marketing):
    from django.urls import reverse

    purpose = PurposeFactory(team=team)
    account = ChannelAccountFactory(team=team)
    version = sendable_version(team, channel=WA, purpose=purpose)
    prefix = "templates"
    response = _admin_client(marketing).post(
        reverse("admin:messaging_campaign_add"),
        {
            "team": team.pk,
            "name": "Admin-Kampagne",
            "channel_mode": ChannelMode.FIXED,
            f"{prefix}-TOTAL_FORMS": "1",
            f"{prefix}-INITIAL_FORMS": "0",
            f"{prefix}-0-account": account.pk,
            f"{prefix}-0-template_version": version.pk,
            "state_changes-TOTAL_FORMS": "0",
            "state_changes-INITIAL_FORMS": "0",
        },
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    campaign = Campaign.objects.get()
    assert (campaign.name, campaign.purpose, campaign.created_by) == (
        "Admin-Kampagne",
        purpose,
        marketing,
    )
    assert campaign.templates.get().channel == WA


def test_admin_hides_other_teams_campaigns(team, outsider):
    from django.urls import reverse

    campaign = _campaign(team, PurposeFactory(team=team))
    client = _admin_client(outsider)

    url = reverse("admin:messaging_campaign_change", args=[campaign.pk])
    assert client.get(url).status_code == 404


def test_update_changes_a_draft_but_not_a_launched_campaign(team, marketing):
    purpose = PurposeFactory(team=team)
    campaign = _campaign(team, purpose, actor=marketing)
    choice = campaign.templates.get()
    templates = [TemplateChoice(choice.account, choice.template_version)]

    campaign = campaign_update(
        campaign=campaign, actor=marketing, name="Winter", templates=templates
    )
    assert campaign.name == "Winter"
    campaign_launch(campaign=campaign, actor=marketing)

    with pytest.raises(CampaignRefused):
        campaign_update(campaign=campaign, actor=marketing, name="Frühling", templates=templates)
    campaign.refresh_from_db()
    assert campaign.name == "Winter"


def test_scheduled_campaign_starts_when_due(team):
    from django.utils import timezone

    from messaging.services.campaigns import campaign_start_due

    purpose = PurposeFactory(team=team)
    contact = _consented(team, purpose, 1)[0]
    later = timezone.now() + timezone.timedelta(hours=2)
    campaign = campaign_launch(campaign=_campaign(team, purpose, scheduled_at=later), actor=None)
    assert campaign_start_due(campaign_id=campaign.pk).state == CampaignState.SCHEDULED

    Campaign.objects.filter(pk=campaign.pk).update(scheduled_at=timezone.now())
    started = campaign_start_due(campaign_id=campaign.pk)

    assert started.state == CampaignState.RUNNING
    assert list(started.recipients.values_list("contact_id", flat=True)) == [contact.pk]


def test_the_periodic_sweep_starts_due_scheduled_campaigns_only(team):
    from django.utils import timezone

    from messaging.services.campaigns import campaigns_start_due

    purpose = PurposeFactory(team=team)
    _consented(team, purpose, 1)
    later = timezone.now() + timezone.timedelta(hours=2)
    campaign = campaign_launch(campaign=_campaign(team, purpose, scheduled_at=later), actor=None)
    assert campaigns_start_due() == 0
    assert campaigns_start_due(now=later + timezone.timedelta(seconds=1)) == 1
    campaign.refresh_from_db()
    assert campaign.state != CampaignState.SCHEDULED


def test_completed_campaign_publishes_its_event(
    team, marketing, django_capture_on_commit_callbacks, monkeypatch
):
    import socket

    from messaging.models import WebhookDelivery
    from messaging.services import webhook_subscription_create

    # The subscriber's host resolves to a public address (no DNS in tests).
    public = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", 443))]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: public)
    purpose = PurposeFactory(team=team)
    _consented(team, purpose, 2)
    webhook_subscription_create(
        team=team,
        url="https://integrator.example.com/hook",
        event_types=["campaign.completed"],
        owner=marketing,
        actor=None,
    )
    with django_capture_on_commit_callbacks(execute=False):
        campaign = campaign_launch(campaign=_campaign(team, purpose), actor=None)
        while campaign_send_batch(campaign_id=campaign.pk).pending:
            pass
    campaign.refresh_from_db()
    assert campaign.state == CampaignState.COMPLETED
    delivery = WebhookDelivery.objects.get(event_type="campaign.completed")
    assert delivery.payload["data"]["campaign"] == campaign.pk


def test_a_batch_is_decided_at_once_and_message_send_reuses_the_decisions(team, monkeypatch):
    purpose = PurposeFactory(team=team)
    withdrawn, suppressed, *consented = _consented(team, purpose, 4)
    campaign = campaign_launch(campaign=_campaign(team, purpose), actor=None)
    withdraw_consent(withdrawn, purpose, WA)
    suppression_add(address=suppressed.points.get().address, channel=WA)

    def second_question(*args, **kwargs):
        raise AssertionError("message_send asked the gate again instead of using the batch's")

    monkeypatch.setattr("messaging.services.send.send_gate_evaluate", second_question)
    result = campaign_send_batch(campaign_id=campaign.pk, batch_size=10)

    assert result.processed == 4
    outcomes = {
        contact_id: (status, reason)
        for contact_id, status, reason in campaign.recipients.values_list(
            "contact_id", "status", "reason"
        )
    }
    assert outcomes == {
        withdrawn.pk: (RecipientStatus.REFUSED, "no_consent"),
        suppressed.pk: (RecipientStatus.REFUSED, "suppressed"),
        **{contact.pk: (RecipientStatus.SENT, "") for contact in consented},
    }
    assert campaign.recipients.filter(processed_at__isnull=True).count() == 0
    campaign.refresh_from_db()
    assert (campaign.sent_count, campaign.refused_count) == (2, 2)
    assert _messages_per_contact(campaign) == {contact.pk: 1 for contact in consented}
