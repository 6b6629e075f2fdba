"""Admin of the consent app: purposes, consent texts, the ledger, the per-contact consent panel,
the suppression list and the review queue of possible withdrawals.

Thin by design: querysets come from `consent.selectors` (other teams' rows are 404), forms
check input with the services' own validators, and every write goes through
`consent.services`. The ledger and the projection are read-only; consent changes are recorded on
the per-contact panel (/admin/consent/consent/contact/<id>/) with a mandatory note.
"""

from __future__ import annotations

# Data-subject requests and retention have their own admin module; importing registers them.
from consent import admin_subjects  # noqa: F401

# isort: split
from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Case, IntegerField, Model, QuerySet, Value, When
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.text import Truncator
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _
from simple_history.admin import SimpleHistoryAdmin

from consent import selectors, services
from consent.models import (
    Consent,
    ConsentAction,
    ConsentEvent,
    ConsentSource,
    ConsentText,
    Purpose,
    Suppression,
    WithdrawalReview,
)
from consent.services.texts import PURPOSE_UPDATABLE_FIELDS, PurposeInvalid
from crm import selectors as crm_selectors
from crm.addresses import AddressInvalid, normalise_address, normalise_email, normalise_phone
from crm.admin import ScopedHistoryMixin, ServiceAdminMixin, VisibleTeamFilter
from crm.admin_base import ReadOnlyAdminMixin, TeamScopedAdminMixin, report_domain_error
from crm.errors import DomainError, PermissionRefused
from crm.hashing import address_hash
from crm.models import Channel, Contact

if TYPE_CHECKING:
    from collections.abc import Callable

    from django.db.models import Field

# How many selected entries an intermediate action page lists.
ACTION_PAGE_SAMPLE = 20
# How many events the per-contact panel shows (newest first).
PANEL_EVENT_LIMIT = 200


def _adopt(target: Model, saved: Model) -> None:
    """Give the admin's unsaved instance the identity of the row a service created."""
    for field in saved._meta.concrete_fields:
        setattr(target, field.attname, getattr(saved, field.attname))
    target._state.adding = False
    target._state.db = saved._state.db


def _panel_url(contact_id: int) -> str:
    return reverse("admin:consent_consent_contact", args=[contact_id])


def _contact_link(contact: Contact) -> str:
    return format_html('<a href="{}">{}</a>', _panel_url(contact.pk), contact)


class VisiblePurposeFilter(admin.SimpleListFilter):
    """Purposes of the teams the user may see."""

    title = _("purpose")
    parameter_name = "purpose"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        purposes = selectors.purposes_visible_to(request.user).order_by("name", "team__name")
        several_teams = len(crm_selectors.visible_team_ids(request.user)) > 1
        return [(str(p.pk), f"{p.name} ({p.team})" if several_teams else p.name) for p in purposes]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if value and value.isdigit():
            return queryset.filter(purpose_id=int(value))
        return queryset


# --- purposes ----------------------------------------------------------------------------------


class PurposeForm(forms.ModelForm):
    allowed_channels = forms.MultipleChoiceField(
        choices=Channel.choices,
        widget=forms.CheckboxSelectMultiple,
        label=_("allowed channels"),
    )
    double_opt_in_channels = forms.MultipleChoiceField(
        choices=Channel.choices,
        widget=forms.CheckboxSelectMultiple,
        required=False,
        label=_("channels that need double opt-in"),
        help_text=_("A grant on these channels counts only once the contact confirms it."),
    )
    opt_in_keywords = forms.CharField(
        required=False,
        label=_("opt-in keywords"),
        help_text=_("Separate keywords with commas, e.g. FILM, KINO. Unique within the team."),
    )

    class Meta:
        model = Purpose
        fields = [
            "team",
            "key",
            "name",
            "description",
            "legal_basis",
            "is_marketing",
            "allowed_channels",
            "double_opt_in_channels",
            "validity_months",
            "reconfirm_days_before",
            "frequency_cap",
            "frequency_period_hours",
            "opt_in_keywords",
            "is_active",
        ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["opt_in_keywords"] = ", ".join(self.instance.opt_in_keywords or [])

    def clean_opt_in_keywords(self) -> list[str]:
        raw = self.cleaned_data.get("opt_in_keywords") or ""
        return [word.strip() for word in raw.split(",") if word.strip()]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        team = cleaned.get("team") if "team" in self.fields else self.instance.team
        if team is None or self.errors:
            return cleaned
        checked = {
            name: cleaned[name]
            for name in ("allowed_channels", "double_opt_in_channels", "opt_in_keywords")
            if name in cleaned
        }
        try:
            cleaned.update(
                services.purpose_fields_validate(
                    checked, team_id=team.pk, exclude_pk=self.instance.pk
                )
            )
        except PurposeInvalid as error:
            self.add_error(error.field if error.field in self.fields else None, error.message)
        return cleaned


@admin.register(Purpose)
class PurposeAdmin(ServiceAdminMixin, ScopedHistoryMixin, TeamScopedAdminMixin, SimpleHistoryAdmin):
    form = PurposeForm
    list_display = (
        "name",
        "key",
        "team",
        "channel_list",
        "double_opt_in_list",
        "validity_months",
        "is_marketing",
        "is_active",
    )
    list_filter = (("team", VisibleTeamFilter), "is_active", "is_marketing", "legal_basis")
    list_select_related = ("team",)
    search_fields = ("name", "key")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Purpose]:
        return selectors.purposes_visible_to(request.user)

    def get_readonly_fields(self, request: HttpRequest, obj: Purpose | None = None) -> tuple:
        # Segment rules and integrations name purposes by key; the ledger rows belong to the team.
        return ("team", "key") if obj is not None else ()

    def has_delete_permission(self, request: HttpRequest, obj: Purpose | None = None) -> bool:
        # Consent events point at their purpose for good; retire a purpose with "active".
        return False

    @admin.display(description=_("channels"))
    def channel_list(self, purpose: Purpose) -> str:
        return ", ".join(purpose.allowed_channels or [])

    @admin.display(description=_("double opt-in"))
    def double_opt_in_list(self, purpose: Purpose) -> str:
        return ", ".join(purpose.double_opt_in_channels or []) or "—"

    def save_model(
        self, request: HttpRequest, obj: Purpose, form: PurposeForm, change: bool
    ) -> None:
        cleaned = form.cleaned_data
        if change:
            changed = {
                name: cleaned[name]
                for name in form.changed_data
                if name in PURPOSE_UPDATABLE_FIELDS
            }
            _adopt(obj, services.purpose_update(purpose=obj, actor=request.user, **changed))
            return
        fields = {name: cleaned[name] for name in PURPOSE_UPDATABLE_FIELDS if name in cleaned}
        fields.pop("name", None)
        purpose = services.purpose_create(
            team=cleaned["team"],
            key=cleaned["key"],
            name=cleaned["name"],
            actor=request.user,
            **fields,
        )
        _adopt(obj, purpose)


# --- consent texts -----------------------------------------------------------------------------


class ConsentTextForm(forms.ModelForm):
    class Meta:
        model = ConsentText
        fields = ["purpose", "language", "body"]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        purpose, language = cleaned.get("purpose"), cleaned.get("language")
        if purpose is None or not language or "body" not in cleaned:
            return cleaned
        try:
            cleaned["body"] = services.consent_text_validate(
                purpose=purpose, language=language, body=cleaned["body"]
            )
        except DomainError as error:
            self.add_error(error.field if error.field in self.fields else None, error.message)
        return cleaned


@admin.register(ConsentText)
class ConsentTextAdmin(ServiceAdminMixin, TeamScopedAdminMixin, admin.ModelAdmin):
    """Adding publishes the next version; a published text is never changed."""

    form = ConsentTextForm
    team_field = "purpose__team"
    list_display = ("purpose", "language", "version", "excerpt", "created_by", "created_at")
    list_filter = (VisiblePurposeFilter, "language")
    list_select_related = ("purpose", "created_by")
    search_fields = ("body", "purpose__name", "purpose__key")

    def get_queryset(self, request: HttpRequest) -> QuerySet[ConsentText]:
        return selectors.consent_texts_visible_to(request.user)

    def get_fields(self, request: HttpRequest, obj: ConsentText | None = None) -> list[str]:
        if obj is None:
            return ["purpose", "language", "body"]
        return [
            "purpose",
            "language",
            "version",
            "body",
            "content_hash",
            "created_by",
            "created_at",
            "new_version_link",
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: ConsentText | None = None) -> tuple:
        if obj is None:
            return ()
        return tuple(self.get_fields(request, obj))

    def has_change_permission(self, request: HttpRequest, obj: ConsentText | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: ConsentText | None = None) -> bool:
        return False

    def formfield_for_foreignkey(
        self, db_field: Field, request: HttpRequest, **kwargs: Any
    ) -> forms.Field | None:
        if db_field.name == "purpose":
            kwargs["queryset"] = Purpose.objects.filter(
                team_id__in=crm_selectors.member_team_ids(request.user)
            ).select_related("team")
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    @admin.display(description=_("wording"))
    def excerpt(self, text: ConsentText) -> str:
        return Truncator(text.body).chars(80)

    @admin.display(description=_("new wording"))
    def new_version_link(self, text: ConsentText) -> str:
        url = (
            reverse("admin:consent_consenttext_add")
            + "?"
            + urlencode({"purpose": text.purpose_id, "language": text.language})
        )
        return format_html('<a href="{}">{}</a>', url, gettext("Publish a new version"))

    def save_model(
        self, request: HttpRequest, obj: ConsentText, form: ConsentTextForm, change: bool
    ) -> None:
        text = services.consent_text_publish(
            purpose=form.cleaned_data["purpose"],
            language=form.cleaned_data["language"],
            body=form.cleaned_data["body"],
            actor=request.user,
        )
        _adopt(obj, text)


# --- consent state and the per-contact panel ---------------------------------------------------


class RecordConsentForm(forms.Form):
    """An agent records what the contact said (phone, letter, counter); the note is the proof."""

    purpose = forms.ModelChoiceField(queryset=Purpose.objects.none(), label=_("purpose"))
    channel = forms.ChoiceField(choices=Channel.choices, label=_("channel"))
    action = forms.ChoiceField(
        choices=[
            (ConsentAction.WITHDRAWN, _("Withdraw")),
            (ConsentAction.GRANTED, _("Grant")),
        ],
        label=_("action"),
    )
    note = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        label=_("note"),
        help_text=_("How and when the contact asked, e.g. “phone call 14:05, asked to stop SMS”."),
    )

    def __init__(self, *args: Any, contact: Contact, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["purpose"].queryset = Purpose.objects.filter(team_id=contact.team_id)

    def clean_note(self) -> str:
        note = self.cleaned_data["note"].strip()
        if not note:
            raise forms.ValidationError(_("Say in a note how the contact asked."))
        return note


@admin.register(Consent)
class ConsentAdmin(ReadOnlyAdminMixin, ServiceAdminMixin, TeamScopedAdminMixin, admin.ModelAdmin):
    """The current state (a projection of the ledger): read-only, changed via the contact panel."""

    team_field = "contact__team"
    list_display = ("contact_panel", "purpose", "channel", "status", "since", "valid_until")
    list_filter = (VisiblePurposeFilter, "channel", "status")
    list_select_related = ("contact", "purpose")
    search_fields = ("contact__first_name", "contact__last_name", "purpose__key")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Consent]:
        return selectors.consents_visible_to(request.user)

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        return {}

    @admin.display(description=_("contact"), ordering="contact__last_name")
    def contact_panel(self, consent: Consent) -> str:
        return _contact_link(consent.contact)

    def get_urls(self) -> list[URLPattern]:
        panel = path(
            "contact/<int:contact_id>/",
            self.admin_site.admin_view(self.contact_panel_view),
            name="consent_consent_contact",
        )
        return [panel, *super().get_urls()]

    def contact_panel_view(self, request: HttpRequest, contact_id: int) -> HttpResponse:
        """Status per purpose and channel, the event timeline with evidence, and a form to record
        a withdrawal or grant with a mandatory note."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        contact = crm_selectors.contacts_visible_to(request.user).filter(pk=contact_id).first()
        if contact is None:
            raise Http404(gettext("Not found."))
        may_record = crm_selectors.user_may_write(
            request.user, "consent.add_consentevent", contact.team_id
        )
        form = RecordConsentForm(
            request.POST if request.method == "POST" else None, contact=contact
        )
        if request.method == "POST":
            if not may_record:
                raise PermissionDenied
            if form.is_valid() and self._record(request, contact, form):
                return HttpResponseRedirect(_panel_url(contact.pk))
        return TemplateResponse(
            request,
            "admin/consent/consent/contact_panel.html",
            {
                **self.admin_site.each_context(request),
                "title": _("Consent of %(contact)s") % {"contact": contact},
                "subtitle": None,
                "opts": self.opts,
                "contact": contact,
                "channels": list(Channel),
                "grid": _status_grid(contact),
                "events": _timeline(contact),
                "form": form if may_record else None,
                "media": self.media + form.media,
            },
        )

    def _record(self, request: HttpRequest, contact: Contact, form: RecordConsentForm) -> bool:
        data = form.cleaned_data
        try:
            event = services.consent_collect(
                contact=contact,
                purpose=data["purpose"],
                channel=data["channel"],
                action=data["action"],
                source=ConsentSource.AGENT,
                evidence=services.Evidence(note=data["note"]),
                actor=request.user,
            )
        except PermissionRefused as error:
            raise PermissionDenied(error.message) from error
        except DomainError as error:
            form.add_error(error.field if error.field in form.fields else None, error.message)
            return False
        self.message_user(
            request,
            _("Recorded: %(action)s for “%(purpose)s” on %(channel)s.")
            % {
                "action": event.get_action_display(),
                "purpose": data["purpose"].name,
                "channel": event.get_channel_display(),
            },
            messages.SUCCESS,
        )
        return True


def _status_grid(contact: Contact) -> list[dict[str, Any]]:
    """One row per purpose of the contact's team, one cell per channel."""
    states = {(c.purpose_id, c.channel): c for c in selectors.consent_state_for(contact)}
    rows = []
    for purpose in Purpose.objects.filter(team_id=contact.team_id).order_by("name"):
        cells = []
        for channel in Channel:
            consent = states.get((purpose.pk, channel.value))
            cells.append(
                {
                    "allowed": channel.value in (purpose.allowed_channels or []),
                    "consent": consent,
                }
            )
        rows.append({"purpose": purpose, "cells": cells})
    return rows


def _timeline(contact: Contact) -> list[ConsentEvent]:
    return list(
        ConsentEvent.objects.filter(contact=contact)
        .select_related("purpose", "evidence", "evidence__consent_text")
        .order_by("-sequence")[:PANEL_EVENT_LIMIT]
    )


# --- the ledger --------------------------------------------------------------------------------


@admin.register(ConsentEvent)
class ConsentEventAdmin(
    ReadOnlyAdminMixin, ServiceAdminMixin, TeamScopedAdminMixin, admin.ModelAdmin
):
    """The consent ledger: append-only, so no add, change or delete here either."""

    list_display = (
        "recorded_at",
        "contact_panel",
        "purpose",
        "channel",
        "action",
        "source",
        "occurred_at",
        "sequence",
    )
    list_filter = (VisiblePurposeFilter, "action", "source", "channel")
    list_select_related = ("contact", "purpose")
    search_fields = ("contact__first_name", "contact__last_name", "hash")
    date_hierarchy = "recorded_at"
    fields = (
        "contact",
        "purpose",
        "channel",
        "action",
        "source",
        "occurred_at",
        "recorded_at",
        "sequence",
        "previous_hash",
        "hash",
        "evidence_digest",
        "consent_text_version",
        "ip_address",
        "user_agent",
        "source_url",
        "message_text",
        "note",
        "actor",
        "evidence_erased_at",
    )
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[ConsentEvent]:
        return selectors.consent_events_visible_to(request.user)

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        # No delete_selected: the ledger is append-only.
        return {}

    @admin.display(description=_("contact"), ordering="contact__last_name")
    def contact_panel(self, event: ConsentEvent) -> str:
        return _contact_link(event.contact)

    @admin.display(description=_("consent text"))
    def consent_text_version(self, event: ConsentEvent) -> str:
        return str(event.evidence.consent_text or "—")

    @admin.display(description=_("IP address"))
    def ip_address(self, event: ConsentEvent) -> str:
        return event.evidence.ip_address or "—"

    @admin.display(description=_("user agent"))
    def user_agent(self, event: ConsentEvent) -> str:
        return event.evidence.user_agent or "—"

    @admin.display(description=_("form URL"))
    def source_url(self, event: ConsentEvent) -> str:
        return event.evidence.source_url or "—"

    @admin.display(description=_("message text"))
    def message_text(self, event: ConsentEvent) -> str:
        return event.evidence.message_text or "—"

    @admin.display(description=_("note"))
    def note(self, event: ConsentEvent) -> str:
        return event.evidence.note or "—"

    @admin.display(description=_("acting user"))
    def actor(self, event: ConsentEvent) -> str:
        return event.evidence.actor_label or "—"

    @admin.display(description=_("evidence erased at"))
    def evidence_erased_at(self, event: ConsentEvent) -> Any:
        return event.evidence.erased_at or "—"


# --- suppression list --------------------------------------------------------------------------


class SuppressionAddForm(forms.ModelForm):
    """Takes an address, keeps only its hash: the address itself is never saved."""

    address = forms.CharField(
        max_length=254,
        label=_("address"),
        help_text=_("E-mail address or phone number; only its hash is stored."),
    )

    class Meta:
        model = Suppression
        fields = ["team", "channel", "address", "reason", "note"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "channel" in self.fields:
            self.fields["channel"].required = True

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        channel, address = cleaned.get("channel"), cleaned.get("address")
        if channel and address:
            try:
                cleaned["address"] = normalise_address(channel, address)
            except AddressInvalid as error:
                self.add_error("address", error.message)
                return cleaned
            if Suppression.objects.filter(address_hash=address_hash(cleaned["address"])).exists():
                self.add_error("address", _("This address is already suppressed."))
        return cleaned


def _search_hash(term: str) -> str | None:
    """The hash a typed address would be stored under, so the list can be searched by address."""
    for normalise in (normalise_email, normalise_phone):
        try:
            return address_hash(normalise(term))
        except AddressInvalid:
            continue
    return None


@admin.register(Suppression)
class SuppressionAdmin(ServiceAdminMixin, TeamScopedAdminMixin, admin.ModelAdmin):
    """Addresses that are never messaged, in any team. Only hashes are stored or shown."""

    form = SuppressionAddForm
    list_display = ("short_hash", "channel", "reason", "team", "note", "created_at")
    list_filter = ("channel", "reason")
    search_fields = ("address_hash",)
    search_help_text = _("Type an e-mail address or phone number to see whether it is suppressed.")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Suppression]:
        return selectors.suppressions_visible_to(request.user)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Suppression], search_term: str
    ) -> tuple[QuerySet[Suppression], bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        hashed = _search_hash(term)
        return queryset.filter(address_hash=hashed or term.lower()), False

    def get_fields(self, request: HttpRequest, obj: Suppression | None = None) -> list[str]:
        if obj is None:
            return ["team", "channel", "address", "reason", "note"]
        return ["address_hash", "channel", "reason", "team", "note", "created_at"]

    def get_readonly_fields(self, request: HttpRequest, obj: Suppression | None = None) -> tuple:
        return () if obj is None else tuple(self.get_fields(request, obj))

    def has_change_permission(self, request: HttpRequest, obj: Suppression | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Suppression | None = None) -> bool:
        # A suppression survives erasure and re-import; it is not lifted in the admin.
        return False

    @admin.display(description=_("address hash"))
    def short_hash(self, entry: Suppression) -> str:
        return f"{entry.address_hash[:16]}…"

    def save_model(
        self, request: HttpRequest, obj: Suppression, form: SuppressionAddForm, change: bool
    ) -> None:
        cleaned = form.cleaned_data
        entry = services.suppression_add_manual(
            team=cleaned["team"],
            channel=cleaned["channel"],
            address=cleaned["address"],
            note=cleaned.get("note", ""),
            reason=cleaned["reason"],
            actor=request.user,
        )
        _adopt(obj, entry)


# --- review queue ------------------------------------------------------------------------------


class ConfirmWithdrawalForm(forms.Form):
    note = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        label=_("note"),
        help_text=_("Why these messages are withdrawals; stored as evidence."),
    )

    def clean_note(self) -> str:
        note = self.cleaned_data["note"].strip()
        if not note:
            raise forms.ValidationError(_("Say in a note why this is a withdrawal."))
        return note


class DismissForm(forms.Form):
    """Only a confirmation step: dismissing leaves consent as it is."""


@admin.register(WithdrawalReview)
class WithdrawalReviewAdmin(ServiceAdminMixin, TeamScopedAdminMixin, admin.ModelAdmin):
    """Messages that may be withdrawals; open entries first, oldest first."""

    list_display = (
        "created_at",
        "contact_panel",
        "channel",
        "excerpt",
        "matched",
        "status",
        "decided_by",
        "decided_at",
    )
    list_filter = ("status", "channel")
    list_select_related = ("contact", "decided_by")
    search_fields = ("text", "contact__first_name", "contact__last_name")
    actions = ["confirm_withdrawal", "dismiss"]
    fields = (
        "contact",
        "channel",
        "text",
        "matched",
        "inbound_message_ref",
        "status",
        "decided_by",
        "decided_at",
        "created_at",
    )
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[WithdrawalReview]:
        open_first = Case(
            When(status=WithdrawalReview.Status.OPEN, then=Value(0)),
            default=Value(1),
            output_field=IntegerField(),
        )
        return (
            selectors.withdrawal_reviews_visible_to(request.user)
            .annotate(open_first=open_first)
            .order_by("open_first", "created_at")
        )

    def get_ordering(self, request: HttpRequest) -> list[str]:
        return ["open_first", "created_at"]

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Entries are decided by the actions, which call the services; never edited.
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_decide_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("consent.change_withdrawalreview") and bool(
            crm_selectors.member_team_ids(request.user)
        )

    @admin.display(description=_("contact"), ordering="contact__last_name")
    def contact_panel(self, review: WithdrawalReview) -> str:
        return _contact_link(review.contact)

    @admin.display(description=_("message"))
    def excerpt(self, review: WithdrawalReview) -> str:
        return Truncator(review.text).chars(80)

    @admin.action(description=_("It is a withdrawal: record it…"), permissions=["decide"])
    def confirm_withdrawal(
        self, request: HttpRequest, queryset: QuerySet[WithdrawalReview]
    ) -> HttpResponse | None:
        form = ConfirmWithdrawalForm(request.POST if "apply" in request.POST else None)
        if not form.is_valid():
            return self._action_page(
                request,
                queryset,
                form,
                action="confirm_withdrawal",
                title=_("Record these messages as withdrawals"),
                note=_(
                    "Every purpose collected on the message's channel is withdrawn, effective "
                    "when the message arrived."
                ),
            )

        def decide(review: WithdrawalReview) -> None:
            services.withdrawal_review_confirm(
                review=review, actor=request.user, note=form.cleaned_data["note"]
            )

        return self._decide_all(request, queryset, decide)

    @admin.action(description=_("Not a withdrawal: dismiss…"), permissions=["decide"])
    def dismiss(
        self, request: HttpRequest, queryset: QuerySet[WithdrawalReview]
    ) -> HttpResponse | None:
        form = DismissForm()
        if "apply" not in request.POST:
            return self._action_page(
                request,
                queryset,
                form,
                action="dismiss",
                title=_("Dismiss these messages"),
                note=_("Consent stays as it is; the entries leave the queue."),
            )

        def decide(review: WithdrawalReview) -> None:
            services.withdrawal_review_dismiss(review=review, actor=request.user)

        return self._decide_all(request, queryset, decide)

    def _decide_all(
        self,
        request: HttpRequest,
        queryset: QuerySet[WithdrawalReview],
        decide: Callable[[WithdrawalReview], None],
    ) -> None:
        """All or nothing: one refused entry (another team, already decided) stops the batch."""
        reviews = list(queryset)
        try:
            with transaction.atomic():
                for review in reviews:
                    decide(review)
        except DomainError as error:
            report_domain_error(request, error)
            return
        self.message_user(
            request,
            ngettext("%(count)d entry decided.", "%(count)d entries decided.", len(reviews))
            % {"count": len(reviews)},
            messages.SUCCESS,
        )

    def _action_page(
        self,
        request: HttpRequest,
        queryset: QuerySet[WithdrawalReview],
        form: forms.Form,
        *,
        action: str,
        title: str,
        note: str = "",
    ) -> TemplateResponse:
        request.current_app = self.admin_site.name
        context = {
            **self.admin_site.each_context(request),
            "title": title,
            "subtitle": None,
            "opts": self.opts,
            "form": form,
            "note": note,
            "action": action,
            "count": queryset.count(),
            "sample": list(queryset[:ACTION_PAGE_SAMPLE]),
            "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
            "select_across": request.POST.get("select_across", "0"),
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "media": self.media + form.media,
        }
        return TemplateResponse(request, "admin/consent/withdrawalreview/action_form.html", context)
