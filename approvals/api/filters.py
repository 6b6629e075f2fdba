"""django-filter FilterSets for the approvals API. They narrow an already team-scoped queryset."""

from __future__ import annotations

import datetime as dt

import django_filters
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from approvals.models import (
    ApprovalPolicy,
    Decision,
    MessageTemplate,
    ReviewDecision,
    TemplateCategory,
    TemplateVersion,
    VersionState,
)
from crm.models import Channel, Language

# A year ahead is as far as "expiring soon" sensibly looks.
MAX_EXPIRY_DAYS = 366


class MessageTemplateFilter(django_filters.FilterSet):
    team = django_filters.NumberFilter(field_name="team_id", label=_("Team id"))
    channel = django_filters.ChoiceFilter(choices=Channel.choices, label=_("Channel"))
    category = django_filters.ChoiceFilter(choices=TemplateCategory.choices, label=_("Category"))
    language = django_filters.ChoiceFilter(choices=Language.choices, label=_("Language"))
    is_active = django_filters.BooleanFilter(label=_("Active"))

    class Meta:
        model = MessageTemplate
        fields = ["team", "channel", "category", "language", "is_active"]


class TemplateVersionFilter(django_filters.FilterSet):
    template = django_filters.NumberFilter(field_name="template_id", label=_("Template id"))
    team = django_filters.NumberFilter(field_name="template__team_id", label=_("Team id"))
    state = django_filters.ChoiceFilter(choices=VersionState.choices, label=_("State"))
    channel = django_filters.ChoiceFilter(
        field_name="template__channel", choices=Channel.choices, label=_("Channel")
    )
    expiring_within_days = django_filters.NumberFilter(
        method="filter_expiring",
        min_value=0,
        max_value=MAX_EXPIRY_DAYS,
        label=_("Approved versions whose content expires within this many days"),
    )

    class Meta:
        model = TemplateVersion
        fields = ["template", "team", "state", "channel", "expiring_within_days"]

    def filter_expiring(
        self, queryset: QuerySet[TemplateVersion], name: str, value: object
    ) -> QuerySet[TemplateVersion]:
        if value is None:
            return queryset
        now = timezone.now()
        return queryset.filter(
            state=VersionState.APPROVED,
            valid_until__gt=now,
            valid_until__lte=now + dt.timedelta(days=int(value)),
        )


class ReviewDecisionFilter(django_filters.FilterSet):
    version = django_filters.NumberFilter(field_name="version_id", label=_("Version id"))
    template = django_filters.NumberFilter(
        field_name="version__template_id", label=_("Template id")
    )
    team = django_filters.NumberFilter(field_name="version__template__team_id", label=_("Team id"))
    decision = django_filters.ChoiceFilter(choices=Decision.choices, label=_("Decision"))

    class Meta:
        model = ReviewDecision
        fields = ["version", "template", "team", "decision"]


class ApprovalPolicyFilter(django_filters.FilterSet):
    team = django_filters.NumberFilter(field_name="team_id", label=_("Team id"))
    category = django_filters.ChoiceFilter(choices=TemplateCategory.choices, label=_("Category"))

    class Meta:
        model = ApprovalPolicy
        fields = ["team", "category"]
