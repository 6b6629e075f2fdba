"""The messaging app's public write API (re-exported from its modules)."""

from __future__ import annotations

from messaging.services.accounts import (
    account_credentials,
    account_fields_validate,
    channel_account_create,
)
from messaging.services.automation import (
    automation_rule_create,
    automation_rule_update,
    automation_run,
)
from messaging.services.conversations import (
    agent_presence_set,
    conversation_agent_replied,
    conversation_assign,
    conversation_hand_back,
    conversation_hand_off,
    conversation_inbound_received,
    conversation_resolve,
    conversation_take_over,
)
from messaging.services.delivery import (
    Outcome,
    message_deliver,
    messages_reconcile_unknown,
    outbox_claim_due,
)
from messaging.services.events import (
    event_publish,
    webhook_delivery_attempt,
    webhook_sign,
    webhook_subscription_create,
    webhook_subscription_enable,
    webhook_subscription_update,
)
from messaging.services.exports import (
    ExportInvalid,
    VerifyResult,
    conversations_export,
    export_verify,
)
from messaging.services.gate import GateDecision, SendRequest, send_gate_evaluate
from messaging.services.inbound import (
    BatchResult,
    inbound_message_receive,
    webhook_batch_process,
    webhook_payload_quarantine,
)
from messaging.services.ledger import conversation_for, event_append, message_record
from messaging.services.optout import provider_opt_out_record
from messaging.services.receipts import message_status_apply
from messaging.services.send import conversation_note_add, message_send

__all__ = [
    "BatchResult",
    "ExportInvalid",
    "GateDecision",
    "Outcome",
    "SendRequest",
    "VerifyResult",
    "account_credentials",
    "account_fields_validate",
    "agent_presence_set",
    "automation_rule_create",
    "automation_rule_update",
    "automation_run",
    "channel_account_create",
    "conversation_agent_replied",
    "conversation_assign",
    "conversation_for",
    "conversation_hand_back",
    "conversation_hand_off",
    "conversation_inbound_received",
    "conversation_note_add",
    "conversation_resolve",
    "conversation_take_over",
    "conversations_export",
    "event_append",
    "event_publish",
    "export_verify",
    "inbound_message_receive",
    "message_deliver",
    "message_record",
    "message_send",
    "message_status_apply",
    "messages_reconcile_unknown",
    "outbox_claim_due",
    "provider_opt_out_record",
    "send_gate_evaluate",
    "webhook_batch_process",
    "webhook_delivery_attempt",
    "webhook_payload_quarantine",
    "webhook_sign",
    "webhook_subscription_create",
    "webhook_subscription_enable",
    "webhook_subscription_update",
]

from messaging.services.campaigns import (
    CampaignInvalid,
    CampaignRefused,
    TemplateChoice,
    campaign_cancel,
    campaign_create,
    campaign_dry_run,
    campaign_launch,
    campaign_pause,
    campaign_resume,
    campaign_send_batch,
    campaign_transition,
    campaign_update,
    campaigns_resume_stalled,
)

__all__ += [
    "CampaignInvalid",
    "CampaignRefused",
    "TemplateChoice",
    "campaign_cancel",
    "campaign_create",
    "campaign_dry_run",
    "campaign_launch",
    "campaign_pause",
    "campaign_resume",
    "campaign_send_batch",
    "campaign_transition",
    "campaign_update",
    "campaigns_resume_stalled",
]
