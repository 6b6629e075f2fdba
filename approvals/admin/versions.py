"""Template versions in admin, the review queue and the review page.

Drafts are created and edited through the services; a version that left draft is read-only
(its change page answers a POST with 403). The review queue lists what the caller's groups
may decide now, oldest first; the review page shows the rendered preview, the diff against
the previous approved version and the decision history, and records a decision bound to the
content hash shown on the page, so content changed in between is refused as stale.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import mark_safe
from django.utils.translation import gettext, ngettext, ngettext_lazy
from django.utils.translation import gettext_lazy as _
from simple_history.admin import SimpleHistoryAdmin

from approvals import channel_rules, diffs, rendering, selectors, services
from approvals.errors import RenderError
from approvals.models import (
    VERSION_CONTENT_FIELDS,
    ApprovalStage,
    Decision,
    MessageTemplate,
    TemplateVersion,
    VersionState,
)
from approvals.services.workflow import VARIABLE_RE
from crm import selectors as crm_selectors
from crm.admin_base import (
    IntermediateActionMixin,
    ScopedHistoryMixin,
    ServiceAdminMixin,
    TeamScopedAdminMixin,
    VisibleTeamFilter,
    adopt,
    report_domain_error,
)
from crm.errors import DomainError
from crm.models import Channel

if TYPE_CHECKING:
    from collections.abc import Callable

    from django.urls import URLPattern

EXPIRY_WINDOW_DAYS = 30
QUEUE_PAGE_SIZE = 50
DECIDE_PERM = "approvals.add_reviewdecision"


class ExpiringSoonFilter(admin.SimpleListFilter):
    """Approved content whose validity ends soon: renew it before sends are refused."""

    title = _("expiry")
    parameter_name = "expiring"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            (str(EXPIRY_WINDOW_DAYS), _("expiring in 30 days")),
            ("expired", _("expired")),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        now = timezone.now()
        if self.value() == str(EXPIRY_WINDOW_DAYS):
            return queryset.filter(
                state=VersionState.APPROVED,
                valid_until__gt=now,
                valid_until__lte=now + dt.timedelta(days=EXPIRY_WINDOW_DAYS),
            )
        if self.value() == "expired":
            return queryset.filter(valid_until__lte=now)
        return queryset


class TemplateVersionForm(forms.ModelForm):
    """A draft's content. Buttons are JSON; variables a comma-separated list (left empty, they
    are taken from the placeholders the text uses)."""

    buttons = forms.JSONField(
        required=False,
        initial=list,
        label=_("buttons"),
        help_text=_('For example [{"type": "quick_reply", "text": "Yes, please"}].'),
    )
    variables = forms.CharField(
        required=False,
        label=_("variables"),
        help_text=_(
            "Comma-separated, e.g. first_name, contact.salutation. "
            "Leave empty to use the placeholders of the text."
        ),
    )

    class Meta:
        model = TemplateVersion
        fields = ["template", *VERSION_CONTENT_FIELDS]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["variables"] = ", ".join(self.instance.variables or [])

    def clean_buttons(self) -> list[dict[str, Any]]:
        buttons = self.cleaned_data.get("buttons") or []
        if not isinstance(buttons, list) or not all(isinstance(b, dict) for b in buttons):
            raise forms.ValidationError(_("Give a JSON list of objects."))
        return buttons

    def clean_variables(self) -> list[str] | None:
        raw = self.cleaned_data.get("variables") or ""
        names = [name.strip() for name in raw.split(",") if name.strip()]
        bad = [name for name in names if not VARIABLE_RE.match(name)]
        if bad:
            raise forms.ValidationError(
                _("Not a variable name: %(names)s.") % {"names": ", ".join(bad)}
            )
        return names or None

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        start, end = cleaned.get("valid_from"), cleaned.get("valid_until")
        if start and end and end <= start:
            self.add_error("valid_until", _("The end of the validity must lie after its start."))
        return cleaned

    def _post_clean(self) -> None:
        # `variables` is a text here and None means "derive"; the model keeps a list.
        variables = self.cleaned_data.get("variables")
        super()._post_clean()
        self.cleaned_data["variables"] = variables
        self.instance.variables = variables or []


class ReviewForm(forms.Form):
    decision = forms.ChoiceField(
        choices=Decision.choices, widget=forms.RadioSelect, label=_("decision")
    )
    comment = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        label=_("comment"),
        help_text=_("Required to reject or to request changes."),
    )
    # The hash of the content shown on the page; the service refuses it if the content moved.
    content_hash = forms.CharField(widget=forms.HiddenInput, max_length=64)


class RetireForm(forms.Form):
    comment = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        label=_("comment"),
        help_text=_("Why the versions are taken out of use."),
    )


def preview_of(version: TemplateVersion) -> dict[str, Any]:
    """What the review page shows of a version: rendered sample, SMS facts, rule verdict."""
    rendered, render_error = None, ""
    try:
        rendered = rendering.render_preview(version)
    except RenderError as error:
        render_error = error.message
    sms = None
    if version.template.channel == Channel.SMS:
        text = rendered.body if rendered else version.body
        encoding, segments = channel_rules.sms_encoding_and_segments(text)
        sms = {"encoding": encoding, "segments": segments, "characters": len(text)}
    return {
        "rendered": rendered,
        "render_error": render_error,
        "sms": sms,
        "violations": channel_rules.check_version(version),
        "context": rendering.sample_context(version),
    }


@admin.register(TemplateVersion)
class TemplateVersionAdmin(
    IntermediateActionMixin,
    ServiceAdminMixin,
    ScopedHistoryMixin,
    TeamScopedAdminMixin,
    SimpleHistoryAdmin,
):
    form = TemplateVersionForm
    team_field = "template__team"
    change_list_template = "admin/approvals/templateversion/change_list.html"
    list_display = (
        "template",
        "number",
        "state",
        "author",
        "submitted_at",
        "valid_until",
        "provider_status",
        "review_link",
    )
    list_filter = (
        "state",
        ExpiringSoonFilter,
        ("template__team", VisibleTeamFilter),
        "template__channel",
        "template__category",
    )
    list_select_related = ("template", "template__team", "author")
    search_fields = ("template__name", "subject", "body")
    actions = ("submit_for_review", "retire_versions", "new_draft_from")
    action_summary = ngettext_lazy(
        "This applies to %(counter)s selected version:",
        "This applies to %(counter)s selected versions:",
        "counter",
    )
    action_sample_related = ("template",)
    workflow_fields = (
        "number",
        "state",
        "stage_index",
        "content_hash",
        "author",
        "submitted_at",
        "approved_at",
        "provider_status",
        "provider_template_id",
        "provider_reason",
        "review_link",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[TemplateVersion]:
        return selectors.versions_visible_to(request.user)

    def get_fields(self, request: HttpRequest, obj: TemplateVersion | None = None) -> list[str]:
        content = ["template", *VERSION_CONTENT_FIELDS]
        return content if obj is None else [*content, *self.workflow_fields]

    def get_readonly_fields(
        self, request: HttpRequest, obj: TemplateVersion | None = None
    ) -> tuple[str, ...]:
        if obj is None:
            return ()
        return ("template", *self.workflow_fields)

    def has_change_permission(
        self, request: HttpRequest, obj: TemplateVersion | None = None
    ) -> bool:
        # Only drafts change; a version that left draft is shown read-only and a POST is 403.
        if obj is not None and obj.state != VersionState.DRAFT:
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(
        self, request: HttpRequest, obj: TemplateVersion | None = None
    ) -> bool:
        return False

    def _may_any_team(self, request: HttpRequest, perm: str) -> bool:
        return request.user.has_perm(perm) and bool(crm_selectors.member_team_ids(request.user))

    def has_submit_permission(self, request: HttpRequest) -> bool:
        return self._may_any_team(request, "approvals.submit_templateversion")

    def has_retire_permission(self, request: HttpRequest) -> bool:
        return self._may_any_team(request, "approvals.change_templateversion")

    def formfield_for_foreignkey(
        self, db_field: Any, request: HttpRequest, **kwargs: Any
    ) -> forms.Field | None:
        if db_field.name == "template":
            kwargs["queryset"] = MessageTemplate.objects.filter(
                team_id__in=crm_selectors.member_team_ids(request.user), is_active=True
            ).select_related("team")
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    @admin.display(description=_("review"))
    def review_link(self, version: TemplateVersion) -> str:
        if version.pk is None:
            return "—"
        url = reverse("admin:approvals_templateversion_review", args=[version.pk])
        label = gettext("Review") if version.state == VersionState.IN_REVIEW else gettext("Show")
        return format_html('<a href="{}">{}</a>', url, label)

    def action_sample_label(self, version: TemplateVersion) -> str:
        return f"{version} ({version.get_state_display()})"

    def save_model(
        self, request: HttpRequest, obj: TemplateVersion, form: TemplateVersionForm, change: bool
    ) -> None:
        cleaned = form.cleaned_data
        if change:
            changed = {
                name: cleaned[name] for name in form.changed_data if name in VERSION_CONTENT_FIELDS
            }
            if changed:
                adopt(
                    obj,
                    services.template_version_update(version=obj, actor=request.user, **changed),
                )
            return
        version = services.template_version_create(
            template=cleaned["template"],
            actor=request.user,
            **{name: cleaned[name] for name in VERSION_CONTENT_FIELDS if name in cleaned},
        )
        adopt(obj, version)

    def _each(
        self,
        request: HttpRequest,
        queryset: QuerySet[TemplateVersion],
        apply: Callable[[TemplateVersion], Any],
        done: str,
    ) -> None:
        """All or nothing: one refused version (wrong state, broken rule) stops the batch."""
        versions = list(queryset)
        try:
            with transaction.atomic():
                for version in versions:
                    apply(version)
        except DomainError as error:
            report_domain_error(request, error)
            return
        self.message_user(request, done % {"count": len(versions)}, messages.SUCCESS)

    @admin.action(description=_("Submit for review"), permissions=["submit"])
    def submit_for_review(self, request: HttpRequest, queryset: QuerySet[TemplateVersion]) -> None:
        self._each(
            request,
            queryset,
            lambda version: services.template_version_submit(version=version, actor=request.user),
            ngettext(
                "%(count)d version submitted.", "%(count)d versions submitted.", queryset.count()
            ),
        )

    @admin.action(description=_("Retire (never send again)…"), permissions=["retire"])
    def retire_versions(
        self, request: HttpRequest, queryset: QuerySet[TemplateVersion]
    ) -> HttpResponse | None:
        form = RetireForm(request.POST if "apply" in request.POST else None)
        if not form.is_valid():
            return self.action_page(
                request,
                queryset,
                form,
                action="retire_versions",
                title=_("Retire these versions"),
                note=_("Retired versions can never be sent again; this cannot be undone."),
            )
        comment = form.cleaned_data["comment"]
        self._each(
            request,
            queryset,
            lambda version: services.template_version_retire(
                version=version, actor=request.user, comment=comment
            ),
            ngettext("%(count)d version retired.", "%(count)d versions retired.", queryset.count()),
        )
        return None

    @admin.action(description=_("Start a new draft from this wording"), permissions=["add"])
    def new_draft_from(self, request: HttpRequest, queryset: QuerySet[TemplateVersion]) -> None:
        def copy(version: TemplateVersion) -> TemplateVersion:
            return services.template_version_create(
                template=version.template,
                actor=request.user,
                subject=version.subject,
                header=version.header,
                body=version.body,
                footer=version.footer,
                buttons=version.buttons,
                variables=version.variables,
            )

        self._each(
            request,
            queryset,
            copy,
            ngettext("%(count)d draft created.", "%(count)d drafts created.", queryset.count()),
        )

    # The review queue and the review page

    def get_urls(self) -> list[URLPattern]:
        info = self.opts.app_label, self.opts.model_name
        extra = [
            path(
                "review-queue/",
                self.admin_site.admin_view(self.review_queue_view),
                name="{}_{}_review_queue".format(*info),
            ),
            path(
                "<path:object_id>/review/",
                self.admin_site.admin_view(self.review_view),
                name="{}_{}_review".format(*info),
            ),
        ]
        return extra + super().get_urls()

    def _page_context(self, request: HttpRequest, title: str) -> dict[str, Any]:
        request.current_app = self.admin_site.name
        return {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": title,
            "subtitle": None,
        }

    def review_queue_view(self, request: HttpRequest) -> HttpResponse:
        """Versions the caller may decide now, oldest submission first."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        queue = selectors.review_queue_for(request.user)
        page = Paginator(queue, QUEUE_PAGE_SIZE).get_page(request.GET.get("page"))
        stage_ids = {version.current_stage_id for version in page}
        stage_names = dict(ApprovalStage.objects.filter(pk__in=stage_ids).values_list("pk", "name"))
        rows = [
            {"version": version, "stage": stage_names.get(version.current_stage_id, "")}
            for version in page
        ]
        context = {
            **self._page_context(request, gettext("Review queue")),
            "rows": rows,
            "page": page,
            "may_decide": request.user.has_perm(DECIDE_PERM),
        }
        return TemplateResponse(
            request, "admin/approvals/templateversion/review_queue.html", context
        )

    def review_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """One version with preview, diff and history; decide it here if it is yours to."""
        version = self.get_object(request, unquote(object_id))
        if not self.has_view_permission(request, version):
            raise PermissionDenied
        form = None
        if request.method == "POST":
            if not request.user.has_perm(DECIDE_PERM):
                raise PermissionDenied
            form = ReviewForm(request.POST)
            if form.is_valid():
                try:
                    services.review_decide(
                        version=version,
                        reviewer=request.user,
                        decision=form.cleaned_data["decision"],
                        content_hash=form.cleaned_data["content_hash"],
                        comment=form.cleaned_data["comment"],
                    )
                except DomainError as error:
                    report_domain_error(request, error)
                    # Show the content as it is now, with its hash: decide on what you see.
                    version = self.get_object(request, unquote(object_id))
                    form = ReviewForm(
                        initial={**form.cleaned_data, "content_hash": version.content_hash}
                    )
                else:
                    self.message_user(
                        request,
                        gettext("Your decision on %(version)s was recorded.")
                        % {"version": version},
                        messages.SUCCESS,
                    )
                    return HttpResponseRedirect(
                        reverse("admin:approvals_templateversion_review_queue")
                    )
        in_queue = selectors.review_queue_for(request.user).filter(pk=version.pk).exists()
        if in_queue and form is None:
            form = ReviewForm(initial={"content_hash": version.content_hash})
        previous = selectors.previous_approved(version)
        stage = selectors.current_stage(version)
        context = {
            **self._page_context(request, gettext("Review %(version)s") % {"version": version}),
            "version": version,
            "template": version.template,
            "stage": stage,
            "form": form if in_queue else None,
            "preview": preview_of(version),
            "buttons_json": json.dumps(version.buttons, ensure_ascii=False, indent=2),
            "previous": previous,
            # difflib escapes the content it puts into the table.
            "diff_table": mark_safe(diffs.html_diff(previous, version)),  # noqa: S308
            "decisions": selectors.decisions_visible_to(request.user)
            .filter(version=version)
            .order_by("sequence"),
            "state_changes": version.state_changes.order_by("changed_at", "id"),
            "change_url": reverse("admin:approvals_templateversion_change", args=[version.pk]),
        }
        return TemplateResponse(request, "admin/approvals/templateversion/review.html", context)
