"""Auditor exports in admin: choose what to export, run it, download the files.

Exports are written to MEDIA_ROOT/exports/<random token>/ (the token keeps the address
unguessable where the web server serves MEDIA_ROOT itself); the download view checks the
permission and the record's scope on every request, and serves only files that lie directly
in the export's own directory. Every export is recorded (ConversationExport), read-only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.admin.widgets import AdminSplitDateTime
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from crm import selectors as crm_selectors
from crm.admin_base import ReadOnlyAdminMixin, ServiceAdminMixin, report_domain_error
from crm.errors import DomainError
from crm.models import Contact, Team
from messaging.models import ConversationExport
from messaging.selectors import exports_visible_to
from messaging.services.export_storage import export_file, export_files, run_export

if TYPE_CHECKING:
    from django.urls import URLPattern

EXPORT_PERM = "messaging.export_conversations"


class ConversationExportForm(forms.Form):
    """What to export. Nothing chosen: every conversation the auditor may read."""

    team = forms.ModelChoiceField(
        queryset=Team.objects.none(), required=False, label=_("team"), empty_label=_("All teams")
    )
    contact = forms.IntegerField(
        required=False, min_value=1, label=_("contact id"), help_text=_("Only this contact.")
    )
    since = forms.SplitDateTimeField(
        required=False, widget=AdminSplitDateTime, label=_("messages since")
    )
    until = forms.SplitDateTimeField(
        required=False, widget=AdminSplitDateTime, label=_("messages until")
    )

    def __init__(self, *args: Any, user: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.user = user
        self.fields["team"].queryset = crm_selectors.teams_visible_to(user).order_by("name")

    def clean_contact(self) -> Contact | None:
        contact_id = self.cleaned_data.get("contact")
        if contact_id is None:
            return None
        visible = crm_selectors.visible_team_ids(self.user)
        contact = Contact.objects.filter(pk=contact_id, team_id__in=visible).first()
        if contact is None:
            raise forms.ValidationError(_("No contact with this id in your teams."))
        return contact

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        since, until = cleaned.get("since"), cleaned.get("until")
        if since and until and until <= since:
            self.add_error("until", _("The end must lie after the start."))
        team, contact = cleaned.get("team"), cleaned.get("contact")
        if team and contact and contact.team_id != team.pk:
            self.add_error("contact", _("This contact belongs to another team."))
        return cleaned


@admin.register(ConversationExport)
class ConversationExportAdmin(ReadOnlyAdminMixin, ServiceAdminMixin, admin.ModelAdmin):
    """The record of every export. "Add" runs a new one (messaging.export_conversations)."""

    list_display = (
        "created_at",
        "actor_label",
        "filters",
        "conversation_count",
        "message_count",
        "event_count",
        "short_manifest",
    )
    list_select_related = ("actor",)
    search_fields = ("actor_label",)
    date_hierarchy = "created_at"
    fields = (
        "created_at",
        "actor_label",
        "filters",
        "conversation_count",
        "message_count",
        "event_count",
        "manifest_sha256",
        "location",
        "download_links",
    )
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[ConversationExport]:
        return exports_visible_to(request.user)

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        # Adding is running an export: the auditors' permission, not the model's add_.
        return request.user.has_perm(EXPORT_PERM)

    @admin.display(description=_("manifest SHA-256"))
    def short_manifest(self, export: ConversationExport) -> str:
        return export.manifest_sha256[:12]

    @admin.display(description=_("files"))
    def download_links(self, export: ConversationExport) -> str:
        files = export_files(export)
        if not files:
            return "—"
        return format_html(
            "<ul>{}</ul>",
            format_html_join(
                "",
                '<li><a href="{}">{}</a> ({} bytes)</li>',
                ((self._file_url(export, p.name), p.name, p.stat().st_size) for p in files),
            ),
        )

    def _file_url(self, export: ConversationExport, name: str) -> str:
        return reverse(
            "admin:messaging_conversationexport_file",
            args=[export.pk, name],
            current_app=self.admin_site.name,
        )

    def get_urls(self) -> list[URLPattern]:
        extra = [
            path(
                "<path:object_id>/files/<str:name>/",
                self.admin_site.admin_view(self.file_view),
                name="messaging_conversationexport_file",
            )
        ]
        return extra + super().get_urls()

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        # An empty POST (everything) is still a submitted form.
        data = request.POST if request.method == "POST" else None
        form = ConversationExportForm(data, user=request.user)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                export = run_export(
                    actor=request.user,
                    team_ids=[data["team"].pk] if data["team"] else None,
                    contact_id=data["contact"].pk if data["contact"] else None,
                    since=data["since"],
                    until=data["until"],
                )
            except DomainError as error:
                report_domain_error(request, error)
            else:
                count = export.conversation_count
                messages.success(
                    request,
                    ngettext(
                        "Exported %(count)d conversation.",
                        "Exported %(count)d conversations.",
                        count,
                    )
                    % {"count": count},
                )
                return HttpResponseRedirect(
                    reverse(
                        "admin:messaging_conversationexport_change",
                        args=[export.pk],
                        current_app=self.admin_site.name,
                    )
                )
        request.current_app = self.admin_site.name
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": gettext("Export conversations"),
            "subtitle": None,
            "form": form,
            "media": self.media + form.media,
        }
        return TemplateResponse(
            request, "admin/messaging/conversationexport/export_form.html", context
        )

    def file_view(self, request: HttpRequest, object_id: str, name: str) -> FileResponse:
        """One file of an export, for whoever may run exports and sees the record."""
        if not request.user.has_perm(EXPORT_PERM):
            raise PermissionDenied
        export = self.get_object(request, unquote(object_id))
        file = export_file(export, name)
        if file is None:
            raise Http404(gettext("This export has no such file."))
        return FileResponse(file.open("rb"), as_attachment=True, filename=file.name)
