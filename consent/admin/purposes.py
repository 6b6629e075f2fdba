"""Purposes and their consent texts in admin.

A purpose's team and key are fixed once it exists; a consent text is never changed: new
wording is published as the next version.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.text import Truncator
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from simple_history.admin import SimpleHistoryAdmin

from consent import selectors, services
from consent.models import ConsentText, Purpose
from consent.services.texts import PURPOSE_UPDATABLE_FIELDS, PurposeInvalid
from crm import selectors as crm_selectors
from crm.admin_base import (
    ScopedHistoryMixin,
    ServiceAdminMixin,
    TeamObjectFilter,
    TeamOwnedFormMixin,
    TeamScopedAdminMixin,
    VisibleTeamFilter,
    adopt,
)
from crm.errors import DomainError
from crm.models import Channel

if TYPE_CHECKING:
    from django.db.models import Field


class VisiblePurposeFilter(TeamObjectFilter):
    """Purposes of the teams the user may see."""

    title = _("purpose")
    parameter_name = "purpose"
    lookup = "purpose_id"

    def objects(self, request: HttpRequest) -> QuerySet[Purpose]:
        return selectors.purposes_visible_to(request.user).order_by("name", "team__name")


class PurposeForm(TeamOwnedFormMixin, forms.ModelForm):
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
        fields = ["team", "key", *PURPOSE_UPDATABLE_FIELDS]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["opt_in_keywords"] = ", ".join(self.instance.opt_in_keywords or [])

    def clean_opt_in_keywords(self) -> list[str]:
        raw = self.cleaned_data.get("opt_in_keywords") or ""
        return [word.strip() for word in raw.split(",") if word.strip()]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        team_id = self.team_id()
        if team_id is None or self.errors:
            return cleaned
        checked = {
            name: cleaned[name]
            for name in ("allowed_channels", "double_opt_in_channels", "opt_in_keywords")
            if name in cleaned
        }
        try:
            cleaned.update(
                services.purpose_fields_validate(
                    checked, team_id=team_id, exclude_pk=self.instance.pk
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
            adopt(obj, services.purpose_update(purpose=obj, actor=request.user, **changed))
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
        adopt(obj, purpose)


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
        adopt(obj, text)
