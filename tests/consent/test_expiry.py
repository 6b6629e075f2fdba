from __future__ import annotations

import datetime as dt
from io import StringIO

import pytest
from django.conf import settings as django_settings
from django.core import mail
from django.core.management import call_command
from django.utils import timezone

from consent import tasks
from consent.models import (
    Consent,
    ConsentAction,
    ConsentEvent,
    ConsentSource,
    ConsentStatus,
    OptInRequest,
)
from consent.services import (
    ConsentInvalid,
    Evidence,
    consents_expire_due,
    consents_request_reconfirmation,
    opt_in_confirm,
    opt_in_request,
)
from consent.services import expiry as expiry_module
from crm.ledger import verify_chain
from tests.consent.helpers import grant_consent, withdraw_consent
from tests.factories import ConsentTextFactory, ContactFactory, ContactPointFactory, PurposeFactory

pytestmark = pytest.mark.django_db

NOW = timezone.now()
YEAR = dt.timedelta(days=365)


@pytest.fixture
def purpose(team):
    # 12 months are 365 days (30.44 per month, rounded).
    return PurposeFactory(team=team, validity_months=12, reconfirm_days_before=30)


@pytest.fixture
def contact(team):
    contact = ContactFactory(team=team, language="en")
    ContactPointFactory(contact=contact, channel="email", address="grace@example.org")
    return contact


def state(contact, purpose, channel="email"):
    return Consent.objects.get(contact=contact, purpose=purpose, channel=channel)


def granted_ago(contact, purpose, days, channel="email"):
    return grant_consent(contact, purpose, channel, occurred_at=NOW - dt.timedelta(days=days))


def test_due_consent_expires_with_a_system_event_at_its_end(contact, purpose):
    grant = granted_ago(contact, purpose, 400)
    valid_until = state(contact, purpose).valid_until
    assert valid_until == grant.occurred_at + YEAR
    assert consents_expire_due(now=NOW) == 1
    consent = state(contact, purpose)
    assert consent.status == ConsentStatus.EXPIRED
    assert consent.valid_until is None
    event = consent.last_event
    assert (event.action, event.source) == (ConsentAction.EXPIRED, ConsentSource.SYSTEM)
    assert event.occurred_at == valid_until
    assert verify_chain(contact.pk, ConsentEvent.objects.filter(contact=contact)) is None
    assert not Consent.objects.granted(at=NOW).exists()


def test_running_again_expires_nothing_more(contact, purpose):
    granted_ago(contact, purpose, 400)
    consents_expire_due(now=NOW)
    assert consents_expire_due(now=NOW) == 0
    assert ConsentEvent.objects.filter(action=ConsentAction.EXPIRED).count() == 1


def test_consents_still_valid_or_not_granted_are_left_alone(contact, purpose, team):
    granted_ago(contact, purpose, 10)
    withdrawn = ContactFactory(team=team)
    granted_ago(withdrawn, purpose, 400)
    withdraw_consent(withdrawn, purpose, occurred_at=NOW - dt.timedelta(days=50))
    forever = PurposeFactory(team=team, validity_months=None)
    granted_ago(contact, forever, 4000)
    assert consents_expire_due(now=NOW) == 0
    assert state(contact, purpose).status == ConsentStatus.GRANTED
    assert state(withdrawn, purpose).status == ConsentStatus.WITHDRAWN
    assert state(contact, forever).status == ConsentStatus.GRANTED


def test_expiry_works_in_batches(team, purpose, monkeypatch):
    monkeypatch.setattr(expiry_module, "BATCH_SIZE", 2)
    contacts = [ContactFactory(team=team) for _ in range(5)]
    for contact in contacts:
        granted_ago(contact, purpose, 400)
    assert consents_expire_due(now=NOW) == 5
    assert Consent.objects.filter(status=ConsentStatus.EXPIRED).count() == 5


def test_one_refused_expiry_does_not_block_the_others(team, purpose, contact, monkeypatch):
    other = PurposeFactory(team=team, validity_months=12)
    granted_ago(contact, other, 400, channel="sms")
    granted_ago(contact, purpose, 400)
    real_record = expiry_module.consent_record

    def refuse_other(**kwargs):
        if kwargs["purpose"] == other:
            raise ConsentInvalid("refused in test")
        return real_record(**kwargs)

    monkeypatch.setattr(expiry_module, "consent_record", refuse_other)
    assert consents_expire_due(now=NOW) == 1
    assert state(contact, purpose).status == ConsentStatus.EXPIRED
    assert state(contact, other, "sms").status == ConsentStatus.GRANTED


def test_expiry_is_recorded_even_after_the_purpose_dropped_the_channel(team, contact):
    purpose = PurposeFactory(team=team, validity_months=12, allowed_channels=["email", "sms"])
    granted_ago(contact, purpose, 400, channel="sms")
    purpose.allowed_channels = ["email"]
    purpose.save()
    assert consents_expire_due(now=NOW) == 1
    assert state(contact, purpose, "sms").status == ConsentStatus.EXPIRED


def test_reconfirmation_is_requested_before_expiry(
    contact, purpose, django_capture_on_commit_callbacks
):
    text = ConsentTextFactory(purpose=purpose, language="en", body="Yes, keep me posted.")
    granted_ago(contact, purpose, 350)
    with django_capture_on_commit_callbacks(execute=True):
        assert consents_request_reconfirmation(now=NOW) == 1
    request = OptInRequest.objects.get(contact=contact)
    event = request.request_event
    assert (event.action, event.source) == (ConsentAction.REQUESTED, ConsentSource.SYSTEM)
    assert event.evidence.note == "reconfirmation"
    assert event.evidence.consent_text == text
    # Asking again does not take away the consent that is still valid.
    assert state(contact, purpose).status == ConsentStatus.GRANTED
    assert len(mail.outbox) == 1
    assert "/c/" in mail.outbox[0].body


def test_reconfirmation_is_asked_once_per_validity_period(contact, purpose):
    granted_ago(contact, purpose, 350)
    assert consents_request_reconfirmation(now=NOW) == 1
    assert consents_request_reconfirmation(now=NOW) == 0
    # Still nothing once the unanswered request has expired.
    later = NOW + dt.timedelta(days=5)
    assert consents_request_reconfirmation(now=later) == 0
    assert OptInRequest.objects.count() == 1


def test_confirmed_reconfirmation_extends_validity(contact, purpose):
    granted_ago(contact, purpose, 350)
    consents_request_reconfirmation(now=NOW)
    request = OptInRequest.objects.get(contact=contact)
    opt_in_confirm(request=request, evidence=Evidence(ip_address="192.0.2.1"))
    consent = state(contact, purpose)
    assert consent.status == ConsentStatus.GRANTED
    assert consent.valid_until > NOW + dt.timedelta(days=360)
    assert consents_expire_due(now=NOW + dt.timedelta(days=30)) == 0
    assert consents_request_reconfirmation(now=NOW) == 0


def test_consents_outside_the_window_are_not_asked(contact, purpose, team):
    granted_ago(contact, purpose, 300)
    expired_one = ContactFactory(team=team)
    granted_ago(expired_one, purpose, 400)
    assert consents_request_reconfirmation(now=NOW) == 0
    assert not OptInRequest.objects.exists()


def test_rate_limited_reconfirmation_is_skipped(contact, purpose, settings):
    for _ in range(settings.CONSENT_OPT_IN_MAX_PER_DAY):
        request = opt_in_request(
            contact=contact,
            purpose=purpose,
            channel="email",
            evidence=Evidence(note="form"),
            occurred_at=NOW - dt.timedelta(days=351),
            send_confirmation=False,
        )
        OptInRequest.objects.filter(pk=request.pk).update(expires_at=NOW - dt.timedelta(days=1))
    granted_ago(contact, purpose, 350)
    before = ConsentEvent.objects.count()
    assert consents_request_reconfirmation(now=NOW) == 0
    assert ConsentEvent.objects.count() == before


def test_restricted_contact_is_skipped_and_the_rest_asked(contact, purpose, team):
    granted_ago(contact, purpose, 350)
    restricted = ContactFactory(team=team)
    granted_ago(restricted, purpose, 350)
    restricted.is_restricted = True
    restricted.save()
    assert consents_request_reconfirmation(now=NOW) == 1
    assert list(OptInRequest.objects.values_list("contact", flat=True)) == [contact.pk]


def test_tasks_call_the_services(contact, purpose):
    granted_ago(contact, purpose, 400)
    assert tasks.expire_consents.delay().get() == 1
    granted_ago(contact, purpose, 350, channel="sms")
    assert tasks.request_reconfirmations.delay().get() == 1


def test_beat_schedule_runs_both_tasks():
    tasks_scheduled = {entry["task"] for entry in django_settings.CELERY_BEAT_SCHEDULE.values()}
    assert {"consent.tasks.expire_consents", "consent.tasks.request_reconfirmations"} <= (
        tasks_scheduled
    )


def test_command_runs_both_and_prints_counts(contact, purpose, team):
    granted_ago(contact, purpose, 400)
    granted_ago(ContactFactory(team=team), purpose, 350)
    out = StringIO()
    call_command("expire_consents", stdout=out)
    assert "Expired: 1 consents." in out.getvalue()
    assert "Reconfirmation requested: 1 consents." in out.getvalue()
