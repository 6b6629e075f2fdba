"""Admin of the messaging app: channel accounts, the agent inbox and conversation page, the
read-only message and event ledgers, receipts, outbox and quarantine, automation rules,
agents' presence and the auditor export.

Thin by design: querysets come from `messaging.selectors` (other teams' rows are 404), every
write goes through `messaging.services`, which checks role and team again, and ledgers are
read-only for everyone. Importing this package registers every messaging admin.
"""

from __future__ import annotations

from messaging.admin.accounts import (
    AgentPresenceAdmin,
    AgentPresenceForm,
    ChannelAccountAdmin,
    ChannelAccountForm,
)
from messaging.admin.automation import AutomationRuleAdmin, AutomationRuleForm
from messaging.admin.conversations import (
    ConversationAdmin,
    InboxViewFilter,
    NoteForm,
    ReplyForm,
)
from messaging.admin.exports import ConversationExportAdmin, ConversationExportForm
from messaging.admin.messages import (
    ConversationEventAdmin,
    MessageAdmin,
    OutboxEntryAdmin,
    QuarantinedPayloadAdmin,
    StatusReceiptAdmin,
)

__all__ = [
    "AgentPresenceAdmin",
    "AgentPresenceForm",
    "AutomationRuleAdmin",
    "AutomationRuleForm",
    "ChannelAccountAdmin",
    "ChannelAccountForm",
    "ConversationAdmin",
    "ConversationEventAdmin",
    "ConversationExportAdmin",
    "ConversationExportForm",
    "InboxViewFilter",
    "MessageAdmin",
    "NoteForm",
    "OutboxEntryAdmin",
    "QuarantinedPayloadAdmin",
    "ReplyForm",
    "StatusReceiptAdmin",
]

# The metrics dashboard re-registers Message with an admin that adds its URL.
from messaging.admin.metrics import MessageMetricsAdmin

__all__ += ["MessageMetricsAdmin"]

from messaging.admin.campaigns import CampaignAdmin, CampaignRecipientAdmin  # noqa: E402

__all__ += ["CampaignAdmin", "CampaignRecipientAdmin"]

from messaging.admin.integration import (  # noqa: E402
    WebhookDeliveryInline,
    WebhookSubscriptionAdmin,
    WebhookSubscriptionForm,
)

__all__ += ["WebhookDeliveryInline", "WebhookSubscriptionAdmin", "WebhookSubscriptionForm"]

from messaging.admin.webhooks import InboundWebhookAdmin  # noqa: E402

__all__ += ["InboundWebhookAdmin"]
