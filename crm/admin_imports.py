"""Admin for contact imports: upload, preview, confirm, progress and rejected-rows report.

Thin screens over crm.imports. Foreign imports are outside the scoped queryset, so every page
of another team's import answers 404; uploading and confirming need crm.add_contactimport
plus membership of the team (auditors read, they never upload).
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_POST

from crm import selectors
from crm.admin_base import ReadOnlyAdminMixin, TeamScopedAdminMixin, report_domain_error
from crm.errors import DomainError
from crm.imports import (
    ALLOWED_EXTENSIONS,
    IMPORT_PERMISSION,
    contact_import_create,
    contact_import_preview,
    contact_import_start,
)
from crm.models import ContactImport, ImportRejection, ImportStatus, Team

# Rejected rows shown on the detail page; the report and the rejected-rows list hold them all.
DETAIL_REJECTIONS = 50


class ContactImportUploadForm(forms.Form):
    team = forms.ModelChoiceField(queryset=Team.objects.none(), label=_("Team"))
    file = forms.FileField(
        label=_("File"),
        help_text=_(
            "CSV (comma or semicolon, UTF-8 or Windows-1252) or XLSX with a header row, e.g. "
            "external_id, first_name, last_name, email, phone, whatsapp, language, tags, "
            "attr_<key> (German names such as Vorname, Nachname, E-Mail, Telefon work too)."
        ),
    )

    def __init__(self, *args: Any, user: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        teams = selectors.teams_writable_by(user)
        self.fields["team"].queryset = teams
        if len(teams) == 1:
            self.fields["team"].initial = teams[0].pk
        self.fields["file"].widget.attrs["accept"] = ",".join(ALLOWED_EXTENSIONS)


@admin.register(ContactImport)
class ContactImportAdmin(TeamScopedAdminMixin, admin.ModelAdmin):
    list_display = (
        "__str__",
        "team",
        "status",
        "progress",
        "created_count",
        "updated_count",
        "unchanged_count",
        "rejected_count",
        "warning_count",
        "created_by",
        "created_at",
    )
    list_filter = ("status",)
    list_select_related = ("team", "created_by")
    search_fields = ("original_name",)
    date_hierarchy = "created_at"

    @admin.display(description=_("progress"))
    def progress(self, obj: ContactImport) -> str:
        return f"{obj.progress_percent} %"

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # An import is never edited; its pages are upload, preview, confirm and detail.
        return False

    def get_urls(self) -> list[URLPattern]:
        info = self.opts.app_label, self.opts.model_name
        extra = [
            path(
                "<path:object_id>/preview/",
                self.admin_site.admin_view(self.preview_view),
                name="{}_{}_preview".format(*info),
            ),
            path(
                "<path:object_id>/confirm/",
                self.admin_site.admin_view(require_POST(self.confirm_view)),
                name="{}_{}_confirm".format(*info),
            ),
            path(
                "<path:object_id>/report/",
                self.admin_site.admin_view(self.report_view),
                name="{}_{}_report".format(*info),
            ),
        ]
        return extra + super().get_urls()

    def _scoped_object(self, request: HttpRequest, object_id: str) -> ContactImport:
        """The import if the caller may see it: another team's import is 404, as in the API."""
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            raise Http404
        if not self.has_view_permission(request, obj):
            raise PermissionDenied
        return obj

    def _may_upload(self, request: HttpRequest, obj: ContactImport) -> bool:
        return selectors.user_may_write(request.user, IMPORT_PERMISSION, obj.team_id)

    def _url(self, name: str, obj: ContactImport) -> str:
        return reverse(
            f"admin:{self.opts.app_label}_{self.opts.model_name}_{name}",
            args=[obj.pk],
            current_app=self.admin_site.name,
        )

    def _context(self, request: HttpRequest, obj: ContactImport | None, title: str) -> dict:
        return {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": title,
            "original": obj,
            "has_view_permission": self.has_view_permission(request, obj),
        }

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = ContactImportUploadForm(
            request.POST or None, request.FILES or None, user=request.user
        )
        if request.method == "POST" and form.is_valid():
            try:
                contact_import = contact_import_create(
                    team=form.cleaned_data["team"],
                    uploaded_file=form.cleaned_data["file"],
                    actor=request.user,
                )
            except DomainError as err:
                form.add_error(err.field if err.field in form.fields else None, err.message)
            else:
                return HttpResponseRedirect(self._url("preview", contact_import))
        context = {
            **self._context(request, None, _("Import contacts")),
            "form": form,
            "max_upload_mb": settings.IMPORT_MAX_UPLOAD_MB,
        }
        return TemplateResponse(request, "admin/crm/contactimport/upload.html", context)

    def preview_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        obj = self._scoped_object(request, object_id)
        preview = None
        try:
            preview = contact_import_preview(contact_import=obj)
        except DomainError as err:
            report_domain_error(request, err)
        context = {
            **self._context(request, obj, _("Preview of %(name)s") % {"name": obj}),
            "preview": preview,
            "may_confirm": obj.status == ImportStatus.UPLOADED and self._may_upload(request, obj),
            "confirm_url": self._url("confirm", obj),
            "detail_url": self._url("change", obj),
        }
        return TemplateResponse(request, "admin/crm/contactimport/preview.html", context)

    def confirm_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        obj = self._scoped_object(request, object_id)
        if not self._may_upload(request, obj):
            raise PermissionDenied
        try:
            contact_import_start(contact_import=obj, actor=request.user)
        except DomainError as err:
            report_domain_error(request, err)
        else:
            obj.refresh_from_db()
            messages.success(
                request,
                _("The import was started: %(status)s.") % {"status": obj.get_status_display()},
            )
        return HttpResponseRedirect(self._url("change", obj))

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict | None = None,
    ) -> HttpResponse:
        obj = self._scoped_object(request, object_id)
        running = obj.status in (ImportStatus.QUEUED, ImportStatus.RUNNING)
        rejections = list(obj.rejections.all()[:DETAIL_REJECTIONS])
        for rejection in rejections:
            rejection.filled_cells = [f"{k}: {v}" for k, v in rejection.raw.items() if v]
        context = {
            **self._context(request, obj, str(obj)),
            "obj": obj,
            "auto_refresh": running,
            "rejections": rejections,
            "more_rejections": obj.rejected_count + obj.warning_count > len(rejections),
            "rejections_url": reverse(
                "admin:crm_importrejection_changelist", current_app=self.admin_site.name
            )
            + f"?contact_import__id__exact={obj.pk}",
            "report_url": self._url("report", obj) if obj.report_file else "",
            "preview_url": self._url("preview", obj),
            "may_confirm": obj.status == ImportStatus.UPLOADED and self._may_upload(request, obj),
            "confirm_url": self._url("confirm", obj),
        }
        return TemplateResponse(request, "admin/crm/contactimport/detail.html", context)

    def report_view(self, request: HttpRequest, object_id: str) -> FileResponse:
        obj = self._scoped_object(request, object_id)
        if not obj.report_file:
            raise Http404
        return FileResponse(
            obj.report_file.open("rb"),
            as_attachment=True,
            filename=f"import-{obj.pk}-rejected-rows.csv",
            content_type="text/csv",
        )


@admin.register(ImportRejection)
class ImportRejectionAdmin(ReadOnlyAdminMixin, TeamScopedAdminMixin, admin.ModelAdmin):
    """Rejected rows are a record of what the import refused: read-only."""

    team_field = "contact_import__team"
    list_display = ("line_number", "reason", "import_link")
    list_select_related = ("contact_import",)
    search_fields = ("reason",)
    fields = ("contact_import", "line_number", "reason", "raw")
    readonly_fields = fields
    ordering = ("contact_import", "line_number")

    @admin.display(description=_("import"), ordering="contact_import")
    def import_link(self, obj: ImportRejection) -> str:
        url = reverse("admin:crm_contactimport_change", args=[obj.contact_import_id])
        return format_html('<a href="{}">{}</a>', url, obj.contact_import)
