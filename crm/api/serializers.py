"""One read serializer per resource, and small input serializers where the write shape differs.

Input serializers validate *shape* only (types, choices, which team or contact an id may name);
the business rules (duplicates, normalising addresses, segment rules, roles) live in the
services the views call. After the write, an input serializer answers with the resource's read
serializer (`ReadBackMixin`), so DRF's create/update mixins return the stored object.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.db.models import Q, QuerySet
from django.db.models.manager import BaseManager
from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from crm import selectors
from crm.models import Channel, Contact, ContactPoint, Segment, Tag, Team
from crm.services import CONTACT_FIELDS

MAX_BULK_IDS = 1000
MAX_TAGS_PER_CONTACT = 100
MAX_POINTS_PER_CONTACT = 50


def _request_user(field: serializers.Field) -> Any:
    return field.context["request"].user


class ReadBackMixin:
    """Answer with the resource's read serializer once the service has stored the object."""

    read_serializer_class: ClassVar[type[serializers.BaseSerializer]]

    def to_representation(self, instance: Any) -> dict[str, Any]:
        return self.read_serializer_class(instance, context=self.context).data


class WritableTeamField(serializers.PrimaryKeyRelatedField):
    """A team the caller belongs to. Any other id reads as unknown, so nothing leaks."""

    def get_queryset(self) -> QuerySet[Team]:
        return Team.objects.filter(id__in=selectors.member_team_ids(_request_user(self)))


class VisibleTeamField(serializers.PrimaryKeyRelatedField):
    """A team whose data the caller may read (auditors: every team)."""

    def get_queryset(self) -> QuerySet[Team]:
        return Team.objects.filter(id__in=selectors.visible_team_ids(_request_user(self)))


class WritableContactField(serializers.PrimaryKeyRelatedField):
    """A contact of one of the caller's teams; others read as unknown."""

    def get_queryset(self) -> QuerySet[Contact]:
        member_teams = selectors.member_team_ids(_request_user(self))
        return Contact.objects.filter(team_id__in=member_teams).select_related("team")


class WritableTagField(serializers.PrimaryKeyRelatedField):
    """A tag of one of the caller's teams; others read as unknown."""

    def get_queryset(self) -> QuerySet[Tag]:
        return Tag.objects.filter(team_id__in=selectors.member_team_ids(_request_user(self)))


@extend_schema_field({"oneOf": [{"type": "integer"}, {"type": "string"}]})
class TagReferenceField(serializers.Field):
    """A tag named by its id (a JSON number) or its name (a text), within the contact's team."""

    default_error_messages: ClassVar[dict[str, Any]] = {
        "invalid": _("Name a tag by its id (a number) or its name (a text)."),
    }

    def to_internal_value(self, data: Any) -> int | str:
        # bool is an int in Python, but `true` is no tag id.
        if isinstance(data, int) and not isinstance(data, bool):
            return data
        if not (isinstance(data, str) and data.strip()):
            self.fail("invalid")
        return data.strip()

    def to_representation(self, value: Any) -> Any:
        return value


def resolve_tags(team_id: int, references: list[int | str]) -> list[Tag]:
    """Turn tag ids/names into the team's Tag rows; unknown ones (or other teams') are an error."""
    ids = {ref for ref in references if isinstance(ref, int)}
    names = {ref for ref in references if isinstance(ref, str)}
    lookup = Q(id__in=ids)
    for name in names:
        lookup |= Q(name__iexact=name)
    found = list(Tag.objects.filter(team_id=team_id).filter(lookup)) if references else []
    known = {tag.pk for tag in found} | {tag.name.casefold() for tag in found}
    missing = [
        str(ref)
        for ref in references
        if (ref.casefold() if isinstance(ref, str) else ref) not in known
    ]
    if missing:
        raise serializers.ValidationError(
            {
                "tags": [
                    _("This team has no tag %(tags)s.") % {"tags": ", ".join(sorted(set(missing)))}
                ]
            }
        )
    return found


class TeamSerializer(serializers.ModelSerializer):
    member_count = serializers.IntegerField(
        read_only=True, help_text=_("Users who belong to the team directly.")
    )

    class Meta:
        model = Team
        fields = [
            "id",
            "name",
            "slug",
            "default_language",
            "default_time_zone",
            "is_active",
            "member_count",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class ContactPointNestedSerializer(serializers.ModelSerializer):
    """A contact point as shown inside its contact (no team: that is the contact's)."""

    class Meta:
        model = ContactPoint
        fields = ["id", "channel", "address", "is_primary"]
        read_only_fields = fields


POINT_FIELDS = tuple(ContactPointNestedSerializer.Meta.fields)
# How ContactSerializer writes created_at and updated_at (DRF's settings, current time zone).
TIMESTAMP = serializers.DateTimeField(read_only=True)


class ContactListSerializer(serializers.ListSerializer):
    """Loads the page's addresses and tags in two queries before serialising it."""

    def to_representation(self, data: Any) -> list[Any]:
        contacts = list(data.all() if isinstance(data, BaseManager) else data)
        selectors.contacts_load_listing(contacts)
        return super().to_representation(contacts)


class ContactSerializer(serializers.ModelSerializer):
    team_name = serializers.CharField(source="team.name", read_only=True)
    full_name = serializers.CharField(read_only=True)
    points = ContactPointNestedSerializer(many=True, read_only=True, source="point_rows")
    tags = serializers.ListField(child=serializers.CharField(), read_only=True, source="tag_names")

    class Meta:
        model = Contact
        list_serializer_class = ContactListSerializer
        fields = [
            "id",
            "team",
            "team_name",
            "salutation",
            "first_name",
            "last_name",
            "full_name",
            "language",
            "time_zone",
            "organisation",
            "profession",
            "preferred_channel",
            "attributes",
            "external_id",
            "points",
            "tags",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def to_representation(self, instance: Contact) -> dict[str, Any]:
        """The declared fields written out (tests/crm/test_api_list_serializer.py compares them
        with DRF's generic rendering): field by field, and with its fields built per request,
        DRF spends about 0.15 ms a contact, most of the Python time of a 50-contact page.
        Times still go through DRF, which converts them to the caller's time zone."""
        timestamp = TIMESTAMP.to_representation
        return {
            "id": instance.pk,
            "team": instance.team_id,
            "team_name": instance.team.name,
            "salutation": instance.salutation,
            "first_name": instance.first_name,
            "last_name": instance.last_name,
            "full_name": instance.full_name,
            "language": instance.language,
            "time_zone": instance.time_zone,
            "organisation": instance.organisation,
            "profession": instance.profession,
            "preferred_channel": instance.preferred_channel,
            "attributes": instance.attributes,
            "external_id": instance.external_id,
            "points": [{name: row[name] for name in POINT_FIELDS} for row in instance.point_rows],
            "tags": list(instance.tag_names),
            "created_at": timestamp(instance.created_at),
            "updated_at": timestamp(instance.updated_at),
        }


class ContactUpdateInputSerializer(ReadBackMixin, serializers.ModelSerializer):
    """Fields to change; `tags` (ids or names of the contact's team) replaces the tag set."""

    read_serializer_class = ContactSerializer
    attributes = serializers.DictField(required=False, help_text=_("Custom attributes."))
    tags = serializers.ListField(
        child=TagReferenceField(), required=False, max_length=MAX_TAGS_PER_CONTACT
    )

    class Meta:
        model = Contact
        fields = [*CONTACT_FIELDS, "tags"]
        # Uniqueness (external id per team) is a service rule with a readable message.
        validators: ClassVar[list] = []

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if "tags" in attrs:
            attrs["tags"] = resolve_tags(self.instance.team_id, attrs["tags"])
        return attrs


class ContactPointInputSerializer(serializers.Serializer):
    channel = serializers.ChoiceField(choices=Channel.choices)
    address = serializers.CharField(max_length=254)


class ContactCreateInputSerializer(ContactUpdateInputSerializer):
    """A new contact in one of the caller's teams, optionally with addresses and tags."""

    team = WritableTeamField(queryset=Team.objects.all())
    points = ContactPointInputSerializer(
        many=True, required=False, max_length=MAX_POINTS_PER_CONTACT
    )

    class Meta(ContactUpdateInputSerializer.Meta):
        fields = ["team", *CONTACT_FIELDS, "points", "tags"]

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if "tags" in attrs:
            attrs["tags"] = resolve_tags(attrs["team"].pk, attrs["tags"])
        return attrs


# Contacts named by id; each subclass's validate() turns them into `contacts`, all or a 400.
# (A comment, not a docstring: the schema would show it on every subclass.)
class ContactBulkInputSerializer(serializers.Serializer):
    contact_ids = serializers.ListField(
        child=serializers.IntegerField(), min_length=1, max_length=MAX_BULK_IDS
    )

    def with_contacts(
        self, attrs: dict[str, Any], candidates: QuerySet[Contact], missing_message: str
    ) -> dict[str, Any]:
        """Add the `candidates` with the wanted ids; any id not among them is an error."""
        wanted = set(attrs["contact_ids"])
        contacts = candidates.filter(id__in=wanted)
        missing = wanted - set(contacts.values_list("id", flat=True))
        if missing:
            raise serializers.ValidationError(
                {
                    "contact_ids": [
                        missing_message % {"ids": ", ".join(str(pk) for pk in sorted(missing))}
                    ]
                }
            )
        return {**attrs, "contacts": contacts}


class ContactBulkTagInputSerializer(ContactBulkInputSerializer):
    tag = WritableTagField(queryset=Tag.objects.all())

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        tag: Tag = attrs["tag"]
        return self.with_contacts(
            attrs,
            Contact.objects.filter(team_id=tag.team_id),
            _("No contact of the tag's team has the id %(ids)s."),
        )


class ContactBulkAssignTeamInputSerializer(ContactBulkInputSerializer):
    team = WritableTeamField(queryset=Team.objects.all())

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        member_teams = selectors.member_team_ids(self.context["request"].user)
        return self.with_contacts(
            attrs,
            Contact.objects.filter(team_id__in=member_teams),
            _("None of your teams has a contact with the id %(ids)s."),
        )


class BulkResultSerializer(serializers.Serializer):
    count = serializers.IntegerField(help_text=_("How many contacts were changed."))


class ContactPointSerializer(serializers.ModelSerializer):
    """Read shape, and the create input: an address on a channel for one of your contacts."""

    contact = WritableContactField(queryset=Contact.objects.all())
    team_name = serializers.CharField(source="team.name", read_only=True)

    class Meta:
        model = ContactPoint
        fields = [
            "id",
            "contact",
            "team",
            "team_name",
            "channel",
            "address",
            "is_primary",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "team", "team_name", "created_at", "updated_at"]
        # One address per team and channel is a service rule (code contact_point_duplicate).
        validators: ClassVar[list] = []


class ContactPointUpdateInputSerializer(ReadBackMixin, serializers.Serializer):
    """A new address (normalised by the service) or primary flag; the channel stays."""

    read_serializer_class = ContactPointSerializer
    address = serializers.CharField(max_length=254, required=False)
    is_primary = serializers.BooleanField(required=False)


class TagSerializer(serializers.ModelSerializer):
    team = WritableTeamField(queryset=Team.objects.all())
    team_name = serializers.CharField(source="team.name", read_only=True)

    class Meta:
        model = Tag
        fields = ["id", "team", "team_name", "name", "created_at", "updated_at"]
        read_only_fields = ["id", "team_name", "created_at", "updated_at"]
        # A tag name once per team (case-insensitive) is a service rule.
        validators: ClassVar[list] = []


class SegmentSerializer(serializers.ModelSerializer):
    """Read shape, and the create input; `rules` are checked by the service (field `rules`)."""

    team = WritableTeamField(queryset=Team.objects.all())
    team_name = serializers.CharField(source="team.name", read_only=True)
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = Segment
        fields = [
            "id",
            "team",
            "team_name",
            "name",
            "description",
            "rules",
            "created_by",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "team_name", "created_by", "created_at", "updated_at"]
        extra_kwargs: ClassVar[dict[str, Any]] = {"rules": {"required": True}}
        # A segment name once per team is a service rule.
        validators: ClassVar[list] = []


class SegmentUpdateInputSerializer(ReadBackMixin, serializers.ModelSerializer):
    """Name, description and rules of a segment; its team stays."""

    read_serializer_class = SegmentSerializer

    class Meta:
        model = Segment
        fields = ["name", "description", "rules"]
        validators: ClassVar[list] = []


class SegmentPreviewInputSerializer(serializers.Serializer):
    team = VisibleTeamField(queryset=Team.objects.all())
    rules = serializers.JSONField(help_text=Segment._meta.get_field("rules").help_text)


class SegmentResolveSerializer(serializers.Serializer):
    count = serializers.IntegerField(help_text=_("How many contacts the rules match."))
    sample = ContactSerializer(many=True, help_text=_("The newest matching contacts."))
