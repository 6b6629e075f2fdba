"""The approvals demo data: templates in every state, made through the services, once."""

from __future__ import annotations

import pytest

from approvals.demo import DEMO_TEMPLATES
from approvals.models import (
    ApprovalPolicy,
    MessageTemplate,
    ProviderStatus,
    ReviewDecision,
    TemplateVersion,
    VersionState,
    VersionStateChange,
)
from approvals.selectors import is_sendable, review_queue_for, versions_expiring
from crm.demo import demo_seed
from crm.ledger import verify_chain

pytestmark = pytest.mark.django_db


def counts() -> tuple[int, ...]:
    return (
        ApprovalPolicy.objects.count(),
        MessageTemplate.objects.count(),
        TemplateVersion.objects.count(),
        ReviewDecision.objects.count(),
        VersionStateChange.objects.count(),
    )


@pytest.fixture
def seeded():
    demo_seed(contacts=30, password="demo-password")


def test_demo_has_templates_in_every_state(seeded):
    states = set(TemplateVersion.objects.values_list("state", flat=True))
    assert states == set(VersionState.values)
    assert MessageTemplate.objects.count() == len(DEMO_TEMPLATES)

    in_review = TemplateVersion.objects.filter(state=VersionState.IN_REVIEW)
    assert {0, 1, 2} <= set(in_review.values_list("stage_index", flat=True))
    rejected = TemplateVersion.objects.get(state=VersionState.REJECTED)
    assert rejected.decisions.get(decision="reject").comment
    changes = ReviewDecision.objects.filter(decision="request_changes")
    assert changes.exists()
    assert all(decision.comment for decision in changes)
    assert TemplateVersion.objects.get(state=VersionState.RETIRED).state_changes.last().comment


def test_demo_approved_versions_are_sendable_per_channel(seeded):
    approved = TemplateVersion.objects.filter(state=VersionState.APPROVED).select_related(
        "template"
    )
    by_channel = {version.template.channel for version in approved if is_sendable(version)}
    assert by_channel == {"whatsapp", "sms", "email"}
    whatsapp = approved.get(template__channel="whatsapp")
    assert whatsapp.provider_status == ProviderStatus.APPROVED
    assert any("{{ unsubscribe_url }}" in version.body for version in approved)
    assert approved.filter(template__team__slug="praxis-netzwerk").get().decisions.count() == 3


def test_demo_ledgers_are_real_and_the_queues_filled(seeded):
    from django.contrib.auth import get_user_model

    for version in TemplateVersion.objects.filter(decisions__isnull=False).distinct():
        entries = list(version.decisions.order_by("sequence"))
        assert verify_chain(version.pk, entries) is None
        assert all(entry.reviewer_id != version.author_id for entry in entries)
    users = get_user_model().objects
    assert review_queue_for(users.get(username="reviewer_editorial")).exists()
    assert review_queue_for(users.get(username="reviewer_legal")).exists()
    assert review_queue_for(users.get(username="reviewer_medical")).exists()
    assert versions_expiring(users.get(username="auditor"), days=30).count() == 2


def test_demo_runs_twice_without_duplicates(seeded):
    before = counts()
    demo_seed(contacts=30, password="demo-password")
    assert counts() == before
