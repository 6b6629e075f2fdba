"""The send gate: every refusal reason, its order, deferral by quiet hours, stored decisions.

Every case runs twice: through the single gate, and with message_send's question asked in a
batch among other requests (send_gate_evaluate_many), which must answer it the same way.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest
from django.utils import timezone

from approvals.models import MessageTemplate, TemplateCategory, TemplateVersion
from approvals.services import template_version_retire
from consent.models import Consent
from consent.services import contact_restrict, suppression_add
from crm.errors import PermissionRefused
from crm.hashing import address_hash
from crm.models import Channel, ContactPoint
from messaging.errors import SendRefused
from messaging.models import ConversationEvent, Message, MessageStatus, OutboxEntry
from messaging.services import SendRequest, message_send, send_gate_evaluate
from messaging.services.gate import REASON_MESSAGES, _facts_sql, send_gate_evaluate_many
from tests.consent.helpers import grant_consent, withdraw_consent
from tests.factories import ChannelAccountFactory, ContactPointFactory, PurposeFactory
from tests.messaging.helpers import reachable_contact, receive_text, sendable_version

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True, params=["single", "batch"])
def gate_form(request, monkeypatch, team):
    """In the batch form message_send's request is the middle one of three in one batch."""
    if request.param == "batch":
        bystander = reachable_contact(team)

        def evaluate_in_a_batch(send_request, *, at=None):
            other = replace(send_request, contact=bystander, message_id=None)
            return send_gate_evaluate_many([other, send_request, other], at=at)[1]

        monkeypatch.setattr("messaging.services.send.send_gate_evaluate", evaluate_in_a_batch)
    return request.param


@pytest.fixture
def account(team):
    return ChannelAccountFactory(team=team)


@pytest.fixture
def purpose(team):
    return PurposeFactory(
        team=team, allowed_channels=["whatsapp", "sms", "email"], frequency_cap=None
    )


@pytest.fixture
def marketing_version(team, purpose):
    return sendable_version(team, purpose=purpose)


@pytest.fixture
def contact(team):
    return reachable_contact(team)


def written() -> tuple[int, int, int]:
    return (
        Message.objects.count(),
        OutboxEntry.objects.count(),
        ConversationEvent.objects.count(),
    )


def refused(**kwargs) -> SendRefused:
    before = (
        Message.objects.count(),
        OutboxEntry.objects.count(),
        ConversationEvent.objects.count(),
    )
    with pytest.raises(SendRefused) as caught:
        message_send(actor=None, **kwargs)
    after = (
        Message.objects.count(),
        OutboxEntry.objects.count(),
        ConversationEvent.objects.count(),
    )
    assert after == before, "a refusal must write nothing"
    return caught.value


def test_marketing_template_without_consent_is_refused_no_consent(
    contact, account, marketing_version
):
    error = refused(contact=contact, account=account, template_version=marketing_version)
    assert error.code == "no_consent"
    assert error.status_code == 422
    assert error.details()["checks"] == ["account", "contact", "suppression", "consent"]


def test_consented_marketing_template_is_accepted_with_its_decision(
    contact, account, purpose, marketing_version
):
    event = grant_consent(contact, purpose, "whatsapp")
    message = message_send(
        contact=contact, account=account, actor=None, template_version=marketing_version
    )
    assert message.status == MessageStatus.QUEUED
    decision = message.gate_decision
    assert decision["allowed"] is True
    assert decision["inputs"]["consent"]["event"] == event.pk
    assert decision["inputs"]["purpose"] == purpose.pk
    assert message.body.startswith(f"Hallo {contact.first_name}")
    assert message.variables == {"first_name": contact.first_name}
    assert OutboxEntry.objects.filter(message=message).exists()


def test_withdrawn_consent_is_refused(contact, account, purpose, marketing_version):
    grant_consent(contact, purpose, "whatsapp")
    withdraw_consent(contact, purpose, "whatsapp")
    error = refused(contact=contact, account=account, template_version=marketing_version)
    assert error.code == "no_consent"


def test_consent_on_another_channel_does_not_count(contact, account, purpose, marketing_version):
    grant_consent(contact, purpose, "email")
    assert refused(contact=contact, account=account, template_version=marketing_version).code == (
        "no_consent"
    )


def test_service_template_needs_no_consent(team, contact, account):
    version = sendable_version(team, category=TemplateCategory.UTILITY)
    message = message_send(contact=contact, account=account, actor=None, template_version=version)
    assert message.gate_decision["inputs"]["consent"] == "not_required"


def test_erased_contact_is_refused_first(contact, account, marketing_version):
    contact.erased_at = timezone.now()
    contact.save()
    assert refused(contact=contact, account=account, template_version=marketing_version).code == (
        "contact_erased"
    )


def test_restricted_contact_is_refused_before_consent(contact, account, marketing_version):
    contact_restrict(contact=contact, actor=None)
    contact.refresh_from_db()
    error = refused(contact=contact, account=account, template_version=marketing_version)
    assert error.code == "contact_restricted"
    assert error.details()["checks"] == ["account", "contact"]


def test_suppressed_address_is_refused_even_with_consent(
    contact, account, purpose, marketing_version
):
    grant_consent(contact, purpose, "whatsapp")
    suppression_add(address=contact.points.get().address, channel="whatsapp")
    assert refused(contact=contact, account=account, template_version=marketing_version).code == (
        "suppressed"
    )


def test_contact_without_address_on_the_channel_is_refused(team, account, marketing_version):
    contact = reachable_contact(team, channel=Channel.EMAIL)
    assert refused(contact=contact, account=account, template_version=marketing_version).code == (
        "no_address"
    )


def test_unapproved_version_is_refused(team, contact, account, purpose):
    version = sendable_version(team, purpose=purpose)
    grant_consent(contact, purpose, "whatsapp")
    template_version_retire(version=version, actor=None)
    version.refresh_from_db()
    assert refused(contact=contact, account=account, template_version=version).code == (
        "template_not_approved"
    )


def test_expired_version_is_refused(team, contact, account):
    version = sendable_version(team)
    # The approved content's validity ended a minute ago (the hourly retire job has not run).
    TemplateVersion.objects.filter(pk=version.pk).update(
        valid_until=timezone.now() - dt.timedelta(minutes=1)
    )
    version.refresh_from_db()
    assert refused(contact=contact, account=account, template_version=version).code == (
        "template_expired"
    )


def test_template_for_another_channel_is_refused(team, contact, account):
    version = sendable_version(team, channel=Channel.SMS)
    assert refused(contact=contact, account=account, template_version=version).code == (
        "channel_mismatch"
    )


def test_account_of_another_team_is_refused(other_team, contact, marketing_version):
    foreign = ChannelAccountFactory(team=other_team)
    assert refused(contact=contact, account=foreign, template_version=marketing_version).code == (
        "account_other_team"
    )


def test_inactive_account_is_refused(contact, account, marketing_version):
    account.is_active = False
    account.save()
    assert refused(contact=contact, account=account, template_version=marketing_version).code == (
        "account_inactive"
    )


def test_free_text_on_whatsapp_needs_the_service_window(contact, account):
    assert refused(contact=contact, account=account, text="Hallo").code == "outside_service_window"


def test_free_text_inside_the_window_is_allowed(contact, account):
    receive_text(account, contact, "Hallo?")
    message = message_send(contact=contact, account=account, actor=None, text="Gern!")
    assert message.gate_decision["inputs"]["service_window_ends_at"]


def test_free_text_after_the_window_closed_is_refused(contact, account):
    receive_text(account, contact, "Hallo?", at=timezone.now() - dt.timedelta(hours=25))
    assert refused(contact=contact, account=account, text="Zu spät").code == (
        "outside_service_window"
    )


def test_template_outside_the_window_is_allowed(team, contact, account):
    version = sendable_version(team)
    receive_text(account, contact, "Hallo?", at=timezone.now() - dt.timedelta(hours=30))
    assert message_send(contact=contact, account=account, actor=None, template_version=version)


def test_free_text_by_sms_goes_only_to_people_who_wrote(team):
    account = ChannelAccountFactory(team=team, channel=Channel.SMS)
    contact = reachable_contact(team, channel=Channel.SMS)
    assert refused(contact=contact, account=account, text="Hallo").code == "no_dialog"
    receive_text(account, contact, "Frage")
    assert message_send(contact=contact, account=account, actor=None, text="Antwort")


def test_opt_in_confirmation_needs_no_consent(team, contact, account, purpose, marketing_version):
    message = message_send(
        contact=contact,
        account=account,
        actor=None,
        template_version=marketing_version,
        opt_in_confirmation=True,
    )
    assert message.gate_decision["inputs"]["consent"] == "opt_in_confirmation"


def test_frequency_cap_refuses_the_message_over_the_cap(team, contact, account):
    capped = PurposeFactory(
        team=team, allowed_channels=["whatsapp"], frequency_cap=1, frequency_period_hours=24
    )
    version = sendable_version(team, purpose=capped)
    grant_consent(contact, capped, "whatsapp")
    message_send(contact=contact, account=account, actor=None, template_version=version)
    error = refused(contact=contact, account=account, template_version=version)
    assert error.code == "frequency_cap"
    assert error.details()["inputs"]["frequency"] == {"sent": 1, "cap": 1, "hours": 24}


def test_failed_messages_do_not_count_against_the_cap(team, contact, account):
    capped = PurposeFactory(team=team, allowed_channels=["whatsapp"], frequency_cap=1)
    version = sendable_version(team, purpose=capped)
    grant_consent(contact, capped, "whatsapp")
    first = message_send(contact=contact, account=account, actor=None, template_version=version)
    Message.objects.filter(pk=first.pk).update(status=MessageStatus.FAILED)
    assert message_send(contact=contact, account=account, actor=None, template_version=version)


def test_quiet_hours_defer_consent_based_messages_in_the_contacts_zone(
    team, purpose, marketing_version
):
    account = ChannelAccountFactory(
        team=team, quiet_hours_start=dt.time(21, 0), quiet_hours_end=dt.time(8, 0)
    )
    contact = reachable_contact(team, time_zone="America/New_York")
    grant_consent(contact, purpose, "whatsapp")
    # 03:00 UTC is 23:00 in New York (summer time): quiet until 08:00 local = 12:00 UTC.
    at = dt.datetime(2026, 7, 1, 3, 0, tzinfo=dt.UTC)
    decision = send_gate_evaluate(
        SendRequest(contact=contact, account=account, template_version=marketing_version), at=at
    )
    assert decision.allowed is True
    assert decision.reason == "quiet_hours"
    assert decision.deferred_until == dt.datetime(2026, 7, 1, 12, 0, tzinfo=dt.UTC)
    midday = send_gate_evaluate(
        SendRequest(contact=contact, account=account, template_version=marketing_version),
        at=dt.datetime(2026, 7, 1, 16, 0, tzinfo=dt.UTC),
    )
    assert midday.deferred_until is None


def test_a_deferred_message_is_stored_scheduled_with_its_due_time(
    team, purpose, marketing_version, monkeypatch
):
    account = ChannelAccountFactory(
        team=team, quiet_hours_start=dt.time(0, 0), quiet_hours_end=dt.time(23, 59)
    )
    contact = reachable_contact(team)
    grant_consent(contact, purpose, "whatsapp")
    message = message_send(
        contact=contact, account=account, actor=None, template_version=marketing_version
    )
    assert message.status == MessageStatus.SCHEDULED
    assert message.due_at is not None
    assert OutboxEntry.objects.get(message=message).due_at == message.due_at


def test_service_messages_ignore_quiet_hours(team, contact):
    account = ChannelAccountFactory(
        team=team, quiet_hours_start=dt.time(0, 0), quiet_hours_end=dt.time(23, 59)
    )
    version = sendable_version(team)
    message = message_send(contact=contact, account=account, actor=None, template_version=version)
    assert message.status == MessageStatus.QUEUED


def test_user_without_send_permission_is_refused(team, contact, account, editor):
    version = sendable_version(team)
    with pytest.raises(PermissionRefused):
        message_send(contact=contact, account=account, actor=editor, template_version=version)
    assert Message.objects.count() == 0


def test_agent_of_the_team_may_send(team, contact, account, agent):
    version = sendable_version(team)
    message = message_send(contact=contact, account=account, actor=agent, template_version=version)
    assert message.sender == agent


def _loaded(version):
    return TemplateVersion.objects.select_related("template", "template__purpose").get(
        pk=version.pk
    )


def _changed_version(team, purpose, **fields):
    version = sendable_version(team, purpose=purpose)
    TemplateVersion.objects.filter(pk=version.pk).update(**fields)
    return _loaded(version)


def test_batch_decisions_equal_single_decisions_for_every_reason(
    team, other_team, account, purpose, marketing_version
):
    def consented(**fields):
        contact = reachable_contact(team, **fields)
        grant_consent(contact, purpose, "whatsapp")
        return contact

    now = timezone.now()
    capped = PurposeFactory(team=team, allowed_channels=["whatsapp"], frequency_cap=1)
    capped_version = sendable_version(team, purpose=capped)
    at_cap = reachable_contact(team)
    grant_consent(at_cap, capped, "whatsapp")
    sent = message_send(
        contact=at_cap, account=account, actor=None, template_version=capped_version
    )
    suppressed = consented()
    suppression_add(address=suppressed.points.get().address, channel="whatsapp")
    restricted = consented()
    contact_restrict(contact=restricted, actor=None)
    restricted.refresh_from_db()
    erased = consented()
    erased.erased_at = now
    inactive_template = sendable_version(team, purpose=purpose)
    MessageTemplate.objects.filter(pk=inactive_template.template_id).update(is_active=False)
    sms_account = ChannelAccountFactory(team=team, channel=Channel.SMS)
    quiet_account = ChannelAccountFactory(
        team=team, quiet_hours_start=dt.time(0, 0), quiet_hours_end=dt.time(23, 59)
    )
    allowed = consented()
    cases = [
        (allowed, account, marketing_version, {}),
        (allowed, quiet_account, marketing_version, {}),
        (allowed, ChannelAccountFactory(team=team, is_active=False), marketing_version, {}),
        (allowed, ChannelAccountFactory(team=other_team), marketing_version, {}),
        (allowed, account, sendable_version(team, channel=Channel.SMS), {}),
        (erased, account, marketing_version, {}),
        (restricted, account, marketing_version, {}),
        (reachable_contact(team, channel=Channel.EMAIL), account, marketing_version, {}),
        (suppressed, account, marketing_version, {}),
        (suppressed, account, marketing_version, {"address": "+4915199999999"}),
        (reachable_contact(team), account, marketing_version, {}),
        (reachable_contact(team), account, marketing_version, {"opt_in_confirmation": True}),
        (allowed, account, _changed_version(team, purpose, state="retired"), {}),
        (allowed, account, _changed_version(team, purpose, valid_until=now), {}),
        (
            allowed,
            account,
            _changed_version(team, purpose, valid_from=now + dt.timedelta(days=1)),
            {},
        ),
        (allowed, account, _changed_version(team, purpose, provider_status="pending"), {}),
        (allowed, account, _loaded(inactive_template), {}),
        (allowed, account, None, {}),
        (reachable_contact(team, channel=Channel.SMS), sms_account, None, {}),
        (at_cap, account, capped_version, {}),
        # The delivery re-check of the capped message does not count the message itself.
        (at_cap, account, capped_version, {"message_id": sent.pk}),
    ]
    requests = [
        SendRequest(contact=contact, account=via, template_version=version, **extra)
        for contact, via, version, extra in cases
    ]

    batch = send_gate_evaluate_many(requests, at=now)

    assert batch == [send_gate_evaluate(request, at=now) for request in requests]
    assert {decision.reason for decision in batch} == {None, *REASON_MESSAGES}
    assert [decision.allowed for decision in batch[-2:]] == [False, True]


@pytest.mark.parametrize("size", [10, 100])
def test_the_batch_gate_reads_everything_in_one_query_whatever_the_batch_size(
    team, account, size, django_assert_num_queries
):
    capped = PurposeFactory(team=team, allowed_channels=["whatsapp"], frequency_cap=3)
    version = _loaded(sendable_version(team, purpose=capped))
    contacts = [reachable_contact(team) for _ in range(size)]
    for contact in contacts[::2]:
        grant_consent(contact, capped, "whatsapp")
    requests = [SendRequest(contact=c, account=account, template_version=version) for c in contacts]

    with django_assert_num_queries(1):
        decisions = send_gate_evaluate_many(requests)

    assert [d.allowed for d in decisions] == [i % 2 == 0 for i in range(size)]


def test_message_send_asks_again_when_handed_a_decision_for_another_request(
    team, account, purpose, marketing_version
):
    consented = reachable_contact(team)
    grant_consent(consented, purpose, "whatsapp")
    decision = send_gate_evaluate(
        SendRequest(contact=consented, account=account, template_version=marketing_version)
    )
    assert decision.allowed

    error = refused(
        contact=reachable_contact(team),
        account=account,
        template_version=marketing_version,
        decision=decision,
    )

    assert error.code == "no_consent"


def test_the_gate_reads_the_primary_address_and_the_suppression_of_that_address(
    team, account, purpose, marketing_version
):
    contact = reachable_contact(team)
    grant_consent(contact, purpose, "whatsapp")
    first = contact.points.get()
    suppression_add(address=first.address, channel="whatsapp")
    second = ContactPointFactory(
        contact=contact, channel=Channel.WHATSAPP, address="+4915199999001", is_primary=False
    )
    request = SendRequest(contact=contact, account=account, template_version=marketing_version)
    assert send_gate_evaluate(request).reason == "suppressed"

    ContactPoint.objects.filter(pk=first.pk).update(is_primary=False)
    ContactPoint.objects.filter(pk=second.pk).update(is_primary=True)
    decision = send_gate_evaluate(request)
    assert decision.allowed is True
    assert decision.inputs["address_hash"] == address_hash(second.address)

    # Without a primary address, the oldest one is the contact's address.
    ContactPoint.objects.filter(pk=second.pk).update(is_primary=False)
    assert send_gate_evaluate(request).reason == "suppressed"


def test_a_grant_counts_until_its_validity_ends(contact, account, purpose, marketing_version):
    grant_consent(contact, purpose, "whatsapp")
    at = timezone.now()
    grants = Consent.objects.filter(contact=contact, purpose=purpose, channel="whatsapp")
    grants.update(valid_until=at + dt.timedelta(seconds=1))
    consent = grants.get()
    request = SendRequest(contact=contact, account=account, template_version=marketing_version)

    decision = send_gate_evaluate(request, at=at)

    # The facts are read as the ORM reads them: aware datetimes on every database.
    assert decision.inputs["consent"] == {
        "id": consent.pk,
        "event": consent.last_event_id,
        "since": consent.since.isoformat(),
        "valid_until": consent.valid_until.isoformat(),
    }
    assert send_gate_evaluate(request, at=consent.valid_until).reason == "no_consent"


def test_a_single_decision_reads_its_facts_in_one_query(
    team, account, contact, django_assert_num_queries
):
    capped = PurposeFactory(team=team, allowed_channels=["whatsapp"], frequency_cap=2)
    version = _loaded(sendable_version(team, purpose=capped))
    grant_consent(contact, capped, "whatsapp")
    request = SendRequest(contact=contact, account=account, template_version=version)

    with django_assert_num_queries(1):
        decision = send_gate_evaluate(request)

    assert decision.allowed is True
    assert decision.inputs["frequency"] == {"sent": 0, "cap": 2, "hours": 24}


def test_requests_of_the_same_shape_reuse_the_facts_query_text(team, account, purpose):
    other = PurposeFactory(team=team, allowed_channels=["whatsapp"], frequency_cap=None)
    versions = [_loaded(sendable_version(team, purpose=p)) for p in (purpose, other)]
    contacts = [reachable_contact(team) for _ in versions]
    grant_consent(contacts[0], purpose, "whatsapp")
    _facts_sql.cache_clear()

    decisions = [
        send_gate_evaluate(SendRequest(contact=c, account=account, template_version=v))
        for c, v in zip(contacts, versions, strict=True)
    ]

    # Other contacts, another purpose: the same SQL text, built once.
    assert _facts_sql.cache_info().misses == 1
    assert _facts_sql.cache_info().hits == 1
    assert [d.reason for d in decisions] == [None, "no_consent"]
