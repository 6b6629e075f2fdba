"""Object-level authorisation in the admin, for every ModelAdmin in admin.site._registry.

For each registered model owned by a team (found like the API matrix finds it, see
tests.authz_helpers):

- a staff user of another team, holding every role but the auditor's (so only the team scope
  can stop them), cannot open the change page of `team`'s object (302, 403 or 404) nor save it;
- a staff member of `team` whose role lacks the change permission gets 403 on a POST to the
  change page (a custom read-only detail page may answer, but must change nothing);
- every admin action, forged with `_selected_action` naming `team`'s object, run by the
  other team's user, changes nothing.

Nothing a refused request does may change a row count or the object's fields.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group
from django.db import models
from django.test import Client, RequestFactory
from django.urls import reverse

from crm import roles
from tests.authz_helpers import make_owned_by, path_to_team, table_counts

pytestmark = pytest.mark.django_db

TEAM_OWNED_ADMINS = sorted(
    (
        (model, model_admin)
        for model, model_admin in admin.site._registry.items()
        if path_to_team(model, hops=3) is not None
    ),
    key=lambda pair: pair[0]._meta.label_lower,
)
IDS = [model._meta.label_lower for model, _admin in TEAM_OWNED_ADMINS]
NOT_REACHED = {302, 403, 404}
WITHOUT_AUDITOR = [role for role in roles.ALL_ROLES if role != roles.AUDITOR]


@pytest.fixture
def other_teams_staff(make_user, other_team):
    """Staff of `other_team` with every role that is scoped to its teams."""
    user = make_user("other_staff", None, other_team, is_staff=True)
    user.groups.add(*Group.objects.filter(name__in=WITHOUT_AUDITOR))
    return user


def _change_url(model: type[models.Model], pk: Any) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_change", args=[pk])


def _changelist_url(model: type[models.Model]) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")


def _state(model: type[models.Model], obj: models.Model) -> tuple[Any, ...]:
    return (table_counts(), model.objects.filter(pk=obj.pk).values().first())


def _client(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.parametrize(("model", "model_admin"), TEAM_OWNED_ADMINS, ids=IDS)
def test_another_teams_staff_cannot_open_or_save_the_change_page(
    model, model_admin, team, other_teams_staff
):
    owned = make_owned_by(model, team)
    client = _client(other_teams_staff)  # logging in writes a session: count after it
    before = _state(model, owned)
    url = _change_url(model, owned.pk)

    assert client.get(url).status_code in NOT_REACHED
    assert client.post(url, {"name": "forged", "_save": "1"}).status_code in NOT_REACHED
    assert _state(model, owned) == before


@pytest.mark.parametrize(("model", "model_admin"), TEAM_OWNED_ADMINS, ids=IDS)
def test_roles_without_change_permission_cannot_save(model, model_admin, team, make_user):
    owned = make_owned_by(model, team)
    change_perm = f"{model._meta.app_label}.change_{model._meta.model_name}"
    # A custom change_view (an import's detail, a conversation's timeline) is a read-only page
    # whose POSTs are actions checked one by one: it may answer, but must change nothing.
    detail_page = type(model_admin).change_view is not admin.ModelAdmin.change_view
    problems = []
    for role in (*roles.ALL_ROLES, None):
        user = make_user(f"staff_{role}", role, None if role == roles.AUDITOR else team)
        if user.has_perm(change_perm):
            continue
        client = _client(user)
        before = _state(model, owned)
        status = client.post(_change_url(model, owned.pk), {"_save": "1"}).status_code
        if status != 403 and not detail_page:
            problems.append(f"{role}: POST to the change page answered {status}, expected 403")
        if _state(model, owned) != before:
            problems.append(f"{role}: a POST without change permission changed the database")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(("model", "model_admin"), TEAM_OWNED_ADMINS, ids=IDS)
def test_admin_actions_ignore_another_teams_objects(model, model_admin, team, other_teams_staff):
    owned = make_owned_by(model, team)
    request = RequestFactory().get(_changelist_url(model))
    request.user = other_teams_staff
    client = _client(other_teams_staff)
    before = _state(model, owned)

    for action in model_admin.get_actions(request):
        # Both steps of an action that asks first: the question and the confirmation.
        for confirm in ({}, {"post": "yes", "confirm": "yes"}):
            client.post(
                _changelist_url(model),
                {"action": action, "_selected_action": [owned.pk], "index": 0, **confirm},
            )
            assert _state(model, owned) == before, f"{action} changed another team's object"
