"""Receivers for signals of crm (the app to consent's left); each only calls a service."""

from __future__ import annotations

from typing import Any

from django.dispatch import receiver

from consent.services.reachability import consent_reachability_refresh
from crm.signals import contacts_reach_changed


@receiver(contacts_reach_changed, dispatch_uid="consent.reachability_refresh")
def refresh_reachability(sender: Any, *, contact_ids: list[int], **kwargs: Any) -> None:
    """Addresses, team, restriction or erasure changed: the audience columns follow."""
    consent_reachability_refresh(contact_ids=contact_ids)
