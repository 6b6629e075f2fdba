"""Celery tasks of the consent app: call a service, retry policy; nothing else."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from consent.services.expiry import consents_expire_due, consents_request_reconfirmation
from consent.services.retention import retention_apply


@shared_task(bind=True, acks_late=True, autoretry_for=(OSError,), retry_backoff=True)
def expire_consents(self: Any) -> int:
    """Hourly (CELERY_BEAT_SCHEDULE): record `expired` for consents past their validity."""
    return consents_expire_due()


@shared_task(bind=True, acks_late=True, autoretry_for=(OSError,), retry_backoff=True)
def request_reconfirmations(self: Any) -> int:
    """Daily: ask contacts to reconfirm consents that expire soon."""
    return consents_request_reconfirmation()


@shared_task(bind=True, acks_late=True, autoretry_for=(OSError,), retry_backoff=True)
def apply_retention(self: Any) -> int:
    """Daily (CELERY_BEAT_SCHEDULE): apply the retention policies; returns the runs recorded."""
    return len(retention_apply())
