"""Teams in admin: superusers create them and set members; others read their own."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.admin.widgets import FilteredSelectMultiple
from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from crm import selectors, services
from crm.admin_base import ServiceAdminMixin, adopt, time_zone_choices
from crm.models import Team


class TeamForm(forms.ModelForm):
    members = forms.ModelMultipleChoiceField(
        queryset=get_user_model().objects.none(),
        required=False,
        label=_("members"),
        widget=FilteredSelectMultiple(_("members"), is_stacked=False),
        help_text=_("Members work with this team's data, as far as their role allows."),
    )
    default_time_zone = forms.ChoiceField(choices=time_zone_choices, label=_("default time zone"))

    class Meta:
        model = Team
        fields = ["name", "slug", "default_language", "default_time_zone", "is_active"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["members"].queryset = (
            get_user_model().objects.filter(is_active=True).order_by("username")
        )
        if self.instance.pk:
            self.fields["members"].initial = list(selectors.team_members(self.instance))


@admin.register(Team)
class TeamAdmin(ServiceAdminMixin, admin.ModelAdmin):
    """Only superusers create teams and set members; everyone else reads their visible teams."""

    form = TeamForm
    list_display = ("name", "slug", "default_language", "default_time_zone", "is_active")
    list_filter = ("is_active",)
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}

    def get_queryset(self, request: HttpRequest) -> QuerySet[Team]:
        return super().get_queryset(request).filter(id__in=selectors.visible_team_ids(request.user))

    def get_fields(self, request: HttpRequest, obj: Team | None = None) -> list[str]:
        fields = ["name", "slug", "default_language", "default_time_zone", "is_active"]
        return [*fields, "members" if request.user.is_superuser else "member_list"]

    def get_readonly_fields(self, request: HttpRequest, obj: Team | None = None) -> tuple:
        return () if request.user.is_superuser else ("member_list",)

    def get_prepopulated_fields(self, request: HttpRequest, obj: Team | None = None) -> dict:
        return self.prepopulated_fields if request.user.is_superuser else {}

    @admin.display(description=_("members"))
    def member_list(self, team: Team) -> str:
        return ", ".join(user.get_username() for user in selectors.team_members(team))

    def has_view_permission(self, request: HttpRequest, obj: Team | None = None) -> bool:
        if request.user.is_superuser:
            return True
        if not request.user.has_perm("crm.view_team"):
            return False
        return obj is None or obj.pk in selectors.visible_team_ids(request.user)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return request.user.is_superuser

    def has_change_permission(self, request: HttpRequest, obj: Team | None = None) -> bool:
        return request.user.is_superuser

    def has_delete_permission(self, request: HttpRequest, obj: Team | None = None) -> bool:
        return request.user.is_superuser

    def save_model(self, request: HttpRequest, obj: Team, form: TeamForm, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        fields = {name: form.cleaned_data[name] for name in TeamForm.Meta.fields}
        adopt(obj, services.team_create(**fields))

    def save_related(
        self, request: HttpRequest, form: TeamForm, formsets: list, change: bool
    ) -> None:
        super().save_related(request, form, formsets, change)
        if "members" in form.cleaned_data:
            services.team_members_set(team=form.instance, users=form.cleaned_data["members"])
