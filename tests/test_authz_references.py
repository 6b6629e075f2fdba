"""Writes that name another team's objects (OWASP API1 on references, the other half of
tests/test_authz_matrix.py, which covers objects named in the URL).

For every /api/v1/ create and partial update, each writable related field of the serializer
(a team, a contact, a purpose, a template version, …) is sent once with an object of the
caller's own team and once with the same kind of object of another team. The caller is a
member of the own team holding the action's permission. The foreign reference must be refused
(a 400 that names the field, or 403/404) and change nothing; the own one must not be refused on
that field, which shows the refusal is about the team and not about the rest of the body.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Permission
from rest_framework import relations, serializers
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from crm import roles
from crm.models import Team
from tests.authz_helpers import (
    ROUTES,
    Route,
    has_team,
    make_owned_by,
    model_of,
    path_to_team,
    table_counts,
)
from tests.test_authz_matrix import READS_EVERY_TEAM, _rolled_back, granted

pytestmark = pytest.mark.django_db

WRITES = {"post": "create", "patch": "partial_update"}


def _writer(route: Route, action: str, make_user: Any, team: Any, prefix: str) -> Any:
    """A member of `team` holding the action's permission who reads its own teams only: a
    role's user, or (for writes no role is given, e.g. approval policies, which a
    compliance lead is granted individually) a user given that one permission."""
    perm = route.viewset.action_perms[action]
    for role in roles.ALL_ROLES:
        if perm in granted(role) and READS_EVERY_TEAM not in granted(role):
            return make_user(f"{prefix}-{role}", role, team)
    user = make_user(f"{prefix}-{perm}", None, team)
    app_label, codename = perm.split(".", 1)
    user.user_permissions.add(
        Permission.objects.get(content_type__app_label=app_label, codename=codename)
    )
    return type(user).objects.get(pk=user.pk)  # fresh permission cache


def _serializer(route: Route, action: str, user: Any) -> serializers.Serializer:
    view = route.viewset()
    view.request = Request(APIRequestFactory().post("/"))
    view.request.user = user
    view.action, view.kwargs, view.format_kwarg = action, {}, None
    return view.get_serializer_class()(context={"request": view.request, "view": view})


def _team_owned_references(serializer: serializers.Serializer) -> dict[str, tuple[type, bool]]:
    """Writable related fields whose objects belong to a team: name -> (model, many)."""
    found = {}
    for name, field in serializer.fields.items():
        many = isinstance(field, relations.ManyRelatedField)
        relation = field.child_relation if many else field
        if field.read_only or not isinstance(relation, relations.RelatedField):
            continue
        queryset = relation.get_queryset()
        model = queryset.model if queryset is not None else None
        if model is not None and (
            model is Team or has_team(model) or path_to_team(model, 3) is not None
        ):
            found[name] = (model, many)
    return found


def _reference_cases() -> list[tuple[Route, str]]:
    return [
        (route, method)
        for route in ROUTES
        for method, action in route.actions.items()
        if WRITES.get(method) == action
    ]


def _errors(response: Any) -> set[str]:
    body = response.json() if response.status_code == 400 else {}
    if isinstance(body, dict):
        fields = body.get("fields") or body.get("errors") or body
        if isinstance(fields, dict):
            return set(fields)
    return set()


@pytest.mark.parametrize(("route", "method"), _reference_cases(), ids=lambda v: str(v))
def test_a_write_naming_another_teams_object_is_refused(
    route, method, team, other_team, make_user, api_client_for
):
    action = WRITES[method]
    user = _writer(route, action, make_user, team, "writer")
    references = _team_owned_references(_serializer(route, action, user))
    target = None
    if route.is_detail:
        target = make_owned_by(model_of(route.viewset, user), team)
    url = route.url(target.pk) if target is not None else route.url()
    client = api_client_for(user)
    problems = []
    for name, (model, many) in references.items():
        own, foreign = make_owned_by(model, team), make_owned_by(model, other_team)
        for obj, must_refuse in ((foreign, True), (own, False)):
            value = [obj.pk] if many else obj.pk
            with _rolled_back():
                before = table_counts()
                response = getattr(client, method)(url, {name: value}, format="json")
                after = table_counts()
            where = f"{user} {method.upper()} {url} {name}={model.__name__}#{obj.pk}"
            refused_on_field = response.status_code in (403, 404) or name in _errors(response)
            if must_refuse and not refused_on_field:
                problems.append(
                    f"{where} (other team): {response.status_code} {response.content!r}"
                )
            elif must_refuse and after != before:
                problems.append(f"{where} (other team): refused but changed the database")
            elif not must_refuse and refused_on_field:
                problems.append(f"{where} (own team) refused: {response.content!r}")
    assert not problems, "\n".join(problems)


def test_the_reference_check_covers_the_writes_that_name_team_objects(make_user, team):
    """Guards the test above against silently checking nothing (e.g. a serializer rename)."""
    covered = set()
    for route, method in _reference_cases():
        action = WRITES[method]
        user = _writer(route, action, make_user, team, f"probe-{route.name}-{method}")
        for name in _team_owned_references(_serializer(route, action, user)):
            covered.add(f"{route.name} {name}")
    assert len(covered) >= 20, sorted(covered)
