"""Refusals of the approvals app. Each carries a stable `code`; nothing was written."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.utils.translation import gettext_lazy as _

from crm.errors import DomainError


class TransitionRefused(DomainError):
    """The version's state does not allow the move (VERSION_TRANSITIONS)."""

    code = "transition_refused"
    status_code = 409


class DecisionRefused(DomainError):
    """A review decision broke a rule; `code` says which one.

    Codes: not_in_review, invalid_decision, author_cannot_decide, not_in_stage_group,
    not_reviewer_of_team, already_decided_other_stage, already_decided, stale_content,
    comment_required, no_stage.
    """

    code = "decision_refused"

    def __init__(
        self, message: str | None = None, *, code: str | None = None, field: str | None = None
    ) -> None:
        super().__init__(message, field=field)
        if code:
            self.code = code


class VersionImmutable(DomainError):
    """Only draft versions can be edited; approved content changes by a new version."""

    code = "version_immutable"


class TemplateInvalid(DomainError):
    """Bad input for a template or version (name, channel, purpose, validity, ...)."""

    code = "template_invalid"


class PolicyInvalid(DomainError):
    code = "policy_invalid"


class PolicyMissing(DomainError):
    """No approval policy with at least one stage covers the template's team and category."""

    code = "policy_missing"


class RenderError(DomainError):
    """A placeholder is missing, unknown or malformed; never rendered as an empty string.

    Codes: template_syntax, unknown_variable, missing_variable, unsubscribe_invalid.
    """

    code = "render_error"

    def __init__(
        self, message: str | None = None, *, code: str | None = None, field: str | None = None
    ) -> None:
        super().__init__(message, field=field)
        if code:
            self.code = code


class ProviderStatusInvalid(DomainError):
    code = "provider_status_invalid"


@dataclass(frozen=True)
class Violation:
    """One broken channel rule: the field it concerns, a readable message, a stable code."""

    field: str
    message: str
    code: str = "channel_rule"


class ChannelRulesViolated(DomainError):
    """The version breaks its channel's rules (length, encoding, required parts)."""

    code = "channel_rules_violated"

    def __init__(self, violations: Iterable[Violation]) -> None:
        self.violations = list(violations)
        first = self.violations[0] if self.violations else None
        message = (
            " ".join(str(v.message) for v in self.violations)
            if self.violations
            else _("The version breaks its channel's rules.")
        )
        super().__init__(message, field=first.field if first else None)

    def field_errors(self) -> dict[str, list[str]]:
        errors: dict[str, list[str]] = {}
        for violation in self.violations:
            errors.setdefault(violation.field, []).append(str(violation.message))
        return errors
