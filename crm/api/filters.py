"""django-filter FilterSets for the crm API. They narrow an already team-scoped queryset."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import django_filters
from django.db.models import QuerySet
from django.utils.translation import gettext_lazy as _
from django_filters.rest_framework import DjangoFilterBackend

from crm import selectors
from crm.models import Channel, Contact, ContactPoint, Language, Segment, Tag

if TYPE_CHECKING:
    from rest_framework.request import Request
    from rest_framework.views import APIView

    from crm.api.pagination import PageWindow


class ContactFilter(django_filters.FilterSet):
    team = django_filters.NumberFilter(field_name="team_id", label=_("Team id"))
    tag = django_filters.CharFilter(method="filter_tag", label=_("Has the tag with this name"))
    language = django_filters.ChoiceFilter(choices=Language.choices, label=_("Language"))
    channel = django_filters.ChoiceFilter(
        choices=Channel.choices,
        method="filter_channel",
        label=_("Has an address on this channel"),
    )
    preferred_channel = django_filters.ChoiceFilter(
        choices=Channel.choices, label=_("Preferred channel")
    )
    external_id = django_filters.CharFilter(label=_("External id"))
    created_after = django_filters.IsoDateTimeFilter(
        field_name="created_at", lookup_expr="gte", label=_("Created at or after (ISO 8601)")
    )
    created_before = django_filters.IsoDateTimeFilter(
        field_name="created_at", lookup_expr="lt", label=_("Created before (ISO 8601)")
    )
    search = django_filters.CharFilter(
        method="filter_search",
        label=_("Name, organisation, external id or any address contains this text"),
    )

    class Meta:
        model = Contact
        fields = [
            "team",
            "tag",
            "language",
            "channel",
            "preferred_channel",
            "external_id",
            "created_after",
            "created_before",
            "search",
        ]

    def __init__(self, *args: Any, page_window: PageWindow | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.page_window = page_window

    def filter_queryset(self, queryset: QuerySet[Contact]) -> QuerySet[Contact]:
        # Search last: it narrows its parts by the page window, so they must already carry
        # every other condition of the list (selectors.contacts_matching).
        data = self.form.cleaned_data
        for name, value in data.items():
            if name != "search":
                queryset = self.filters[name].filter(queryset, value)
        return self.filters["search"].filter(queryset, data.get("search"))

    def filter_tag(self, queryset: QuerySet[Contact], name: str, value: str) -> QuerySet[Contact]:
        # The tags of the teams the caller sees: the list holds no other team's contacts.
        team_ids = selectors.visible_team_ids(self.request.user)
        return selectors.contacts_tagged(queryset, value.strip(), team_ids=team_ids)

    def filter_channel(
        self, queryset: QuerySet[Contact], name: str, value: str
    ) -> QuerySet[Contact]:
        return queryset.with_channel(value)

    def filter_search(
        self, queryset: QuerySet[Contact], name: str, value: str
    ) -> QuerySet[Contact]:
        return selectors.contacts_matching(queryset, [value], window=self.page_window)


class PageWindowFilterBackend(DjangoFilterBackend):
    """Hands the filter set the page window of the list being paged (ContactViewSet), so a
    search can stop after one page instead of collecting every match."""

    def get_filterset_kwargs(
        self, request: Request, queryset: QuerySet, view: APIView
    ) -> dict[str, Any]:
        kwargs = super().get_filterset_kwargs(request, queryset, view)
        page_window = getattr(view, "page_window", None)
        kwargs["page_window"] = page_window() if page_window is not None else None
        return kwargs


class ContactPointFilter(django_filters.FilterSet):
    team = django_filters.NumberFilter(field_name="team_id", label=_("Team id"))
    contact = django_filters.NumberFilter(field_name="contact_id", label=_("Contact id"))
    channel = django_filters.ChoiceFilter(choices=Channel.choices, label=_("Channel"))
    address = django_filters.CharFilter(
        field_name="address", lookup_expr="icontains", label=_("Address contains")
    )

    class Meta:
        model = ContactPoint
        fields = ["team", "contact", "channel", "address"]


class TagFilter(django_filters.FilterSet):
    team = django_filters.NumberFilter(field_name="team_id", label=_("Team id"))
    name = django_filters.CharFilter(lookup_expr="icontains", label=_("Name contains"))

    class Meta:
        model = Tag
        fields = ["team", "name"]


class SegmentFilter(django_filters.FilterSet):
    team = django_filters.NumberFilter(field_name="team_id", label=_("Team id"))
    name = django_filters.CharFilter(lookup_expr="icontains", label=_("Name contains"))

    class Meta:
        model = Segment
        fields = ["team", "name"]
