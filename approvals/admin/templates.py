"""Message templates in admin, with their versions inline.

Draft versions can be edited (and new drafts added) inline; every other version shows
read-only, and its fields are disabled so a tampered form cannot change it either. Every
write goes through approvals.services, which checks role and team again.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from simple_history.admin import SimpleHistoryAdmin

from approvals import selectors, services
from approvals.models import MessageTemplate, TemplateCategory, TemplateVersion, VersionState
from approvals.services.templates import TEMPLATE_NAME_RE
from consent.models import Purpose
from crm import selectors as crm_selectors
from crm.admin_base import (
    ScopedHistoryMixin,
    ServiceAdminMixin,
    TeamOwnedFormMixin,
    TeamScopedAdminMixin,
    VisibleTeamFilter,
    adopt,
)

# The inline edits these; buttons and variables are edited on the version's own page.
INLINE_CONTENT_FIELDS = ("subject", "body", "valid_from", "valid_until")
TEMPLATE_FIELDS = ("name", "channel", "category", "language", "purpose", "owner", "is_active")


def version_link(version: TemplateVersion) -> str:
    url = reverse("admin:approvals_templateversion_change", args=[version.pk])
    return format_html('<a href="{}">{}</a>', url, gettext("Open"))


class MessageTemplateForm(TeamOwnedFormMixin, forms.ModelForm):
    class Meta:
        model = MessageTemplate
        fields = ["team", *TEMPLATE_FIELDS]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        name = cleaned.get("name") or ""
        if name and not TEMPLATE_NAME_RE.match(name):
            self.add_error("name", _("Use lower-case letters, digits and underscores."))
        channel, language = cleaned.get("channel"), cleaned.get("language")
        if (
            name
            and channel
            and language
            and self.taken_in_team(name=name, channel=channel, language=language)
        ):
            self.add_error(
                "name", _("This team already has a template of this name, channel and language.")
            )
        purpose: Purpose | None = cleaned.get("purpose")
        if cleaned.get("category") == TemplateCategory.MARKETING and purpose is None:
            self.add_error(
                "purpose", _("A marketing template needs the purpose whose consent it relies on.")
            )
        if purpose is not None and channel and channel not in (purpose.allowed_channels or []):
            self.add_error("purpose", _("This purpose does not allow the template's channel."))
        return cleaned


class TemplateVersionInlineForm(forms.ModelForm):
    class Meta:
        model = TemplateVersion
        fields = list(INLINE_CONTENT_FIELDS)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk and self.instance.state != VersionState.DRAFT:
            # Disabled fields ignore whatever the browser posts: the row cannot change.
            for field in self.fields.values():
                field.disabled = True


class TemplateVersionInline(admin.TabularInline):
    model = TemplateVersion
    form = TemplateVersionInlineForm
    fields = ("number", "state", *INLINE_CONTENT_FIELDS, "open_link")
    readonly_fields = ("number", "state", "open_link")
    extra = 0
    can_delete = False
    show_change_link = False
    ordering = ("-number",)

    def _may(self, request: HttpRequest, template: MessageTemplate | None, verb: str) -> bool:
        if template is None:
            return False
        return crm_selectors.user_may_write(
            request.user, f"approvals.{verb}_templateversion", template.team_id
        )

    def has_add_permission(self, request: HttpRequest, obj: MessageTemplate | None = None) -> bool:
        return self._may(request, obj, "add")

    def has_change_permission(
        self, request: HttpRequest, obj: MessageTemplate | None = None
    ) -> bool:
        return self._may(request, obj, "change")

    def has_delete_permission(
        self, request: HttpRequest, obj: MessageTemplate | None = None
    ) -> bool:
        return False

    @admin.display(description=_("version"))
    def open_link(self, version: TemplateVersion) -> str:
        return version_link(version) if version.pk else "—"


@admin.register(MessageTemplate)
class MessageTemplateAdmin(
    ServiceAdminMixin, ScopedHistoryMixin, TeamScopedAdminMixin, SimpleHistoryAdmin
):
    form = MessageTemplateForm
    inlines = (TemplateVersionInline,)
    list_display = ("name", "team", "channel", "category", "language", "purpose", "is_active")
    list_filter = (("team", VisibleTeamFilter), "channel", "category", "language", "is_active")
    list_select_related = ("team", "purpose")
    search_fields = ("name",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[MessageTemplate]:
        return selectors.templates_visible_to(request.user)

    def get_readonly_fields(
        self, request: HttpRequest, obj: MessageTemplate | None = None
    ) -> tuple[str, ...]:
        return ("team",) if obj is not None else ()

    def get_fields(self, request: HttpRequest, obj: MessageTemplate | None = None) -> list[str]:
        fields = ["team", *TEMPLATE_FIELDS]
        # New templates are active; switching one off is a later decision.
        return fields if obj is not None else [name for name in fields if name != "is_active"]

    def has_delete_permission(
        self, request: HttpRequest, obj: MessageTemplate | None = None
    ) -> bool:
        # Versions and messages point at their template for good; switch it off instead.
        return False

    def formfield_for_foreignkey(
        self, db_field: Any, request: HttpRequest, **kwargs: Any
    ) -> forms.Field | None:
        member_teams = crm_selectors.member_team_ids(request.user)
        if db_field.name == "purpose":
            kwargs["queryset"] = Purpose.objects.filter(team_id__in=member_teams).select_related(
                "team"
            )
        elif db_field.name == "owner":
            members: set[int] = set()
            for team in crm_selectors.teams_writable_by(request.user):
                members.update(crm_selectors.team_members(team).values_list("id", flat=True))
            kwargs["queryset"] = get_user_model().objects.filter(id__in=members)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(
        self, request: HttpRequest, obj: MessageTemplate, form: MessageTemplateForm, change: bool
    ) -> None:
        cleaned = form.cleaned_data
        if change:
            changed = {name: cleaned[name] for name in form.changed_data if name in TEMPLATE_FIELDS}
            if changed:
                adopt(obj, services.template_update(template=obj, actor=request.user, **changed))
            return
        template = services.template_create(
            team=cleaned["team"],
            name=cleaned["name"],
            channel=cleaned["channel"],
            category=cleaned["category"],
            language=cleaned["language"],
            purpose=cleaned.get("purpose"),
            owner=cleaned.get("owner"),
            actor=request.user,
        )
        adopt(obj, template)

    def save_formset(
        self, request: HttpRequest, form: MessageTemplateForm, formset: Any, change: bool
    ) -> None:
        if formset.model is not TemplateVersion:
            super().save_formset(request, form, formset, change)
            return
        template, actor = form.instance, request.user
        # construct_change_message reads these three lists.
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        for version_form in formset.initial_forms:
            version = version_form.instance
            changed = [name for name in version_form.changed_data if name in INLINE_CONTENT_FIELDS]
            if not changed or version.state != VersionState.DRAFT:
                continue
            fields = {name: version_form.cleaned_data[name] for name in changed}
            services.template_version_update(version=version, actor=actor, **fields)
            formset.changed_objects.append((version, changed))
        for version_form in formset.extra_forms:
            if not version_form.has_changed():
                continue
            data = version_form.cleaned_data
            created = services.template_version_create(
                template=template,
                actor=actor,
                **{name: data[name] for name in INLINE_CONTENT_FIELDS if name in data},
            )
            formset.new_objects.append(created)
