"""Messaging models, split by subdomain (see each module)."""

from __future__ import annotations

from messaging.models.automation import AutomationRule, RuleAction
from messaging.models.channels import (
    PROVIDER_CHANNELS,
    PROVIDER_CREDENTIALS,
    AgentPresence,
    ChannelAccount,
    PresenceStatus,
    ProviderKind,
)
from messaging.models.conversations import (
    MESSAGE_EVENTS,
    Conversation,
    ConversationEvent,
    ConversationStatus,
    EventKind,
    Handler,
)
from messaging.models.exports import ConversationExport
from messaging.models.integration import (
    DeliveryStatus,
    EventType,
    WebhookDelivery,
    WebhookSubscription,
)
from messaging.models.messages import (
    COUNTED_STATUSES,
    FINAL_STATUSES,
    STATUS_RANK,
    Direction,
    Message,
    MessageKind,
    MessageStatus,
    OutboxEntry,
    OutboxState,
    SenderKind,
    StatusReceipt,
)
from messaging.models.webhooks import InboundWebhook, InboxStatus, QuarantinedPayload

__all__ = [
    "COUNTED_STATUSES",
    "FINAL_STATUSES",
    "MESSAGE_EVENTS",
    "PROVIDER_CHANNELS",
    "PROVIDER_CREDENTIALS",
    "STATUS_RANK",
    "AgentPresence",
    "AutomationRule",
    "ChannelAccount",
    "Conversation",
    "ConversationEvent",
    "ConversationExport",
    "ConversationStatus",
    "DeliveryStatus",
    "Direction",
    "EventKind",
    "EventType",
    "Handler",
    "InboundWebhook",
    "InboxStatus",
    "Message",
    "MessageKind",
    "MessageStatus",
    "OutboxEntry",
    "OutboxState",
    "PresenceStatus",
    "ProviderKind",
    "QuarantinedPayload",
    "RuleAction",
    "SenderKind",
    "StatusReceipt",
    "WebhookDelivery",
    "WebhookSubscription",
]

from messaging.models.campaigns import (
    CAMPAIGN_TRANSITIONS,
    Campaign,
    CampaignRecipient,
    CampaignState,
    CampaignStateChange,
    CampaignTemplate,
    ChannelMode,
    RecipientStatus,
)

__all__ += [
    "CAMPAIGN_TRANSITIONS",
    "Campaign",
    "CampaignRecipient",
    "CampaignState",
    "CampaignStateChange",
    "CampaignTemplate",
    "ChannelMode",
    "RecipientStatus",
]
