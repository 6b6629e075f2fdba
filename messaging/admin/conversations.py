"""The agent inbox (the Conversation changelist) and the conversation page.

The inbox filters by the inbox views (mine, unassigned, overdue, all open) of
`messaging.selectors.inbox`, by team, channel, status and handler, and marks overdue first
responses. The conversation page is read-only: the timeline of messages and events, the
compliance context (consents, service window, usable approved templates) and, for those who
may act, the reply and note forms and the take over / hand back / resolve buttons. Every POST
calls a service; a refusal (the send gate's too) is shown as a message and changes nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import formats, timezone
from django.utils.html import format_html
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from simple_history.admin import SimpleHistoryAdmin

from approvals.models import TemplateVersion
from crm import selectors as crm_selectors
from crm.admin_base import (
    ScopedHistoryMixin,
    ServiceAdminMixin,
    TeamScopedAdminMixin,
    VisibleTeamFilter,
    report_domain_error,
)
from crm.errors import DomainError
from crm.models import Channel
from messaging import selectors
from messaging.models import (
    Conversation,
    ConversationEvent,
    ConversationStatus,
    EventKind,
    Handler,
)
from messaging.services import conversations as handoff
from messaging.services import send
from messaging.services.send import TEXT_MAX_CHARS

if TYPE_CHECKING:
    import datetime as dt

SEND_PERM: Final = "messaging.add_message"
# The timeline shows the latest events; the ledger admin and the export hold them all.
TIMELINE_EVENTS: Final = 200
# How each event kind looks on the timeline (a CSS class of the page).
EVENT_STYLE: Final = {
    EventKind.MESSAGE_IN: "inbound",
    EventKind.MESSAGE_OUT: "outbound",
    EventKind.NOTE: "note",
    EventKind.STATUS: "status",
}
# Event data keys that hold a user id, per kind.
AGENT_KEYS: Final = {
    EventKind.ASSIGNED: ("agent", "previous"),
    EventKind.HANDED_BACK: ("previous_agent",),
}


class InboxViewFilter(admin.SimpleListFilter):
    """The inbox views of messaging.selectors.inbox: the same lists the API filters by."""

    title = _("inbox")
    parameter_name = "inbox"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [
            ("mine", _("assigned to me")),
            ("unassigned", _("waiting for an agent")),
            ("overdue", _("first response overdue")),
            ("all", _("all open")),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        view = self.value()
        if view not in selectors.INBOX_VIEWS:
            return queryset
        return queryset.filter(pk__in=selectors.inbox(request.user, view=view).values("pk"))


def local(value: dt.datetime | None) -> str:
    """A time as the admin shows it: in the user's zone (activated by the middleware)."""
    return formats.localize(timezone.template_localtime(value)) if value else "—"


class NoteForm(forms.Form):
    text = forms.CharField(
        max_length=TEXT_MAX_CHARS,
        widget=forms.Textarea(attrs={"rows": 3}),
        label=_("internal note"),
        help_text=_("Only your colleagues see it; it is never sent."),
    )


class ReplyForm(forms.Form):
    """An approved template (with variables) or, where the channel allows it now, free text.

    The choices come from the compliance context, so only what may be sent is offered; the
    send gate still decides when the form is submitted.
    """

    template_version = forms.TypedChoiceField(
        required=False, coerce=int, empty_value=None, label=_("approved template")
    )
    variables = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        label=_("variables"),
        help_text=_("One per line: name=value. Contact fields are filled in by themselves."),
    )
    subject = forms.CharField(required=False, max_length=255, label=_("subject"))
    text = forms.CharField(
        required=False,
        max_length=TEXT_MAX_CHARS,
        widget=forms.Textarea(attrs={"rows": 4}),
        label=_("free text"),
    )

    def __init__(self, *args: Any, compliance: dict[str, Any], channel: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["template_version"].choices = [
            ("", "—"),
            *(
                (
                    entry["version"],
                    f"{entry['name']} ({entry['language']}, v{entry['number']})",
                )
                for entry in compliance["templates"]
            ),
        ]
        if not compliance["free_text_allowed"]:
            del self.fields["text"]
        if channel != Channel.EMAIL or "text" not in self.fields:
            del self.fields["subject"]

    def clean_variables(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for line in (self.cleaned_data.get("variables") or "").splitlines():
            if not line.strip():
                continue
            name, sep, value = line.partition("=")
            if not sep or not name.strip():
                raise forms.ValidationError(
                    _("Write each variable as name=value: “%(line)s”.") % {"line": line.strip()}
                )
            values[name.strip()] = value.strip()
        return values

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        version, text = cleaned.get("template_version"), (cleaned.get("text") or "").strip()
        if version is None and not text:
            raise forms.ValidationError(
                _("Choose an approved template or write a text.")
                if "text" in self.fields
                else _("Choose an approved template: free text is not possible now.")
            )
        if version is not None and text:
            raise forms.ValidationError(_("Send either a template or a text, not both."))
        return cleaned


@admin.register(Conversation)
class ConversationAdmin(
    ScopedHistoryMixin, ServiceAdminMixin, TeamScopedAdminMixin, SimpleHistoryAdmin
):
    """The inbox. Conversations are made by messages and changed by the page's actions only."""

    list_display = (
        "contact",
        "channel",
        "status",
        "handler",
        "assigned_to",
        "last_message_at",
        "first_response_due",
        "team",
    )
    list_filter = (
        InboxViewFilter,
        ("team", VisibleTeamFilter),
        "channel",
        "status",
        "handler",
        # Auditors narrow to a period (today, past 7 days, this month, this year).
        ("last_message_at", admin.DateFieldListFilter),
    )
    list_select_related = ("contact", "account", "assigned_to", "team")
    search_fields = ("contact__first_name", "contact__last_name", "contact__organisation")
    ordering = ("-last_message_at", "-id")
    actions = None
    list_per_page = 50
    conversation_template = "admin/messaging/conversation/conversation.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Conversation]:
        return selectors.conversations_visible_to(request.user)

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Conversation | None = None) -> bool:
        return False

    @admin.display(description=_("first response due"), ordering="first_response_due_at")
    def first_response_due(self, conversation: Conversation) -> str:
        due = conversation.first_response_due_at
        if due is None:
            return "—"
        if selectors.is_overdue(conversation, timezone.now()):
            return format_html(
                '{} <span class="overdue-badge" style="{}">{}</span>',
                local(due),
                "background:#ba2121;color:#fff;border-radius:4px;padding:0 4px;",
                gettext("overdue"),
            )
        return local(due)

    def _may_send(self, request: HttpRequest, conversation: Conversation) -> bool:
        return crm_selectors.user_may_write(request.user, SEND_PERM, conversation.team_id)

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        """The conversation page (read-only; POSTs are the actions, each through a service)."""
        conversation = self.get_object(request, unquote(object_id))
        if not self.has_view_permission(request, conversation):
            raise PermissionDenied
        compliance = selectors.conversation_compliance_context(conversation)
        reply_form = note_form = None
        if request.method == "POST":
            action = request.POST.get("action", "")
            if action in {"take_over", "hand_back", "resolve"}:
                return self._change_state(request, conversation, action)
            if action == "reply":
                reply_form = ReplyForm(
                    request.POST, compliance=compliance, channel=conversation.channel
                )
                if self._reply(request, conversation, reply_form):
                    return HttpResponseRedirect(request.path)
            elif action == "note":
                note_form = NoteForm(request.POST)
                if self._note(request, conversation, note_form):
                    return HttpResponseRedirect(request.path)
            else:
                messages.error(request, gettext("Unknown action."))
        may_send = self._may_send(request, conversation)
        if may_send:
            reply_form = reply_form or ReplyForm(
                compliance=compliance, channel=conversation.channel
            )
            note_form = note_form or NoteForm()
        may_change = self.has_change_permission(request, conversation)
        request.current_app = self.admin_site.name
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": str(conversation),
            "subtitle": None,
            "conversation": conversation,
            "original": conversation,
            "timeline": self._timeline(conversation),
            "compliance": compliance,
            "reply_form": reply_form,
            "note_form": note_form,
            "may_change": may_change,
            "may_take_over": may_change
            and conversation.status != ConversationStatus.RESOLVED
            and (
                conversation.handler == Handler.BOT
                or conversation.assigned_to_id != request.user.pk
            ),
            "may_hand_back": may_change and conversation.handler == Handler.HUMAN,
            "may_resolve": may_change and conversation.status != ConversationStatus.RESOLVED,
            "overdue": selectors.is_overdue(conversation, timezone.now()),
            "history_url": reverse(
                "admin:messaging_conversation_history",
                args=[conversation.pk],
                current_app=self.admin_site.name,
            ),
            "events_url": reverse(
                "admin:messaging_conversationevent_changelist", current_app=self.admin_site.name
            )
            + f"?conversation__id__exact={conversation.pk}",
        }
        return TemplateResponse(request, self.conversation_template, context)

    def _timeline(self, conversation: Conversation) -> list[dict[str, Any]]:
        """The latest events in order, each with its message (inbound, outbound or note)."""
        events = list(
            ConversationEvent.objects.filter(conversation=conversation)
            .select_related("message", "message__template_version__template")
            .order_by("-sequence")[:TIMELINE_EVENTS]
        )
        events.reverse()
        # Assignment events name agents by id: show their user names (one query).
        agent_ids = {
            event.data[key]
            for event in events
            for key in AGENT_KEYS.get(event.kind, ())
            if isinstance(event.data.get(key), int)
        }
        names = dict(
            get_user_model().objects.filter(pk__in=agent_ids).values_list("pk", "username")
        )
        return [
            {
                "event": event,
                "message": event.message if event.kind in EVENT_STYLE else None,
                "style": EVENT_STYLE.get(event.kind, "change"),
                "data": {}
                if event.kind in EVENT_STYLE
                else {
                    key: names.get(value, value) if key in AGENT_KEYS.get(event.kind, ()) else value
                    for key, value in event.data.items()
                },
            }
            for event in events
        ]

    def _change_state(
        self, request: HttpRequest, conversation: Conversation, action: str
    ) -> HttpResponse:
        if not self.has_change_permission(request, conversation):
            raise PermissionDenied
        service, done = {
            "take_over": (
                handoff.conversation_take_over,
                gettext("You took over the conversation."),
            ),
            "hand_back": (handoff.conversation_hand_back, gettext("Handed back to the bot.")),
            "resolve": (handoff.conversation_resolve, gettext("The conversation is resolved.")),
        }[action]
        try:
            service(conversation=conversation, actor=request.user)
        except DomainError as error:
            report_domain_error(request, error)
        else:
            messages.success(request, done)
        return HttpResponseRedirect(request.path)

    def _reply(self, request: HttpRequest, conversation: Conversation, form: ReplyForm) -> bool:
        """Send the reply through the send gate; True when it was accepted."""
        if not self._may_send(request, conversation):
            raise PermissionDenied
        if not form.is_valid():
            return False
        data = form.cleaned_data
        version = None
        if data["template_version"] is not None:
            version = TemplateVersion.objects.get(pk=data["template_version"])
        try:
            message = send.message_send(
                contact=conversation.contact,
                account=conversation.account,
                actor=request.user,
                template_version=version,
                variables=data["variables"],
                text=data.get("text", ""),
                subject=data.get("subject", ""),
            )
        except DomainError as error:
            # The gate's refusal names its reason; nothing was stored.
            report_domain_error(request, error)
            return False
        messages.success(
            request,
            gettext("The message was accepted for sending (%(status)s).")
            % {"status": message.get_status_display()},
        )
        return True

    def _note(self, request: HttpRequest, conversation: Conversation, form: NoteForm) -> bool:
        if not self._may_send(request, conversation):
            raise PermissionDenied
        if not form.is_valid():
            return False
        try:
            send.conversation_note_add(
                conversation=conversation, actor=request.user, text=form.cleaned_data["text"]
            )
        except DomainError as error:
            report_domain_error(request, error)
            return False
        messages.success(request, gettext("The note was added."))
        return True
