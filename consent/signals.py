"""Signals consent sends to apps to its right (it never imports them).

`consent_changed` is sent inside the recording transaction once per batch of ledger events
(a batch of one for consent_record), so a receiver's writes commit or roll back with the
consent change itself.
"""

from __future__ import annotations

from django.dispatch import Signal

# kwargs: events (the ConsentEvents just appended, in order; the projection is updated). They
# are saved instances with their contact and purpose loaded (reading them costs no query);
# the evidence is loaded on access.
consent_changed = Signal()
