"""Contacts in admin, with their addresses (inline and searchable) and tags.

Bulk actions (tag, move to a team, CSV export) ask on an intermediate page first; every
write goes through crm.services.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.admin.views.main import ChangeList
from django.contrib.admin.widgets import FilteredSelectMultiple
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count, QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.text import smart_split, unescape_string_literal
from django.utils.translation import gettext, ngettext, ngettext_lazy
from django.utils.translation import gettext_lazy as _
from simple_history.admin import SimpleHistoryAdmin

from crm import selectors, services
from crm.addresses import AddressInvalid, normalise_address, normalise_phone
from crm.admin_base import (
    IntermediateActionMixin,
    LargeChangeList,
    LargeChangelistMixin,
    ScopedHistoryMixin,
    ServiceAdminMixin,
    TeamObjectFilter,
    TeamOwnedFormMixin,
    TeamScopedAdminMixin,
    VisibleTeamFilter,
    adopt,
    delete_each,
    report_domain_error,
    time_zone_choices,
)
from crm.errors import DomainError
from crm.exports import csv_response
from crm.models import Channel, Contact, ContactPoint, Tag, Team

if TYPE_CHECKING:
    from collections.abc import Iterator

    from django.db.models import Field

# Contacts are exported in chunks so prefetching stays bounded on large selections.
EXPORT_CHUNK_SIZE = 500


# Search terms that look like a phone number are also looked up in E.164.
PHONE_LIKE = re.compile(r"^\+?[\d\s()/.-]{6,}$")


class VisibleTagFilter(TeamObjectFilter):
    title = _("tag")
    parameter_name = "tag"
    lookup = "tags__id"

    def objects(self, request: HttpRequest) -> QuerySet[Tag]:
        return selectors.tags_visible_to(request.user).order_by("name", "team__name")

    def filter_by(self, queryset: QuerySet, pk: int) -> QuerySet:
        # Not a join: counting one would walk every contact of the team (see the selector).
        return selectors.contacts_with_tag(queryset, pk)


class HasChannelFilter(admin.SimpleListFilter):
    title = _("reachable on")
    parameter_name = "channel"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return list(Channel.choices)

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() in Channel.values:
            return queryset.with_channel(self.value())
        return queryset


class TagChoiceField(forms.ModelMultipleChoiceField):
    def label_from_instance(self, obj: Tag) -> str:
        return f"{obj.name} ({obj.team})"


class ContactForm(TeamOwnedFormMixin, forms.ModelForm):
    time_zone = forms.ChoiceField(choices=time_zone_choices, label=_("time zone"))

    class Meta:
        model = Contact
        fields = ["team", *services.CONTACT_FIELDS, "tags"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "attributes" in self.fields:
            # Compare with the saved value, not a hidden copy: decides whether the contact changed.
            self.fields["attributes"].show_hidden_initial = False
        if self.instance.pk and "tags" in self.fields:
            self.fields["tags"].queryset = self.fields["tags"].queryset.filter(
                team_id=self.instance.team_id
            )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        team_id = self.team_id()
        if team_id is None:
            return cleaned
        foreign = [tag.name for tag in cleaned.get("tags") or () if tag.team_id != team_id]
        if foreign:
            self.add_error(
                "tags",
                _("Tags of another team cannot be used: %(tags)s.") % {"tags": ", ".join(foreign)},
            )
        external_id = (cleaned.get("external_id") or "").strip() or None
        if (
            external_id
            and "external_id" in self.fields
            and self.taken_in_team(external_id=external_id)
        ):
            self.add_error(
                "external_id",
                _("Another contact of this team already has the external id “%(id)s”.")
                % {"id": external_id},
            )
        return cleaned


class ContactPointForm(forms.ModelForm):
    """Normalises the address with the same function the services use, so errors show here."""

    class Meta:
        model = ContactPoint
        fields = ["channel", "address", "is_primary"]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if self.instance.pk and "channel" in self.changed_data:
            self.add_error(
                "channel",
                _("The channel of a saved address cannot change; delete it and add a new one."),
            )
            return cleaned
        channel, address = cleaned.get("channel"), cleaned.get("address")
        if channel and address:
            try:
                cleaned["address"] = normalise_address(channel, address)
            except AddressInvalid as error:
                self.add_error("address", error.message)
        return cleaned


class ContactPointFormSet(BaseInlineFormSet):
    """Refuses an address twice in the form or already used in the team, before saving."""

    def clean(self) -> None:
        super().clean()
        if any(self.errors):
            return
        deleted = {id(form) for form in self.deleted_forms} if self.can_delete else set()
        kept = [
            form
            for form in self.forms
            if id(form) not in deleted
            and form.cleaned_data.get("address")
            and (form.instance.pk or form.has_changed())
        ]
        keyed = [
            ((form.cleaned_data["channel"], form.cleaned_data["address"]), form) for form in kept
        ]
        seen: set[tuple[str, str]] = set()
        for key, form in keyed:
            if key in seen:
                form.add_error("address", _("This address is listed twice."))
            seen.add(key)
        team_id = self.instance.team_id
        if team_id is None or not seen:
            return
        # Rows of this form are replaced by what the form says, so they cannot clash.
        own = [form.instance.pk for form in self.initial_forms if form.instance.pk]
        taken = {
            (channel, address): contact_id
            for channel, address, contact_id in ContactPoint.objects.filter(
                team_id=team_id, address__in={address for _channel, address in seen}
            )
            .exclude(pk__in=own)
            .values_list("channel", "address", "contact_id")
        }
        for key, form in keyed:
            if key in taken:
                form.add_error(
                    "address",
                    _("%(address)s already belongs to contact #%(contact)s of this team.")
                    % {"address": key[1], "contact": taken[key]},
                )


class ContactPointInline(admin.TabularInline):
    """Addresses of a contact; writable where the role and the contact's team allow it."""

    model = ContactPoint
    form = ContactPointForm
    formset = ContactPointFormSet
    fields = ("channel", "address", "is_primary")
    extra = 1

    def _may(self, request: HttpRequest, contact: Contact | None, verb: str) -> bool:
        if not request.user.has_perm(f"crm.{verb}_contactpoint"):
            return False
        member = selectors.member_team_ids(request.user)
        return bool(member) if contact is None else contact.team_id in member

    def has_add_permission(self, request: HttpRequest, obj: Contact | None = None) -> bool:
        return self._may(request, obj, "add")

    def has_change_permission(self, request: HttpRequest, obj: Contact | None = None) -> bool:
        return self._may(request, obj, "change")

    def has_delete_permission(self, request: HttpRequest, obj: Contact | None = None) -> bool:
        return self._may(request, obj, "delete")


class AddTagForm(forms.Form):
    tag = forms.ModelChoiceField(queryset=Tag.objects.none(), required=False, label=_("tag"))
    new_tag = forms.CharField(max_length=60, required=False, label=_("or a new tag"))

    def __init__(self, *args: Any, team: Team, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["tag"].queryset = Tag.objects.filter(team=team)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        cleaned["new_tag"] = (cleaned.get("new_tag") or "").strip()
        if cleaned.get("tag") and cleaned["new_tag"]:
            raise ValidationError(_("Choose an existing tag or name a new one, not both."))
        if not cleaned.get("tag") and not cleaned["new_tag"]:
            raise ValidationError(_("Choose a tag or name a new one."))
        return cleaned


class AssignTeamForm(forms.Form):
    team = forms.ModelChoiceField(queryset=Team.objects.none(), label=_("move to team"))

    def __init__(self, *args: Any, user: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["team"].queryset = selectors.teams_writable_by(user)


class ContactChangeList(LargeChangeList):
    """The page's addresses and tags (email, phone and tags columns) come with the page."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        # Only the page's query: the count and the actions' selection go without them.
        self.result_list = selectors.contacts_with_listing(self.result_list)
        # list() fills the queryset's result cache: the page renders these very instances.
        selectors.contacts_load_listing(list(self.result_list))


@admin.register(Contact)
class ContactAdmin(
    LargeChangelistMixin,
    IntermediateActionMixin,
    ServiceAdminMixin,
    ScopedHistoryMixin,
    TeamScopedAdminMixin,
    SimpleHistoryAdmin,
):
    form = ContactForm
    inlines = [ContactPointInline]
    list_display = (
        "name",
        "team",
        "language",
        "primary_email",
        "primary_phone",
        "tag_list",
        "created_at",
    )
    list_display_links = ("name",)
    list_select_related = ("team",)
    list_filter = (
        ("team", VisibleTeamFilter),
        VisibleTagFilter,
        "language",
        HasChannelFilter,
        "preferred_channel",
    )
    # Only for the search box; get_search_results does the searching.
    search_fields = ("first_name", "last_name", "organisation", "external_id")
    search_help_text = _("Name, organisation, external id, e-mail address or phone number.")
    actions = ["add_tag", "assign_team", "export_csv"]
    object_history_template = "admin/crm/contact/object_history.html"
    action_summary = ngettext_lazy(
        "This applies to %(counter)s selected contact:",
        "This applies to %(counter)s selected contacts:",
        "counter",
    )

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return ContactChangeList

    def get_queryset(self, request: HttpRequest) -> QuerySet[Contact]:
        queryset = selectors.contacts_visible_to(request.user)
        ordering = self.get_ordering(request)
        return queryset.order_by(*ordering) if ordering else queryset

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Contact], search_term: str
    ) -> tuple[QuerySet[Contact], bool]:
        term = search_term.strip()
        # An id set, not a join: one row per contact however many addresses match.
        return selectors.contacts_matching(queryset, [term, _as_phone(term) or ""]), False

    def get_fieldsets(self, request: HttpRequest, obj: Contact | None = None) -> list:
        fieldsets = [
            (
                None,
                {
                    "fields": [
                        "team",
                        ("salutation", "first_name", "last_name"),
                        ("organisation", "profession"),
                    ]
                },
            ),
            (_("Preferences"), {"fields": [("language", "time_zone"), "preferred_channel"]}),
            (_("Classification"), {"fields": ["tags", "external_id", "attributes"]}),
        ]
        if obj is not None:
            fieldsets.append((_("Created and changed"), {"fields": [("created_at", "updated_at")]}))
        return fieldsets

    def get_readonly_fields(self, request: HttpRequest, obj: Contact | None = None) -> tuple:
        # Moving a contact has rules of its own (clashing addresses): the "Assign to team" action.
        return ("team", "created_at", "updated_at") if obj is not None else ()

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        initial = super().get_changeform_initial_data(request)
        teams = list(selectors.teams_writable_by(request.user)[:2])
        if len(teams) == 1 and "team" not in initial:
            initial.update(
                team=teams[0].pk,
                language=teams[0].default_language,
                time_zone=teams[0].default_time_zone,
            )
        return initial

    def formfield_for_manytomany(
        self, db_field: Field, request: HttpRequest, **kwargs: Any
    ) -> forms.Field | None:
        if db_field.name == "tags":
            kwargs["queryset"] = Tag.objects.filter(
                team_id__in=selectors.member_team_ids(request.user)
            ).select_related("team")
            kwargs["form_class"] = TagChoiceField
            kwargs["required"] = False
            kwargs["widget"] = FilteredSelectMultiple(_("tags"), is_stacked=False)
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    @admin.display(description=_("name"), ordering="last_name")
    def name(self, contact: Contact) -> str:
        return str(contact)

    @admin.display(description=_("e-mail"))
    def primary_email(self, contact: Contact) -> str:
        return _primary_address(contact, {Channel.EMAIL})

    @admin.display(description=_("phone"))
    def primary_phone(self, contact: Contact) -> str:
        return _primary_address(contact, {Channel.SMS, Channel.WHATSAPP})

    @admin.display(description=_("tags"))
    def tag_list(self, contact: Contact) -> str:
        return ", ".join(contact.tag_names)

    def action_sample_label(self, contact: Contact) -> str:
        return format_html("{} ({})", contact, contact.team)

    def save_model(
        self, request: HttpRequest, obj: Contact, form: ContactForm, change: bool
    ) -> None:
        cleaned = form.cleaned_data
        if not change:
            fields = {name: cleaned[name] for name in services.CONTACT_FIELDS if name in cleaned}
            contact = services.contact_create(
                team=cleaned["team"], actor=request.user, tags=cleaned.get("tags", ()), **fields
            )
            adopt(obj, contact)
            return
        changed = {
            name: cleaned[name] for name in form.changed_data if name in services.CONTACT_FIELDS
        }
        tags = cleaned["tags"] if "tags" in form.changed_data else None
        if changed:
            services.contact_update(contact=obj, actor=request.user, tags=tags, **changed)
        elif tags is not None:
            # Only the tags changed: saving the contact would write an empty history row.
            services.contact_tags_set(contact=obj, tags=tags)

    def save_related(
        self, request: HttpRequest, form: ContactForm, formsets: list, change: bool
    ) -> None:
        # Tags were set by the service in save_model; form.save_m2m would bypass it.
        for formset in formsets:
            self.save_formset(request, form, formset, change=change)

    def save_formset(
        self, request: HttpRequest, form: ContactForm, formset: Any, change: bool
    ) -> None:
        if formset.model is not ContactPoint:
            super().save_formset(request, form, formset, change)
            return
        contact, actor = form.instance, request.user
        # construct_change_message reads these three lists.
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        deleted = {id(f) for f in formset.deleted_forms} if formset.can_delete else set()
        # Removals first, then edits, then additions: an address may move between rows.
        for point_form in formset.initial_forms:
            if id(point_form) in deleted:
                point = ContactPoint.objects.get(pk=point_form.instance.pk, contact=contact)
                services.contact_point_remove(point=point, actor=actor)
                formset.deleted_objects.append(point)
        for point_form in formset.initial_forms:
            if id(point_form) in deleted or not point_form.has_changed():
                continue
            point = ContactPoint.objects.get(pk=point_form.instance.pk, contact=contact)
            services.contact_point_update(
                point=point,
                actor=actor,
                address=point_form.cleaned_data["address"],
                is_primary=point_form.cleaned_data["is_primary"],
            )
            formset.changed_objects.append((point, point_form.changed_data))
        for point_form in formset.extra_forms:
            if id(point_form) in deleted or not point_form.has_changed():
                continue
            point = services.contact_point_add(
                contact=contact,
                channel=point_form.cleaned_data["channel"],
                address=point_form.cleaned_data["address"],
                is_primary=point_form.cleaned_data["is_primary"],
                actor=actor,
            )
            formset.new_objects.append(point)

    def delete_model(self, request: HttpRequest, obj: Contact) -> None:
        services.contact_delete(contact=obj, actor=request.user)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Contact]) -> None:
        delete_each(
            queryset, lambda contact: services.contact_delete(contact=contact, actor=request.user)
        )

    def history_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        # Address changes live in ContactPoint's own history; show them on the same page.
        point_history = []
        if self._history_in_scope(request, object_id):
            point_history = (
                ContactPoint.history.filter(contact_id=unquote(object_id))
                .select_related("history_user")
                .order_by("-history_date")[:200]
            )
        extra_context = {**(extra_context or {}), "point_history": point_history}
        return super().history_view(request, object_id, extra_context)

    def has_export_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("crm.view_contact")

    @admin.action(description=_("Add tag…"), permissions=["change"])
    def add_tag(self, request: HttpRequest, queryset: QuerySet[Contact]) -> HttpResponse | None:
        team_ids = set(queryset.order_by().values_list("team_id", flat=True).distinct())
        if len(team_ids) != 1:
            self.message_user(
                request,
                _("Tags belong to one team: select contacts of a single team."),
                messages.ERROR,
            )
            return None
        team = Team.objects.get(pk=team_ids.pop())
        if not selectors.user_may_write(request.user, "crm.change_contact", team):
            self.message_user(
                request,
                _("You may not change the contacts of %(team)s.") % {"team": team},
                messages.ERROR,
            )
            return None
        form = AddTagForm(request.POST if "apply" in request.POST else None, team=team)
        if not form.is_valid():
            return self.action_page(
                request,
                queryset,
                form,
                action="add_tag",
                title=_("Add a tag to the selected contacts of %(team)s") % {"team": team},
            )
        try:
            with transaction.atomic():
                tag = form.cleaned_data["tag"] or _tag_named(
                    team, form.cleaned_data["new_tag"], request.user
                )
                count = services.contacts_tag(contacts=queryset, tag=tag, actor=request.user)
        except DomainError as error:
            report_domain_error(request, error)
            return None
        self.message_user(
            request,
            ngettext(
                "Tag “%(tag)s” added to %(count)d contact.",
                "Tag “%(tag)s” added to %(count)d contacts.",
                count,
            )
            % {"tag": tag.name, "count": count},
            messages.SUCCESS,
        )
        return None

    @admin.action(description=_("Assign to team…"), permissions=["change"])
    def assign_team(self, request: HttpRequest, queryset: QuerySet[Contact]) -> HttpResponse | None:
        form = AssignTeamForm(request.POST if "apply" in request.POST else None, user=request.user)
        if not form.is_valid():
            return self.action_page(
                request,
                queryset,
                form,
                action="assign_team",
                title=_("Move the selected contacts to another team"),
                note=_(
                    "Addresses move along. Tags belong to a team and are removed. If an address "
                    "or external id already exists in the target team, nothing is moved."
                ),
            )
        team = form.cleaned_data["team"]
        try:
            count = services.contacts_assign_team(contacts=queryset, team=team, actor=request.user)
        except DomainError as error:
            report_domain_error(request, error)
            return None
        self.message_user(
            request,
            ngettext(
                "%(count)d contact moved to %(team)s.",
                "%(count)d contacts moved to %(team)s.",
                count,
            )
            % {"count": count, "team": team},
            messages.SUCCESS,
        )
        return None

    @admin.action(description=_("Export selected as CSV"), permissions=["export"])
    def export_csv(self, request: HttpRequest, queryset: QuerySet[Contact]) -> HttpResponse:
        # The response streams after the middleware reset the time zone: capture it now.
        zone = timezone.get_current_timezone()
        channels = list(Channel)
        header = [
            gettext("name"),
            gettext("team"),
            gettext("language"),
            *(channel.label for channel in channels),
            gettext("tags"),
            gettext("external id"),
            gettext("created at"),
        ]
        header = [str(cell) for cell in header]

        def rows() -> Iterator[list[Any]]:
            for contact in queryset.iterator(chunk_size=EXPORT_CHUNK_SIZE):
                points = list(contact.points.all())
                yield [
                    contact.full_name,
                    contact.team.name,
                    contact.language,
                    *(
                        "; ".join(p.address for p in points if p.channel == channel)
                        for channel in channels
                    ),
                    ", ".join(tag.name for tag in contact.tags.all()),
                    contact.external_id,
                    timezone.localtime(contact.created_at, zone).isoformat(timespec="seconds"),
                ]

        stamp = timezone.localtime(timezone.now(), zone).strftime("%Y%m%d-%H%M")
        return csv_response(rows(), header, filename=f"contacts-{stamp}.csv")


def _primary_address(contact: Contact, channels: set[str]) -> str:
    """From the loaded points: the primary address on `channels`, else the first one."""
    points = [point for point in contact.point_rows if point["channel"] in channels]
    chosen = next((p for p in points if p["is_primary"]), None) or next(iter(points), None)
    return chosen["address"] if chosen else ""


def _as_phone(term: str) -> str | None:
    if not PHONE_LIKE.match(term):
        return None
    try:
        return normalise_phone(term)
    except AddressInvalid:
        return None


def _tag_named(team: Team, name: str, actor: Any) -> Tag:
    """The team's tag of that name (any case), created through the service if missing."""
    existing = Tag.objects.filter(team=team, name__iexact=name).first()
    return existing or services.tag_create(team=team, name=name, actor=actor)


@admin.register(ContactPoint)
class ContactPointAdmin(
    ScopedHistoryMixin, ServiceAdminMixin, TeamScopedAdminMixin, SimpleHistoryAdmin
):
    """Find an address across contacts; addresses are edited on their contact's page.

    Deleting stays allowed (through the service): deleting a contact asks this admin whether
    its addresses may go too.
    """

    list_display = ("address", "channel", "contact_link", "team", "is_primary", "created_at")
    actions = None
    list_filter = (("team", VisibleTeamFilter), "channel", "is_primary")
    list_select_related = ("contact", "team")
    search_fields = ("address", "contact__first_name", "contact__last_name")
    fields = ("contact", "team", "channel", "address", "is_primary", "created_at", "updated_at")

    def get_queryset(self, request: HttpRequest) -> QuerySet[ContactPoint]:
        return selectors.contact_points_visible_to(request.user)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[ContactPoint], search_term: str
    ) -> tuple[QuerySet[ContactPoint], bool]:
        phone = _as_phone(search_term.strip())
        if phone:
            return queryset.filter(address=phone), False
        # Each searched field is part of the contact's search document: asking it too changes
        # no result and lets its trigram index find the contacts (crm.search).
        for term in smart_split(search_term):
            if term.startswith(('"', "'")) and term[0] == term[-1]:
                term = unescape_string_literal(term)
            queryset = queryset.filter(contact__search_document__icontains=term)
        return super().get_search_results(request, queryset, search_term)

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: ContactPoint | None = None) -> bool:
        return False

    def delete_model(self, request: HttpRequest, obj: ContactPoint) -> None:
        services.contact_point_remove(point=obj, actor=request.user)

    @admin.display(description=_("contact"), ordering="contact__last_name")
    def contact_link(self, point: ContactPoint) -> str:
        url = reverse("admin:crm_contact_change", args=[point.contact_id])
        return format_html('<a href="{}">{}</a>', url, point.contact)


class TagForm(TeamOwnedFormMixin, forms.ModelForm):
    class Meta:
        model = Tag
        fields = ["team", "name"]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        name = (cleaned.get("name") or "").strip()
        if name and self.taken_in_team(name__iexact=name):
            self.add_error("name", _("This team already has the tag “%(name)s”.") % {"name": name})
        cleaned["name"] = name
        return cleaned


@admin.register(Tag)
class TagAdmin(ServiceAdminMixin, TeamScopedAdminMixin, admin.ModelAdmin):
    form = TagForm
    list_display = ("name", "team", "contact_count")
    list_filter = (("team", VisibleTeamFilter),)
    search_fields = ("name",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Tag]:
        return selectors.tags_visible_to(request.user).annotate(
            contact_total=Count("contacts", distinct=True)
        )

    def get_readonly_fields(self, request: HttpRequest, obj: Tag | None = None) -> tuple:
        return ("team",) if obj is not None else ()

    def delete_model(self, request: HttpRequest, obj: Tag) -> None:
        services.tag_delete(tag=obj, actor=request.user)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Tag]) -> None:
        delete_each(queryset, lambda tag: services.tag_delete(tag=tag, actor=request.user))

    @admin.display(description=_("contacts"), ordering="contact_total")
    def contact_count(self, tag: Tag) -> int:
        return tag.contact_total

    def save_model(self, request: HttpRequest, obj: Tag, form: TagForm, change: bool) -> None:
        if change:
            # Renaming has no rule beyond the uniqueness the form checked.
            super().save_model(request, obj, form, change)
            return
        tag = services.tag_create(
            team=form.cleaned_data["team"], name=form.cleaned_data["name"], actor=request.user
        )
        adopt(obj, tag)
