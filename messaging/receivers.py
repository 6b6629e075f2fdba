"""Receivers for signals of apps to the left; each only calls a messaging service."""

from __future__ import annotations

from typing import Any

from consent.models import ConsentEvent
from messaging.selectors import webhook_accounts_forget
from messaging.services.events import consent_changed_publish


def publish_consent_changed(sender: type, *, events: list[ConsentEvent], **kwargs: Any) -> None:
    # Runs inside the recording transaction: the delivery rows commit with the events.
    consent_changed_publish(events=events)


def forget_webhook_accounts(sender: type, **kwargs: Any) -> None:
    """A channel account was saved or deleted: webhooks read it afresh."""
    webhook_accounts_forget()
