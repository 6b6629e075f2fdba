"""Content expiry: retire approved versions past `valid_until`, warn owners ahead of it.

Both run periodically (approvals.tasks) and are safe to run again: each version is handled in
its own transaction, so one failure neither blocks nor rolls back the others.
"""

from __future__ import annotations

import datetime as dt
import logging

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from approvals import notifications
from approvals.models import TemplateVersion, VersionState
from approvals.services.workflow import template_version_transition
from crm.errors import DomainError

logger = logging.getLogger(__name__)


def _retire_one(version_id: int, now: dt.datetime) -> bool:
    with transaction.atomic():
        version = TemplateVersion.objects.select_for_update().get(pk=version_id)
        # Look again under the lock: it may have been retired since the list was read.
        if version.state != VersionState.APPROVED or version.valid_until is None:
            return False
        if version.valid_until > now:
            return False
        template_version_transition(
            version=version, to=VersionState.RETIRED, actor=None, comment="expired"
        )
    return True


def versions_retire_expired(*, now: dt.datetime | None = None) -> int:
    """Retire every approved version whose validity has ended; returns how many."""
    now = now or timezone.now()
    due = TemplateVersion.objects.filter(state=VersionState.APPROVED, valid_until__lte=now)
    retired = 0
    for version_id in list(due.order_by("pk").values_list("pk", flat=True)):
        try:
            retired += _retire_one(version_id, now)
        except DomainError as exc:
            logger.warning("template version %s: not retired: %s", version_id, exc.message)
    return retired


def _notify_one(version_id: int, now: dt.datetime, window_end: dt.datetime) -> bool:
    with transaction.atomic():
        version = (
            # Lock the version only: owner and author are nullable (outer) joins.
            TemplateVersion.objects.select_for_update(of=("self",))
            .select_related("template", "template__owner", "author")
            .get(pk=version_id)
        )
        if (
            version.state != VersionState.APPROVED
            or version.expiry_notified_at is not None
            or version.valid_until is None
            or not now < version.valid_until <= window_end
        ):
            return False
        recipient = version.template.owner or version.author
        if recipient is None or not recipient.email:
            logger.warning("template version %s: nobody to tell about its expiry", version_id)
            return False
        # Sent before it is marked, under the lock: a failed send is retried on the next run.
        notifications.send_expiry_notice(version=version, recipient=recipient)
        version.expiry_notified_at = now
        version.save(update_fields=["expiry_notified_at", "updated_at"])
    return True


def versions_notify_expiring(*, now: dt.datetime | None = None) -> int:
    """E-mail the template owner (else the author) once, APPROVALS_EXPIRY_NOTICE_DAYS before
    approved content expires; returns how many notices were sent."""
    now = now or timezone.now()
    window_end = now + dt.timedelta(days=settings.APPROVALS_EXPIRY_NOTICE_DAYS)
    due = TemplateVersion.objects.filter(
        state=VersionState.APPROVED,
        expiry_notified_at__isnull=True,
        valid_until__gt=now,
        valid_until__lte=window_end,
    )
    sent = 0
    for version_id in list(due.order_by("valid_until", "pk").values_list("pk", flat=True)):
        try:
            sent += _notify_one(version_id, now, window_end)
        except (DomainError, OSError) as exc:
            logger.warning("template version %s: expiry notice failed: %s", version_id, exc)
    return sent
