"""The roles of DESIGN.md as Django groups, and the model permissions each one holds.

Synchronised after every `migrate` (see CrmConfig.ready) and by `manage.py setup_roles`, so a
permission added by a later migration reaches its role without a manual step. Permissions are
named as strings: crm must not import the apps to its right.
"""

from __future__ import annotations

from typing import Final

MARKETING = "marketing"
EDITOR = "editor"
REVIEWER_EDITORIAL = "reviewer_editorial"
REVIEWER_LEGAL = "reviewer_legal"
REVIEWER_MEDICAL = "reviewer_medical"
AGENT = "agent"
AUDITOR = "auditor"

ALL_ROLES: Final = (
    MARKETING,
    EDITOR,
    REVIEWER_EDITORIAL,
    REVIEWER_LEGAL,
    REVIEWER_MEDICAL,
    AGENT,
    AUDITOR,
)

# Apps whose every view_* permission the auditor holds (read everything, change nothing).
AUDITED_APPS: Final = ("crm", "consent", "approvals", "messaging")


def _crud(model: str, app: str = "crm") -> list[str]:
    return [f"{app}.{verb}_{model}" for verb in ("view", "add", "change", "delete")]


# Approvals: who sees approved wording, and what a reviewer needs to decide.
_TEMPLATE_READ: Final = ["approvals.view_messagetemplate", "approvals.view_templateversion"]
_REVIEWER: Final = [
    *_TEMPLATE_READ,
    "approvals.view_reviewdecision",
    "approvals.add_reviewdecision",
    "approvals.view_approvalpolicy",
    "approvals.view_approvalstage",
    "approvals.view_versionstatechange",
]

# Messaging: reading conversations, and what sending and answering in them needs.
_MESSAGING_READ: Final = [
    "messaging.view_channelaccount",
    "messaging.view_conversation",
    "messaging.view_conversationevent",
    "messaging.view_message",
    "messaging.view_statusreceipt",
]
_MESSAGING_SEND: Final = [*_MESSAGING_READ, "messaging.add_message"]

ROLE_PERMISSIONS: Final[dict[str, list[str]]] = {
    MARKETING: [
        "crm.view_team",
        *_crud("contact"),
        *_crud("contactpoint"),
        *_crud("tag"),
        *_crud("segment"),
        "crm.view_contactimport",
        "crm.add_contactimport",
        "crm.view_importrejection",
        "consent.view_purpose",
        "consent.add_purpose",
        "consent.change_purpose",
        "consent.view_consenttext",
        "consent.add_consenttext",
        "consent.view_consent",
        "consent.view_consentevent",
        "consent.add_consentevent",
        "consent.view_consentevidence",
        "consent.view_optinrequest",
        "consent.add_optinrequest",
        "consent.view_suppression",
        "consent.add_suppression",
        "consent.view_withdrawalreview",
        "consent.change_withdrawalreview",
        "consent.view_datasubjectrequest",
        "consent.add_datasubjectrequest",
        "consent.change_datasubjectrequest",
        "consent.view_retentionpolicy",
        "consent.view_retentionrun",
        *_TEMPLATE_READ,
        *_MESSAGING_SEND,
        "messaging.view_automationrule",
        "messaging.add_automationrule",
        "messaging.change_automationrule",
        "messaging.view_campaign",
        "messaging.add_campaign",
        "messaging.change_campaign",
        "messaging.view_campaigntemplate",
        "messaging.view_campaignrecipient",
        "messaging.view_campaignstatechange",
        "messaging.view_webhooksubscription",
        "messaging.add_webhooksubscription",
        "messaging.change_webhooksubscription",
        "messaging.view_webhookdelivery",
    ],
    EDITOR: [
        "crm.view_team",
        "crm.view_contact",
        "crm.view_tag",
        "crm.view_segment",
        "approvals.view_messagetemplate",
        "approvals.add_messagetemplate",
        "approvals.change_messagetemplate",
        "approvals.view_templateversion",
        "approvals.add_templateversion",
        "approvals.change_templateversion",
        "approvals.submit_templateversion",
        "approvals.view_approvalpolicy",
        "approvals.view_approvalstage",
        "approvals.view_reviewdecision",
        "approvals.view_versionstatechange",
    ],
    REVIEWER_EDITORIAL: ["crm.view_team", *_REVIEWER],
    REVIEWER_LEGAL: ["crm.view_team", *_REVIEWER],
    REVIEWER_MEDICAL: ["crm.view_team", *_REVIEWER],
    AGENT: [
        "crm.view_team",
        "crm.view_contact",
        "crm.change_contact",
        "crm.view_contactpoint",
        "crm.add_contactpoint",
        "crm.change_contactpoint",
        "crm.view_tag",
        "consent.view_purpose",
        "consent.view_consent",
        "consent.view_consentevent",
        "consent.add_consentevent",
        "consent.view_withdrawalreview",
        "consent.change_withdrawalreview",
        *_TEMPLATE_READ,
        *_MESSAGING_SEND,
        "messaging.change_conversation",
        "messaging.view_agentpresence",
        "messaging.change_agentpresence",
        "messaging.view_automationrule",
    ],
    AUDITOR: ["crm.view_all_teams", "messaging.export_conversations"],
}
