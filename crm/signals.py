"""Signals crm sends to apps to its right (it never imports them).

`contacts_reach_changed` is sent inside the writing transaction whenever something that
decides whether a contact can be reached changes: its addresses (added, changed, removed,
imported), its team, its restriction or its erasure. A receiver's writes commit or roll back
with the change itself. consent keeps its projection's audience columns true with it.
"""

from __future__ import annotations

from django.dispatch import Signal

# kwargs: contact_ids (a list of the contacts' ids).
contacts_reach_changed = Signal()
