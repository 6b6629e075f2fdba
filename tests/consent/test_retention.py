"""Retention policies: what each data class does, and that every application is recorded."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.management import call_command
from django.utils import timezone

from consent import selectors
from consent.models import (
    Consent,
    ConsentAction,
    ConsentEvidence,
    ConsentSource,
    ConsentStatus,
    RetentionPolicy,
    RetentionRun,
    Suppression,
)
from consent.services import Evidence, consent_record, retention_apply
from consent.services import retention as retention_module
from consent.tasks import apply_retention
from crm import services as crm_services
from crm.models import Contact, ContactPoint
from tests.consent.helpers import grant_consent, withdraw_consent
from tests.factories import ContactFactory, PurposeFactory

pytestmark = pytest.mark.django_db

DataClass = RetentionPolicy.DataClass
Action = RetentionPolicy.Action
# Run "a year and a bit from now", so everything created in the test is old enough.
LATER = timezone.now() + dt.timedelta(days=400)


def policy(data_class, keep_days=365, action=Action.PSEUDONYMISE, team=None, **extra):
    return RetentionPolicy.objects.create(
        data_class=data_class, keep_days=keep_days, action=action, team=team, **extra
    )


@pytest.fixture
def purpose(team):
    return PurposeFactory(team=team, key="newsletter", allowed_channels=["email", "sms"])


@pytest.fixture
def person(team, marketing):
    return crm_services.contact_create(
        team=team,
        actor=marketing,
        first_name="Ruth",
        last_name="Altbestand",
        points=[("email", "ruth.altbestand@example.org")],
    )


def test_old_evidence_is_blanked_but_its_digest_and_the_chain_stay(person, purpose, team):
    grant_consent(person, purpose, "email")
    withdrawal = withdraw_consent(person, purpose, "email")
    keep_policy = policy(DataClass.CONSENT_EVIDENCE, keep_days=365)

    [run] = retention_apply(now=LATER)

    evidence = ConsentEvidence.objects.filter(event__contact=person)
    assert run.policy == keep_policy
    assert run.affected == 2
    assert run.details["blanked"] == 2
    assert not evidence.filter(erased_at__isnull=True).exists()
    assert set(evidence.values_list("ip_address", "user_agent", "note")) == {(None, "", "")}
    withdrawal.evidence.refresh_from_db()
    assert withdrawal.evidence.digest == withdrawal.evidence_digest
    assert selectors.consent_ledger_verify(person.pk).ok
    assert RetentionRun.objects.get().affected == 2


def test_evidence_of_a_consent_in_force_or_recent_is_kept(person, purpose, team):
    grant_consent(person, purpose, "email")
    other = ContactFactory(team=team)
    grant_consent(other, purpose, "sms")
    withdraw_consent(other, purpose, "sms")
    policy(DataClass.CONSENT_EVIDENCE, keep_days=365)

    retention_apply(now=timezone.now() + dt.timedelta(days=30))
    assert not ConsentEvidence.objects.filter(erased_at__isnull=False).exists()

    [run] = retention_apply(now=LATER)
    # The grant still in force is proof (Art. 7(1)); only the ended consent's evidence goes.
    assert run.affected == 2
    assert ConsentEvidence.objects.get(event__contact=person).erased_at is None


def test_inactive_contacts_are_deleted_with_their_history_when_nothing_proves_anything(
    person, team
):
    point_ids = list(person.points.values_list("pk", flat=True))
    policy(DataClass.INACTIVE_CONTACTS, keep_days=365, action=Action.DELETE)

    [run] = retention_apply(now=LATER)

    assert run.affected == 1
    assert run.details["deleted"] == 1
    assert not Contact.objects.filter(pk=person.pk).exists()
    assert not Contact.history.filter(id=person.pk).exists()
    assert not ContactPoint.history.filter(id__in=point_ids).exists()


def test_inactive_contacts_with_consent_events_are_pseudonymised_not_deleted(person, purpose, team):
    grant_consent(person, purpose, "email")
    withdraw_consent(person, purpose, "email")
    pending = ContactFactory(team=team)
    consent_record(
        contact=pending,
        purpose=purpose,
        channel="email",
        action=ConsentAction.REQUESTED,
        source=ConsentSource.WEB_FORM,
        evidence=Evidence(ip_address="192.0.2.1"),
    )
    policy(DataClass.INACTIVE_CONTACTS, keep_days=365, action=Action.DELETE)

    [run] = retention_apply(now=LATER)

    assert run.details["pseudonymised"] == 2
    person.refresh_from_db()
    assert person.erased_at is not None
    assert person.last_name == ""
    assert person.points.get().address.endswith("@erased.invalid")
    assert not Contact.history.filter(id=person.pk, last_name="Altbestand").exists()
    # Nobody asked to be suppressed; the pending request simply expired.
    assert not Suppression.objects.exists()
    assert Consent.objects.get(contact=pending).status == ConsentStatus.EXPIRED
    assert selectors.consent_ledger_verify().ok


def test_active_contacts_are_kept(person, purpose, team):
    granted = ContactFactory(team=team)
    grant_consent(granted, purpose, "email")
    policy(DataClass.INACTIVE_CONTACTS, keep_days=365)

    [run] = retention_apply(now=timezone.now() + dt.timedelta(days=30))
    assert run.affected == 0

    [run] = retention_apply(now=LATER)
    # The contact with a consent in force is a subscriber, not inactive.
    assert run.affected == 1
    granted.refresh_from_db()
    person.refresh_from_db()
    assert granted.erased_at is None
    assert person.erased_at is not None


def test_contacts_reported_active_by_a_later_app_are_kept(person, team, monkeypatch):
    monkeypatch.setattr(retention_module, "CONTACT_ACTIVITY_SOURCES", [lambda cutoff: [person.pk]])
    policy(DataClass.INACTIVE_CONTACTS, keep_days=365)
    [run] = retention_apply(now=LATER)
    assert run.affected == 0


def test_a_teams_own_policy_replaces_the_global_one(person, team, other_team):
    foreign = ContactFactory(team=other_team)
    policy(DataClass.INACTIVE_CONTACTS, keep_days=365)
    policy(DataClass.INACTIVE_CONTACTS, keep_days=3650, team=team)

    runs = retention_apply(now=LATER)

    assert sorted(run.affected for run in runs) == [0, 1]
    person.refresh_from_db()
    foreign.refresh_from_db()
    assert person.erased_at is None
    assert foreign.erased_at is not None


def test_messages_without_a_handler_are_recorded_as_skipped(monkeypatch):
    # The messaging app registers a handler; this is the contract without one.
    monkeypatch.setattr(retention_module, "RETENTION_HANDLERS", {})
    policy(DataClass.MESSAGES, keep_days=90)
    [run] = retention_apply(now=LATER)
    assert run.affected == 0
    assert run.details == {"skipped": "no handler"}
    assert RetentionRun.objects.get().details == {"skipped": "no handler"}


def test_messages_go_to_the_registered_handler(monkeypatch):
    calls = []

    def handler(policy, cutoff, *, dry_run):
        calls.append((policy.pk, cutoff, dry_run))
        return 7, {"bodies_pseudonymised": 7}

    monkeypatch.setattr(retention_module, "RETENTION_HANDLERS", {"messages": handler})
    messages_policy = policy(DataClass.MESSAGES, keep_days=90)
    [run] = retention_apply(now=LATER)
    assert calls == [(messages_policy.pk, LATER - dt.timedelta(days=90), False)]
    assert run.affected == 7
    assert run.details["bodies_pseudonymised"] == 7


def test_a_failing_policy_is_recorded_and_the_others_still_run(person, monkeypatch):
    def broken(policy, cutoff, *, dry_run):
        raise RuntimeError("provider archive offline")

    monkeypatch.setattr(retention_module, "RETENTION_HANDLERS", {"messages": broken})
    policy(DataClass.MESSAGES, keep_days=90)
    policy(DataClass.INACTIVE_CONTACTS, keep_days=365)

    runs = {run.policy.data_class: run for run in retention_apply(now=LATER)}

    assert "provider archive offline" in runs[DataClass.MESSAGES].details["error"]
    assert runs[DataClass.INACTIVE_CONTACTS].affected == 1


def test_inactive_policies_do_nothing(person):
    policy(DataClass.INACTIVE_CONTACTS, keep_days=1, is_active=False)
    assert retention_apply(now=LATER) == []
    assert not RetentionRun.objects.exists()


def test_dry_run_changes_and_records_nothing(person, purpose):
    grant_consent(person, purpose, "email")
    withdraw_consent(person, purpose, "email")
    policy(DataClass.CONSENT_EVIDENCE, keep_days=365)
    policy(DataClass.INACTIVE_CONTACTS, keep_days=365)

    runs = retention_apply(now=LATER, dry_run=True)

    assert [run.affected for run in runs] == [2, 1]
    assert all(run.details["dry_run"] and run.pk is None for run in runs)
    assert not RetentionRun.objects.exists()
    person.refresh_from_db()
    assert person.erased_at is None
    assert not ConsentEvidence.objects.filter(erased_at__isnull=False).exists()


def test_the_daily_task_applies_the_policies(person):
    policy(DataClass.MESSAGES, keep_days=90)
    assert apply_retention.delay().get() == 1
    assert RetentionRun.objects.count() == 1


def test_the_command_reports_each_run(person, capsys, monkeypatch):
    monkeypatch.setattr(retention_module, "RETENTION_HANDLERS", {})
    policy(DataClass.MESSAGES, keep_days=90)
    call_command("apply_retention", "--dry-run")
    assert "no handler" in capsys.readouterr().out
    assert not RetentionRun.objects.exists()
    call_command("apply_retention")
    assert RetentionRun.objects.count() == 1


def test_the_beat_schedule_runs_retention_daily(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["consent-apply-retention"]
    assert entry["task"] == "consent.tasks.apply_retention"
    assert entry["schedule"] == 24 * 60 * 60
