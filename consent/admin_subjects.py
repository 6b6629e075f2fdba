"""Admin for data-subject requests (cases), retention policies and retention runs.

Cases are opened with the add form and moved on only by actions (verify identity, execute,
reject) that call consent.services; the case page itself is read-only. Overdue cases (open past
their one-month due date) are filterable and highlighted. Retention policies are changed by
superusers only; everyone with the view permission reads them, and runs are a read-only log.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext, ngettext, ngettext_lazy
from django.utils.translation import gettext_lazy as _

from consent import selectors, services
from consent.models import DataSubjectRequest, RetentionPolicy, RetentionRun
from crm import selectors as crm_selectors
from crm.admin_base import (
    IntermediateActionMixin,
    ReadOnlyAdminMixin,
    ServiceAdminMixin,
    TeamScopedAdminMixin,
    VisibleTeamFilter,
    adopt,
    report_domain_error,
)
from crm.errors import DomainError


class OverdueFilter(admin.SimpleListFilter):
    title = _("overdue")
    parameter_name = "overdue"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", _("Overdue")), ("no", _("Not overdue"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        overdue = selectors.data_subject_requests_overdue(queryset)
        if self.value() == "yes":
            return overdue
        if self.value() == "no":
            return queryset.exclude(pk__in=overdue.values("pk"))
        return queryset


class DataSubjectRequestAddForm(forms.ModelForm):
    class Meta:
        model = DataSubjectRequest
        fields = ["contact", "kind", "received_at", "identity_method"]
        help_texts = {
            "identity_method": _(
                "Fill in if the identity is already verified (e.g. the request came from the "
                "address on file). Otherwise verify it later with the action."
            ),
        }

    def __init__(self, *args: Any, user: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.user = user
        self.fields["received_at"].initial = timezone.now

    def clean_contact(self) -> Any:
        contact = self.cleaned_data["contact"]
        if self.user is not None and not crm_selectors.user_may_write(
            self.user, "consent.add_datasubjectrequest", contact.team_id
        ):
            raise forms.ValidationError(_("This contact belongs to a team you do not work for."))
        return contact


class IdentityForm(forms.Form):
    method = forms.CharField(
        max_length=200,
        label=_("how the identity was verified"),
        help_text=_("For example: reply from the e-mail address on file; ID card checked."),
    )


class RejectForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), label=_("reason"))


class ConfirmForm(forms.Form):
    """No fields: the page only asks to confirm."""


@admin.register(DataSubjectRequest)
class DataSubjectRequestAdmin(
    IntermediateActionMixin, ServiceAdminMixin, TeamScopedAdminMixin, admin.ModelAdmin
):
    list_display = (
        "case",
        "contact",
        "team",
        "kind",
        "status",
        "received_at",
        "due",
        "identity_verified",
        "completed_at",
        "result_link",
    )
    list_select_related = ("contact", "team")
    list_filter = ("kind", "status", OverdueFilter, ("team", VisibleTeamFilter))
    raw_id_fields = ("contact",)
    date_hierarchy = "received_at"
    actions = ["verify_identity", "execute", "reject"]
    action_summary = ngettext_lazy(
        "This applies to %(counter)s selected request:",
        "This applies to %(counter)s selected requests:",
        "counter",
    )
    action_sample_related = ("contact", "team")
    readonly_fields = (
        "team",
        "contact",
        "kind",
        "status",
        "received_at",
        "due",
        "identity_verified",
        "identity_method",
        "outcome",
        "result_link",
        "completed_at",
        "handled_by_label",
        "created_at",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[DataSubjectRequest]:
        return selectors.data_subject_requests_visible_to(request.user)

    def get_form(
        self, request: HttpRequest, obj: DataSubjectRequest | None = None, **kwargs: Any
    ) -> Any:
        if obj is None:
            kwargs["form"] = DataSubjectRequestAddForm
        form = super().get_form(request, obj, **kwargs)
        if obj is not None:
            return form

        class BoundForm(form):
            def __init__(self, *args: Any, **inner: Any) -> None:
                super().__init__(*args, user=request.user, **inner)

        return BoundForm

    def get_fields(self, request: HttpRequest, obj: DataSubjectRequest | None = None) -> Any:
        if obj is None:
            return DataSubjectRequestAddForm.Meta.fields
        return self.readonly_fields

    def get_readonly_fields(
        self, request: HttpRequest, obj: DataSubjectRequest | None = None
    ) -> tuple:
        return self.readonly_fields if obj is not None else ()

    # A case changes only through the actions; its page is read-only and it is never deleted.
    def has_change_permission(
        self, request: HttpRequest, obj: DataSubjectRequest | None = None
    ) -> bool:
        return obj is None and super().has_change_permission(request, None)

    def has_delete_permission(
        self, request: HttpRequest, obj: DataSubjectRequest | None = None
    ) -> bool:
        return False

    def save_model(
        self, request: HttpRequest, obj: DataSubjectRequest, form: Any, change: bool
    ) -> None:
        data = form.cleaned_data
        case = services.dsr_open(
            contact=data["contact"],
            kind=data["kind"],
            actor=request.user,
            received_at=data.get("received_at"),
            identity_method=data.get("identity_method") or "",
        )
        adopt(obj, case)

    @admin.display(description=_("case"), ordering="id")
    def case(self, obj: DataSubjectRequest) -> str:
        return str(obj)

    @admin.display(description=_("due at"), ordering="due_at")
    def due(self, obj: DataSubjectRequest) -> str:
        due = timezone.localtime(obj.due_at).strftime("%Y-%m-%d %H:%M")
        if obj.is_overdue:
            return format_html(
                '<strong class="dsr-overdue" style="color: var(--error-fg, #ba2121)">'
                "{} ({})</strong>",
                due,
                gettext("overdue"),
            )
        return due

    def action_sample_label(self, case: DataSubjectRequest) -> str:
        unverified = "" if case.identity_verified else ", " + gettext("identity not verified")
        return format_html(
            "{}: {} ({}) &ndash; {}{}",
            case,
            case.contact,
            case.team,
            case.get_status_display(),
            unverified,
        )

    @admin.display(description=_("result"))
    def result_link(self, obj: DataSubjectRequest) -> str:
        if not obj.result_file:
            return "-"
        url = reverse("admin:consent_datasubjectrequest_result", args=[obj.pk])
        return format_html('<a href="{}">{}</a>', url, gettext("Download"))

    def get_urls(self) -> list[URLPattern]:
        result = path(
            "<path:object_id>/result/",
            self.admin_site.admin_view(self.result_view),
            name="consent_datasubjectrequest_result",
        )
        return [result, *super().get_urls()]

    def result_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The stored access export, for whoever may view the case (scoped: others get 404)."""
        case = (
            self.get_queryset(request).filter(pk=object_id).first() if object_id.isdigit() else None
        )
        if case is None:
            raise Http404(gettext("Not found."))
        if not self.has_view_permission(request, case):
            raise PermissionDenied
        if not case.result_file:
            raise Http404(gettext("This request has no export."))
        return FileResponse(
            case.result_file.open("rb"),
            as_attachment=True,
            filename=f"data-subject-request-{case.pk}.json",
            content_type="application/json",
        )

    def _apply(
        self,
        request: HttpRequest,
        queryset: QuerySet[DataSubjectRequest],
        call: Any,
        done_message: Any,
    ) -> None:
        """Call the service for each case; a refusal is reported and the others still run."""
        done = 0
        for case in queryset.order_by("pk"):
            try:
                call(case)
            except DomainError as error:
                report_domain_error(request, error)
                continue
            done += 1
        if done:
            self.message_user(request, done_message(done), messages.SUCCESS)

    @admin.action(description=_("Verify identity…"), permissions=["change"])
    def verify_identity(
        self, request: HttpRequest, queryset: QuerySet[DataSubjectRequest]
    ) -> HttpResponse | None:
        form = IdentityForm(request.POST if "apply" in request.POST else None)
        if not form.is_valid():
            return self.action_page(
                request,
                queryset,
                form,
                action="verify_identity",
                title=_("Record how the requester's identity was verified"),
            )
        method = form.cleaned_data["method"]
        self._apply(
            request,
            queryset,
            lambda case: services.dsr_verify_identity(
                request=case, actor=request.user, method=method
            ),
            lambda n: (
                ngettext(
                    "Identity recorded for %(count)d request.",
                    "Identity recorded for %(count)d requests.",
                    n,
                )
                % {"count": n}
            ),
        )
        return None

    @admin.action(description=_("Execute…"), permissions=["change"])
    def execute(
        self, request: HttpRequest, queryset: QuerySet[DataSubjectRequest]
    ) -> HttpResponse | None:
        form = ConfirmForm(request.POST if "apply" in request.POST else None)
        if "apply" not in request.POST:
            return self.action_page(
                request,
                queryset,
                form,
                action="execute",
                title=_("Execute the selected requests"),
                note=_(
                    "Access writes an export; erasure pseudonymises the contact for good and "
                    "suppresses its addresses; restriction stops all processing; objection "
                    "withdraws every marketing consent. Requests without a verified identity "
                    "are refused."
                ),
            )
        self._apply(
            request,
            queryset,
            lambda case: services.dsr_execute(request=case, actor=request.user),
            lambda n: (
                ngettext("%(count)d request executed.", "%(count)d requests executed.", n)
                % {"count": n}
            ),
        )
        return None

    @admin.action(description=_("Reject…"), permissions=["change"])
    def reject(
        self, request: HttpRequest, queryset: QuerySet[DataSubjectRequest]
    ) -> HttpResponse | None:
        form = RejectForm(request.POST if "apply" in request.POST else None)
        if not form.is_valid():
            return self.action_page(
                request,
                queryset,
                form,
                action="reject",
                title=_("Close the selected requests without acting on them"),
            )
        reason = form.cleaned_data["reason"]
        self._apply(
            request,
            queryset,
            lambda case: services.dsr_reject(request=case, actor=request.user, reason=reason),
            lambda n: (
                ngettext("%(count)d request rejected.", "%(count)d requests rejected.", n)
                % {"count": n}
            ),
        )
        return None


class SuperuserWritesMixin:
    """Readable with the model's view permission; only superusers add, change or delete."""

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return request.user.is_superuser

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_superuser

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_superuser


@admin.register(RetentionPolicy)
class RetentionPolicyAdmin(SuperuserWritesMixin, admin.ModelAdmin):
    list_display = ("data_class", "scope", "keep_days", "action", "is_active", "updated_at")
    list_filter = ("data_class", "action", "is_active")
    fields = ("data_class", "team", "keep_days", "action", "is_active")
    actions = ["apply_now", "preview"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[RetentionPolicy]:
        return selectors.retention_policies_visible_to(request.user)

    @admin.display(description=_("applies to"), ordering="team__name")
    def scope(self, policy: RetentionPolicy) -> str:
        return str(policy.team) if policy.team_id else gettext("every team")

    def _report(self, request: HttpRequest, runs: list[RetentionRun], dry_run: bool) -> None:
        for run in runs:
            template = (
                gettext("%(policy)s: %(count)d records would be affected.")
                if dry_run
                else gettext("%(policy)s: %(count)d records affected.")
            )
            level = messages.ERROR if "error" in run.details else messages.INFO
            self.message_user(
                request, template % {"policy": run.policy, "count": run.affected}, level
            )

    @admin.action(description=_("Apply now"), permissions=["change"])
    def apply_now(self, request: HttpRequest, queryset: QuerySet[RetentionPolicy]) -> None:
        self._report(request, services.retention_apply(policies=list(queryset)), dry_run=False)

    @admin.action(description=_("Preview (change nothing)"), permissions=["change"])
    def preview(self, request: HttpRequest, queryset: QuerySet[RetentionPolicy]) -> None:
        runs = services.retention_apply(policies=list(queryset), dry_run=True)
        self._report(request, runs, dry_run=True)


@admin.register(RetentionRun)
class RetentionRunAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("policy", "ran_at", "affected", "details")
    list_filter = ("policy__data_class",)
    list_select_related = ("policy", "policy__team")
    fields = ("policy", "ran_at", "affected", "details")
    readonly_fields = fields
    date_hierarchy = "ran_at"

    def get_queryset(self, request: HttpRequest) -> QuerySet[RetentionRun]:
        return selectors.retention_runs_visible_to(request.user)
