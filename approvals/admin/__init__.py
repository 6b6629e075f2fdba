"""Admin of the approvals app: templates with their versions, the review queue and review
page, approval policies, and the read-only review ledger and state-change trail.

Thin by design: querysets come from `approvals.selectors` (other teams' rows are 404), every
write goes through `approvals.services`, which checks role and team again, and a version that
left draft is read-only everywhere. Auditors read everything and change nothing. Importing
this package registers every approvals admin.
"""

from __future__ import annotations

from approvals.admin.ledgers import ReviewDecisionAdmin, VersionStateChangeAdmin
from approvals.admin.policies import ApprovalPolicyAdmin, ApprovalStageInline
from approvals.admin.templates import (
    MessageTemplateAdmin,
    MessageTemplateForm,
    TemplateVersionInline,
    TemplateVersionInlineForm,
)
from approvals.admin.versions import (
    ExpiringSoonFilter,
    RetireForm,
    ReviewForm,
    TemplateVersionAdmin,
    TemplateVersionForm,
)

__all__ = [
    "ApprovalPolicyAdmin",
    "ApprovalStageInline",
    "ExpiringSoonFilter",
    "MessageTemplateAdmin",
    "MessageTemplateForm",
    "RetireForm",
    "ReviewDecisionAdmin",
    "ReviewForm",
    "TemplateVersionAdmin",
    "TemplateVersionForm",
    "TemplateVersionInline",
    "TemplateVersionInlineForm",
    "VersionStateChangeAdmin",
]
