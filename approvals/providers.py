"""The provider stage: WhatsApp templates must also be approved by the provider (Meta).

An adapter submits an internally approved version and answers with the provider's id and a
first status; later changes arrive through messaging's webhooks, which call
`approvals.services.template_provider_status_update`. The adapter is chosen by the setting
APPROVALS_TEMPLATE_PROVIDER (a dotted path), so approvals never imports messaging: a real
WhatsApp adapter can live there and be named in the setting.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from django.conf import settings
from django.utils.module_loading import import_string

from approvals.models import ProviderStatus

if TYPE_CHECKING:
    from approvals.models import TemplateVersion


class ProviderUnavailable(Exception):
    """The provider could not be reached; the submission task retries with backoff."""


@dataclass(frozen=True)
class ProviderSubmission:
    """The provider's answer to a submission."""

    provider_template_id: str
    status: str
    reason: str = ""


class TemplateProvider(Protocol):
    def submit(self, version: TemplateVersion) -> ProviderSubmission:
        """Hand the version to the provider for review. Raise ProviderUnavailable to retry."""


class FakeTemplateProvider:
    """For tests and the demo: accepts everything and answers "pending", or "approved" at once
    when APPROVALS_FAKE_PROVIDER_APPROVES is set. `decide()` plays the provider's webhook."""

    def __init__(self, *, approve_immediately: bool | None = None) -> None:
        if approve_immediately is None:
            approve_immediately = settings.APPROVALS_FAKE_PROVIDER_APPROVES
        self.approve_immediately = approve_immediately

    def submit(self, version: TemplateVersion) -> ProviderSubmission:
        status = ProviderStatus.APPROVED if self.approve_immediately else ProviderStatus.PENDING
        return ProviderSubmission(provider_template_id=f"fake-{uuid.uuid4().hex}", status=status)

    @staticmethod
    def decide(
        version: TemplateVersion, status: str = "APPROVED", reason: str = ""
    ) -> list[TemplateVersion]:
        """Deliver a status update as Meta's webhook would (e.g. "APPROVED", "REJECTED")."""
        from approvals.services import template_provider_status_update

        return template_provider_status_update(
            status=status, reason=reason, provider_template_id=version.provider_template_id
        )


def template_provider() -> TemplateProvider:
    """The configured adapter (setting APPROVALS_TEMPLATE_PROVIDER)."""
    return import_string(settings.APPROVALS_TEMPLATE_PROVIDER)()
