"""Refusals of the messaging app, each with a stable machine-readable code."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.utils.translation import gettext_lazy as _

from crm.errors import DomainError

if TYPE_CHECKING:
    from messaging.services.gate import GateDecision


class SendRefused(DomainError):
    """The send gate refused the message; `code` is the gate's reason (e.g. `no_consent`).

    The API answers 422 with the code, the reason text and the decision's checks.
    """

    status_code = 422

    def __init__(self, decision: GateDecision) -> None:
        self.decision = decision
        self.code = decision.reason or "refused"
        super().__init__(decision.message)

    def details(self) -> dict[str, Any]:
        return self.decision.as_record()

    def response_data(self) -> dict[str, Any]:
        return {"decision": self.details()}


class MessageInvalid(DomainError):
    code = "message_invalid"


class ChannelAccountInvalid(DomainError):
    code = "channel_account_invalid"


class ConversationRefused(DomainError):
    code = "conversation_refused"
    status_code = 409

    def __init__(self, message: str | None = None, *, field: str | None = None) -> None:
        super().__init__(message or _("The conversation cannot do that now."), field=field)


class AutomationRuleInvalid(DomainError):
    """Bad input for an automation rule (keywords, action, template, account)."""

    code = "automation_rule_invalid"


class AgentPresenceInvalid(DomainError):
    code = "agent_presence_invalid"


class InboxViewInvalid(DomainError):
    code = "inbox_view_invalid"
