from __future__ import annotations

from datetime import timedelta
from typing import Any, Final

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from simple_history.models import HistoricalRecords

from crm.ledger import LedgerEntry, LedgerQuerySet, canonical_json, sha256_hex
from crm.models import Channel, Contact, Language, Team, TimeStampedModel


class LegalBasis(models.TextChoices):
    CONSENT = "consent", _("Consent (GDPR Art. 6(1)(a))")
    CONTRACT = "contract", _("Contract (GDPR Art. 6(1)(b))")
    LEGAL_OBLIGATION = "legal_obligation", _("Legal obligation (GDPR Art. 6(1)(c))")
    LEGITIMATE_INTEREST = "legitimate_interest", _("Legitimate interest (GDPR Art. 6(1)(f))")


class Purpose(TimeStampedModel):
    """What a contact agrees to, on which channels, for how long and how often."""

    team = models.ForeignKey(
        Team, on_delete=models.PROTECT, related_name="purposes", verbose_name=_("team")
    )
    key = models.SlugField(_("key"), max_length=60)
    name = models.CharField(_("name"), max_length=120)
    description = models.TextField(_("description"), blank=True)
    legal_basis = models.CharField(
        _("legal basis"), max_length=24, choices=LegalBasis, default=LegalBasis.CONSENT
    )
    is_marketing = models.BooleanField(
        _("marketing"),
        default=True,
        help_text=_("Objection (GDPR Art. 21) withdraws every marketing purpose."),
    )
    allowed_channels = models.JSONField(_("allowed channels"), default=list)
    double_opt_in_channels = models.JSONField(
        _("channels that need double opt-in"), default=list, blank=True
    )
    validity_months = models.PositiveSmallIntegerField(
        _("valid for (months)"),
        null=True,
        blank=True,
        help_text=_("Empty: consent does not expire. Otherwise it must be reconfirmed."),
    )
    reconfirm_days_before = models.PositiveSmallIntegerField(
        _("ask to reconfirm (days before expiry)"), default=30
    )
    frequency_cap = models.PositiveSmallIntegerField(
        _("frequency cap (messages)"), null=True, blank=True
    )
    frequency_period_hours = models.PositiveSmallIntegerField(
        _("frequency period (hours)"), default=24
    )
    opt_in_keywords = models.JSONField(
        _("opt-in keywords"), default=list, blank=True, help_text=_('For example ["FILM"].')
    )
    is_active = models.BooleanField(_("active"), default=True)

    history = HistoricalRecords(excluded_fields=["updated_at"])

    class Meta:
        verbose_name = _("purpose")
        verbose_name_plural = _("purposes")
        ordering = ["team", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["team", "key"], name="%(app_label)s_%(class)s_unique_key"
            )
        ]

    def __str__(self) -> str:
        return self.name

    def needs_double_opt_in(self, channel: str) -> bool:
        return channel in (self.double_opt_in_channels or [])

    def valid_until(self, granted_at: Any) -> Any:
        if not self.validity_months:
            return None
        # Months as 30.44 days: precise enough for reconfirmation, no calendar library needed.
        return granted_at + timedelta(days=round(self.validity_months * 30.44))


class ConsentText(TimeStampedModel):
    """The exact wording shown when consent was collected; new wording is a new version."""

    purpose = models.ForeignKey(
        Purpose, on_delete=models.PROTECT, related_name="texts", verbose_name=_("purpose")
    )
    version = models.PositiveIntegerField(_("version"), editable=False)
    language = models.CharField(_("language"), max_length=8, choices=Language)
    body = models.TextField(_("wording"))
    content_hash = models.CharField(_("content hash"), max_length=64, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        verbose_name = _("consent text")
        verbose_name_plural = _("consent texts")
        ordering = ["purpose", "-version"]
        constraints = [
            models.UniqueConstraint(
                fields=["purpose", "language", "version"],
                name="%(app_label)s_%(class)s_unique_version",
            )
        ]

    def __str__(self) -> str:
        return f"{self.purpose} v{self.version} ({self.language})"


class ConsentAction(models.TextChoices):
    REQUESTED = "requested", _("Requested")
    GRANTED = "granted", _("Granted")
    CONFIRMED = "confirmed", _("Confirmed")
    WITHDRAWN = "withdrawn", _("Withdrawn")
    EXPIRED = "expired", _("Expired")


class ConsentSource(models.TextChoices):
    WEB_FORM = "web_form", _("Web form")
    KEYWORD = "keyword", _("Keyword")
    IMPORT = "import", _("Import")
    API = "api", _("API")
    AGENT = "agent", _("Agent")
    DOUBLE_OPT_IN = "double_opt_in", _("Double opt-in")
    UNSUBSCRIBE_LINK = "unsubscribe_link", _("Unsubscribe link")
    PROVIDER = "provider", _("Provider (carrier opt-out)")
    DATA_SUBJECT_REQUEST = "data_subject_request", _("Data-subject request")
    SYSTEM = "system", _("System")


class ConsentStatus(models.TextChoices):
    PENDING = "pending", _("Pending")
    GRANTED = "granted", _("Granted")
    WITHDRAWN = "withdrawn", _("Withdrawn")
    EXPIRED = "expired", _("Expired")


class ConsentEvidence(models.Model):
    """Personal data that backs one event, kept apart so erasure can blank it.

    The event's hash covers `digest`, computed when the evidence was recorded, so the chain
    still proves the evidence existed after its content is erased.
    """

    # No database foreign key: the ledger's writer looks the texts of a batch up at once (see
    # ConsentEvent.contact).
    consent_text = models.ForeignKey(
        ConsentText,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("consent text"),
        db_constraint=False,
    )
    ip_address = models.GenericIPAddressField(_("IP address"), null=True, blank=True)
    user_agent = models.CharField(_("user agent"), max_length=500, blank=True)
    source_url = models.URLField(_("form URL"), max_length=500, blank=True)
    message_text = models.TextField(_("message text"), blank=True)
    inbound_message_ref = models.CharField(_("inbound message id"), max_length=200, blank=True)
    note = models.TextField(_("note"), blank=True)
    collected_at = models.DateTimeField(_("collected at"), null=True, blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("acting user"),
    )
    # Survives deleted users and pseudonymisation (NetBox's ObjectChange.user_name).
    actor_label = models.CharField(_("acting user (name)"), max_length=150, blank=True)
    digest = models.CharField(_("digest"), max_length=64, editable=False)
    erased_at = models.DateTimeField(_("erased at"), null=True, blank=True, editable=False)

    class Meta:
        verbose_name = _("consent evidence")
        verbose_name_plural = _("consent evidence")

    def __str__(self) -> str:
        return f"evidence {self.digest[:12]}"

    def digest_payload(self) -> dict[str, Any]:
        return {
            "consent_text": self.consent_text_id,
            "ip_address": self.ip_address or "",
            "user_agent": self.user_agent,
            "source_url": self.source_url,
            "message_text": self.message_text,
            "inbound_message_ref": self.inbound_message_ref,
            "note": self.note,
            "collected_at": self.collected_at.isoformat() if self.collected_at else "",
            "actor_label": self.actor_label,
        }

    def compute_digest(self) -> str:
        return sha256_hex(canonical_json(self.digest_payload()))


class ConsentEventQuerySet(LedgerQuerySet):
    def for_contact(self, contact: Contact) -> ConsentEventQuerySet:
        return self.filter(contact=contact)


class ConsentEvent(LedgerEntry):
    """The consent ledger: append-only, hash-chained per contact.

    Written only by consent.services.consent_record (and its bulk variant), which also
    updates the Consent projection in the same transaction.
    """

    # Every index costs each appended event; the single-column indexes Django would add for
    # these keys are prefixes of the composite ones below (contact: unique_sequence, team:
    # consent_event_team_recorded, purpose: consent_event_purpose), which serve the same
    # lookups, so they are left out.
    #
    # Only `contact` is a foreign key in the database. A database foreign key checks every
    # inserted row on its own at commit (measured at some 4 µs per key and row, half of the
    # database's time in a bulk import), and the ledger's writer already guarantees the other
    # references for a whole batch at once (consent.services.ledger): the team is copied from
    # the contact it holds locked, the evidence row is written in the same transaction, and
    # the purposes and consent texts are looked up once per batch (an event naming one that
    # does not exist is refused). Deleting stays refused: on_delete PROTECT works in the ORM
    # whatever the database holds, and the application never deletes purposes, consent texts
    # or evidence (the admin refuses; a purpose is retired with `is_active`). The contact's
    # key stays in the database because contacts are deleted (crm.services.contact_delete),
    # and a delete racing a batch, whose events the ORM's check cannot see yet, must fail.
    contact = models.ForeignKey(
        Contact,
        on_delete=models.PROTECT,
        related_name="consent_events",
        verbose_name=_("contact"),
        db_index=False,
    )
    team = models.ForeignKey(
        Team,
        on_delete=models.PROTECT,
        related_name="+",
        editable=False,
        db_index=False,
        db_constraint=False,
    )
    purpose = models.ForeignKey(
        Purpose,
        on_delete=models.PROTECT,
        related_name="events",
        verbose_name=_("purpose"),
        db_index=False,
        db_constraint=False,
    )
    channel = models.CharField(_("channel"), max_length=16, choices=Channel)
    action = models.CharField(_("action"), max_length=16, choices=ConsentAction)
    source = models.CharField(_("source"), max_length=24, choices=ConsentSource)
    evidence = models.OneToOneField(
        ConsentEvidence,
        on_delete=models.PROTECT,
        related_name="event",
        verbose_name=_("evidence"),
        db_constraint=False,
    )
    evidence_digest = models.CharField(_("evidence digest"), max_length=64)
    occurred_at = models.DateTimeField(_("occurred at"))
    recorded_at = models.DateTimeField(_("recorded at"), default=timezone.now)
    sequence = models.PositiveIntegerField(_("position in the contact's chain"))
    # LedgerEntry.hash with its uniqueness as a constraint (below) instead of unique=True, which
    # on PostgreSQL also builds a second, varchar_pattern_ops index for LIKE that no query uses
    # (the admin's hash search is icontains, which neither index serves): random 64-character
    # keys, so that index cost every event a leaf page write of its own.
    hash = models.CharField(_("hash"), max_length=64, editable=False)

    objects = ConsentEventQuerySet.as_manager()

    class Meta:
        verbose_name = _("consent event")
        verbose_name_plural = _("consent events")
        ordering = ["contact_id", "sequence"]
        constraints = [
            models.UniqueConstraint(
                fields=["contact", "sequence"], name="%(app_label)s_%(class)s_unique_sequence"
            ),
            models.UniqueConstraint(fields=["hash"], name="%(app_label)s_%(class)s_unique_hash"),
        ]
        indexes = [
            models.Index(fields=["team", "-recorded_at"], name="consent_event_team_recorded"),
            models.Index(fields=["purpose", "action", "occurred_at"], name="consent_event_purpose"),
            # Metrics: opt-outs after a message, read from the withdrawals alone rather than
            # from the whole ledger (a few per cent of its events pay for this index).
            models.Index(
                fields=["contact", "occurred_at"],
                condition=Q(action=ConsentAction.WITHDRAWN),
                name="consent_event_withdrawn",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.contact_id} {self.purpose_id}/{self.channel}: {self.action}"

    def chain_payload(self) -> dict[str, Any]:
        return {
            "contact": self.contact_id,
            "team": self.team_id,
            "purpose": self.purpose_id,
            "channel": self.channel,
            "action": self.action,
            "source": self.source,
            "evidence_digest": self.evidence_digest,
            "occurred_at": self.occurred_at.isoformat(),
            "recorded_at": self.recorded_at.isoformat(),
            "sequence": self.sequence,
        }


class ConsentQuerySet(models.QuerySet["Consent"]):
    def granted(self, at: Any = None) -> ConsentQuerySet:
        """Currently granted and not past its validity."""
        at = at or timezone.now()
        return self.filter(status=ConsentStatus.GRANTED).filter(
            Q(valid_until__isnull=True) | Q(valid_until__gt=at)
        )


class Consent(models.Model):
    """Current state per contact, purpose and channel: a projection of the ledger."""

    # No single-column indexes on contact and purpose: they are the leading columns of
    # consent_consent_unique and consent_audience, which serve the same lookups.
    #
    # No database foreign keys either, for the reason given at ConsentEvent.contact: only the
    # ledger's writer writes these rows, from the contacts it holds locked and the purposes it
    # looked up, and every row names its deciding event, an event of the same contact, whose
    # key to the contact the database does check (so a contact with a projection row cannot
    # be deleted either). The deciding event cannot go away: the ledger refuses DELETE in SQL.
    contact = models.ForeignKey(
        Contact,
        on_delete=models.CASCADE,
        related_name="consents",
        verbose_name=_("contact"),
        db_index=False,
        db_constraint=False,
    )
    purpose = models.ForeignKey(
        Purpose,
        on_delete=models.PROTECT,
        related_name="consents",
        verbose_name=_("purpose"),
        db_index=False,
        db_constraint=False,
    )
    channel = models.CharField(_("channel"), max_length=16, choices=Channel)
    status = models.CharField(_("status"), max_length=16, choices=ConsentStatus)
    since = models.DateTimeField(_("since"))
    valid_until = models.DateTimeField(_("valid until"), null=True, blank=True)
    last_event = models.ForeignKey(
        ConsentEvent,
        on_delete=models.PROTECT,
        related_name="+",
        verbose_name=_("deciding event"),
        db_constraint=False,
    )
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)
    # Denormalised for the audience count (contacts_with_grant), so that it is one index-only
    # count over this table. Written only by consent_reachability_refresh(), which every write
    # path of the inputs calls: the contact's team (null until first refreshed), and whether
    # the contact may be messaged on `channel` at all: not restricted, not erased, and at least
    # one address on the channel that is not suppressed.
    team = models.ForeignKey(
        Team,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        editable=False,
        db_index=False,
        db_constraint=False,
        verbose_name=_("team"),
    )
    reachable = models.BooleanField(_("reachable"), default=False, db_default=False, editable=False)

    objects = ConsentQuerySet.as_manager()

    class Meta:
        verbose_name = _("consent")
        verbose_name_plural = _("consents")
        ordering = ["contact", "purpose", "channel"]
        constraints = [
            models.UniqueConstraint(
                fields=["contact", "purpose", "channel"], name="%(app_label)s_%(class)s_unique"
            )
        ]
        indexes = [
            # The audience query: granted for (purpose, channel), answered from the index
            # alone (an index-only scan; validity is included), then joined to the contacts.
            models.Index(
                fields=["purpose", "channel", "status", "contact"],
                include=["valid_until"],
                name="consent_audience",
            ),
            models.Index(fields=["status", "valid_until"], name="consent_expiry"),
            # The audience count: current grants of reachable contacts per (purpose, channel,
            # team), counted from this index alone (validity and contact are included).
            models.Index(
                fields=["purpose", "channel", "team"],
                include=["valid_until", "contact"],
                condition=Q(status=ConsentStatus.GRANTED, reachable=True),
                name="consent_audience_reachable",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.contact_id} {self.purpose}/{self.channel}: {self.status}"


class Suppression(TimeStampedModel):
    """An address that must never be messaged, kept only as a hash (survives erasure)."""

    class Reason(models.TextChoices):
        ERASURE = "erasure", _("Erased on request")
        COMPLAINT = "complaint", _("Complaint")
        BOUNCE = "bounce", _("Hard bounce / unreachable")
        MANUAL = "manual", _("Added manually")
        OBJECTION = "objection", _("Objection")

    address_hash = models.CharField(_("address hash"), max_length=64, unique=True)
    channel = models.CharField(_("channel"), max_length=16, choices=Channel, blank=True)
    reason = models.CharField(_("reason"), max_length=16, choices=Reason, default=Reason.MANUAL)
    note = models.CharField(_("note"), max_length=255, blank=True)
    team = models.ForeignKey(
        Team,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text=_("The team that added it; suppression applies to every team."),
    )

    class Meta:
        verbose_name = _("suppressed address")
        verbose_name_plural = _("suppression list")
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.address_hash[:12]}… ({self.get_reason_display()})"


PROJECTION_STATUS: Final[dict[str, str]] = {
    ConsentAction.REQUESTED: ConsentStatus.PENDING,
    ConsentAction.GRANTED: ConsentStatus.GRANTED,
    ConsentAction.CONFIRMED: ConsentStatus.GRANTED,
    ConsentAction.WITHDRAWN: ConsentStatus.WITHDRAWN,
    ConsentAction.EXPIRED: ConsentStatus.EXPIRED,
}


class OptInRequest(TimeStampedModel):
    """One double opt-in round: the `requested` event, the message sent, and its confirmation."""

    request_event = models.OneToOneField(
        ConsentEvent, on_delete=models.PROTECT, related_name="opt_in_request"
    )
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="opt_in_requests")
    purpose = models.ForeignKey(Purpose, on_delete=models.PROTECT, related_name="+")
    channel = models.CharField(_("channel"), max_length=16, choices=Channel)
    expires_at = models.DateTimeField(_("expires at"))
    confirmed_event = models.OneToOneField(
        ConsentEvent, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    confirmed_at = models.DateTimeField(_("confirmed at"), null=True, blank=True)

    class Meta:
        verbose_name = _("double opt-in request")
        verbose_name_plural = _("double opt-in requests")
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["contact", "-created_at"], name="consent_optin_contact")]

    def __str__(self) -> str:
        return f"{self.contact_id} {self.purpose_id}/{self.channel}"


class WithdrawalReview(TimeStampedModel):
    """Free text that may be a withdrawal ("bitte keine Nachrichten mehr"): a human decides."""

    class Status(models.TextChoices):
        OPEN = "open", _("Open")
        WITHDRAWN = "withdrawn", _("Withdrawal recorded")
        DISMISSED = "dismissed", _("Not a withdrawal")

    contact = models.ForeignKey(
        Contact, on_delete=models.CASCADE, related_name="withdrawal_reviews"
    )
    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="+", editable=False)
    channel = models.CharField(_("channel"), max_length=16, choices=Channel)
    text = models.TextField(_("message text"))
    inbound_message_ref = models.CharField(_("inbound message id"), max_length=200, blank=True)
    matched = models.CharField(_("matched phrase"), max_length=200, blank=True)
    status = models.CharField(_("status"), max_length=16, choices=Status, default=Status.OPEN)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    decided_at = models.DateTimeField(_("decided at"), null=True, blank=True)

    class Meta:
        verbose_name = _("possible withdrawal")
        verbose_name_plural = _("possible withdrawals (review queue)")
        ordering = ["status", "created_at"]

    def __str__(self) -> str:
        return f"{self.contact_id}: {self.text[:40]}"


class DataSubjectRequest(TimeStampedModel):
    """A GDPR request as a case: received, due (one month, Art. 12(3)), verified, done."""

    class Kind(models.TextChoices):
        ACCESS = "access", _("Access / portability (Art. 15, 20)")
        ERASURE = "erasure", _("Erasure (Art. 17)")
        RESTRICTION = "restriction", _("Restriction (Art. 18)")
        OBJECTION = "objection", _("Objection (Art. 21)")

    class Status(models.TextChoices):
        OPEN = "open", _("Open")
        COMPLETED = "completed", _("Completed")
        REJECTED = "rejected", _("Rejected")

    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="+", editable=False)
    contact = models.ForeignKey(
        Contact, on_delete=models.PROTECT, related_name="data_subject_requests"
    )
    kind = models.CharField(_("kind"), max_length=16, choices=Kind)
    status = models.CharField(_("status"), max_length=16, choices=Status, default=Status.OPEN)
    received_at = models.DateTimeField(_("received at"), default=timezone.now)
    due_at = models.DateTimeField(_("due at"))
    identity_verified = models.BooleanField(_("identity verified"), default=False)
    identity_method = models.CharField(_("how identity was verified"), max_length=200, blank=True)
    outcome = models.TextField(_("outcome"), blank=True)
    result_file = models.FileField(_("result"), upload_to="dsr/", blank=True)
    completed_at = models.DateTimeField(_("completed at"), null=True, blank=True)
    handled_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    handled_by_label = models.CharField(_("handled by (name)"), max_length=150, blank=True)

    class Meta:
        verbose_name = _("data-subject request")
        verbose_name_plural = _("data-subject requests")
        ordering = ["status", "due_at"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} #{self.pk}"

    @property
    def is_overdue(self) -> bool:
        return self.status == self.Status.OPEN and self.due_at < timezone.now()


class RetentionPolicy(TimeStampedModel):
    """How long a class of data is kept, and what happens after."""

    class DataClass(models.TextChoices):
        MESSAGES = "messages", _("Message bodies")
        INACTIVE_CONTACTS = "inactive_contacts", _("Inactive contacts")
        CONSENT_EVIDENCE = "consent_evidence", _("Consent evidence")

    class Action(models.TextChoices):
        PSEUDONYMISE = "pseudonymise", _("Pseudonymise")
        DELETE = "delete", _("Delete")

    team = models.ForeignKey(
        Team,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="+",
        help_text=_("Empty: applies to every team."),
    )
    data_class = models.CharField(_("data"), max_length=24, choices=DataClass)
    keep_days = models.PositiveIntegerField(_("keep for (days)"))
    action = models.CharField(_("then"), max_length=16, choices=Action, default=Action.PSEUDONYMISE)
    is_active = models.BooleanField(_("active"), default=True)

    class Meta:
        verbose_name = _("retention policy")
        verbose_name_plural = _("retention policies")
        ordering = ["data_class"]

    def __str__(self) -> str:
        return f"{self.get_data_class_display()}: {self.keep_days} d"


class RetentionRun(models.Model):
    """What one application of a retention policy did."""

    policy = models.ForeignKey(RetentionPolicy, on_delete=models.CASCADE, related_name="runs")
    ran_at = models.DateTimeField(_("ran at"), default=timezone.now)
    affected = models.PositiveIntegerField(_("records affected"), default=0)
    details = models.JSONField(_("details"), default=dict)

    class Meta:
        verbose_name = _("retention run")
        verbose_name_plural = _("retention runs")
        ordering = ["-ran_at"]

    def __str__(self) -> str:
        return f"{self.policy} @ {self.ran_at:%Y-%m-%d}: {self.affected}"
