"""Celery tasks of the messaging app: ids in, call a service, retry policy; nothing else."""

from __future__ import annotations

from celery import Task, shared_task
from django.db import InterfaceError, OperationalError

from messaging.services.delivery import (
    message_deliver,
    messages_reconcile_unknown,
    outbox_claim_due,
)
from messaging.services.events import webhook_deliveries_claim_lost, webhook_delivery_attempt
from messaging.services.inbound import (
    inbound_webhook_process,
    inbound_webhooks_claim_lost,
    inbound_webhooks_process_pending,
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


@shared_task(bind=True, acks_late=True, autoretry_for=TRANSIENT, retry_backoff=True, max_retries=10)
def deliver_webhook(self: Task, delivery_id: int) -> None:
    """Send one event to its subscriber; the service says when (if ever) to try again."""
    retry_in = webhook_delivery_attempt(delivery_id=delivery_id)
    while retry_in is not None and self.request.is_eager:
        # No broker (demo, tests): a Retry would surface in the caller and no worker could run
        # a delayed one, so the tries follow each other at once.
        retry_in = webhook_delivery_attempt(delivery_id=delivery_id)
    if retry_in is not None:
        # The service caps the attempts, so Celery's own retry limit must not cut in first.
        raise self.retry(countdown=retry_in, max_retries=None)


@shared_task(bind=True, acks_late=True, autoretry_for=TRANSIENT, retry_backoff=True)
def send_campaign_batch(self: Task, campaign_id: int, chain: str | None = None) -> int:
    """One batch of a running campaign; it schedules the next one itself (see campaigns.py)."""
    from messaging.services.campaigns import campaign_send_batch

    return campaign_send_batch(campaign_id=campaign_id, chain=chain).processed


@shared_task(bind=True, acks_late=True, autoretry_for=TRANSIENT, retry_backoff=True)
def resume_stalled_campaigns(self: Task) -> int:
    """Periodic: queue again the next batch of running campaigns whose batch task was lost."""
    from messaging.services.campaigns import campaigns_resume_stalled

    return campaigns_resume_stalled()


@shared_task(bind=True, acks_late=True, autoretry_for=TRANSIENT, retry_backoff=True)
def start_due_campaigns(self: Task) -> int:
    """Periodic: start scheduled campaigns whose time has come."""
    from messaging.services.campaigns import campaigns_start_due

    return campaigns_start_due()


@shared_task(bind=True, acks_late=True, autoretry_for=TRANSIENT, retry_backoff=True)
def dispatch_lost_webhooks(self: Task) -> int:
    """Periodic: queue again webhook deliveries whose task was lost."""
    delivery_ids = webhook_deliveries_claim_lost()
    for delivery_id in delivery_ids:
        deliver_webhook.delay(delivery_id)
    return len(delivery_ids)


@shared_task(bind=True, acks_late=True, autoretry_for=TRANSIENT, retry_backoff=True, max_retries=10)
def process_inbound_webhook(self: Task, webhook_id: int) -> str:
    """Apply one accepted provider webhook; a redelivered task finds the row done (inbound.py)."""
    return inbound_webhook_process(webhook_id=webhook_id)


@shared_task(bind=True, acks_late=True, autoretry_for=TRANSIENT, retry_backoff=True, max_retries=10)
def process_inbound_webhooks(self: Task) -> dict[str, int]:
    """Apply the accepted webhooks no task has tried yet, in batches (queued by the view)."""
    result = inbound_webhooks_process_pending()
    if result.more:
        # Stopped at its limit: a successor carries on, so other tasks get a turn in between.
        process_inbound_webhooks.delay()
    return result.outcomes


@shared_task(bind=True, acks_late=True, autoretry_for=TRANSIENT, retry_backoff=True)
def dispatch_lost_inbound_webhooks(self: Task) -> int:
    """Periodic: queue again accepted webhooks whose processing task was lost or crashed."""
    webhook_ids = inbound_webhooks_claim_lost()
    for webhook_id in webhook_ids:
        process_inbound_webhook.delay(webhook_id)
    return len(webhook_ids)
