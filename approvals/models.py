from __future__ import annotations

from typing import Any, Final

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import models
from django.utils.translation import gettext_lazy as _
from simple_history.models import HistoricalRecords

from approvals.errors import VersionImmutable
from consent.models import Purpose
from crm.ledger import LedgerEntry, LedgerImmutable, LedgerQuerySet
from crm.models import Channel, Language, Team, TimeStampedModel


class TemplateCategory(models.TextChoices):
    MARKETING = "marketing", _("Marketing")
    UTILITY = "utility", _("Utility")
    SERVICE = "service", _("Service")
    AUTHENTICATION = "authentication", _("Authentication")


class MessageTemplate(TimeStampedModel):
    """What may be said: a named template per team and channel, with versions under review."""

    team = models.ForeignKey(
        Team, on_delete=models.PROTECT, related_name="templates", verbose_name=_("team")
    )
    name = models.CharField(
        _("name"),
        max_length=120,
        help_text=_("Lower-case letters, digits and underscores (WhatsApp's rule for names)."),
    )
    channel = models.CharField(_("channel"), max_length=16, choices=Channel)
    category = models.CharField(_("category"), max_length=16, choices=TemplateCategory)
    purpose = models.ForeignKey(
        Purpose,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="templates",
        verbose_name=_("purpose"),
        help_text=_("Whose consent a send needs. Required for marketing templates."),
    )
    language = models.CharField(_("language"), max_length=8, choices=Language)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("owner"),
        help_text=_("Notified before approved content expires."),
    )
    is_active = models.BooleanField(_("active"), default=True)

    history = HistoricalRecords(excluded_fields=["updated_at"])

    class Meta:
        verbose_name = _("message template")
        verbose_name_plural = _("message templates")
        ordering = ["team", "name", "language"]
        constraints = [
            models.UniqueConstraint(
                fields=["team", "channel", "name", "language"],
                name="%(app_label)s_%(class)s_unique_name",
            )
        ]
        permissions = [("review_messagetemplate", _("Can review versions of this template"))]

    def __str__(self) -> str:
        return f"{self.name} ({self.language}, {self.get_channel_display()})"


class VersionState(models.TextChoices):
    DRAFT = "draft", _("Draft")
    IN_REVIEW = "in_review", _("In review")
    APPROVED = "approved", _("Approved")
    REJECTED = "rejected", _("Rejected")
    RETIRED = "retired", _("Retired")


# The whole lifecycle on one screen; any move not listed here is refused.
# in_review -> draft is "request changes"; the author edits and submits again.
VERSION_TRANSITIONS: Final[dict[str, frozenset[str]]] = {
    VersionState.DRAFT: frozenset({VersionState.IN_REVIEW}),
    VersionState.IN_REVIEW: frozenset(
        {VersionState.APPROVED, VersionState.REJECTED, VersionState.DRAFT}
    ),
    VersionState.APPROVED: frozenset({VersionState.RETIRED}),
    VersionState.REJECTED: frozenset(),
    VersionState.RETIRED: frozenset(),
}


class ProviderStatus(models.TextChoices):
    NOT_REQUIRED = "not_required", _("Not required")
    NOT_SUBMITTED = "not_submitted", _("Not submitted yet")
    PENDING = "pending", _("Pending at the provider")
    APPROVED = "approved", _("Approved by the provider")
    REJECTED = "rejected", _("Rejected by the provider")
    PAUSED = "paused", _("Paused by the provider")
    DISABLED = "disabled", _("Disabled by the provider")


# What a reviewer approves; frozen once the version leaves draft.
VERSION_CONTENT_FIELDS: Final = (
    "subject",
    "header",
    "body",
    "footer",
    "buttons",
    "variables",
    "valid_from",
    "valid_until",
)


class TemplateVersion(TimeStampedModel):
    """One wording of a template. Approved versions are immutable: editing means a new version."""

    template = models.ForeignKey(
        MessageTemplate,
        on_delete=models.PROTECT,
        related_name="versions",
        verbose_name=_("template"),
    )
    number = models.PositiveIntegerField(_("version"), editable=False)
    subject = models.CharField(_("subject (e-mail)"), max_length=200, blank=True)
    header = models.CharField(_("header"), max_length=200, blank=True)
    body = models.TextField(_("body"))
    footer = models.CharField(_("footer"), max_length=200, blank=True)
    buttons = models.JSONField(
        _("buttons"),
        default=list,
        blank=True,
        help_text=_('For example [{"type": "quick_reply", "text": "Yes, please"}].'),
    )
    variables = models.JSONField(
        _("variables"),
        default=list,
        blank=True,
        help_text=_('The placeholders the version expects, e.g. ["first_name"].'),
    )
    # SHA-256 over the content fields; every review decision is bound to the hash it saw.
    content_hash = models.CharField(_("content hash"), max_length=64, editable=False)
    # Written only by services.template_version_transition().
    state = models.CharField(
        _("state"), max_length=16, choices=VersionState, default=VersionState.DRAFT, editable=False
    )
    # Index into the policy's stages while in review; equals the number of stages when done.
    stage_index = models.PositiveSmallIntegerField(_("review stage"), default=0, editable=False)
    valid_from = models.DateTimeField(_("valid from"), null=True, blank=True)
    valid_until = models.DateTimeField(_("valid until"), null=True, blank=True)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        related_name="+",
        verbose_name=_("author"),
    )
    submitted_at = models.DateTimeField(_("submitted at"), null=True, blank=True, editable=False)
    approved_at = models.DateTimeField(_("approved at"), null=True, blank=True, editable=False)
    provider_status = models.CharField(
        _("provider status"),
        max_length=16,
        choices=ProviderStatus,
        default=ProviderStatus.NOT_REQUIRED,
        editable=False,
    )
    provider_template_id = models.CharField(
        _("provider template id"), max_length=64, blank=True, editable=False
    )
    provider_reason = models.CharField(
        _("provider reason"), max_length=255, blank=True, editable=False
    )
    expiry_notified_at = models.DateTimeField(null=True, blank=True, editable=False)

    history = HistoricalRecords(excluded_fields=["updated_at"])

    class Meta:
        verbose_name = _("template version")
        verbose_name_plural = _("template versions")
        ordering = ["template", "-number"]
        constraints = [
            models.UniqueConstraint(
                fields=["template", "number"], name="%(app_label)s_%(class)s_unique_number"
            )
        ]
        indexes = [
            models.Index(fields=["state", "submitted_at"], name="approvals_version_queue"),
            models.Index(fields=["state", "valid_until"], name="approvals_version_expiry"),
        ]
        permissions = [("submit_templateversion", _("Can submit a version for review"))]

    def __str__(self) -> str:
        return f"{self.template.name} v{self.number}"

    def _stored_if_locked(self) -> dict[str, Any] | None:
        """The stored content and state when the stored row is no longer a draft, else None."""
        if self._state.adding or self.pk is None:
            return None
        stored = (
            type(self).objects.filter(pk=self.pk).values("state", *VERSION_CONTENT_FIELDS).first()
        )
        if stored is None or stored["state"] == VersionState.DRAFT:
            return None
        return stored

    def clean(self) -> None:
        # Forms (admin, API) see the refusal as a form error before anything is saved.
        stored = self._stored_if_locked()
        if stored and any(stored[name] != getattr(self, name) for name in VERSION_CONTENT_FIELDS):
            raise ValidationError(
                _("Only draft versions can be edited; create a new version instead.")
            )

    def save(self, *args: Any, **kwargs: Any) -> None:
        # Last line of defence behind the services: the content of a version that left
        # draft never changes. Saves that name only workflow fields skip the extra read.
        update_fields = kwargs.get("update_fields")
        if update_fields is None or set(update_fields) & set(VERSION_CONTENT_FIELDS):
            stored = self._stored_if_locked()
            if stored and any(
                stored[name] != getattr(self, name) for name in VERSION_CONTENT_FIELDS
            ):
                raise VersionImmutable(
                    _("Only draft versions can be edited; create a new version instead.")
                )
        super().save(*args, **kwargs)

    def content_payload(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "header": self.header,
            "body": self.body,
            "footer": self.footer,
            "buttons": self.buttons,
            "variables": sorted(self.variables or []),
        }


class ApprovalPolicy(TimeStampedModel):
    """Ordered review stages (e.g. editorial -> legal -> medical) for a team and category."""

    team = models.ForeignKey(
        Team, on_delete=models.CASCADE, related_name="approval_policies", verbose_name=_("team")
    )
    category = models.CharField(_("category"), max_length=16, choices=TemplateCategory)
    name = models.CharField(_("name"), max_length=120)

    history = HistoricalRecords(excluded_fields=["updated_at"])

    class Meta:
        verbose_name = _("approval policy")
        verbose_name_plural = _("approval policies")
        ordering = ["team", "category"]
        constraints = [
            models.UniqueConstraint(
                fields=["team", "category"], name="%(app_label)s_%(class)s_unique_category"
            )
        ]

    def __str__(self) -> str:
        return self.name


class ApprovalStage(models.Model):
    policy = models.ForeignKey(
        ApprovalPolicy, on_delete=models.CASCADE, related_name="stages", verbose_name=_("policy")
    )
    position = models.PositiveSmallIntegerField(_("position"))
    name = models.CharField(_("name"), max_length=80)
    group = models.ForeignKey(
        Group,
        on_delete=models.PROTECT,
        related_name="+",
        verbose_name=_("deciding group"),
    )
    approvals_required = models.PositiveSmallIntegerField(_("approvals needed"), default=1)

    history = HistoricalRecords()

    class Meta:
        verbose_name = _("approval stage")
        verbose_name_plural = _("approval stages")
        ordering = ["policy", "position"]
        constraints = [
            models.UniqueConstraint(
                fields=["policy", "position"], name="%(app_label)s_%(class)s_unique_position"
            )
        ]

    def __str__(self) -> str:
        return f"{self.position + 1}. {self.name}"


class Decision(models.TextChoices):
    APPROVE = "approve", _("Approve")
    REJECT = "reject", _("Reject")
    REQUEST_CHANGES = "request_changes", _("Request changes")


class ReviewDecision(LedgerEntry):
    """The review ledger: append-only, hash-chained per version, bound to the content hash."""

    version = models.ForeignKey(
        TemplateVersion,
        on_delete=models.PROTECT,
        related_name="decisions",
        verbose_name=_("version"),
    )
    stage = models.ForeignKey(
        ApprovalStage, on_delete=models.PROTECT, related_name="+", verbose_name=_("stage")
    )
    stage_name = models.CharField(_("stage (name)"), max_length=80)
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        related_name="+",
        verbose_name=_("reviewer"),
    )
    reviewer_label = models.CharField(_("reviewer (name)"), max_length=150)
    decision = models.CharField(_("decision"), max_length=16, choices=Decision)
    comment = models.TextField(_("comment"), blank=True)
    content_hash = models.CharField(_("content hash reviewed"), max_length=64)
    decided_at = models.DateTimeField(_("decided at"))
    sequence = models.PositiveIntegerField(_("position in the version's chain"))

    objects = LedgerQuerySet.as_manager()

    class Meta:
        verbose_name = _("review decision")
        verbose_name_plural = _("review decisions")
        ordering = ["version", "sequence"]
        constraints = [
            models.UniqueConstraint(
                fields=["version", "sequence"], name="%(app_label)s_%(class)s_unique_sequence"
            )
        ]

    def __str__(self) -> str:
        return f"{self.version_id} {self.stage_name}: {self.decision}"

    def chain_payload(self) -> dict[str, Any]:
        return {
            "version": self.version_id,
            "stage": self.stage_id,
            "stage_name": self.stage_name,
            "reviewer": self.reviewer_id,
            "reviewer_label": self.reviewer_label,
            "decision": self.decision,
            "comment": self.comment,
            "content_hash": self.content_hash,
            "decided_at": self.decided_at.isoformat(),
            "sequence": self.sequence,
        }


class VersionStateChange(models.Model):
    """Every state change of a version, written with it in one transaction; never edited."""

    version = models.ForeignKey(
        TemplateVersion, on_delete=models.PROTECT, related_name="state_changes"
    )
    from_state = models.CharField(_("from"), max_length=16, choices=VersionState)
    to_state = models.CharField(_("to"), max_length=16, choices=VersionState)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    actor_label = models.CharField(_("by"), max_length=150, blank=True)
    comment = models.TextField(_("comment"), blank=True)
    changed_at = models.DateTimeField(_("changed at"), auto_now_add=True)

    objects = LedgerQuerySet.as_manager()

    class Meta:
        verbose_name = _("version state change")
        verbose_name_plural = _("version state changes")
        ordering = ["version", "changed_at", "id"]

    def __str__(self) -> str:
        return f"{self.version_id}: {self.from_state} -> {self.to_state}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise LedgerImmutable(_("State changes cannot be edited."))
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise LedgerImmutable(_("State changes cannot be deleted."))
