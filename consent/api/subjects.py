"""The data-subject request API: cases (list, retrieve, open) and their transitions as actions.

`POST /data-subject-requests/` opens a case, `verify-identity`, `execute` and `reject` move it
on, `result` downloads the access export. The queryset comes from a selector (another team's
case is a 404), each action names its permission (auditors read, every write is a 403), and
each write calls one service in consent.services.subjects.
"""

from __future__ import annotations

from typing import Any, ClassVar

import django_filters
from django.db.models import QuerySet
from django.http import FileResponse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import exceptions, mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from consent import selectors, services
from consent.models import DataSubjectRequest
from crm import selectors as crm_selectors
from crm.api.base import FilteredViewSet, model_perms
from crm.models import Contact


class DataSubjectRequestSerializer(serializers.ModelSerializer):
    is_overdue = serializers.BooleanField(read_only=True)
    has_result = serializers.SerializerMethodField()

    class Meta:
        model = DataSubjectRequest
        fields = [
            "id",
            "team",
            "contact",
            "kind",
            "status",
            "received_at",
            "due_at",
            "is_overdue",
            "identity_verified",
            "identity_method",
            "outcome",
            "has_result",
            "completed_at",
            "handled_by_label",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_has_result(self, case: DataSubjectRequest) -> bool:
        return bool(case.result_file)


class DataSubjectRequestCreateInputSerializer(serializers.Serializer):
    contact = serializers.IntegerField(min_value=1, help_text=_("Id of a contact of your team."))
    kind = serializers.ChoiceField(choices=DataSubjectRequest.Kind.choices)
    received_at = serializers.DateTimeField(
        required=False, help_text=_("When the request arrived (default: now).")
    )
    identity_method = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=200,
        help_text=_("How the identity was verified, if already done on intake."),
    )

    def to_representation(self, instance: Any) -> dict[str, Any]:
        return DataSubjectRequestSerializer(instance, context=self.context).data


class VerifyIdentityInputSerializer(serializers.Serializer):
    method = serializers.CharField(
        max_length=200, help_text=_("How the requester proved to be the data subject.")
    )


class RejectInputSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=2000)


class DataSubjectRequestFilter(django_filters.FilterSet):
    contact = django_filters.NumberFilter(field_name="contact_id", label=_("Contact id"))
    team = django_filters.NumberFilter(field_name="team_id", label=_("Team id"))
    kind = django_filters.ChoiceFilter(choices=DataSubjectRequest.Kind.choices, label=_("Kind"))
    status = django_filters.ChoiceFilter(
        choices=DataSubjectRequest.Status.choices, label=_("Status")
    )
    overdue = django_filters.BooleanFilter(
        method="filter_overdue", label=_("Open and past the due date")
    )

    class Meta:
        model = DataSubjectRequest
        fields = ["contact", "team", "kind", "status", "overdue"]

    def filter_overdue(
        self, queryset: QuerySet[DataSubjectRequest], name: str, value: bool | None
    ) -> QuerySet[DataSubjectRequest]:
        if value is None:
            return queryset
        overdue = selectors.data_subject_requests_overdue(queryset)
        return overdue if value else queryset.exclude(pk__in=overdue.values("pk"))


@extend_schema_view(
    list=extend_schema(summary=_("Data-subject requests of your teams (overdue ones first)")),
    retrieve=extend_schema(summary=_("One data-subject request")),
    create=extend_schema(
        summary=_("Open a data-subject request; it is due one month after receipt"),
        request=DataSubjectRequestCreateInputSerializer,
        responses={201: DataSubjectRequestSerializer},
    ),
)
class DataSubjectRequestViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, FilteredViewSet
):
    serializer_class = DataSubjectRequestSerializer
    filterset_class = DataSubjectRequestFilter
    input_serializers: ClassVar[dict[str, type[serializers.BaseSerializer]]] = {
        "create": DataSubjectRequestCreateInputSerializer,
        "verify_identity": VerifyIdentityInputSerializer,
        "reject": RejectInputSerializer,
    }
    action_perms = model_perms(
        "consent",
        "datasubjectrequest",
        ("list", "retrieve", "create"),
        result="view",
        verify_identity="change",
        execute="change",
        reject="change",
    )

    def get_queryset(self) -> QuerySet[DataSubjectRequest]:
        return selectors.data_subject_requests_visible_to(self.request.user)

    def _answer(self, case: DataSubjectRequest) -> Response:
        return Response(
            DataSubjectRequestSerializer(case, context=self.get_serializer_context()).data
        )

    def perform_create(self, serializer: serializers.BaseSerializer) -> None:
        data = dict(serializer.validated_data)
        visible = crm_selectors.visible_team_ids(self.request.user)
        contact = Contact.objects.filter(pk=data["contact"], team_id__in=visible).first()
        if contact is None:
            raise exceptions.NotFound(_("No such contact in your teams."))
        serializer.instance = services.dsr_open(
            contact=contact,
            kind=data["kind"],
            actor=self.request.user,
            received_at=data.get("received_at") or timezone.now(),
            identity_method=data.get("identity_method", ""),
        )

    @extend_schema(
        summary=_("Record how the requester's identity was verified"),
        request=VerifyIdentityInputSerializer,
        responses=DataSubjectRequestSerializer,
    )
    @action(detail=True, methods=["post"], url_path="verify-identity")
    def verify_identity(self, request: Request, pk: str | None = None) -> Response:
        case = self.get_object()
        data = self.validated_input(request)
        case = services.dsr_verify_identity(request=case, actor=request.user, method=data["method"])
        return self._answer(case)

    @extend_schema(
        summary=_("Carry out a verified request (export, erase, restrict, object) and close it"),
        request=None,
        responses=DataSubjectRequestSerializer,
    )
    @action(detail=True, methods=["post"])
    def execute(self, request: Request, pk: str | None = None) -> Response:
        case = self.get_object()
        return self._answer(services.dsr_execute(request=case, actor=request.user))

    @extend_schema(
        summary=_("Close a request without acting on it, with a reason"),
        request=RejectInputSerializer,
        responses=DataSubjectRequestSerializer,
    )
    @action(detail=True, methods=["post"])
    def reject(self, request: Request, pk: str | None = None) -> Response:
        case = self.get_object()
        data = self.validated_input(request)
        case = services.dsr_reject(request=case, actor=request.user, reason=data["reason"])
        return self._answer(case)

    @extend_schema(
        summary=_("Download the access export (JSON) of a completed access request"),
        responses={
            (status.HTTP_200_OK, "application/json"): OpenApiResponse(OpenApiTypes.BINARY),
            status.HTTP_404_NOT_FOUND: OpenApiResponse(description=_("No export stored.")),
        },
    )
    @action(detail=True, methods=["get"])
    def result(self, request: Request, pk: str | None = None) -> FileResponse:
        case = self.get_object()
        if not case.result_file:
            raise exceptions.NotFound(_("This request has no export."))
        return FileResponse(
            case.result_file.open("rb"),
            as_attachment=True,
            filename=f"data-subject-request-{case.pk}.json",
            content_type="application/json",
        )
