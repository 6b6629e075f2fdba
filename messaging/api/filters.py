"""django-filter FilterSets for the messaging API. They narrow an already team-scoped queryset."""

from __future__ import annotations

import django_filters
from django.db.models import QuerySet
from django.utils.translation import gettext_lazy as _

from crm.models import Channel
from messaging import selectors
from messaging.models import (
    AutomationRule,
    Conversation,
    ConversationEvent,
    ConversationStatus,
    Direction,
    EventKind,
    Handler,
    Message,
    MessageStatus,
    RuleAction,
)


class ConversationFilter(django_filters.FilterSet):
    team = django_filters.NumberFilter(field_name="team_id", label=_("Team id"))
    contact = django_filters.NumberFilter(field_name="contact_id", label=_("Contact id"))
    account = django_filters.NumberFilter(field_name="account_id", label=_("Channel account id"))
    channel = django_filters.ChoiceFilter(choices=Channel.choices, label=_("Channel"))
    status = django_filters.ChoiceFilter(choices=ConversationStatus.choices, label=_("Status"))
    handler = django_filters.ChoiceFilter(choices=Handler.choices, label=_("Handled by"))
    assigned_to = django_filters.NumberFilter(
        field_name="assigned_to_id", label=_("Assigned agent's user id")
    )
    unassigned = django_filters.BooleanFilter(
        field_name="assigned_to", lookup_expr="isnull", label=_("Nobody is assigned")
    )
    overdue = django_filters.BooleanFilter(
        method="filter_overdue", label=_("The first human response is overdue")
    )

    class Meta:
        model = Conversation
        fields = [
            "team",
            "contact",
            "account",
            "channel",
            "status",
            "handler",
            "assigned_to",
            "unassigned",
            "overdue",
        ]

    def filter_overdue(
        self, queryset: QuerySet[Conversation], name: str, value: bool | None
    ) -> QuerySet[Conversation]:
        if value is None:
            return queryset
        # The inbox's definition of overdue, so the API and the admin never disagree.
        overdue = selectors.inbox(self.request.user, view="overdue").values("pk")
        if value:
            return queryset.filter(pk__in=overdue)
        return queryset.exclude(pk__in=overdue)


class MessageFilter(django_filters.FilterSet):
    team = django_filters.NumberFilter(field_name="team_id", label=_("Team id"))
    conversation = django_filters.NumberFilter(
        field_name="conversation_id", label=_("Conversation id")
    )
    contact = django_filters.NumberFilter(field_name="contact_id", label=_("Contact id"))
    account = django_filters.NumberFilter(field_name="account_id", label=_("Channel account id"))
    channel = django_filters.ChoiceFilter(choices=Channel.choices, label=_("Channel"))
    direction = django_filters.ChoiceFilter(choices=Direction.choices, label=_("Direction"))
    status = django_filters.ChoiceFilter(choices=MessageStatus.choices, label=_("Status"))
    created_after = django_filters.IsoDateTimeFilter(
        field_name="created_at", lookup_expr="gte", label=_("Created at or after (ISO 8601)")
    )
    created_before = django_filters.IsoDateTimeFilter(
        field_name="created_at", lookup_expr="lt", label=_("Created before (ISO 8601)")
    )

    class Meta:
        model = Message
        fields = [
            "team",
            "conversation",
            "contact",
            "account",
            "channel",
            "direction",
            "status",
            "created_after",
            "created_before",
        ]


class ConversationEventFilter(django_filters.FilterSet):
    conversation = django_filters.NumberFilter(
        field_name="conversation_id", label=_("Conversation id")
    )
    kind = django_filters.ChoiceFilter(choices=EventKind.choices, label=_("Kind"))

    class Meta:
        model = ConversationEvent
        fields = ["conversation", "kind"]


class AutomationRuleFilter(django_filters.FilterSet):
    team = django_filters.NumberFilter(field_name="team_id", label=_("Team id"))
    account = django_filters.NumberFilter(field_name="account_id", label=_("Channel account id"))
    action = django_filters.ChoiceFilter(choices=RuleAction.choices, label=_("Action"))
    is_active = django_filters.BooleanFilter(label=_("Active"))

    class Meta:
        model = AutomationRule
        fields = ["team", "account", "action", "is_active"]
