"""Phone numbers at import speed: the common spellings without phonenumbers.parse.

crm.addresses.normalise_phone (phonenumbers.parse, is_valid_number) costs about 200 µs a
number, more than everything else an import does with a row. Most numbers in a file are
plain digits with the usual separators, either international (+49 151 …, 0049 151 …) or in
the default region's national form (0151 …). For those the country code and the national
number are found by slicing, and the number is checked against the same metadata patterns
that is_valid_number uses (the general pattern, then the patterns of each number type).

Only numbers that pass are taken from the fast path, and only where the slice is exactly
what parse would produce: a country code shared by several regions (+1, +44, +7 …), a
national number starting with 0 or with a national prefix, or any other spelling goes
through normalise_phone, and so does every number the check refuses, so refusals carry
normalise_phone's message. tests/crm/test_import_phones.py compares both paths.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import phonenumbers
from django.conf import settings
from phonenumbers import PhoneMetadata

from crm.addresses import normalise_phone

_SEPARATORS = str.maketrans("", "", " -/().")
_DIGITS = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class _Pattern:
    lengths: frozenset[int]
    pattern: re.Pattern[str]

    def matches(self, number: str) -> bool:
        if self.lengths and len(number) not in self.lengths:
            return False
        return self.pattern.fullmatch(number) is not None


@dataclass(frozen=True)
class _Country:
    code: int
    general: _Pattern
    types: tuple[_Pattern, ...]
    # What parse strips as a national prefix ("0" in Germany); None if nothing.
    national_prefix: re.Pattern[str] | None

    def is_valid(self, national_number: str) -> bool:
        return self.general.matches(national_number) and any(
            kind.matches(national_number) for kind in self.types
        )


def _pattern(description: object) -> _Pattern | None:
    pattern = getattr(description, "national_number_pattern", None)
    if not pattern:
        return None
    lengths = frozenset(getattr(description, "possible_length", ()) or ())
    return _Pattern(lengths, re.compile(pattern))


@functools.cache
def _country(code: int) -> _Country | None:
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(code, ())
    if len(regions) != 1:
        return None
    metadata = PhoneMetadata.metadata_for_region(regions[0])
    general = _pattern(metadata.general_desc) if metadata else None
    if metadata is None or general is None or metadata.national_prefix_transform_rule:
        return None
    # Any one type makes a number valid; the common ones first, since any() stops early.
    kinds = (
        metadata.mobile,
        metadata.fixed_line,
        metadata.premium_rate,
        metadata.toll_free,
        metadata.shared_cost,
        metadata.voip,
        metadata.personal_number,
        metadata.pager,
        metadata.uan,
        metadata.voicemail,
    )
    types = tuple(p for p in (_pattern(kind) for kind in kinds) if p is not None)
    prefix = metadata.national_prefix_for_parsing
    return _Country(code, general, types, re.compile(prefix) if prefix else None)


@functools.cache
def _region_country(region: str) -> _Country | None:
    metadata = PhoneMetadata.metadata_for_region(region)
    country = _country(metadata.country_code) if metadata else None
    # National numbers are sliced only where the national prefix is a plain digit string.
    if country is None or country.national_prefix is None:
        return None
    return country if _DIGITS.fullmatch(country.national_prefix.pattern) else None


def _split(compact: str) -> tuple[_Country, str] | None:
    """(country, national number) as parse would find them, or None to let parse decide."""
    if compact.startswith(("+", "00")):
        digits = compact[1:] if compact.startswith("+") else compact[2:]
        if not (digits.isascii() and digits.isdigit()):
            return None
        for size in (1, 2, 3):
            code = int(digits[:size]) if digits[:1] != "0" else 0
            if code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
                country = _country(code)
                national = digits[size:]
                if country is None or (
                    country.national_prefix and country.national_prefix.match(national)
                ):
                    return None
                return country, national
        return None
    country = _region_country(settings.PHONE_DEFAULT_REGION)
    if country is None or not (compact.isascii() and compact.isdigit()):
        return None
    prefix = country.national_prefix.pattern  # type: ignore[union-attr]
    if not compact.startswith(prefix):
        return None
    return country, compact[len(prefix) :]


def normalise_import_phone(raw: str) -> str:
    """E.164 for `raw`, exactly as normalise_phone returns it; raises AddressInvalid alike."""
    found = _split(raw.strip().translate(_SEPARATORS))
    if found is not None:
        country, national = found
        if national[:1] not in ("", "0") and country.is_valid(national):
            return f"+{country.code}{national}"
    return normalise_phone(raw)
