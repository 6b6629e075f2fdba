"""Admin building blocks: every ModelAdmin sees only the caller's teams and checks ownership."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.db.models import QuerySet
from django.http import HttpRequest

from crm import selectors
from crm.errors import DomainError


class TeamScopedAdminMixin:
    """Scope the changelist to visible teams and writes to member teams.

    `team_field` is the lookup from the model to its Team. Objects of other teams are not in
    the queryset at all, so their change pages answer 404 like the API does.
    """

    team_field = "team"

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        queryset = super().get_queryset(request)
        return queryset.filter(
            **{f"{self.team_field}__in": selectors.visible_team_ids(request.user)}
        )

    def _team_id_of(self, obj: Any) -> int | None:
        value: Any = obj
        for part in self.team_field.split("__"):
            value = getattr(value, part if part != "team" else "team_id", None)
            if value is None:
                return None
        return value

    def _may_write(self, request: HttpRequest, obj: Any, verb: str) -> bool:
        opts = self.model._meta
        perm = f"{opts.app_label}.{verb}_{opts.model_name}"
        if not request.user.has_perm(perm):
            return False
        if obj is None:
            return bool(selectors.member_team_ids(request.user))
        team_id = self._team_id_of(obj)
        return team_id is not None and team_id in selectors.member_team_ids(request.user)

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return self._may_write(request, None, "add")

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._may_write(request, obj, "change")

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._may_write(request, obj, "delete")

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "team":
            kwargs["queryset"] = selectors.teams_writable_by(request.user)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


def report_domain_error(request: HttpRequest, error: DomainError) -> None:
    """Show a refused service call as an admin message instead of a server error."""
    messages.error(request, error.message)


class ReadOnlyAdminMixin:
    """For ledgers and logs: viewable by whoever may view them, never changed in admin."""

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
