"""The crm REST API: ViewSets built from mixins, scoped by selectors, writing through services.

Every queryset comes from a `*_visible_to` selector, so another team's object is a 404. Every
action names its model permission in `action_perms` (a missing one is a 403, see
crm.api.base). Every write calls exactly one service; a DomainError it raises becomes a 400 (or
403/404) through the configured exception handler.
"""

from __future__ import annotations

from typing import ClassVar

from django.db.models import (
    CharField,
    Count,
    IntegerField,
    OuterRef,
    QuerySet,
    Subquery,
    Value,
    prefetch_related_objects,
)
from django.db.models.functions import Cast, Coalesce
from django.utils.translation import gettext_lazy as _
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import extend_schema, extend_schema_view
from guardian.models import UserObjectPermission
from rest_framework import mixins, serializers
from rest_framework.decorators import action
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response

from crm import selectors, services
from crm.api import filters
from crm.api import serializers as api
from crm.api.base import READ_ACTIONS, FilteredViewSet, model_perms
from crm.models import Contact, ContactPoint, Segment, Tag, Team


def _member_count() -> Coalesce:
    """Direct members of each team: `crm.access_team` object permissions (team_member_add)."""
    members = (
        UserObjectPermission.objects.filter(
            # Joined, not looked up: building the queryset must not query (schema generation).
            content_type__app_label=Team._meta.app_label,
            content_type__model=Team._meta.model_name,
            permission__codename="access_team",
            object_pk=Cast(OuterRef("pk"), CharField()),
        )
        .order_by()
        .values("content_type")
        .annotate(n=Count("user_id", distinct=True))
        .values("n")
    )
    return Coalesce(Subquery(members, output_field=IntegerField()), Value(0))


@extend_schema_view(
    list=extend_schema(summary=_("Teams you belong to (auditors: every team)")),
    retrieve=extend_schema(summary=_("One team")),
)
class TeamViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, FilteredViewSet):
    queryset = Team.objects.none()
    serializer_class = api.TeamSerializer
    action_perms = model_perms("crm", "team", READ_ACTIONS)

    def get_queryset(self) -> QuerySet[Team]:
        return selectors.teams_visible_to(self.request.user).annotate(member_count=_member_count())


@extend_schema_view(
    list=extend_schema(summary=_("Contacts of your teams, newest first")),
    retrieve=extend_schema(summary=_("One contact with its addresses and tags")),
    create=extend_schema(
        summary=_("Create a contact, optionally with addresses and tags"),
        request=api.ContactCreateInputSerializer,
        responses={201: api.ContactSerializer},
    ),
    update=extend_schema(
        summary=_("Change a contact"),
        request=api.ContactUpdateInputSerializer,
        responses=api.ContactSerializer,
    ),
    partial_update=extend_schema(
        summary=_("Change some fields of a contact"),
        request=api.ContactUpdateInputSerializer,
        responses=api.ContactSerializer,
    ),
    destroy=extend_schema(summary=_("Delete a contact with its addresses")),
)
class ContactViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    FilteredViewSet,
):
    queryset = Contact.objects.none()
    serializer_class = api.ContactSerializer
    filterset_class = filters.ContactFilter
    input_serializers: ClassVar[dict[str, type[serializers.BaseSerializer]]] = {
        "create": api.ContactCreateInputSerializer,
        "update": api.ContactUpdateInputSerializer,
        "partial_update": api.ContactUpdateInputSerializer,
        "bulk_tag": api.ContactBulkTagInputSerializer,
        "bulk_assign_team": api.ContactBulkAssignTeamInputSerializer,
    }
    action_perms = model_perms("crm", "contact", bulk_tag="change", bulk_assign_team="change")
    # Filters only: the order is the cursor's (no OrderingFilter).
    filter_backends: ClassVar[list] = [DjangoFilterBackend]

    def get_queryset(self) -> QuerySet[Contact]:
        return selectors.contacts_visible_to(self.request.user)

    def paginate_queryset(self, queryset: QuerySet[Contact]) -> list[Contact] | None:
        # A cursor page's addresses and tags come with it (ContactListSerializer then has
        # nothing left to load). Not with offset paging, which would compute them for every
        # row it skips.
        if isinstance(self.paginator, CursorPagination):
            queryset = selectors.contacts_with_listing(queryset)
        return super().paginate_queryset(queryset)

    def perform_create(self, serializer: serializers.BaseSerializer) -> None:
        data = dict(serializer.validated_data)
        points = [(point["channel"], point["address"]) for point in data.pop("points", [])]
        serializer.instance = services.contact_create(
            team=data.pop("team"), actor=self.request.user, points=points, **data
        )

    def perform_update(self, serializer: serializers.BaseSerializer) -> None:
        serializer.instance = services.contact_update(
            contact=serializer.instance, actor=self.request.user, **serializer.validated_data
        )

    def perform_destroy(self, instance: Contact) -> None:
        services.contact_delete(contact=instance, actor=self.request.user)

    @extend_schema(
        summary=_("Add a tag to many contacts of its team"),
        request=api.ContactBulkTagInputSerializer,
        responses=api.BulkResultSerializer,
    )
    @action(detail=False, methods=["post"], url_path="bulk-tag")
    def bulk_tag(self, request: Request) -> Response:
        data = self.validated_input(request)
        count = services.contacts_tag(
            contacts=data["contacts"], tag=data["tag"], actor=request.user
        )
        return Response({"count": count})

    @extend_schema(
        summary=_("Move contacts (with their addresses) to another of your teams"),
        request=api.ContactBulkAssignTeamInputSerializer,
        responses=api.BulkResultSerializer,
    )
    @action(detail=False, methods=["post"], url_path="bulk-assign-team")
    def bulk_assign_team(self, request: Request) -> Response:
        data = self.validated_input(request)
        count = services.contacts_assign_team(
            contacts=data["contacts"], team=data["team"], actor=request.user
        )
        return Response({"count": count})


@extend_schema_view(
    list=extend_schema(summary=_("Addresses of your teams' contacts")),
    retrieve=extend_schema(summary=_("One address")),
    create=extend_schema(
        summary=_("Add an address; it is normalised (E.164, lower-case e-mail)"),
        request=api.ContactPointSerializer,
        responses={201: api.ContactPointSerializer},
    ),
    update=extend_schema(
        summary=_("Change an address"),
        request=api.ContactPointUpdateInputSerializer,
        responses=api.ContactPointSerializer,
    ),
    partial_update=extend_schema(
        summary=_("Change an address"),
        request=api.ContactPointUpdateInputSerializer,
        responses=api.ContactPointSerializer,
    ),
    destroy=extend_schema(summary=_("Remove an address")),
)
class ContactPointViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    FilteredViewSet,
):
    queryset = ContactPoint.objects.none()
    serializer_class = api.ContactPointSerializer
    filterset_class = filters.ContactPointFilter
    input_serializers: ClassVar[dict[str, type[serializers.BaseSerializer]]] = {
        "update": api.ContactPointUpdateInputSerializer,
        "partial_update": api.ContactPointUpdateInputSerializer,
    }
    action_perms = model_perms("crm", "contactpoint")

    def get_queryset(self) -> QuerySet[ContactPoint]:
        return selectors.contact_points_visible_to(self.request.user)

    def perform_create(self, serializer: serializers.BaseSerializer) -> None:
        data = serializer.validated_data
        serializer.instance = services.contact_point_add(
            contact=data["contact"],
            channel=data["channel"],
            address=data["address"],
            is_primary=data.get("is_primary", True),
            actor=self.request.user,
        )

    def perform_update(self, serializer: serializers.BaseSerializer) -> None:
        serializer.instance = services.contact_point_update(
            point=serializer.instance, actor=self.request.user, **serializer.validated_data
        )

    def perform_destroy(self, instance: ContactPoint) -> None:
        services.contact_point_remove(point=instance, actor=self.request.user)


@extend_schema_view(
    list=extend_schema(summary=_("Tags of your teams")),
    retrieve=extend_schema(summary=_("One tag")),
    create=extend_schema(summary=_("Create a tag in one of your teams")),
    destroy=extend_schema(summary=_("Delete a tag; contacts lose it")),
)
class TagViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    FilteredViewSet,
):
    queryset = Tag.objects.none()
    serializer_class = api.TagSerializer
    filterset_class = filters.TagFilter
    action_perms = model_perms("crm", "tag", ("list", "retrieve", "create", "destroy"))

    def get_queryset(self) -> QuerySet[Tag]:
        return selectors.tags_visible_to(self.request.user)

    def perform_create(self, serializer: serializers.BaseSerializer) -> None:
        data = serializer.validated_data
        serializer.instance = services.tag_create(
            team=data["team"], name=data["name"], actor=self.request.user
        )

    def perform_destroy(self, instance: Tag) -> None:
        services.tag_delete(tag=instance, actor=self.request.user)


@extend_schema_view(
    list=extend_schema(summary=_("Segments of your teams")),
    retrieve=extend_schema(summary=_("One segment")),
    create=extend_schema(summary=_("Create a segment; its rules are checked first")),
    update=extend_schema(
        summary=_("Change a segment"),
        request=api.SegmentUpdateInputSerializer,
        responses=api.SegmentSerializer,
    ),
    partial_update=extend_schema(
        summary=_("Change some fields of a segment"),
        request=api.SegmentUpdateInputSerializer,
        responses=api.SegmentSerializer,
    ),
    destroy=extend_schema(summary=_("Delete a segment")),
)
class SegmentViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    FilteredViewSet,
):
    queryset = Segment.objects.none()
    serializer_class = api.SegmentSerializer
    filterset_class = filters.SegmentFilter
    input_serializers: ClassVar[dict[str, type[serializers.BaseSerializer]]] = {
        "update": api.SegmentUpdateInputSerializer,
        "partial_update": api.SegmentUpdateInputSerializer,
        "preview": api.SegmentPreviewInputSerializer,
    }
    action_perms = model_perms("crm", "segment", resolve="view", preview="view")

    def get_queryset(self) -> QuerySet[Segment]:
        return selectors.segments_visible_to(self.request.user)

    def perform_create(self, serializer: serializers.BaseSerializer) -> None:
        data = serializer.validated_data
        serializer.instance = services.segment_create(
            team=data["team"],
            name=data["name"],
            rules=data["rules"],
            description=data.get("description", ""),
            actor=self.request.user,
        )

    def perform_update(self, serializer: serializers.BaseSerializer) -> None:
        serializer.instance = services.segment_update(
            segment=serializer.instance, actor=self.request.user, **serializer.validated_data
        )

    def perform_destroy(self, instance: Segment) -> None:
        services.segment_delete(segment=instance, actor=self.request.user)

    def _preview_response(self, segment: Segment) -> Response:
        preview = selectors.segment_preview(segment)
        # The sample is serialised in full (addresses and tags: ContactListSerializer).
        prefetch_related_objects(preview["sample"], "team")
        return Response(
            api.SegmentResolveSerializer(preview, context=self.get_serializer_context()).data
        )

    @extend_schema(
        summary=_("How many contacts the segment matches now, with a sample"),
        responses=api.SegmentResolveSerializer,
    )
    @action(detail=True, methods=["get"])
    def resolve(self, request: Request, pk: str | None = None) -> Response:
        return self._preview_response(self.get_object())

    @extend_schema(
        summary=_("Try rules without saving a segment"),
        request=api.SegmentPreviewInputSerializer,
        responses=api.SegmentResolveSerializer,
    )
    @action(detail=False, methods=["post"])
    def preview(self, request: Request) -> Response:
        data = self.validated_input(request)
        # An unsaved segment: nothing is written, the rules are checked by the selector.
        return self._preview_response(Segment(team=data["team"], rules=data["rules"]))
