"""Celery tasks of the approvals app: ids in, call a service, retry policy; nothing else."""

from __future__ import annotations

from celery import Task, shared_task
from django.db import InterfaceError, OperationalError

from approvals import notifications
from approvals.providers import ProviderUnavailable
from approvals.services.provider import template_version_provider_submit
from approvals.services.validity import versions_notify_expiring, versions_retire_expired

TRANSIENT = (OperationalError, InterfaceError, OSError)


@shared_task(bind=True, acks_late=True, autoretry_for=TRANSIENT, retry_backoff=True)
def notify_reviewers(self: Task, version_id: int, stage_index: int | None = None) -> int:
    """On commit of a submission or a completed stage: mail the stage's reviewers."""
    return notifications.notify_stage_reviewers(version_id=version_id, stage_index=stage_index)


@shared_task(bind=True, acks_late=True, autoretry_for=TRANSIENT, retry_backoff=True)
def notify_author(self: Task, decision_id: int) -> int:
    """On commit of a review decision: mail the version's author."""
    return notifications.notify_decision_author(decision_id=decision_id)


@shared_task(
    bind=True,
    acks_late=True,
    autoretry_for=(*TRANSIENT, ProviderUnavailable),
    retry_backoff=True,
    max_retries=8,
)
def submit_to_provider(self: Task, version_id: int) -> str:
    """On commit of an internal approval (WhatsApp): submit to the provider. Idempotent."""
    return template_version_provider_submit(version_id=version_id).provider_status


@shared_task(bind=True, acks_late=True, autoretry_for=TRANSIENT, retry_backoff=True)
def retire_expired_versions(self: Task) -> int:
    """Hourly (CELERY_BEAT_SCHEDULE): retire approved versions past valid_until."""
    return versions_retire_expired()


@shared_task(bind=True, acks_late=True, autoretry_for=TRANSIENT, retry_backoff=True)
def notify_expiring_versions(self: Task) -> int:
    """Daily: warn template owners APPROVALS_EXPIRY_NOTICE_DAYS before content expires."""
    return versions_notify_expiring()
