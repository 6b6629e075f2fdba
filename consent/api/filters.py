"""django-filter FilterSets for the consent API. They narrow an already team-scoped queryset."""

from __future__ import annotations

import django_filters
from django.utils.translation import gettext_lazy as _

from consent.models import (
    Consent,
    ConsentAction,
    ConsentEvent,
    ConsentSource,
    ConsentStatus,
    ConsentText,
    Purpose,
    Suppression,
    WithdrawalReview,
)
from crm.models import Channel, Language


class PurposeFilter(django_filters.FilterSet):
    team = django_filters.NumberFilter(field_name="team_id", label=_("Team id"))
    key = django_filters.CharFilter(label=_("Key"))
    is_active = django_filters.BooleanFilter(label=_("Active"))
    is_marketing = django_filters.BooleanFilter(label=_("Marketing"))

    class Meta:
        model = Purpose
        fields = ["team", "key", "is_active", "is_marketing"]


class ConsentTextFilter(django_filters.FilterSet):
    purpose = django_filters.NumberFilter(field_name="purpose_id", label=_("Purpose id"))
    language = django_filters.ChoiceFilter(choices=Language.choices, label=_("Language"))

    class Meta:
        model = ConsentText
        fields = ["purpose", "language"]


class ConsentFilter(django_filters.FilterSet):
    team = django_filters.NumberFilter(field_name="contact__team_id", label=_("Team id"))
    contact = django_filters.NumberFilter(field_name="contact_id", label=_("Contact id"))
    purpose = django_filters.NumberFilter(field_name="purpose_id", label=_("Purpose id"))
    purpose_key = django_filters.CharFilter(field_name="purpose__key", label=_("Purpose key"))
    channel = django_filters.ChoiceFilter(choices=Channel.choices, label=_("Channel"))
    status = django_filters.ChoiceFilter(choices=ConsentStatus.choices, label=_("Status"))

    class Meta:
        model = Consent
        fields = ["team", "contact", "purpose", "purpose_key", "channel", "status"]


class ConsentEventFilter(django_filters.FilterSet):
    team = django_filters.NumberFilter(field_name="team_id", label=_("Team id"))
    contact = django_filters.NumberFilter(field_name="contact_id", label=_("Contact id"))
    purpose = django_filters.NumberFilter(field_name="purpose_id", label=_("Purpose id"))
    purpose_key = django_filters.CharFilter(field_name="purpose__key", label=_("Purpose key"))
    channel = django_filters.ChoiceFilter(choices=Channel.choices, label=_("Channel"))
    action = django_filters.ChoiceFilter(choices=ConsentAction.choices, label=_("Action"))
    source = django_filters.ChoiceFilter(choices=ConsentSource.choices, label=_("Source"))
    recorded_after = django_filters.IsoDateTimeFilter(
        field_name="recorded_at", lookup_expr="gte", label=_("Recorded at or after (ISO 8601)")
    )
    recorded_before = django_filters.IsoDateTimeFilter(
        field_name="recorded_at", lookup_expr="lt", label=_("Recorded before (ISO 8601)")
    )

    class Meta:
        model = ConsentEvent
        fields = [
            "team",
            "contact",
            "purpose",
            "purpose_key",
            "channel",
            "action",
            "source",
            "recorded_after",
            "recorded_before",
        ]


class SuppressionFilter(django_filters.FilterSet):
    team = django_filters.NumberFilter(field_name="team_id", label=_("Team id"))
    channel = django_filters.ChoiceFilter(choices=Channel.choices, label=_("Channel"))
    reason = django_filters.ChoiceFilter(choices=Suppression.Reason.choices, label=_("Reason"))

    class Meta:
        model = Suppression
        fields = ["team", "channel", "reason"]


class WithdrawalReviewFilter(django_filters.FilterSet):
    team = django_filters.NumberFilter(field_name="team_id", label=_("Team id"))
    contact = django_filters.NumberFilter(field_name="contact_id", label=_("Contact id"))
    channel = django_filters.ChoiceFilter(choices=Channel.choices, label=_("Channel"))
    status = django_filters.ChoiceFilter(choices=WithdrawalReview.Status.choices, label=_("Status"))

    class Meta:
        model = WithdrawalReview
        fields = ["team", "contact", "channel", "status"]
