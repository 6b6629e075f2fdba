"""Building blocks every app's API uses: scoping, role permissions, paging, errors."""

from __future__ import annotations

from typing import Any, ClassVar

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import QuerySet
from rest_framework import exceptions, permissions, status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from crm.errors import DomainError


class ActionPermission(permissions.BasePermission):
    """The role check: each action names the model permission it needs (`action_perms`).

    Ownership is enforced separately: querysets are scoped to the caller's teams (so foreign
    objects are 404) and services refuse writes into teams the caller does not belong to.
    An action missing from `action_perms` is refused, so a new endpoint is closed by default.
    """

    def has_permission(self, request: Request, view: APIView) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False
        action = getattr(view, "action", None) or request.method.lower()
        perm = getattr(view, "action_perms", {}).get(action)
        if perm is None:
            return False
        return request.user.has_perm(perm)


class TeamScopedViewSet(viewsets.GenericViewSet):
    """Base ViewSet: authenticated, role-checked per action, queryset scoped to the caller."""

    permission_classes: ClassVar[list] = [permissions.IsAuthenticated, ActionPermission]
    action_perms: ClassVar[dict[str, str]] = {}

    def get_queryset(self) -> QuerySet:
        raise NotImplementedError("Scope the queryset to the caller with a selector.")


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DomainErrors become 400 (or their own status) with a code and field errors."""
    if isinstance(exc, DomainError):
        body: dict[str, Any] = {"code": exc.code, "detail": exc.message}
        if exc.field:
            body[exc.field] = [exc.message]
        return Response(body, status=exc.status_code)
    if isinstance(exc, DjangoValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else {"detail": exc.messages}
        exc = exceptions.ValidationError(detail=detail)
    response = drf_exception_handler(exc, context)
    if (
        response is not None
        and response.status_code == status.HTTP_400_BAD_REQUEST
        and isinstance(response.data, dict)
    ):
        response.data.setdefault("code", "invalid")
    return response
