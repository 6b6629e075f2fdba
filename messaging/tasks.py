"""Celery tasks of the messaging app: ids in, call a service, retry policy; nothing else."""

from __future__ import annotations

from celery import Task, shared_task
from django.db import InterfaceError, OperationalError

from messaging.services.delivery import (
    message_deliver,
    messages_reconcile_unknown,
    outbox_claim_due,
)

TRANSIENT = (OperationalError, InterfaceError)


@shared_task(bind=True, acks_late=True, autoretry_for=TRANSIENT, retry_backoff=True, max_retries=10)
def deliver_message(self: Task, message_id: int) -> str:
    """Deliver one outbox message; a redelivered task never sends twice (see delivery.py)."""
    return message_deliver(message_id=message_id)


@shared_task(bind=True, acks_late=True, autoretry_for=TRANSIENT, retry_backoff=True)
def dispatch_due_messages(self: Task) -> int:
    """Periodic: hand every due outbox row to a delivery task (claimed with SKIP LOCKED)."""
    message_ids = outbox_claim_due()
    for message_id in message_ids:
        deliver_message.delay(message_id)
    return len(message_ids)


@shared_task(bind=True, acks_late=True, autoretry_for=TRANSIENT, retry_backoff=True)
def reconcile_unknown_messages(self: Task) -> int:
    """Periodic: fail messages whose outcome stayed unknown without any receipt."""
    return messages_reconcile_unknown()
