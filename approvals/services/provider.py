"""The provider stage: after internal approval a WhatsApp version is submitted to the provider
(approvals.tasks.submit_to_provider) and becomes sendable only once the provider approves it.
Status changes arrive from messaging's webhooks through `template_provider_status_update`.
"""

from __future__ import annotations

import logging
from typing import Final

from django.db import transaction
from django.utils.translation import gettext_lazy as _

from approvals.errors import ProviderStatusInvalid
from approvals.models import ProviderStatus, TemplateVersion, VersionState
from approvals.providers import template_provider
from crm.models import Channel

logger = logging.getLogger(__name__)

# Meta's `message_template_status_update` events, mapped to our provider status. FLAGGED is a
# quality warning (the template stays usable until Meta pauses it), so it changes nothing.
META_EVENTS: Final[dict[str, str | None]] = {
    "APPROVED": ProviderStatus.APPROVED,
    "REINSTATED": ProviderStatus.APPROVED,
    "REJECTED": ProviderStatus.REJECTED,
    "PAUSED": ProviderStatus.PAUSED,
    "DISABLED": ProviderStatus.DISABLED,
    "PENDING_DELETION": ProviderStatus.DISABLED,
    "DELETED": ProviderStatus.DISABLED,
    "PENDING": ProviderStatus.PENDING,
    "IN_APPEAL": ProviderStatus.PENDING,
    "FLAGGED": None,
}
# The answers a provider may give to a submission.
SUBMISSION_STATUSES: Final = frozenset(
    {ProviderStatus.PENDING, ProviderStatus.APPROVED, ProviderStatus.REJECTED}
)


def provider_status_from_event(status: str) -> str | None:
    """Our status for a provider event or status name; None for events that change nothing."""
    key = (status or "").strip()
    if key.upper() in META_EVENTS:
        return META_EVENTS[key.upper()]
    if key in ProviderStatus.values and key not in (
        ProviderStatus.NOT_REQUIRED,
        ProviderStatus.NOT_SUBMITTED,
    ):
        return key
    raise ProviderStatusInvalid(
        _("Unknown provider status “%(v)s”.") % {"v": status}, field="status"
    )


@transaction.atomic
def template_version_provider_submit(*, version_id: int) -> TemplateVersion:
    """Submit an internally approved WhatsApp version to the provider; idempotent.

    The row lock makes a redelivered task wait and then find the recorded answer, so the
    provider sees one submission per version.
    """
    version = (
        TemplateVersion.objects.select_for_update(of=("self",))
        .select_related("template")
        .get(pk=version_id)
    )
    if version.state != VersionState.APPROVED or (
        version.provider_status != ProviderStatus.NOT_SUBMITTED
    ):
        return version
    answer = template_provider().submit(version)
    if answer.status not in SUBMISSION_STATUSES:
        raise ProviderStatusInvalid(
            _("The provider answered with an unknown status “%(v)s”.") % {"v": answer.status}
        )
    version.provider_status = answer.status
    version.provider_template_id = answer.provider_template_id[:64]
    version.provider_reason = answer.reason[:255]
    version._change_reason = f"provider: {answer.status}"
    version.save(
        update_fields=["provider_status", "provider_template_id", "provider_reason", "updated_at"]
    )
    return version


@transaction.atomic
def template_provider_status_update(
    *,
    status: str,
    reason: str = "",
    provider_template_id: str = "",
    name: str = "",
    language: str = "",
) -> list[TemplateVersion]:
    """Apply a provider's status update; returns the versions whose status changed.

    Matched by the provider's template id, or else by template name and language (Meta's
    `en_US` matches our `en`). Repeated updates change nothing, so webhooks can retry.
    """
    new_status = provider_status_from_event(status)
    if not provider_template_id and not name:
        raise ProviderStatusInvalid(
            _("A status update needs the provider's template id or the template name."),
            field="provider_template_id",
        )
    awaiting = (
        TemplateVersion.objects.select_for_update(of=("self",))
        .filter(template__channel=Channel.WHATSAPP, state=VersionState.APPROVED)
        .exclude(provider_status__in=[ProviderStatus.NOT_REQUIRED, ProviderStatus.NOT_SUBMITTED])
        .order_by("pk")
    )
    versions = []
    if provider_template_id:
        versions = list(awaiting.filter(provider_template_id=provider_template_id))
    if not versions and name:
        base_language = language.replace("-", "_").split("_")[0].lower()
        versions = list(awaiting.filter(template__name=name, template__language=base_language))
    if not versions:
        logger.info(
            "provider status %s for unknown template id=%r name=%r language=%r",
            status,
            provider_template_id,
            name,
            language,
        )
    if new_status is None:
        return []
    changed = []
    for version in versions:
        reason = (reason or "")[:255]
        if version.provider_status == new_status and version.provider_reason == reason:
            continue
        version.provider_status = new_status
        version.provider_reason = reason
        if provider_template_id and not version.provider_template_id:
            version.provider_template_id = provider_template_id[:64]
        version._change_reason = f"provider: {status}"[:100]
        version.save(
            update_fields=[
                "provider_status",
                "provider_reason",
                "provider_template_id",
                "updated_at",
            ]
        )
        changed.append(version)
    return changed
