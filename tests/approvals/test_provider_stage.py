from __future__ import annotations

import pytest

from approvals.errors import ProviderStatusInvalid
from approvals.models import ProviderStatus, TemplateVersion
from approvals.providers import (
    FakeTemplateProvider,
    ProviderSubmission,
    ProviderUnavailable,
    template_provider,
)
from approvals.selectors import is_sendable, sendability
from approvals.services import (
    template_provider_status_update,
    template_version_provider_submit,
)
from tests.approvals.review_helpers import approved, three_stage_policy

pytestmark = pytest.mark.django_db


@pytest.fixture
def reviewers(team, reviewer_editorial, reviewer_legal, reviewer_medical):
    three_stage_policy(team)
    return [reviewer_editorial, reviewer_legal, reviewer_medical]


@pytest.fixture
def whatsapp_version(team, editor, reviewers, django_capture_on_commit_callbacks):
    """Internally approved; on commit the provider task submitted it (the fake: pending)."""
    with django_capture_on_commit_callbacks(execute=True):
        version = approved(team, editor, reviewers, channel="whatsapp", language="en")
    version.refresh_from_db()
    return version


def snapshot(version):
    return TemplateVersion.objects.values(
        "provider_status", "provider_reason", "provider_template_id"
    ).get(pk=version.pk)


def test_internal_approval_submits_whatsapp_versions_to_the_provider(whatsapp_version):
    assert whatsapp_version.provider_status == ProviderStatus.PENDING
    assert whatsapp_version.provider_template_id.startswith("fake-")
    assert sendability(whatsapp_version) == "provider_not_approved"


def test_submission_waits_for_commit(team, editor, reviewers, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        version = approved(team, editor, reviewers, channel="whatsapp")
    version.refresh_from_db()
    assert version.provider_status == ProviderStatus.NOT_SUBMITTED
    assert callbacks


def test_other_channels_need_no_provider(
    team, editor, reviewers, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        version = approved(team, editor, reviewers, channel="sms")
    version.refresh_from_db()
    assert version.provider_status == ProviderStatus.NOT_REQUIRED
    assert version.provider_template_id == ""
    assert is_sendable(version)


@pytest.mark.parametrize(
    ("event", "status", "sendable"),
    [
        ("APPROVED", ProviderStatus.APPROVED, True),
        ("REJECTED", ProviderStatus.REJECTED, False),
        ("PAUSED", ProviderStatus.PAUSED, False),
        ("DISABLED", ProviderStatus.DISABLED, False),
        ("approved", ProviderStatus.APPROVED, True),
    ],
)
def test_meta_status_events_are_mapped(whatsapp_version, event, status, sendable):
    changed = template_provider_status_update(
        status=event,
        reason="INVALID_FORMAT",
        provider_template_id=whatsapp_version.provider_template_id,
    )
    assert changed == [whatsapp_version]
    whatsapp_version.refresh_from_db()
    assert whatsapp_version.provider_status == status
    assert whatsapp_version.provider_reason == "INVALID_FORMAT"
    assert is_sendable(whatsapp_version) is sendable


def test_repeated_status_updates_change_nothing(whatsapp_version):
    template_id = whatsapp_version.provider_template_id
    assert template_provider_status_update(status="APPROVED", provider_template_id=template_id)
    history = whatsapp_version.history.count()
    assert (
        template_provider_status_update(status="APPROVED", provider_template_id=template_id) == []
    )
    assert whatsapp_version.history.count() == history


def test_flagged_is_only_a_warning(whatsapp_version):
    template_id = whatsapp_version.provider_template_id
    template_provider_status_update(status="APPROVED", provider_template_id=template_id)
    assert template_provider_status_update(status="FLAGGED", provider_template_id=template_id) == []
    whatsapp_version.refresh_from_db()
    assert whatsapp_version.provider_status == ProviderStatus.APPROVED


def test_update_matches_by_name_and_language_without_an_id(whatsapp_version):
    changed = template_provider_status_update(
        status="APPROVED",
        provider_template_id="1234567890",
        name=whatsapp_version.template.name,
        language="en_US",
    )
    assert changed == [whatsapp_version]
    whatsapp_version.refresh_from_db()
    assert whatsapp_version.provider_status == ProviderStatus.APPROVED


def test_unknown_template_changes_nothing(whatsapp_version):
    before = snapshot(whatsapp_version)
    assert template_provider_status_update(status="APPROVED", provider_template_id="nope") == []
    assert snapshot(whatsapp_version) == before


@pytest.mark.parametrize(
    "arguments",
    [
        {"status": "LOVED", "provider_template_id": "x"},
        {"status": "not_submitted", "provider_template_id": "x"},
        {"status": "APPROVED"},
    ],
)
def test_bad_status_updates_are_refused(whatsapp_version, arguments):
    before = snapshot(whatsapp_version)
    with pytest.raises(ProviderStatusInvalid):
        template_provider_status_update(**arguments)
    assert snapshot(whatsapp_version) == before


def test_fake_provider_can_approve_at_once(
    team, editor, reviewers, settings, django_capture_on_commit_callbacks
):
    settings.APPROVALS_FAKE_PROVIDER_APPROVES = True
    with django_capture_on_commit_callbacks(execute=True):
        version = approved(team, editor, reviewers, channel="whatsapp")
    version.refresh_from_db()
    assert version.provider_status == ProviderStatus.APPROVED
    assert is_sendable(version)


def test_fake_provider_plays_the_webhook(whatsapp_version):
    FakeTemplateProvider.decide(whatsapp_version, "REJECTED", reason="TAG_CONTENT_MISMATCH")
    whatsapp_version.refresh_from_db()
    assert whatsapp_version.provider_status == ProviderStatus.REJECTED
    assert whatsapp_version.provider_reason == "TAG_CONTENT_MISMATCH"


class DownProvider:
    def submit(self, version):
        raise ProviderUnavailable("timeout")


class OddProvider:
    def submit(self, version):
        return ProviderSubmission(provider_template_id="1", status="paused")


@pytest.mark.parametrize(
    ("provider", "error"),
    [("DownProvider", ProviderUnavailable), ("OddProvider", ProviderStatusInvalid)],
)
def test_failed_submission_leaves_the_version_waiting(
    team, editor, reviewers, settings, provider, error
):
    version = approved(team, editor, reviewers, channel="whatsapp")
    settings.APPROVALS_TEMPLATE_PROVIDER = f"{__name__}.{provider}"
    with pytest.raises(error):
        template_version_provider_submit(version_id=version.pk)
    version.refresh_from_db()
    assert version.provider_status == ProviderStatus.NOT_SUBMITTED

    settings.APPROVALS_TEMPLATE_PROVIDER = "approvals.providers.FakeTemplateProvider"
    assert template_version_provider_submit(version_id=version.pk).provider_status == "pending"
    # Delivered twice: the second run finds the answer and submits nothing.
    template_id = TemplateVersion.objects.get(pk=version.pk).provider_template_id
    assert (
        template_version_provider_submit(version_id=version.pk).provider_template_id == template_id
    )


def test_configured_provider_is_loaded_from_the_setting(settings):
    settings.APPROVALS_TEMPLATE_PROVIDER = f"{__name__}.DownProvider"
    assert isinstance(template_provider(), DownProvider)
