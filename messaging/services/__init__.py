"""The messaging app's public write API (re-exported from its modules)."""

from __future__ import annotations

from messaging.services.accounts import (
    account_credentials,
    account_fields_validate,
    channel_account_create,
)
from messaging.services.delivery import (
    Outcome,
    message_deliver,
    messages_reconcile_unknown,
    outbox_claim_due,
)
from messaging.services.gate import GateDecision, SendRequest, send_gate_evaluate
from messaging.services.ledger import conversation_for, event_append, message_record
from messaging.services.optout import provider_opt_out_record
from messaging.services.receipts import message_status_apply
from messaging.services.send import conversation_note_add, message_send

__all__ = [
    "GateDecision",
    "Outcome",
    "SendRequest",
    "account_credentials",
    "account_fields_validate",
    "channel_account_create",
    "conversation_for",
    "conversation_note_add",
    "event_append",
    "message_deliver",
    "message_record",
    "message_send",
    "message_status_apply",
    "messages_reconcile_unknown",
    "outbox_claim_due",
    "provider_opt_out_record",
    "send_gate_evaluate",
]
