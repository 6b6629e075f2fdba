"""The approvals app's public write API (re-exported from its modules)."""

from __future__ import annotations

from approvals.services.policies import (
    policy_create,
    template_reviewer_assign,
    template_reviewer_remove,
)
from approvals.services.provider import (
    META_EVENTS,
    provider_status_from_event,
    template_provider_status_update,
    template_version_provider_submit,
)
from approvals.services.review import review_decide
from approvals.services.templates import template_create, template_update
from approvals.services.validity import versions_notify_expiring, versions_retire_expired
from approvals.services.workflow import (
    content_hash,
    template_version_create,
    template_version_retire,
    template_version_submit,
    template_version_transition,
    template_version_update,
)

__all__ = [
    "META_EVENTS",
    "content_hash",
    "policy_create",
    "provider_status_from_event",
    "review_decide",
    "template_create",
    "template_provider_status_update",
    "template_reviewer_assign",
    "template_reviewer_remove",
    "template_update",
    "template_version_create",
    "template_version_provider_submit",
    "template_version_retire",
    "template_version_submit",
    "template_version_transition",
    "template_version_update",
    "versions_notify_expiring",
    "versions_retire_expired",
]
