"""User profiles in admin: everyone sets their own time zone."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from crm import services
from crm.admin_base import ServiceAdminMixin, adopt, time_zone_choices
from crm.models import UserProfile

if TYPE_CHECKING:
    from django.forms import ModelForm


class UserProfileForm(forms.ModelForm):
    time_zone = forms.ChoiceField(choices=time_zone_choices, label=_("time zone"))

    class Meta:
        model = UserProfile
        fields = ["user", "time_zone"]


@admin.register(UserProfile)
class UserProfileAdmin(ServiceAdminMixin, admin.ModelAdmin):
    """Everyone sets their own time zone; superusers manage all profiles."""

    form = UserProfileForm
    list_display = ("user", "time_zone")
    list_select_related = ("user",)
    search_fields = ("user__username",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[UserProfile]:
        queryset = super().get_queryset(request)
        return queryset if request.user.is_superuser else queryset.filter(user=request.user)

    def get_fields(self, request: HttpRequest, obj: UserProfile | None = None) -> list[str]:
        if obj is None and not request.user.is_superuser:
            return ["time_zone"]
        return ["user", "time_zone"]

    def get_readonly_fields(self, request: HttpRequest, obj: UserProfile | None = None) -> tuple:
        return ("user",) if obj is not None else ()

    def _own(self, request: HttpRequest, obj: UserProfile | None) -> bool:
        user = request.user
        if not (user.is_active and user.is_staff):
            return False
        return user.is_superuser or obj is None or obj.user_id == user.pk

    def has_module_permission(self, request: HttpRequest) -> bool:
        return request.user.is_active and request.user.is_staff

    def has_view_permission(self, request: HttpRequest, obj: UserProfile | None = None) -> bool:
        return self._own(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: UserProfile | None = None) -> bool:
        return self._own(request, obj)

    def has_add_permission(self, request: HttpRequest) -> bool:
        if request.user.is_superuser:
            return True
        has_profile = getattr(request.user, "crm_profile", None) is not None
        return self._own(request, None) and not has_profile

    def has_delete_permission(self, request: HttpRequest, obj: UserProfile | None = None) -> bool:
        return request.user.is_superuser

    def save_model(
        self, request: HttpRequest, obj: UserProfile, form: ModelForm, change: bool
    ) -> None:
        if change:
            user = obj.user
        elif request.user.is_superuser:
            user = form.cleaned_data["user"]
        else:
            user = request.user
        profile = services.user_time_zone_set(user=user, time_zone=form.cleaned_data["time_zone"])
        adopt(obj, profile)
