from __future__ import annotations

import datetime as dt

import pytest
from django.conf import settings as django_settings
from django.core import mail
from django.utils import timezone

from approvals import tasks
from approvals.models import VersionState
from approvals.services import versions_notify_expiring, versions_retire_expired
from tests.approvals.review_helpers import approved, three_stage_policy

pytestmark = pytest.mark.django_db

NOW = timezone.now()
DAY = dt.timedelta(days=1)


@pytest.fixture
def reviewers(team, reviewer_editorial, reviewer_legal, reviewer_medical):
    three_stage_policy(team)
    return [reviewer_editorial, reviewer_legal, reviewer_medical]


def test_expired_versions_are_retired_by_the_system(team, editor, reviewers):
    expiring = approved(team, editor, reviewers, valid_until=NOW + 3 * DAY)
    lasting = approved(team, editor, reviewers, valid_until=NOW + 30 * DAY)
    open_ended = approved(team, editor, reviewers)

    assert versions_retire_expired(now=NOW + 4 * DAY) == 1
    for version in (expiring, lasting, open_ended):
        version.refresh_from_db()
    assert expiring.state == VersionState.RETIRED
    assert lasting.state == open_ended.state == VersionState.APPROVED
    change = expiring.state_changes.last()
    assert (change.from_state, change.to_state) == ("approved", "retired")
    assert (change.actor, change.actor_label, change.comment) == (None, "", "expired")

    # Safe to run again.
    assert versions_retire_expired(now=NOW + 4 * DAY) == 0
    assert expiring.state_changes.count() == 3


def test_owner_is_told_once_ahead_of_expiry(team, editor, reviewers, settings):
    settings.APPROVALS_EXPIRY_NOTICE_DAYS = 14
    version = approved(team, editor, reviewers, valid_until=NOW + 20 * DAY)
    mail.outbox.clear()

    assert versions_notify_expiring(now=NOW) == 0
    assert versions_notify_expiring(now=NOW + 7 * DAY) == 1
    assert [m.to for m in mail.outbox] == [["editor@example.com"]]
    assert version.template.name in mail.outbox[0].subject
    version.refresh_from_db()
    assert version.expiry_notified_at == NOW + 7 * DAY

    assert versions_notify_expiring(now=NOW + 8 * DAY) == 0
    assert len(mail.outbox) == 1


def test_expiry_notice_days_are_configurable(team, editor, reviewers, settings):
    settings.APPROVALS_EXPIRY_NOTICE_DAYS = 30
    approved(team, editor, reviewers, valid_until=NOW + 20 * DAY)
    mail.outbox.clear()
    assert versions_notify_expiring(now=NOW) == 1


def test_author_is_told_when_the_template_has_no_owner(team, editor, reviewers, make_user):
    version = approved(team, editor, reviewers, valid_until=NOW + 5 * DAY)
    template = version.template
    template.owner = None
    template.save()
    mail.outbox.clear()
    assert versions_notify_expiring(now=NOW) == 1
    assert mail.outbox[0].to == ["editor@example.com"]


def test_failed_notice_is_retried_on_the_next_run(team, editor, reviewers, monkeypatch):
    version = approved(team, editor, reviewers, valid_until=NOW + 5 * DAY)

    def broken(**kwargs):
        raise OSError("smtp down")

    monkeypatch.setattr("approvals.notifications.send_expiry_notice", broken)
    assert versions_notify_expiring(now=NOW) == 0
    version.refresh_from_db()
    assert version.expiry_notified_at is None

    monkeypatch.undo()
    assert versions_notify_expiring(now=NOW) == 1


def test_tasks_run_the_services_and_are_scheduled(team, editor, reviewers):
    approved(team, editor, reviewers, valid_until=NOW + 5 * DAY)
    mail.outbox.clear()
    assert tasks.notify_expiring_versions.delay().get() == 1
    assert tasks.retire_expired_versions.delay().get() == 0

    scheduled = {entry["task"] for entry in django_settings.CELERY_BEAT_SCHEDULE.values()}
    assert {
        "approvals.tasks.retire_expired_versions",
        "approvals.tasks.notify_expiring_versions",
    } <= scheduled
