"""The API's error body: a code, a readable detail, and the messages per field."""

from __future__ import annotations

from approvals.errors import ChannelRulesViolated, Violation
from crm.addresses import AddressInvalid
from crm.api.base import exception_handler


def test_domain_error_names_its_field():
    response = exception_handler(AddressInvalid("bad number", field="address"), {})
    assert response.status_code == 400
    assert response.data == {
        "code": "address_invalid",
        "detail": "bad number",
        "address": ["bad number"],
    }


def test_channel_rule_violations_are_reported_per_field():
    error = ChannelRulesViolated(
        [
            Violation(field="body", code="too_long", message="Body too long."),
            Violation(field="subject", code="required", message="Subject required."),
            Violation(field="body", code="undeclared_variable", message="Undeclared x."),
        ]
    )
    response = exception_handler(error, {})
    assert response.status_code == 400
    assert response.data["code"] == "channel_rules_violated"
    assert response.data["body"] == ["Body too long.", "Undeclared x."]
    assert response.data["subject"] == ["Subject required."]
