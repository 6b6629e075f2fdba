"""Consent state and the ledger in admin, and the per-contact consent panel.

The state (a projection) and the ledger are read-only; an agent records what a contact said
on the panel (/admin/consent/consent/contact/<id>/), with a mandatory note.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from consent import selectors, services
from consent.admin.purposes import VisiblePurposeFilter
from consent.models import Consent, ConsentAction, ConsentEvent, ConsentSource, Purpose
from crm import selectors as crm_selectors
from crm.admin_base import ReadOnlyAdminMixin, ServiceAdminMixin, TeamScopedAdminMixin
from crm.errors import DomainError, PermissionRefused
from crm.models import Channel, Contact

# How many events the per-contact panel shows (newest first).
PANEL_EVENT_LIMIT = 200


def contact_panel_url(contact_id: int) -> str:
    return reverse("admin:consent_consent_contact", args=[contact_id])


def contact_panel_link(contact: Contact) -> str:
    return format_html('<a href="{}">{}</a>', contact_panel_url(contact.pk), contact)


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
        return contact_panel_link(consent.contact)

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
                return HttpResponseRedirect(contact_panel_url(contact.pk))
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
        return contact_panel_link(event.contact)

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
