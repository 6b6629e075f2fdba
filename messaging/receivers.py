"""Receivers for signals of apps to the left; each only calls a messaging service."""

from __future__ import annotations

from typing import Any

from consent.models import ConsentEvent
from messaging.services.events import consent_changed_publish


def publish_consent_changed(sender: type, *, event: ConsentEvent, **kwargs: Any) -> None:
    # Runs inside consent_record's transaction: the delivery rows commit with the event.
    consent_changed_publish(event=event)
