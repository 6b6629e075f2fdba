"""E-mail addresses at import speed: the plain ones without Django's EmailValidator.

validate_email (lazy regular expressions, punycode and IP-literal fallbacks) costs more than
the rest of a row's cells together. Plain addresses (dot-separated atoms of letters, digits,
"_", "%", "+", "-" before the @; letter/digit/hyphen labels and a letter-only top-level
domain after it) are a subset of what it accepts, so they are taken as they are after
crm.addresses.normalise_email's own strip and lower-casing; everything else, and every
refusal, goes through normalise_email. tests/crm/test_import_fast_paths.py compares both.
"""

from __future__ import annotations

import re
from typing import Final

from crm.addresses import normalise_email

_LABEL: Final = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_PLAIN: Final = re.compile(
    rf"[a-z0-9_%+-]+(?:\.[a-z0-9_%+-]+)*@{_LABEL}(?:\.{_LABEL})*\.[a-z]{{2,63}}"
)
# EmailValidator refuses longer addresses whatever their shape.
_MAX_LENGTH: Final = 320


def normalise_import_email(raw: str) -> str:
    """The address exactly as normalise_email returns it; raises AddressInvalid alike."""
    text = raw.strip().lower()
    if len(text) <= _MAX_LENGTH and _PLAIN.fullmatch(text):
        return text
    return normalise_email(raw)
