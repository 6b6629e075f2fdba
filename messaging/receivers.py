"""Receivers for signals of apps to the left; each only calls a messaging service."""

from __future__ import annotations

from typing import Any

from consent.models import ConsentEvent
from messaging.services.events import consent_changed_publish


def publish_consent_changed(sender: type, *, events: list[ConsentEvent], **kwargs: Any) -> None:
    # Runs inside the recording transaction: the delivery rows commit with the events.
    consent_changed_publish(events=events)
