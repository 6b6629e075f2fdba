"""The consent app's public write API (re-exported from its modules)."""

from __future__ import annotations

from consent.services.double_opt_in import (
    OptInRateLimited,
    OptInTokenInvalid,
    opt_in_confirm,
    opt_in_open_request,
    opt_in_request,
    opt_in_request_from_token,
    opt_in_send_confirmation,
    opt_in_token,
)
from consent.services.inbound import InboundConsentOutcome, consent_inbound_message
from consent.services.ledger import (
    ConsentInvalid,
    Evidence,
    EvidenceMissing,
    consent_record,
    is_suppressed,
    suppression_add,
)

__all__ = [
    "ConsentInvalid",
    "Evidence",
    "EvidenceMissing",
    "InboundConsentOutcome",
    "OptInRateLimited",
    "OptInTokenInvalid",
    "consent_inbound_message",
    "consent_record",
    "is_suppressed",
    "opt_in_confirm",
    "opt_in_open_request",
    "opt_in_request",
    "opt_in_request_from_token",
    "opt_in_send_confirmation",
    "opt_in_token",
    "suppression_add",
]
