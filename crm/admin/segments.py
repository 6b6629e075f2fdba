"""Segments in admin: rules are checked on the field and previewed live."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, JsonResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _
from simple_history.admin import SimpleHistoryAdmin

from crm import selectors, services
from crm.admin_base import (
    ScopedHistoryMixin,
    ServiceAdminMixin,
    TeamOwnedFormMixin,
    TeamScopedAdminMixin,
    VisibleTeamFilter,
    adopt,
    delete_each,
)
from crm.models import Segment
from crm.segments import SegmentRulesInvalid, validate_rules


class SegmentForm(TeamOwnedFormMixin, forms.ModelForm):
    class Meta:
        model = Segment
        fields = ["team", "name", "description", "rules"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "rules" in self.fields:
            # An empty rule set is valid (every contact of the team); forms treat {} as missing.
            self.fields["rules"].required = False
            self.fields["rules"].widget.attrs.update(rows=12, cols=80)

    def clean_rules(self) -> dict[str, Any]:
        rules = self.cleaned_data.get("rules") or {"match": "all", "conditions": []}
        try:
            validate_rules(rules)
        except SegmentRulesInvalid as error:
            raise ValidationError(error.message) from error
        return rules

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        name = (cleaned.get("name") or "").strip()
        if name and self.taken_in_team(name=name):
            self.add_error(
                "name", _("This team already has a segment called “%(name)s”.") % {"name": name}
            )
        return cleaned


@admin.register(Segment)
class SegmentAdmin(ServiceAdminMixin, ScopedHistoryMixin, TeamScopedAdminMixin, SimpleHistoryAdmin):
    """Rules are validated on the field; the change page previews who matches, live."""

    form = SegmentForm
    list_display = ("name", "team", "created_by", "updated_at")
    list_filter = (("team", VisibleTeamFilter),)
    search_fields = ("name", "description")
    change_form_template = "admin/crm/segment/change_form.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Segment]:
        return selectors.segments_visible_to(request.user)

    def get_fields(self, request: HttpRequest, obj: Segment | None = None) -> list[str]:
        fields = ["team", "name", "description", "rules"]
        return [*fields, "preview", "created_by"] if obj is not None else fields

    def get_readonly_fields(self, request: HttpRequest, obj: Segment | None = None) -> tuple:
        return ("team", "preview", "created_by") if obj is not None else ()

    @admin.display(description=_("matching contacts"))
    def preview(self, segment: Segment) -> str:
        try:
            result = selectors.segment_preview(segment)
        except SegmentRulesInvalid as error:
            return format_html('<div id="segment-preview">{}</div>', error.message)
        return _preview_html(result)

    def delete_model(self, request: HttpRequest, obj: Segment) -> None:
        services.segment_delete(segment=obj, actor=request.user)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Segment]) -> None:
        delete_each(
            queryset, lambda segment: services.segment_delete(segment=segment, actor=request.user)
        )

    def get_urls(self) -> list[URLPattern]:
        preview = path(
            "preview/",
            self.admin_site.admin_view(self.preview_view),
            name="crm_segment_preview",
        )
        return [preview, *super().get_urls()]

    def preview_view(self, request: HttpRequest) -> JsonResponse:
        """Count and sample for rules being edited (GET team, rules); nothing is saved."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        team_id = request.GET.get("team", "")
        if not team_id.isdigit() or int(team_id) not in selectors.visible_team_ids(request.user):
            raise Http404(gettext("Not found."))
        form = forms.JSONField(required=False)
        try:
            rules = form.clean(request.GET.get("rules", "")) or {}
            result = selectors.segment_preview(Segment(team_id=int(team_id), rules=rules))
        except ValidationError as error:
            return JsonResponse({"error": " ".join(error.messages)}, status=400)
        except SegmentRulesInvalid as error:
            return JsonResponse({"error": error.message}, status=400)
        return JsonResponse({"html": _preview_html(result)})

    def save_model(
        self, request: HttpRequest, obj: Segment, form: SegmentForm, change: bool
    ) -> None:
        cleaned = form.cleaned_data
        if change:
            services.segment_update(
                segment=obj,
                actor=request.user,
                name=cleaned["name"],
                rules=cleaned["rules"],
                description=cleaned["description"],
            )
            return
        segment = services.segment_create(
            team=cleaned["team"],
            name=cleaned["name"],
            rules=cleaned["rules"],
            description=cleaned["description"],
            actor=request.user,
        )
        adopt(obj, segment)


def _preview_html(result: dict[str, Any]) -> str:
    count = result["count"]
    sample = format_html_join(
        "",
        '<li><a href="{}">{}</a></li>',
        ((reverse("admin:crm_contact_change", args=[c.pk]), str(c)) for c in result["sample"]),
    )
    summary = ngettext("%(count)d contact matches.", "%(count)d contacts match.", count) % {
        "count": count
    }
    return format_html(
        '<div id="segment-preview"><strong class="preview-count">{}</strong><ul>{}</ul></div>',
        summary,
        sample,
    )
