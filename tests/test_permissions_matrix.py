"""The denial matrix for every endpoint under /api/v1/, found by walking config.urls.

Nothing here names a resource (see tests.authz_helpers for how routes are found and objects
made); every route the apps register is checked automatically:

- each routed action names its permission in the viewset's `action_perms` (a new endpoint
  without one fails here, not in production);
- anonymous callers are refused on every route and method;
- an outsider (a marketing user of `other_team`) lists none of `team`'s objects, and gets 404 on
  any detail route of one of them (403 where their role lacks the permission), changing nothing;
- the auditor lists every team's objects (except on PERSONAL_LISTS such as the review queue).

tests/test_authz_matrix.py extends this to every role, both teams and every method.
"""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from crm.api.base import TeamScopedViewSet
from tests.authz_helpers import (
    ACTIONS,
    DETAIL_CALLS,
    LIST_ROUTES,
    PERSONAL_LISTS,
    ROUTES,
    make_owned_by,
    model_of,
    perm_exists,
    rows,
    team_lookup,
)

pytestmark = pytest.mark.django_db


def test_the_matrix_finds_the_api():
    names = {route.name for route in ROUTES}
    assert {"contact-list", "contact-detail", "segment-resolve", "team-list"} <= names


@pytest.mark.parametrize(
    ("viewset", "action"), ACTIONS, ids=[f"{v.__name__}.{a}" for v, a in ACTIONS]
)
def test_every_routed_action_names_an_existing_permission(viewset, action):
    assert issubclass(viewset, TeamScopedViewSet), (
        f"{viewset.__name__} must subclass crm.api.base.TeamScopedViewSet"
    )
    perm = viewset.action_perms.get(action)
    assert perm, f"{viewset.__name__}.action_perms has no entry for the action {action!r}"
    assert perm_exists(perm), f"{viewset.__name__}.{action} names unknown permission {perm!r}"


@pytest.mark.parametrize(
    ("route", "method"),
    [(route, method) for route in ROUTES for method in route.actions],
    ids=str,
)
def test_anonymous_is_refused(route, method):
    response = getattr(APIClient(), method)(route.url())
    assert response.status_code in (401, 403)


@pytest.mark.parametrize("route", LIST_ROUTES, ids=str)
def test_outsider_lists_none_of_the_teams_objects(
    api_client_for, route, team, other_team, outsider, auditor
):
    model = model_of(route.viewset, auditor)
    owned = make_owned_by(model, team)

    auditor_rows = rows(api_client_for(auditor).get(route.url()))
    if route.name not in PERSONAL_LISTS:
        assert owned.pk in {row["id"] for row in auditor_rows}, "the auditor should see it"

    response = api_client_for(outsider).get(route.url())
    if not outsider.has_perm(route.viewset.action_perms["list"]):
        assert response.status_code == 403
        return
    # Only a list the outsider may call needs a team to scope by (an export record has none).
    lookup = team_lookup(model)
    assert response.status_code == 200
    seen = [row["id"] for row in rows(response)]
    assert not model.objects.filter(pk__in=seen, **{lookup: team.pk}).exists()


@pytest.mark.parametrize(("route", "method"), DETAIL_CALLS, ids=str)
def test_outsider_cannot_reach_the_teams_objects(
    api_client_for, route, method, team, other_team, outsider, auditor
):
    model = model_of(route.viewset, auditor)
    owned = make_owned_by(model, team)
    before = model.objects.filter(pk=owned.pk).values().get()

    response = getattr(api_client_for(outsider), method)(route.url(owned.pk), {}, format="json")

    action = route.actions[method]
    expected = 404 if outsider.has_perm(route.viewset.action_perms[action]) else 403
    assert response.status_code == expected
    assert model.objects.filter(pk=owned.pk).values().get() == before
