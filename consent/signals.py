"""Signals consent sends to apps to its right (it never imports them).

`consent_changed` is sent inside consent_record's transaction after each ledger event, so a
receiver's writes commit or roll back with the consent change itself.
"""

from __future__ import annotations

from django.dispatch import Signal

# kwargs: event (the ConsentEvent just appended; the projection is already updated)
consent_changed = Signal()
