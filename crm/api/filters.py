"""django-filter FilterSets for the crm API. They narrow an already team-scoped queryset."""

from __future__ import annotations

import django_filters
from django.db.models import QuerySet
from django.utils.translation import gettext_lazy as _

from crm import selectors
from crm.models import Channel, Contact, ContactPoint, Language, Segment, Tag


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
        return selectors.contacts_matching(queryset, [value])


class ContactPointFilter(django_filters.FilterSet):
    team = django_filters.NumberFilter(field_name="team_id", label=_("Team id"))
    contact = django_filters.NumberFilter(field_name="contact_id", label=_("Contact id"))
    channel = django_filters.ChoiceFilter(choices=Channel.choices, label=_("Channel"))
    address = django_filters.CharFilter(method="filter_address", label=_("Address contains"))

    class Meta:
        model = ContactPoint
        fields = ["team", "contact", "channel", "address"]

    def filter_address(
        self, queryset: QuerySet[ContactPoint], name: str, value: str
    ) -> QuerySet[ContactPoint]:
        return selectors.points_with_address_containing(queryset, value)


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
