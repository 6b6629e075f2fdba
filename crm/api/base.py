"""Building blocks every app's API uses: scoping, role permissions, paging, errors."""

from __future__ import annotations

from typing import Any, ClassVar

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import QuerySet
from django.utils.translation import gettext as _
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework import exceptions, permissions, serializers, status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from crm.api.idempotency import IdempotentPostMixin
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


# The model permission each standard action needs, by verb (see model_perms).
CRUD_VERBS: dict[str, str] = {
    "list": "view",
    "retrieve": "view",
    "create": "add",
    "update": "change",
    "partial_update": "change",
    "destroy": "delete",
}
CRUD_ACTIONS = tuple(CRUD_VERBS)
READ_ACTIONS = ("list", "retrieve")


def model_perms(
    app_label: str, model_name: str, actions: tuple[str, ...] = CRUD_ACTIONS, **extra: str
) -> dict[str, str]:
    """`action_perms` for a viewset of one model: the standard `actions` with their usual verb,
    and `extra` custom actions with the verb they need.

    `model_perms("crm", "tag", ("list", "create"), merge="change")` gives
    `{"list": "crm.view_tag", "create": "crm.add_tag", "merge": "crm.change_tag"}`.
    """
    verbs = {action: CRUD_VERBS[action] for action in actions} | extra
    return {action: f"{app_label}.{verb}_{model_name}" for action, verb in verbs.items()}


class TeamScopedViewSet(IdempotentPostMixin, viewsets.GenericViewSet):
    """Base ViewSet: authenticated, role-checked per action, queryset scoped to the caller;
    every POST honours an `Idempotency-Key` header.

    Actions that take input other than the object's own shape name their serializer in
    `input_serializers`; every other action reads and writes with `serializer_class`.
    """

    permission_classes: ClassVar[list] = [permissions.IsAuthenticated, ActionPermission]
    action_perms: ClassVar[dict[str, str]] = {}
    input_serializers: ClassVar[dict[str, type[serializers.BaseSerializer]]] = {}

    def get_queryset(self) -> QuerySet:
        raise NotImplementedError("Scope the queryset to the caller with a selector.")

    def get_serializer_class(self) -> type[serializers.BaseSerializer]:
        return self.input_serializers.get(self.action, self.serializer_class)

    def validated_input(self, request: Request) -> dict[str, Any]:
        """The request body checked with the action's serializer (invalid input is a 400)."""
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return dict(serializer.validated_data)


class FilteredViewSet(TeamScopedViewSet):
    """Filters but no client ordering: cursor paging needs a fixed order."""

    filter_backends: ClassVar[list] = [DjangoFilterBackend]
    # `queryset` only names the model (for the schema); get_queryset() scopes every request.
    queryset: QuerySet


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DomainErrors become 400 (or their own status) with a code and field errors."""
    if isinstance(exc, DomainError):
        body: dict[str, Any] = {
            "code": exc.code,
            "detail": exc.message,
            **exc.field_errors(),
            **exc.response_data(),
        }
        return Response(body, status=exc.status_code)
    if isinstance(exc, DjangoValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else {"detail": exc.messages}
        exc = exceptions.ValidationError(detail=detail)
    if isinstance(exc, OverflowError):
        # An id or number in the query larger than the database can hold (SQLite raises before
        # querying): the caller's input is wrong, nothing was read or written.
        exc = exceptions.ValidationError(detail={"detail": [_("A number is out of range.")]})
    response = drf_exception_handler(exc, context)
    if (
        response is not None
        and response.status_code == status.HTTP_400_BAD_REQUEST
        and isinstance(response.data, dict)
    ):
        response.data.setdefault("code", "invalid")
    return response
