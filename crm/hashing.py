from __future__ import annotations

import hashlib


def address_hash(address: str) -> str:
    """SHA-256 of a normalised address: how suppression and erased contacts keep a trace.

    Every writer of ContactPoint (including bulk imports, which skip save()) must set
    `address_hash` with this function.
    """
    return hashlib.sha256(address.strip().lower().encode("utf-8")).hexdigest()
