"""Read serializers of the approvals API and small input serializers for its writes.

Input serializers check shape and scope only (which team, template or person an id may name);
the rules (names, channels, four-eyes, content hashes, immutability) live in the services.
`state`, `stage_index`, the content hash and the provider fields are read-only everywhere:
only the workflow services write them.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db.models import QuerySet
from django.utils.translation import gettext_lazy as _
from rest_framework import serializers

from approvals.models import (
    ApprovalPolicy,
    ApprovalStage,
    Decision,
    MessageTemplate,
    ReviewDecision,
    TemplateVersion,
)
from consent.api.serializers import WritablePurposeField
from consent.models import Purpose
from crm import selectors as crm_selectors
from crm.api.serializers import ReadBackMixin, WritableTeamField
from crm.models import Channel, Team

MAX_COMMENT_LENGTH = 4000
# Whom it makes sense to assign as a reviewer: someone who may record decisions.
REVIEWER_PERM = "approvals.add_reviewdecision"
MAX_BUTTONS = 10

User = get_user_model()


def _request_user(field: serializers.Field) -> Any:
    return field.context["request"].user


class TeamMemberField(serializers.PrimaryKeyRelatedField):
    """A member of one of the caller's teams; anyone else reads as unknown."""

    def get_queryset(self) -> QuerySet:
        member_ids: set[int] = set()
        for team in crm_selectors.teams_writable_by(_request_user(self)):
            member_ids.update(crm_selectors.team_members(team).values_list("id", flat=True))
        return User.objects.filter(id__in=member_ids)


class WritableTemplateField(serializers.PrimaryKeyRelatedField):
    """A template of one of the caller's teams; others read as unknown."""

    def get_queryset(self) -> QuerySet[MessageTemplate]:
        member_teams = crm_selectors.member_team_ids(_request_user(self))
        return MessageTemplate.objects.filter(team_id__in=member_teams).select_related("team")


class UserSummarySerializer(serializers.ModelSerializer):
    class Meta:
        model = User
        fields = ["id", "username", "first_name", "last_name"]
        read_only_fields = fields


class MessageTemplateSerializer(serializers.ModelSerializer):
    """Read shape, and the create input (the team is fixed afterwards)."""

    team = WritableTeamField(queryset=Team.objects.all())
    team_name = serializers.CharField(source="team.name", read_only=True)
    purpose = WritablePurposeField(
        queryset=Purpose.objects.all(),
        required=False,
        allow_null=True,
        help_text=_("Purpose id whose consent a send needs; required for marketing templates."),
    )
    purpose_key = serializers.CharField(
        source="purpose.key", read_only=True, allow_null=True, default=None
    )
    owner = TeamMemberField(
        queryset=User.objects.all(),
        required=False,
        allow_null=True,
        help_text=_("User id told before approved content expires; default: you."),
    )
    owner_username = serializers.CharField(
        source="owner.username", read_only=True, allow_null=True, default=None
    )

    class Meta:
        model = MessageTemplate
        fields = [
            "id",
            "team",
            "team_name",
            "name",
            "channel",
            "category",
            "language",
            "purpose",
            "purpose_key",
            "owner",
            "owner_username",
            "is_active",
            "created_at",
            "updated_at",
        ]
        read_only_fields = [
            "id",
            "team_name",
            "purpose_key",
            "owner_username",
            "is_active",
            "created_at",
            "updated_at",
        ]
        # A name once per team, channel and language is a service rule with a readable message.
        validators: ClassVar[list] = []


class MessageTemplateUpdateInputSerializer(ReadBackMixin, MessageTemplateSerializer):
    """Everything but the team. Channel, category and language are fixed once a version was
    submitted (the service refuses the change)."""

    read_serializer_class = MessageTemplateSerializer

    class Meta(MessageTemplateSerializer.Meta):
        fields = ["name", "channel", "category", "language", "purpose", "owner", "is_active"]
        read_only_fields: ClassVar[list[str]] = []


class ButtonField(serializers.DictField):
    child = serializers.CharField(max_length=2000, allow_blank=True)


class TemplateVersionSerializer(serializers.ModelSerializer):
    """Read shape, and the create input: a new draft of a template of your teams."""

    template = WritableTemplateField(queryset=MessageTemplate.objects.all())
    template_name = serializers.CharField(source="template.name", read_only=True)
    team = serializers.IntegerField(source="template.team_id", read_only=True)
    channel = serializers.ChoiceField(
        source="template.channel", choices=Channel.choices, read_only=True
    )
    buttons = serializers.ListField(
        child=ButtonField(),
        required=False,
        max_length=MAX_BUTTONS,
        help_text=_('For example [{"type": "quick_reply", "text": "Yes, please"}].'),
    )
    variables = serializers.ListField(
        child=serializers.CharField(max_length=80),
        required=False,
        allow_null=True,
        help_text=_(
            "The placeholders the version expects, e.g. first_name; "
            "left out or null: the placeholders its text uses."
        ),
    )
    author = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = TemplateVersion
        fields = [
            "id",
            "template",
            "template_name",
            "team",
            "channel",
            "number",
            "subject",
            "header",
            "body",
            "footer",
            "buttons",
            "variables",
            "valid_from",
            "valid_until",
            "content_hash",
            "state",
            "stage_index",
            "author",
            "submitted_at",
            "approved_at",
            "provider_status",
            "provider_template_id",
            "provider_reason",
            "created_at",
            "updated_at",
        ]
        read_only_fields = [
            "id",
            "template_name",
            "team",
            "channel",
            "number",
            "content_hash",
            "state",
            "stage_index",
            "author",
            "submitted_at",
            "approved_at",
            "provider_status",
            "provider_template_id",
            "provider_reason",
            "created_at",
            "updated_at",
        ]


class TemplateVersionUpdateInputSerializer(ReadBackMixin, serializers.Serializer):
    """The content of a draft; only the fields sent change. Versions that left draft are
    immutable (answered with the code version_immutable)."""

    read_serializer_class = TemplateVersionSerializer
    subject = serializers.CharField(max_length=200, required=False, allow_blank=True)
    header = serializers.CharField(max_length=200, required=False, allow_blank=True)
    body = serializers.CharField(required=False)
    footer = serializers.CharField(max_length=200, required=False, allow_blank=True)
    buttons = serializers.ListField(child=ButtonField(), required=False, max_length=MAX_BUTTONS)
    variables = serializers.ListField(
        child=serializers.CharField(max_length=80),
        required=False,
        allow_null=True,
        help_text=_("null: take the placeholders the text uses."),
    )
    valid_from = serializers.DateTimeField(required=False, allow_null=True)
    valid_until = serializers.DateTimeField(required=False, allow_null=True)


class RetireInputSerializer(serializers.Serializer):
    comment = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=MAX_COMMENT_LENGTH,
        help_text=_("Why the version is taken out of use."),
    )


class RenderedMessageSerializer(serializers.Serializer):
    subject = serializers.CharField()
    header = serializers.CharField()
    body = serializers.CharField()
    footer = serializers.CharField()
    buttons = serializers.ListField(child=ButtonField())


class ProblemSerializer(serializers.Serializer):
    code = serializers.CharField()
    detail = serializers.CharField()


class SmsInfoSerializer(serializers.Serializer):
    encoding = serializers.CharField(help_text=_("GSM-7 or UCS-2"))
    segments = serializers.IntegerField()
    characters = serializers.IntegerField()


class ViolationSerializer(serializers.Serializer):
    field = serializers.CharField()
    message = serializers.CharField()
    code = serializers.CharField()


class VersionPreviewSerializer(serializers.Serializer):
    """A version rendered with sample data, and what the channel's rules say about it."""

    version = serializers.IntegerField()
    context = serializers.DictField(
        child=serializers.CharField(allow_blank=True), help_text=_("The sample data used.")
    )
    rendered = RenderedMessageSerializer(allow_null=True)
    render_error = ProblemSerializer(
        allow_null=True, help_text=_("Why the version cannot be rendered, if it cannot.")
    )
    sms = SmsInfoSerializer(allow_null=True, help_text=_("Encoding and segments (SMS only)."))
    violations = ViolationSerializer(
        many=True, help_text=_("Channel rules the version breaks; submitting refuses these.")
    )


class VersionDiffSerializer(serializers.Serializer):
    version = serializers.IntegerField()
    previous = serializers.IntegerField(
        allow_null=True, help_text=_("Id of the last approved version before this one.")
    )
    previous_number = serializers.IntegerField(allow_null=True)
    diff = serializers.CharField(help_text=_("Unified diff; empty when nothing changed."))


class ReviewQueueEntrySerializer(TemplateVersionSerializer):
    """A version waiting for your decision, with the stage you would decide."""

    category = serializers.CharField(source="template.category", read_only=True)
    stage = serializers.SerializerMethodField()
    stage_name = serializers.SerializerMethodField()

    class Meta(TemplateVersionSerializer.Meta):
        fields = [*TemplateVersionSerializer.Meta.fields, "category", "stage", "stage_name"]
        read_only_fields = fields

    def get_stage(self, version: TemplateVersion) -> int | None:
        return getattr(version, "current_stage_id", None)

    def get_stage_name(self, version: TemplateVersion) -> str:
        names = self.context.get("stage_names", {})
        return names.get(getattr(version, "current_stage_id", None), "")


class ReviewDecisionSerializer(serializers.ModelSerializer):
    template = serializers.IntegerField(source="version.template_id", read_only=True)
    version_number = serializers.IntegerField(source="version.number", read_only=True)

    class Meta:
        model = ReviewDecision
        fields = [
            "id",
            "version",
            "version_number",
            "template",
            "stage",
            "stage_name",
            "reviewer",
            "reviewer_label",
            "decision",
            "comment",
            "content_hash",
            "decided_at",
            "sequence",
            "previous_hash",
            "hash",
        ]
        read_only_fields = fields


class ReviewDecisionCreateInputSerializer(ReadBackMixin, serializers.Serializer):
    """Your decision on the stage a version waits for, bound to the content you reviewed."""

    read_serializer_class = ReviewDecisionSerializer
    version = serializers.IntegerField(min_value=1, help_text=_("Id of the version in review."))
    decision = serializers.ChoiceField(choices=Decision.choices)
    comment = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=MAX_COMMENT_LENGTH,
        help_text=_("Required to reject or to request changes."),
    )
    content_hash = serializers.CharField(
        max_length=64,
        help_text=_(
            "The content_hash of the version as you reviewed it; a version changed since "
            "is refused with the code stale_content."
        ),
    )


class ApprovalStageSerializer(serializers.ModelSerializer):
    group = serializers.SlugRelatedField(slug_field="name", queryset=Group.objects.all())

    class Meta:
        model = ApprovalStage
        fields = ["id", "position", "name", "group", "approvals_required"]
        read_only_fields = ["id", "position"]


class ApprovalPolicySerializer(serializers.ModelSerializer):
    """Read shape, and the create input: stages in review order."""

    team = WritableTeamField(queryset=Team.objects.all())
    team_name = serializers.CharField(source="team.name", read_only=True)
    stages = ApprovalStageSerializer(many=True, min_length=1)

    class Meta:
        model = ApprovalPolicy
        fields = ["id", "team", "team_name", "category", "name", "stages", "created_at"]
        read_only_fields = ["id", "team_name", "created_at"]
        validators: ClassVar[list] = []


class ReviewerInputSerializer(serializers.Serializer):
    user = serializers.IntegerField(
        min_value=1, help_text=_("Id of a reviewer who belongs to the template's team.")
    )

    def validate_user(self, value: int) -> Any:
        # Only active reviewers of the template's own team can be named; other ids read as
        # unknown, so the endpoint reveals nobody outside the team.
        template: MessageTemplate = self.context["template"]
        members = crm_selectors.team_members(template.team).values("id")
        user = User.objects.filter(id__in=members, pk=value, is_active=True).first()
        if user is None:
            raise serializers.ValidationError(_("No member of the template's team has this id."))
        if not user.has_perm(REVIEWER_PERM):
            raise serializers.ValidationError(
                _("%(user)s holds no reviewer role.") % {"user": user.get_username()}
            )
        return user
