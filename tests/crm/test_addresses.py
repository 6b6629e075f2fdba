from __future__ import annotations

import pytest

from crm.addresses import AddressInvalid, normalise_address, normalise_phone


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0151 23456789", "+4915123456789"),
        ("+49 (151) 234-56789", "+4915123456789"),
        ("0049 151 23456789", "+4915123456789"),
        ("+44 7911 123456", "+447911123456"),
    ],
)
def test_phone_numbers_become_e164(raw, expected):
    assert normalise_address("sms", raw) == expected
    assert normalise_address("whatsapp", raw) == expected


def test_default_region_is_configurable(settings):
    settings.PHONE_DEFAULT_REGION = "GB"
    assert normalise_phone("07911 123456") == "+447911123456"


@pytest.mark.parametrize("raw", ["", "abc", "12", "+49 151", "0151 2345678901234567"])
def test_invalid_phone_numbers_are_refused(raw):
    with pytest.raises(AddressInvalid) as error:
        normalise_address("sms", raw)
    assert error.value.code == "address_invalid"


def test_email_is_lower_cased_and_trimmed():
    assert normalise_address("email", "  Jana.Schmidt@Example.DE ") == "jana.schmidt@example.de"


@pytest.mark.parametrize("raw", ["", "jana", "jana@", "@example.de", "jana schmidt@example.de"])
def test_invalid_email_is_refused(raw):
    with pytest.raises(AddressInvalid):
        normalise_address("email", raw)


def test_unknown_channel_is_refused():
    with pytest.raises(AddressInvalid):
        normalise_address("fax", "123")
