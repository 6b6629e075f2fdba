"""The approvals REST API: templates, versions, review decisions, the review queue, policies
and assigned reviewers.

Querysets come from `approvals.selectors` (another team's object is a 404), every action
names its permission in `action_perms` (auditors read everything and every write is a 403),
and every write calls one service. Versions are moved by actions (`submit`, `retire`), never
by a PATCH of `state`; review decisions are a ledger: list, retrieve and create only.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.db.models import QuerySet
from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from guardian.shortcuts import get_users_with_perms
from rest_framework import exceptions, mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from approvals import channel_rules, diffs, rendering, selectors, services
from approvals.api import filters
from approvals.api import serializers as api
from approvals.errors import RenderError
from approvals.models import (
    ApprovalPolicy,
    ApprovalStage,
    MessageTemplate,
    ReviewDecision,
    TemplateVersion,
)
from crm.api.base import FilteredViewSet, model_perms
from crm.api.pagination import DefaultCursorPagination
from crm.models import Channel


class DecidedAtCursorPagination(DefaultCursorPagination):
    """The review ledger pages by when decisions were made, newest first."""

    ordering = ("-decided_at", "-id")


class OldestFirstCursorPagination(DefaultCursorPagination):
    """The review queue: whatever waits longest comes first."""

    ordering = ("submitted_at", "id")


class ApprovalsViewSet(FilteredViewSet):
    """A method the viewset does not offer (PATCH on the ledger) is 405, not a role's 403."""

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        if self.action is None:
            raise exceptions.MethodNotAllowed(request.method)
        super().initial(request, *args, **kwargs)


def _assigned_reviewers(template: MessageTemplate) -> QuerySet:
    """Users holding the object permission approvals.review_messagetemplate on the template."""
    return get_users_with_perms(
        template,
        only_with_perms_in=[selectors.REVIEW_PERM.split(".", 1)[1]],
        with_superusers=False,
        with_group_users=False,
    ).order_by("username")


@extend_schema_view(
    list=extend_schema(summary=_("Message templates of your teams")),
    retrieve=extend_schema(summary=_("One message template")),
    create=extend_schema(
        summary=_("Create a template; marketing templates name the purpose they rely on")
    ),
    update=extend_schema(
        summary=_("Change a template (not its team)"),
        request=api.MessageTemplateUpdateInputSerializer,
        responses=api.MessageTemplateSerializer,
    ),
    partial_update=extend_schema(
        summary=_("Change some fields of a template"),
        request=api.MessageTemplateUpdateInputSerializer,
        responses=api.MessageTemplateSerializer,
    ),
)
class MessageTemplateViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    ApprovalsViewSet,
):
    """Templates are never deleted: versions point at them for good (use is_active)."""

    queryset = MessageTemplate.objects.none()
    serializer_class = api.MessageTemplateSerializer
    filterset_class = filters.MessageTemplateFilter
    input_serializers: ClassVar[dict[str, type[serializers.BaseSerializer]]] = {
        "update": api.MessageTemplateUpdateInputSerializer,
        "partial_update": api.MessageTemplateUpdateInputSerializer,
        "reviewer_add": api.ReviewerInputSerializer,
    }
    action_perms = model_perms(
        "approvals",
        "messagetemplate",
        ("list", "retrieve", "create", "update", "partial_update"),
        reviewers="view",
        reviewer_add="change",
        reviewer_remove="change",
    )

    def get_queryset(self) -> QuerySet[MessageTemplate]:
        return selectors.templates_visible_to(self.request.user)

    def get_serializer_context(self) -> dict[str, Any]:
        context = super().get_serializer_context()
        if self.action == "reviewer_add":
            context["template"] = self.get_object()
        return context

    def perform_create(self, serializer: serializers.BaseSerializer) -> None:
        data = serializer.validated_data
        serializer.instance = services.template_create(
            team=data["team"],
            name=data["name"],
            channel=data["channel"],
            category=data["category"],
            language=data["language"],
            purpose=data.get("purpose"),
            owner=data.get("owner"),
            actor=self.request.user,
        )

    def perform_update(self, serializer: serializers.BaseSerializer) -> None:
        serializer.instance = services.template_update(
            template=serializer.instance, actor=self.request.user, **serializer.validated_data
        )

    def _reviewers(self, template: MessageTemplate) -> Response:
        users = _assigned_reviewers(template)
        return Response(api.UserSummarySerializer(users, many=True).data)

    @extend_schema(
        summary=_("Reviewers assigned to this template"),
        responses=api.UserSummarySerializer(many=True),
    )
    @action(detail=True, methods=["get"])
    def reviewers(self, request: Request, pk: str | None = None) -> Response:
        return self._reviewers(self.get_object())

    @extend_schema(
        summary=_("Assign a reviewer of the template's team to this template"),
        request=api.ReviewerInputSerializer,
        responses=api.UserSummarySerializer(many=True),
    )
    @reviewers.mapping.post
    def reviewer_add(self, request: Request, pk: str | None = None) -> Response:
        template = self.get_object()
        data = self.validated_input(request)
        services.template_reviewer_assign(template=template, user=data["user"], actor=request.user)
        return self._reviewers(template)

    @extend_schema(
        summary=_("Take back a reviewer assignment"),
        parameters=[
            OpenApiParameter(
                "user_id", int, OpenApiParameter.PATH, description=_("Id of the assigned user.")
            )
        ],
        request=None,
        responses={204: OpenApiResponse(description=_("The assignment is gone."))},
    )
    @action(detail=True, methods=["delete"], url_path=r"reviewers/(?P<user_id>[0-9]+)")
    def reviewer_remove(
        self, request: Request, pk: str | None = None, user_id: str | None = None
    ) -> Response:
        template = self.get_object()
        user = _assigned_reviewers(template).filter(pk=user_id).first()
        if user is None:
            raise exceptions.NotFound(_("This user is not assigned to the template."))
        services.template_reviewer_remove(template=template, user=user, actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


def _preview(version: TemplateVersion) -> dict[str, Any]:
    """Sample rendering, SMS encoding and the channel rules' verdict, for one version."""
    rendered, render_error = None, None
    try:
        message = rendering.render_preview(version)
    except RenderError as error:
        render_error = {"code": error.code, "detail": error.message}
    else:
        rendered = {
            "subject": message.subject,
            "header": message.header,
            "body": message.body,
            "footer": message.footer,
            "buttons": message.buttons,
        }
    sms = None
    if version.template.channel == Channel.SMS:
        text = rendered["body"] if rendered else version.body
        encoding, segments = channel_rules.sms_encoding_and_segments(text)
        sms = {"encoding": encoding, "segments": segments, "characters": len(text)}
    violations = channel_rules.check_version(version)
    context = rendering.sample_context(version)
    return {
        "version": version.pk,
        "context": context,
        "rendered": rendered,
        "render_error": render_error,
        "sms": sms,
        "violations": [
            {"field": v.field, "message": str(v.message), "code": v.code} for v in violations
        ],
    }


@extend_schema_view(
    list=extend_schema(summary=_("Template versions of your teams, newest first")),
    retrieve=extend_schema(summary=_("One template version")),
    create=extend_schema(summary=_("Create a draft: the next version of a template")),
    update=extend_schema(
        summary=_("Change a draft (versions that left draft are immutable)"),
        request=api.TemplateVersionUpdateInputSerializer,
        responses=api.TemplateVersionSerializer,
    ),
    partial_update=extend_schema(
        summary=_("Change some fields of a draft"),
        request=api.TemplateVersionUpdateInputSerializer,
        responses=api.TemplateVersionSerializer,
    ),
)
class TemplateVersionViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    ApprovalsViewSet,
):
    """Versions are created, edited while draft, and moved through review by actions."""

    queryset = TemplateVersion.objects.none()
    serializer_class = api.TemplateVersionSerializer
    filterset_class = filters.TemplateVersionFilter
    input_serializers: ClassVar[dict[str, type[serializers.BaseSerializer]]] = {
        "update": api.TemplateVersionUpdateInputSerializer,
        "partial_update": api.TemplateVersionUpdateInputSerializer,
        "retire": api.RetireInputSerializer,
    }
    action_perms = model_perms(
        "approvals",
        "templateversion",
        ("list", "retrieve", "create", "update", "partial_update"),
        submit="submit",
        retire="change",
        preview="view",
        diff="view",
    )

    def get_queryset(self) -> QuerySet[TemplateVersion]:
        return selectors.versions_visible_to(self.request.user)

    def perform_create(self, serializer: serializers.BaseSerializer) -> None:
        data = dict(serializer.validated_data)
        serializer.instance = services.template_version_create(
            template=data.pop("template"), actor=self.request.user, **data
        )

    def perform_update(self, serializer: serializers.BaseSerializer) -> None:
        serializer.instance = services.template_version_update(
            version=serializer.instance, actor=self.request.user, **serializer.validated_data
        )

    def _answer(self, version: TemplateVersion) -> Response:
        version = self.get_queryset().get(pk=version.pk)
        return Response(
            api.TemplateVersionSerializer(version, context=self.get_serializer_context()).data
        )

    @extend_schema(
        summary=_("Submit a draft for review (channel rules are checked first)"),
        request=None,
        responses=api.TemplateVersionSerializer,
    )
    @action(detail=True, methods=["post"])
    def submit(self, request: Request, pk: str | None = None) -> Response:
        version = services.template_version_submit(version=self.get_object(), actor=request.user)
        return self._answer(version)

    @extend_schema(
        summary=_("Retire an approved version: it can never be sent again"),
        request=api.RetireInputSerializer,
        responses=api.TemplateVersionSerializer,
    )
    @action(detail=True, methods=["post"])
    def retire(self, request: Request, pk: str | None = None) -> Response:
        version = self.get_object()
        data = self.validated_input(request)
        version = services.template_version_retire(
            version=version, actor=request.user, comment=data.get("comment", "")
        )
        return self._answer(version)

    @extend_schema(
        summary=_("The version rendered with sample data, with the channel rules' verdict"),
        responses=api.VersionPreviewSerializer,
    )
    @action(detail=True, methods=["get"])
    def preview(self, request: Request, pk: str | None = None) -> Response:
        return Response(_preview(self.get_object()))

    @extend_schema(
        summary=_("What changed since the last approved version (unified diff)"),
        responses=api.VersionDiffSerializer,
    )
    @action(detail=True, methods=["get"])
    def diff(self, request: Request, pk: str | None = None) -> Response:
        version = self.get_object()
        previous = selectors.previous_approved(version)
        return Response(
            {
                "version": version.pk,
                "previous": previous.pk if previous else None,
                "previous_number": previous.number if previous else None,
                "diff": diffs.unified_diff(previous, version),
            }
        )


@extend_schema_view(
    list=extend_schema(summary=_("Review decisions on your teams' versions, newest first")),
    retrieve=extend_schema(summary=_("One review decision")),
    create=extend_schema(
        summary=_("Decide the stage a version waits for: approve, reject or request changes"),
        request=api.ReviewDecisionCreateInputSerializer,
        responses={201: api.ReviewDecisionSerializer},
    ),
)
class ReviewDecisionViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    ApprovalsViewSet,
):
    """The review ledger: append-only, hash-chained per version; no update, no delete."""

    queryset = ReviewDecision.objects.none()
    serializer_class = api.ReviewDecisionSerializer
    filterset_class = filters.ReviewDecisionFilter
    pagination_class = DecidedAtCursorPagination
    input_serializers: ClassVar[dict[str, type[serializers.BaseSerializer]]] = {
        "create": api.ReviewDecisionCreateInputSerializer,
    }
    action_perms = model_perms("approvals", "reviewdecision", ("list", "retrieve", "create"))

    def get_queryset(self) -> QuerySet[ReviewDecision]:
        return selectors.decisions_visible_to(self.request.user)

    def perform_create(self, serializer: serializers.BaseSerializer) -> None:
        data = serializer.validated_data
        # A version outside the caller's teams (and assignments) does not exist for them.
        version = selectors.versions_visible_to(self.request.user).filter(pk=data["version"])
        found = version.first()
        if found is None:
            raise exceptions.NotFound(_("No version with this id."))
        serializer.instance = services.review_decide(
            version=found,
            reviewer=self.request.user,
            decision=data["decision"],
            content_hash=data["content_hash"],
            comment=data.get("comment", ""),
        )


@extend_schema_view(
    list=extend_schema(
        summary=_("Versions waiting for your decision, oldest first"),
        description=_(
            "Only what your groups may decide now: your teams' (or assigned) templates, the "
            "stage a version waits for, never your own versions, never a second stage."
        ),
    ),
)
class ReviewQueueViewSet(mixins.ListModelMixin, ApprovalsViewSet):
    queryset = TemplateVersion.objects.none()
    serializer_class = api.ReviewQueueEntrySerializer
    filterset_class = filters.TemplateVersionFilter
    pagination_class = OldestFirstCursorPagination
    action_perms = model_perms("approvals", "templateversion", ("list",))

    def get_queryset(self) -> QuerySet[TemplateVersion]:
        return selectors.review_queue_for(self.request.user)

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        queryset = self.filter_queryset(self.get_queryset())
        page = self.paginate_queryset(queryset)
        stage_ids = {getattr(version, "current_stage_id", None) for version in page}
        names = dict(ApprovalStage.objects.filter(pk__in=stage_ids).values_list("pk", "name"))
        context = {**self.get_serializer_context(), "stage_names": names}
        data = api.ReviewQueueEntrySerializer(page, many=True, context=context).data
        return self.get_paginated_response(data)


@extend_schema_view(
    list=extend_schema(summary=_("Approval policies of your teams with their stages")),
    retrieve=extend_schema(summary=_("One approval policy")),
    create=extend_schema(summary=_("Create a team's policy for a category (administrators)")),
)
class ApprovalPolicyViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    ApprovalsViewSet,
):
    """Policies are read by everyone in the team; only administrators create them."""

    queryset = ApprovalPolicy.objects.none()
    serializer_class = api.ApprovalPolicySerializer
    filterset_class = filters.ApprovalPolicyFilter
    action_perms = model_perms("approvals", "approvalpolicy", ("list", "retrieve", "create"))

    def get_queryset(self) -> QuerySet[ApprovalPolicy]:
        return selectors.policies_visible_to(self.request.user)

    def perform_create(self, serializer: serializers.BaseSerializer) -> None:
        data = serializer.validated_data
        serializer.instance = services.policy_create(
            team=data["team"],
            category=data["category"],
            name=data["name"],
            stages=[
                (stage["name"], stage["group"], stage.get("approvals_required", 1))
                for stage in data["stages"]
            ],
            actor=self.request.user,
        )
