from __future__ import annotations

import zoneinfo
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Exists, OuterRef, Q
from django.utils.functional import cached_property
from django.utils.translation import gettext_lazy as _
from simple_history.models import HistoricalRecords

from crm.hashing import address_hash
from crm.search import SEARCHED_FIELDS, search_document

if TYPE_CHECKING:
    from collections.abc import Iterable


class TimeStampedModel(models.Model):
    created_at = models.DateTimeField(_("created at"), auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        abstract = True


def validate_time_zone(value: str) -> None:
    """IANA zone names only; kept as a validator so tzdata updates need no migration."""
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationError(
            _("“%(value)s” is not a time zone such as Europe/Berlin."), params={"value": value}
        ) from exc


class Channel(models.TextChoices):
    EMAIL = "email", _("E-mail")
    SMS = "sms", _("SMS")
    WHATSAPP = "whatsapp", _("WhatsApp")


class Language(models.TextChoices):
    GERMAN = "de", _("German")
    ENGLISH = "en", _("English")
    FRENCH = "fr", _("French")
    ITALIAN = "it", _("Italian")
    SPANISH = "es", _("Spanish")
    TURKISH = "tr", _("Turkish")
    POLISH = "pl", _("Polish")


class Salutation(models.TextChoices):
    NONE = "", _("(none)")
    MS = "ms", _("Ms")
    MR = "mr", _("Mr")
    MX = "mx", _("Mx")
    DR = "dr", _("Dr")
    PROF = "prof", _("Prof")


class TeamQuerySet(models.QuerySet["Team"]):
    def active(self) -> TeamQuerySet:
        return self.filter(is_active=True)


class Team(TimeStampedModel):
    """A brand or business unit: the unit of data ownership.

    Membership is a django-guardian object permission (`crm.access_team`) on the team, granted
    by `services.team_member_add`; there is never one permission row per contact.
    """

    name = models.CharField(_("name"), max_length=120, unique=True)
    slug = models.SlugField(_("slug"), max_length=60, unique=True)
    default_language = models.CharField(
        _("default language"), max_length=8, choices=Language, default=Language.GERMAN
    )
    default_time_zone = models.CharField(
        _("default time zone"),
        max_length=64,
        validators=[validate_time_zone],
        default="Europe/Berlin",
    )
    is_active = models.BooleanField(_("active"), default=True)

    objects = TeamQuerySet.as_manager()

    class Meta:
        verbose_name = _("team")
        verbose_name_plural = _("teams")
        ordering = ["name"]
        permissions = [
            ("access_team", _("Can work with the team's data")),
            ("view_all_teams", _("Can read the data of every team")),
        ]

    def __str__(self) -> str:
        return self.name


class UserProfile(models.Model):
    """Per-user display preferences; times are stored in UTC and shown in `time_zone`."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="crm_profile"
    )
    time_zone = models.CharField(
        _("time zone"), max_length=64, validators=[validate_time_zone], default="Europe/Berlin"
    )

    class Meta:
        verbose_name = _("user profile")
        verbose_name_plural = _("user profiles")

    def __str__(self) -> str:
        return f"{self.user} ({self.time_zone})"


class Tag(TimeStampedModel):
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="tags")
    name = models.CharField(_("name"), max_length=60)

    class Meta:
        verbose_name = _("tag")
        verbose_name_plural = _("tags")
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["team", "name"], name="%(app_label)s_%(class)s_unique_name"
            )
        ]

    def __str__(self) -> str:
        return self.name


class ContactQuerySet(models.QuerySet["Contact"]):
    def for_teams(self, teams: Iterable[Team] | models.QuerySet[Team]) -> ContactQuerySet:
        return self.filter(team__in=teams)

    def with_channel(self, channel: str) -> ContactQuerySet:
        return self.filter(
            Exists(ContactPoint.objects.filter(contact=OuterRef("pk"), channel=channel))
        )

    def search_documents_refresh(self) -> None:
        """Rebuild these contacts' search documents from what the database holds now (for
        writers that change addresses or names without save(): queryset updates)."""
        addresses: dict[int, list[str]] = defaultdict(list)
        for contact_id, address in (
            ContactPoint.objects.filter(contact__in=self.values("pk"))
            .order_by()
            .values_list("contact_id", "address")
        ):
            addresses[contact_id].append(address)
        changed = []
        for contact in self.order_by().only(*SEARCHED_FIELDS, "search_document"):
            document = search_document(contact, addresses[contact.pk])
            if document != contact.search_document:
                contact.search_document = document
                changed.append(contact)
        self.model.objects.bulk_update(changed, ["search_document"])


class Contact(TimeStampedModel):
    # No index of its own: every contact index starts with the team (see Meta.indexes).
    team = models.ForeignKey(
        Team,
        on_delete=models.PROTECT,
        related_name="contacts",
        verbose_name=_("team"),
        db_index=False,
    )
    salutation = models.CharField(
        _("salutation"), max_length=8, choices=Salutation, default=Salutation.NONE, blank=True
    )
    first_name = models.CharField(_("first name"), max_length=100, blank=True)
    last_name = models.CharField(_("last name"), max_length=100, blank=True)
    language = models.CharField(
        _("language"), max_length=8, choices=Language, default=Language.GERMAN
    )
    time_zone = models.CharField(
        _("time zone"), max_length=64, validators=[validate_time_zone], default="Europe/Berlin"
    )
    organisation = models.CharField(_("organisation"), max_length=200, blank=True)
    profession = models.CharField(_("profession"), max_length=120, blank=True)
    preferred_channel = models.CharField(
        _("preferred channel"), max_length=16, choices=Channel, blank=True
    )
    attributes = models.JSONField(_("custom attributes"), default=dict, blank=True)
    external_id = models.CharField(
        _("external id"),
        max_length=120,
        null=True,
        blank=True,
        help_text=_("The contact's id in an ERP or other CRM; unique within the team."),
    )
    tags = models.ManyToManyField(Tag, blank=True, related_name="contacts", verbose_name=_("tags"))
    # GDPR Art. 18: kept, but not processed (the send gate refuses). Set by consent services.
    is_restricted = models.BooleanField(_("processing restricted"), default=False, editable=False)
    # Set when personal data was pseudonymised on request (Art. 17); the row stays as proof.
    erased_at = models.DateTimeField(_("erased at"), null=True, blank=True, editable=False)
    # Names, organisation and addresses in one text for the contact search (crm.search).
    search_document = models.TextField(default="", db_default="", blank=True, editable=False)

    # History rows are read by the contact's id only; every other index would be paid by each
    # imported contact and never used. Nor does the database check the acting user of each
    # row: an import writes one row per contact and point by the same user, and each was
    # checked again at commit. Deleting a user still empties its rows' user (Django applies
    # on_delete=SET_NULL itself).
    history = HistoricalRecords(
        # The search document repeats fields (and addresses) that history already keeps.
        excluded_fields=["updated_at", "search_document"],
        no_db_index=["created_at", "team"],
        user_db_constraint=False,
    )
    objects = ContactQuerySet.as_manager()

    class Meta:
        verbose_name = _("contact")
        verbose_name_plural = _("contacts")
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["team", "external_id"],
                condition=Q(external_id__isnull=False),
                name="%(app_label)s_%(class)s_unique_external_id",
            )
        ]
        indexes = [
            models.Index(fields=["team", "-created_at", "-id"], name="crm_contact_team_created"),
            models.Index(fields=["team", "last_name", "first_name"], name="crm_contact_team_name"),
            # The language filter: its page in list order, and its exact count in admin.
            models.Index(
                fields=["team", "language", "-created_at", "-id"], name="crm_contact_team_language"
            ),
        ]

    def __str__(self) -> str:
        name = " ".join(part for part in (self.first_name, self.last_name) if part)
        return name or self.external_id or f"#{self.pk}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        update_fields = kwargs.get("update_fields")
        if update_fields is None or not SEARCHED_FIELDS.isdisjoint(update_fields):
            addresses = (
                []
                if self._state.adding
                else ContactPoint.objects.filter(contact_id=self.pk).values_list(
                    "address", flat=True
                )
            )
            self.search_document = search_document(self, addresses)
            if update_fields is not None:
                kwargs["update_fields"] = {*update_fields, "search_document"}
        super().save(*args, **kwargs)

    @property
    def full_name(self) -> str:
        return " ".join(part for part in (self.first_name, self.last_name) if part)

    # What lists and detail pages show of addresses and tags, as plain values: a page of 100
    # contacts would otherwise build some 300 model instances. selectors.contacts_load_listing
    # fills both for a whole page in two queries; otherwise they are read on first use.
    @cached_property
    def point_rows(self) -> list[dict[str, Any]]:
        return list(self.points.order_by(*POINT_LIST_ORDER).values(*POINT_LIST_FIELDS))

    @cached_property
    def tag_names(self) -> list[str]:
        return list(self.tags.order_by("name").values_list("name", flat=True))


# How a contact's addresses are listed: per channel, the primary one first.
POINT_LIST_FIELDS = ("id", "channel", "address", "is_primary")
POINT_LIST_ORDER = ("channel", "-is_primary", "id")


class ContactPoint(TimeStampedModel):
    """One normalised address on one channel (E.164 phone numbers, lower-case e-mail)."""

    contact = models.ForeignKey(
        Contact, on_delete=models.CASCADE, related_name="points", verbose_name=_("contact")
    )
    # Denormalised from the contact so that "unique per team and channel" is a database rule
    # (whose index, led by the team, also serves lookups by team). Always copied from the
    # contact, whose own foreign key the database checks; checking it again for each point
    # would cost an import a lookup per address at commit. PROTECT still applies (Django).
    team = models.ForeignKey(
        Team,
        on_delete=models.PROTECT,
        related_name="+",
        editable=False,
        db_index=False,
        db_constraint=False,
    )
    channel = models.CharField(_("channel"), max_length=16, choices=Channel)
    address = models.CharField(_("address"), max_length=254)
    # SHA-256 of the normalised address: joins the suppression list in SQL, survives erasure.
    address_hash = models.CharField(max_length=64, editable=False, default="")
    is_primary = models.BooleanField(_("primary"), default=True)
    # Points are listed by contact, never by creation time: no index (an import pays for each).
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    # History rows are read by the point's id and contact only (privacy erasure, admin); the
    # user is not checked by the database (see Contact.history).
    history = HistoricalRecords(
        excluded_fields=["updated_at"],
        no_db_index=["created_at", "team", "address_hash"],
        user_db_constraint=False,
    )

    class Meta:
        verbose_name = _("contact point")
        verbose_name_plural = _("contact points")
        ordering = ["channel", "-is_primary", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["team", "channel", "address"], name="%(app_label)s_%(class)s_unique_address"
            )
        ]
        indexes = [
            models.Index(fields=["address"], name="crm_contactpoint_address"),
            # Equality only (suppression joins): db_index would add a second, LIKE-shaped index.
            models.Index(fields=["address_hash"], name="crm_contactpoint_address_hash"),
        ]

    def __str__(self) -> str:
        return f"{self.get_channel_display()}: {self.address}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.address_hash = address_hash(self.address)
        super().save(*args, **kwargs)
        Contact.objects.filter(pk=self.contact_id).search_documents_refresh()

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        deleted = super().delete(*args, **kwargs)
        Contact.objects.filter(pk=self.contact_id).search_documents_refresh()
        return deleted


class Segment(TimeStampedModel):
    """A saved rule-based filter over contacts, resolved in one SQL query (see crm.segments)."""

    team = models.ForeignKey(
        Team, on_delete=models.CASCADE, related_name="segments", verbose_name=_("team")
    )
    name = models.CharField(_("name"), max_length=120)
    description = models.TextField(_("description"), blank=True)
    rules = models.JSONField(
        _("rules"),
        default=dict,
        help_text=_(
            'For example {"match": "all", "conditions": [{"field": "language", "op": "eq", '
            '"value": "de"}, {"field": "tag", "op": "has", "value": "vip"}]}'
        ),
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    history = HistoricalRecords(excluded_fields=["updated_at"])

    class Meta:
        verbose_name = _("segment")
        verbose_name_plural = _("segments")
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["team", "name"], name="%(app_label)s_%(class)s_unique_name"
            )
        ]

    def __str__(self) -> str:
        return self.name


class ImportStatus(models.TextChoices):
    UPLOADED = "uploaded", _("Uploaded")
    QUEUED = "queued", _("Queued")
    RUNNING = "running", _("Running")
    COMPLETED = "completed", _("Completed")
    FAILED = "failed", _("Failed")


# The lifecycle of an import; crm.imports is the only writer of ContactImport.status.
# RUNNING -> RUNNING and FAILED -> RUNNING are re-runs: they resume after the last committed batch.
IMPORT_TRANSITIONS: dict[str, frozenset[str]] = {
    ImportStatus.UPLOADED: frozenset({ImportStatus.QUEUED}),
    ImportStatus.QUEUED: frozenset({ImportStatus.RUNNING, ImportStatus.FAILED}),
    ImportStatus.RUNNING: frozenset(
        {ImportStatus.RUNNING, ImportStatus.COMPLETED, ImportStatus.FAILED}
    ),
    ImportStatus.FAILED: frozenset({ImportStatus.RUNNING}),
    ImportStatus.COMPLETED: frozenset(),
}


class ContactImport(TimeStampedModel):
    """One CSV/XLSX import: its file, progress, counts and the rejected-rows report."""

    team = models.ForeignKey(
        Team, on_delete=models.PROTECT, related_name="imports", verbose_name=_("team")
    )
    source_file = models.FileField(_("file"), upload_to="imports/%Y/%m/")
    original_name = models.CharField(_("original file name"), max_length=255, blank=True)
    status = models.CharField(
        _("status"),
        max_length=16,
        choices=ImportStatus,
        default=ImportStatus.UPLOADED,
        editable=False,
    )
    # The header row as read (its order is the report's column order) and the columns that
    # matched nothing, reported once instead of once per row.
    columns = models.JSONField(_("columns"), default=list, blank=True, editable=False)
    unknown_columns = models.JSONField(
        _("ignored columns"), default=list, blank=True, editable=False
    )
    total_rows = models.PositiveIntegerField(_("rows in file"), null=True, blank=True)
    processed_rows = models.PositiveIntegerField(_("rows processed"), default=0)
    created_count = models.PositiveIntegerField(_("contacts created"), default=0)
    updated_count = models.PositiveIntegerField(_("contacts updated"), default=0)
    unchanged_count = models.PositiveIntegerField(_("contacts unchanged"), default=0)
    rejected_count = models.PositiveIntegerField(_("rows rejected"), default=0)
    # Rows imported, but with something left out (e.g. consent claimed without evidence).
    warning_count = models.PositiveIntegerField(_("rows with warnings"), default=0)
    report_file = models.FileField(
        _("rejected-rows report"), upload_to="imports/reports/", blank=True
    )
    error = models.TextField(_("error"), blank=True)
    started_at = models.DateTimeField(_("started at"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("created by"),
    )

    class Meta:
        verbose_name = _("contact import")
        verbose_name_plural = _("contact imports")
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.original_name or self.source_file.name} ({self.get_status_display()})"

    @property
    def progress_percent(self) -> int:
        if not self.total_rows:
            return 100 if self.status == ImportStatus.COMPLETED else 0
        return min(100, round(100 * self.processed_rows / self.total_rows))


class ImportRejection(models.Model):
    """One rejected row of an import, with its line number and the reason."""

    contact_import = models.ForeignKey(
        ContactImport, on_delete=models.CASCADE, related_name="rejections"
    )
    line_number = models.PositiveIntegerField(_("line"))
    reason = models.CharField(_("reason"), max_length=500)
    raw = models.JSONField(_("row"), default=dict)
    # A warning: the row was imported, but part of it was not applied (see `reason`).
    is_warning = models.BooleanField(_("warning only"), default=False)

    class Meta:
        verbose_name = _("rejected row")
        verbose_name_plural = _("rejected rows")
        ordering = ["line_number"]
        indexes = [
            models.Index(fields=["contact_import", "line_number"], name="crm_importrejection_line")
        ]

    def __str__(self) -> str:
        return f"{self.line_number}: {self.reason}"


class IdempotencyRecord(models.Model):
    """The outcome of one POST sent with an `Idempotency-Key`, replayed when it is retried.

    One row per user and key; `status_code` stays empty while the first request still runs,
    so a concurrent duplicate is refused rather than run twice (see crm.api.idempotency).
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(_("idempotency key"), max_length=255)
    method = models.CharField(_("method"), max_length=8)
    path = models.CharField(_("path"), max_length=500)
    body_hash = models.CharField(_("body SHA-256"), max_length=64)
    status_code = models.PositiveSmallIntegerField(_("response status"), null=True, blank=True)
    response_body = models.JSONField(_("response body"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True, db_index=True)

    class Meta:
        verbose_name = _("idempotency record")
        verbose_name_plural = _("idempotency records")
        constraints = [
            models.UniqueConstraint(fields=["user", "key"], name="crm_idempotencyrecord_user_key")
        ]

    def __str__(self) -> str:
        return f"{self.method} {self.path} [{self.key}]"
