"""Read serializers of the consent API and small input serializers for its writes.

Input serializers check shape and scope only (which contact, purpose or consent text an id may
name); the rules (allowed channels, evidence, double opt-in, keywords) live in the services.
Evidence is personal data: it is shown to readers of the ledger and never written here.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.db.models import QuerySet
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from consent.models import (
    Consent,
    ConsentAction,
    ConsentEvent,
    ConsentEvidence,
    ConsentStatus,
    ConsentText,
    Purpose,
    Suppression,
    WithdrawalReview,
)
from consent.services import Evidence
from consent.services.collect import COLLECTABLE_ACTIONS
from consent.services.texts import PURPOSE_UPDATABLE_FIELDS
from crm import selectors as crm_selectors
from crm.api.serializers import ReadBackMixin, WritableContactField, WritableTeamField
from crm.models import Channel, Contact, Team

MAX_NOTE_LENGTH = 2000


def _user(field: serializers.Field) -> Any:
    return field.context["request"].user


class WritablePurposeField(serializers.PrimaryKeyRelatedField):
    """A purpose of one of the caller's teams; others read as unknown."""

    def get_queryset(self) -> QuerySet[Purpose]:
        return Purpose.objects.filter(team_id__in=crm_selectors.member_team_ids(_user(self)))


@extend_schema_field({"oneOf": [{"type": "integer"}, {"type": "string"}]})
class PurposeReferenceField(serializers.Field):
    """A purpose named by its id (a JSON number) or its key (a text), in the contact's team."""

    default_error_messages: ClassVar[dict[str, Any]] = {
        "invalid": _("Name a purpose by its id (a number) or its key (a text)."),
    }

    def to_internal_value(self, data: Any) -> int | str:
        if isinstance(data, bool):
            self.fail("invalid")
        if isinstance(data, int):
            return data
        if isinstance(data, str) and data.strip():
            return data.strip()
        self.fail("invalid")
        return ""  # not reached: fail() raises

    def to_representation(self, value: Any) -> Any:
        return value


def resolve_purpose(team_id: int, reference: int | str, *, field: str = "purpose") -> Purpose:
    """The team's purpose with this id or key; anything else (other teams too) is unknown."""
    lookup = {"pk": reference} if isinstance(reference, int) else {"key": reference}
    purpose = Purpose.objects.filter(team_id=team_id, **lookup).first()
    if purpose is None:
        raise serializers.ValidationError(
            {field: [_("This team has no purpose “%(ref)s”.") % {"ref": reference}]}
        )
    return purpose


class PurposeSerializer(serializers.ModelSerializer):
    """Read shape, and the create input (team and key are fixed afterwards)."""

    team = WritableTeamField(queryset=Team.objects.all())
    team_name = serializers.CharField(source="team.name", read_only=True)
    allowed_channels = serializers.ListField(
        child=serializers.ChoiceField(choices=Channel.choices),
        help_text=_("Channels on which consent for this purpose may be collected."),
    )
    double_opt_in_channels = serializers.ListField(
        child=serializers.ChoiceField(choices=Channel.choices),
        required=False,
        help_text=_("Allowed channels on which a grant needs confirmation (double opt-in)."),
    )
    opt_in_keywords = serializers.ListField(
        child=serializers.CharField(max_length=40),
        required=False,
        help_text=_("Inbound messages that grant this purpose, e.g. FILM; unique per team."),
    )

    class Meta:
        model = Purpose
        fields = [
            "id",
            "team",
            "team_name",
            "key",
            *PURPOSE_UPDATABLE_FIELDS,
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "team_name", "created_at", "updated_at"]
        # A key once per team and keyword clashes are service rules with readable messages.
        validators: ClassVar[list] = []


class PurposeUpdateInputSerializer(ReadBackMixin, PurposeSerializer):
    """Everything but the team and the key."""

    read_serializer_class = PurposeSerializer

    class Meta(PurposeSerializer.Meta):
        fields = [
            name
            for name in PurposeSerializer.Meta.fields
            if name not in {"id", "team", "team_name", "key", "created_at", "updated_at"}
        ]
        read_only_fields: ClassVar[list[str]] = []


class ConsentTextSerializer(serializers.ModelSerializer):
    """Read shape, and the publish input: purpose, language and wording (a new version)."""

    purpose = WritablePurposeField(queryset=Purpose.objects.all())
    purpose_key = serializers.CharField(source="purpose.key", read_only=True)
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = ConsentText
        fields = [
            "id",
            "purpose",
            "purpose_key",
            "language",
            "version",
            "body",
            "content_hash",
            "created_by",
            "created_at",
        ]
        read_only_fields = [
            "id",
            "purpose_key",
            "version",
            "content_hash",
            "created_by",
            "created_at",
        ]
        validators: ClassVar[list] = []


class ConsentSerializer(serializers.ModelSerializer):
    purpose_key = serializers.CharField(source="purpose.key", read_only=True)
    team = serializers.IntegerField(source="contact.team_id", read_only=True)
    is_granted = serializers.SerializerMethodField(
        help_text=_("Granted and not past its validity: messages for the purpose may go out.")
    )

    class Meta:
        model = Consent
        fields = [
            "id",
            "contact",
            "team",
            "purpose",
            "purpose_key",
            "channel",
            "status",
            "is_granted",
            "since",
            "valid_until",
            "last_event",
            "updated_at",
        ]
        read_only_fields = fields

    @extend_schema_field(OpenApiTypes.BOOL)
    def get_is_granted(self, consent: Consent) -> bool:
        return consent.status == ConsentStatus.GRANTED and (
            consent.valid_until is None or consent.valid_until > timezone.now()
        )


class ConsentEvidenceSerializer(serializers.ModelSerializer):
    consent_text_version = serializers.IntegerField(
        source="consent_text.version", read_only=True, allow_null=True, default=None
    )

    class Meta:
        model = ConsentEvidence
        fields = [
            "consent_text",
            "consent_text_version",
            "ip_address",
            "user_agent",
            "source_url",
            "message_text",
            "inbound_message_ref",
            "note",
            "collected_at",
            "actor_label",
            "digest",
            "erased_at",
        ]
        read_only_fields = fields


class ConsentEventSerializer(serializers.ModelSerializer):
    purpose_key = serializers.CharField(source="purpose.key", read_only=True)
    evidence = ConsentEvidenceSerializer(read_only=True)

    class Meta:
        model = ConsentEvent
        fields = [
            "id",
            "contact",
            "team",
            "purpose",
            "purpose_key",
            "channel",
            "action",
            "source",
            "occurred_at",
            "recorded_at",
            "sequence",
            "previous_hash",
            "hash",
            "evidence_digest",
            "evidence",
        ]
        read_only_fields = fields


class EvidenceInputSerializer(serializers.Serializer):
    consent_text = serializers.IntegerField(
        required=False,
        allow_null=True,
        help_text=_("Id of the consent text version the contact agreed to (needed to grant)."),
    )
    ip_address = serializers.IPAddressField(required=False, allow_null=True)
    user_agent = serializers.CharField(required=False, allow_blank=True, max_length=500)
    source_url = serializers.URLField(required=False, allow_blank=True, max_length=500)
    note = serializers.CharField(required=False, allow_blank=True, max_length=MAX_NOTE_LENGTH)


def _evidence(data: dict[str, Any], purpose: Purpose) -> Evidence:
    """Build the service's Evidence; the consent text must be a version of the purpose."""
    text = None
    text_id = data.get("consent_text")
    if text_id is not None:
        text = ConsentText.objects.filter(pk=text_id, purpose=purpose).first()
        if text is None:
            raise serializers.ValidationError(
                {
                    "evidence": {
                        "consent_text": [
                            _("Purpose “%(key)s” has no consent text with the id %(id)s.")
                            % {"key": purpose.key, "id": text_id}
                        ]
                    }
                }
            )
    return Evidence(
        consent_text=text,
        ip_address=data.get("ip_address") or None,
        user_agent=data.get("user_agent", ""),
        source_url=data.get("source_url", ""),
        note=data.get("note", ""),
    )


class ConsentEventCreateInputSerializer(ReadBackMixin, serializers.Serializer):
    """A consent change reported by a form or integration, with its evidence."""

    read_serializer_class = ConsentEventSerializer
    contact = WritableContactField(queryset=Contact.objects.all())
    purpose = PurposeReferenceField(help_text=_("Purpose id or key."))
    channel = serializers.ChoiceField(choices=Channel.choices)
    action = serializers.ChoiceField(
        choices=[choice for choice in ConsentAction.choices if choice[0] in COLLECTABLE_ACTIONS],
        help_text=_(
            "A grant on a double opt-in channel starts a double opt-in round (answered with "
            "the `requested` event)."
        ),
    )
    occurred_at = serializers.DateTimeField(
        required=False, help_text=_("When the contact acted; default: now.")
    )
    evidence = EvidenceInputSerializer(required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        contact: Contact = attrs["contact"]
        attrs["purpose"] = resolve_purpose(contact.team_id, attrs["purpose"])
        attrs["evidence"] = _evidence(attrs.get("evidence") or {}, attrs["purpose"])
        return attrs


class ConsentWithdrawInputSerializer(serializers.Serializer):
    contact = WritableContactField(queryset=Contact.objects.all())
    purpose = PurposeReferenceField(help_text=_("Purpose id or key."))
    channel = serializers.ChoiceField(choices=Channel.choices)
    note = serializers.CharField(required=False, allow_blank=True, max_length=MAX_NOTE_LENGTH)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs["purpose"] = resolve_purpose(attrs["contact"].team_id, attrs["purpose"])
        return attrs


class SuppressionSerializer(serializers.ModelSerializer):
    """A suppressed address: only its hash is stored, so only its hash is shown."""

    class Meta:
        model = Suppression
        fields = ["id", "address_hash", "channel", "reason", "note", "team", "created_at"]
        read_only_fields = fields


class SuppressionCreateInputSerializer(ReadBackMixin, serializers.Serializer):
    read_serializer_class = SuppressionSerializer
    team = WritableTeamField(
        queryset=Team.objects.all(),
        required=False,
        help_text=_("The team adding it; may be left out if you belong to one team."),
    )
    channel = serializers.ChoiceField(choices=Channel.choices)
    address = serializers.CharField(
        max_length=254,
        write_only=True,
        help_text=_("Normalised, hashed and then forgotten: the address is never stored."),
    )
    note = serializers.CharField(required=False, allow_blank=True, max_length=255)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if "team" not in attrs:
            teams = list(crm_selectors.teams_writable_by(self.context["request"].user)[:2])
            if len(teams) != 1:
                raise serializers.ValidationError(
                    {"team": [_("Say which of your teams adds the suppression.")]}
                )
            attrs["team"] = teams[0]
        return attrs


class WithdrawalReviewSerializer(serializers.ModelSerializer):
    decided_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = WithdrawalReview
        fields = [
            "id",
            "contact",
            "team",
            "channel",
            "text",
            "inbound_message_ref",
            "matched",
            "status",
            "decided_by",
            "decided_at",
            "created_at",
        ]
        read_only_fields = fields


class WithdrawalReviewConfirmInputSerializer(serializers.Serializer):
    note = serializers.CharField(
        max_length=MAX_NOTE_LENGTH, help_text=_("Why this message is a withdrawal.")
    )
    purposes = serializers.ListField(
        child=PurposeReferenceField(),
        required=False,
        help_text=_("Purpose ids or keys; default: every purpose on the message's channel."),
    )
