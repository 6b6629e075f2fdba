"""Normalising addresses: E.164 for phone numbers, lower-case for e-mail.

Pure functions, so imports, the API, admin forms and webhooks all agree on one spelling of
an address, which is what makes "unique per team and channel" and deduplication work.
"""

from __future__ import annotations

import phonenumbers
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.utils.translation import gettext_lazy as _

from crm.errors import DomainError
from crm.models import Channel


class AddressInvalid(DomainError):
    code = "address_invalid"


def normalise_phone(raw: str, *, region: str | None = None) -> str:
    """Return `raw` in E.164; numbers without a country code belong to PHONE_DEFAULT_REGION."""
    text = (raw or "").strip()
    if text.startswith("00"):
        text = "+" + text[2:]
    try:
        number = phonenumbers.parse(text, region or settings.PHONE_DEFAULT_REGION)
    except phonenumbers.NumberParseException as exc:
        raise AddressInvalid(
            _("“%(value)s” is not a phone number.") % {"value": raw}, field="address"
        ) from exc
    if not phonenumbers.is_valid_number(number):
        raise AddressInvalid(
            _("“%(value)s” is not a valid phone number.") % {"value": raw}, field="address"
        )
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalise_email(raw: str) -> str:
    text = (raw or "").strip().lower()
    try:
        validate_email(text)
    except ValidationError as exc:
        raise AddressInvalid(
            _("“%(value)s” is not a valid e-mail address.") % {"value": raw}, field="address"
        ) from exc
    return text


def normalise_address(channel: str, raw: str) -> str:
    """Normalise an address for `channel`; raises AddressInvalid with a readable message."""
    if channel == Channel.EMAIL:
        return normalise_email(raw)
    if channel in (Channel.SMS, Channel.WHATSAPP):
        return normalise_phone(raw)
    raise AddressInvalid(_("Unknown channel “%(value)s”.") % {"value": channel}, field="channel")
