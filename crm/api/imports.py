"""Contact imports over the API: upload (which starts the import), progress, rejected rows."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.http import FileResponse, Http404
from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.pagination import CursorPagination
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse

from crm import selectors
from crm.api.base import TeamScopedViewSet, model_perms
from crm.imports import contact_import_create
from crm.models import ContactImport, ImportRejection, Team


class ContactImportSerializer(serializers.ModelSerializer):
    progress_percent = serializers.IntegerField(read_only=True)
    report_url = serializers.SerializerMethodField()

    class Meta:
        model = ContactImport
        fields = (
            "id",
            "team",
            "original_name",
            "status",
            "columns",
            "unknown_columns",
            "total_rows",
            "processed_rows",
            "progress_percent",
            "created_count",
            "updated_count",
            "unchanged_count",
            "rejected_count",
            "warning_count",
            "report_url",
            "error",
            "created_by",
            "created_at",
            "started_at",
            "finished_at",
        )
        read_only_fields = fields

    def get_report_url(self, obj: ContactImport) -> str | None:
        if not obj.report_file:
            return None
        return reverse("contact-import-report", args=[obj.pk], request=self.context.get("request"))


class ContactImportCreateInputSerializer(serializers.Serializer):
    team = serializers.PrimaryKeyRelatedField(queryset=Team.objects.none())
    file = serializers.FileField(
        help_text=_("CSV or XLSX with a header row; at most IMPORT_MAX_UPLOAD_MB megabytes.")
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        request = self.context.get("request")
        if request is not None:
            # Teams outside the caller's membership do not exist for this input.
            self.fields["team"].queryset = selectors.teams_writable_by(request.user)


class ImportRejectionSerializer(serializers.ModelSerializer):
    class Meta:
        model = ImportRejection
        fields = ("id", "line_number", "reason", "raw", "is_warning")
        read_only_fields = fields


class RejectionPagination(CursorPagination):
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000
    ordering = ("line_number", "id")


class ContactImportViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, TeamScopedViewSet
):
    """Imports are created by uploading a file and then run on their own; never edited."""

    serializer_class = ContactImportSerializer
    parser_classes = (MultiPartParser, FormParser)
    filterset_fields = ("status", "team")
    ordering_fields = ("created_at",)
    action_perms = model_perms(
        "crm", "contactimport", ("list", "retrieve", "create"), report="view"
    ) | {"rejections": "crm.view_importrejection"}

    def get_queryset(self) -> QuerySet[ContactImport]:
        # Outside the caller's teams is 404, before any permission check runs.
        return selectors.imports_visible_to(self.request.user)

    @extend_schema(request=ContactImportCreateInputSerializer, responses=ContactImportSerializer)
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        data = ContactImportCreateInputSerializer(
            data=request.data, context=self.get_serializer_context()
        )
        data.is_valid(raise_exception=True)
        contact_import = contact_import_create(
            team=data.validated_data["team"],
            uploaded_file=data.validated_data["file"],
            actor=request.user,
            start=True,
        )
        # With eager Celery the import has already run; show its state as it is now.
        contact_import.refresh_from_db()
        return Response(self.get_serializer(contact_import).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses=ImportRejectionSerializer(many=True))
    @action(
        detail=True,
        methods=["get"],
        serializer_class=ImportRejectionSerializer,
        pagination_class=RejectionPagination,
        filterset_fields=(),
        ordering_fields=(),
    )
    def rejections(self, request: Request, pk: str | None = None) -> Response:
        contact_import = self.get_object()
        page = self.paginate_queryset(contact_import.rejections.order_by("line_number", "id"))
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(responses={(200, "text/csv"): bytes})
    @action(detail=True, methods=["get"])
    def report(self, request: Request, pk: str | None = None) -> FileResponse:
        contact_import = self.get_object()
        if not contact_import.report_file:
            raise Http404
        return FileResponse(
            contact_import.report_file.open("rb"),
            as_attachment=True,
            filename=f"import-{contact_import.pk}-rejected-rows.csv",
            content_type="text/csv",
        )
