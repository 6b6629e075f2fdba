from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from approvals.models import ProviderStatus, TemplateVersion, VersionState
from approvals.selectors import is_sendable, previous_approved, sendability, versions_expiring
from approvals.services import (
    template_provider_status_update,
    template_update,
    template_version_retire,
    template_version_transition,
)
from tests.approvals.review_helpers import (
    approved,
    decide,
    draft,
    submitted,
    three_stage_policy,
)
from tests.factories import TemplateVersionFactory

pytestmark = pytest.mark.django_db

NOW = timezone.now()
DAY = dt.timedelta(days=1)


@pytest.fixture
def reviewers(team, reviewer_editorial, reviewer_legal, reviewer_medical):
    three_stage_policy(team)
    return [reviewer_editorial, reviewer_legal, reviewer_medical]


def test_approved_version_inside_its_window_is_sendable(team, editor, reviewers):
    version = approved(team, editor, reviewers, valid_from=NOW - DAY, valid_until=NOW + 30 * DAY)
    assert sendability(version) is None
    assert is_sendable(version)
    assert is_sendable(version, NOW + 29 * DAY)


def test_versions_not_approved_are_not_sendable(team, editor, reviewer_editorial, reviewers):
    assert sendability(draft(team, editor)) == "template_not_approved"
    in_review = submitted(team, editor)
    assert sendability(in_review) == "template_not_approved"
    decide(in_review, reviewer_editorial, "reject", comment="no")
    in_review.refresh_from_db()
    assert sendability(in_review) == "template_not_approved"


def test_expired_version_is_not_sendable(team, editor, reviewers):
    version = approved(team, editor, reviewers, valid_until=NOW + 10 * DAY)
    assert sendability(version, NOW + 10 * DAY) == "template_expired"
    assert not is_sendable(version, NOW + 11 * DAY)
    # Still expired once the periodic task retired it.
    template_version_transition(version=version, to=VersionState.RETIRED, actor=None)
    assert sendability(version, NOW + 11 * DAY) == "template_expired"


def test_retired_version_is_not_sendable(team, editor, reviewers):
    version = approved(team, editor, reviewers)
    template_version_retire(version=version, actor=editor)
    assert sendability(version) == "template_not_approved"


def test_version_is_not_sendable_before_its_window(team, editor, reviewers):
    version = approved(team, editor, reviewers, valid_from=NOW + 2 * DAY)
    assert sendability(version, NOW) == "template_not_yet_valid"
    assert is_sendable(version, NOW + 3 * DAY)


def test_whatsapp_version_needs_the_providers_approval(
    team, editor, reviewers, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        version = approved(team, editor, reviewers, channel="whatsapp")
    version.refresh_from_db()
    assert version.provider_status == ProviderStatus.PENDING
    assert sendability(version) == "provider_not_approved"

    template_provider_status_update(
        status="APPROVED", provider_template_id=version.provider_template_id
    )
    version.refresh_from_db()
    assert is_sendable(version)

    template_provider_status_update(
        status="PAUSED", reason="Low quality", provider_template_id=version.provider_template_id
    )
    version.refresh_from_db()
    assert sendability(version) == "provider_not_approved"


def test_whatsapp_version_without_provider_stage_is_not_sendable(editor):
    version = TemplateVersionFactory(
        state=VersionState.APPROVED,
        template__channel="whatsapp",
        provider_status=ProviderStatus.NOT_REQUIRED,
    )
    assert sendability(version) == "provider_not_approved"


def test_inactive_template_is_not_sendable(team, editor, reviewers):
    version = approved(team, editor, reviewers)
    template_update(template=version.template, actor=editor, is_active=False)
    version.refresh_from_db()
    assert sendability(version) == "template_inactive"


def test_is_sendable_is_one_cheap_call(team, editor, reviewers, django_assert_num_queries):
    version = approved(team, editor, reviewers)
    loaded = TemplateVersion.objects.select_related("template").get(pk=version.pk)
    with django_assert_num_queries(0):
        assert is_sendable(loaded, NOW)


def test_previous_approved_is_the_latest_earlier_approval(team, editor, reviewers):
    first = approved(team, editor, reviewers)
    second = approved(team, editor, reviewers, template=first.template)
    template_version_retire(version=first, actor=editor)
    third = draft(team, editor, template=first.template)
    assert previous_approved(third) == second
    assert previous_approved(second) == first
    assert previous_approved(first) is None


def test_versions_expiring_lists_what_ends_soon_in_scope(team, editor, outsider, reviewers):
    soon = approved(team, editor, reviewers, valid_until=NOW + 5 * DAY)
    approved(team, editor, reviewers, valid_until=NOW + 60 * DAY)
    approved(team, editor, reviewers)
    assert list(versions_expiring(editor, days=30)) == [soon]
    assert not versions_expiring(outsider).exists()
