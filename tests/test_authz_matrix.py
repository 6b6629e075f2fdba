"""The object-level authorisation matrix (OWASP API1): every route, method, role and team.

For each /api/v1/ route (found by walking config.urls, see tests.authz_helpers) one test makes an
object of `team` and one of `other_team`, then calls every method of the route as each role of
crm/roles.py and as a team member without a role. The expected status is derived from the grants
in crm/roles.py and the viewset's `action_perms` alone, never from the code under test:

- the role lacks the action's permission: 403, whatever team the object belongs to (the role
  check runs before the lookup, as in tests/test_permissions_matrix.py);
- the role holds it and may see the object's team (a member, or a role reading every team): a
  success or an input error (2xx, 400, 409, 415, 422), never 401/403/404;
- the role holds it but the object is another team's: 404;
- a list never names the other team's object unless the role reads every team (then it must),
  and names the own team's one (except PERSONAL_LISTS);
- a refused request (403/404) changes no row count and neither object's fields.

Every request runs in a savepoint rolled back afterwards, so all callers meet the same world and
one test per route covers every role.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.core.files.base import ContentFile
from django.db import models, transaction

from crm import roles, selectors
from crm.models import Team
from tests.authz_helpers import (
    PERSONAL_LISTS,
    ROUTES,
    Route,
    make_owned_by,
    model_of,
    rows,
    table_counts,
)

pytestmark = pytest.mark.django_db

NO_ROLE = "no_role"
CALLERS = (*roles.ALL_ROLES, NO_ROLE)
READS_EVERY_TEAM = "crm.view_all_teams"
# 415: the body is not multipart (an upload); the request got past authorisation.
SUCCESS_OR_INVALID = {400, 409, 415, 422}
REFUSED = {403, 404}


@cache
def granted(role: str) -> frozenset[str]:
    """The permissions crm/roles.py gives `role` (the auditor also reads its audited apps)."""
    perms = set(roles.ROLE_PERMISSIONS.get(role, ()))
    if role == roles.AUDITOR:
        perms |= {perm for perm in _all_perms() if _is_audited_read(perm)}
    return frozenset(perms)


def _all_perms() -> set[str]:
    return {
        f"{app}.{codename}"
        for app, codename in Permission.objects.values_list("content_type__app_label", "codename")
    }


def _is_audited_read(perm: str) -> bool:
    app, codename = perm.split(".", 1)
    return app in roles.AUDITED_APPS and codename.startswith("view_")


def expected_status(role: str, perm: str, sees_team: bool) -> int | None:
    """403 or 404 for a refusal; None for "allowed": any success or validation answer."""
    if perm not in granted(role):
        return 403
    return None if sees_team else 404


# Routes whose allowed call needs more than the object (a file, an assignment): prepare each
# team's object and return the URL kwargs other than its pk. Without this those calls
# answer 404 for a missing sub-resource, indistinguishable from a scoping 404.
def _with_report_file(owned: models.Model, callers: dict[str, Any]) -> dict[str, Any]:
    owned.report_file.save("rejected.csv", ContentFile(b"row,reason\n"))
    return {}


def _with_result_file(owned: models.Model, callers: dict[str, Any]) -> dict[str, Any]:
    owned.result_file.save("result.json", ContentFile(b"{}"))
    return {}


def _with_assigned_reviewer(owned: models.Model, callers: dict[str, Any]) -> dict[str, Any]:
    from approvals.services import template_reviewer_assign

    reviewer = callers[roles.REVIEWER_LEGAL]
    template_reviewer_assign(template=owned, user=reviewer, actor=None)
    return {"user_id": reviewer.pk}


def _first_export_file(owned: models.Model, callers: dict[str, Any]) -> dict[str, Any]:
    from messaging.services.export_storage import export_files

    return {"name": export_files(owned)[0].name}


PREPARE: dict[str, Callable[[models.Model, dict[str, Any]], dict[str, Any]]] = {
    "contact-import-report": _with_report_file,
    "data-subject-request-result": _with_result_file,
    "message-template-reviewer-remove": _with_assigned_reviewer,
    "conversation-export-file": _first_export_file,
}


@pytest.fixture
def callers(make_user, team) -> dict[str, Any]:
    """One user per role, each a member of `team`, except the auditor who belongs to none."""
    users = {
        role: make_user(role, role, None if role == roles.AUDITOR else team)
        for role in CALLERS[:-1]
    }
    users[NO_ROLE] = make_user(NO_ROLE, None, team)
    return users


def _sees(role: str, user: Any, team: Team) -> bool:
    return READS_EVERY_TEAM in granted(role) or team.pk in selectors.member_team_ids(user)


@contextmanager
def _rolled_back() -> Iterator[None]:
    with transaction.atomic():
        yield
        transaction.set_rollback(True)


def _snapshot(model: type[models.Model], objects: list[models.Model]) -> tuple[Any, ...]:
    fields = [model.objects.filter(pk=obj.pk).values().first() for obj in objects]
    return (table_counts(), fields)


@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_each_role_gets_what_its_grants_say(route, callers, team, other_team, api_client_for):
    model = model_of(route.viewset, callers[roles.AUDITOR])
    own = foreign = None
    other_kwargs: dict[Any, dict[str, Any]] = {}
    # A route that names no team's object (agent-presence/me) needs none.
    if route.is_detail or "list" in route.actions.values():
        own = make_owned_by(model, team)
        foreign = make_owned_by(model, other_team)
        prepare = PREPARE.get(route.name, lambda obj, callers: {})
        other_kwargs = {obj.pk: prepare(obj, callers) for obj in (own, foreign)}
    watched = [obj for obj in (own, foreign) if obj is not None]
    problems: list[str] = []

    for role, user in callers.items():
        client = api_client_for(user)
        for method, action in route.actions.items():
            perm = route.viewset.action_perms[action]
            targets = [(own, team), (foreign, other_team)] if route.is_detail else [(None, None)]
            for target, target_team in targets:
                sees = target_team is None or _sees(role, user, target_team)
                expected = expected_status(role, perm, sees)
                url = route.url(target.pk, **other_kwargs[target.pk]) if target else route.url()
                with _rolled_back():
                    before = _snapshot(model, watched)
                    response = _call(client, method, url)
                    after = _snapshot(model, watched) if expected else before
                where = f"{role} {method.upper()} {url} ({action}, {perm})"
                status = response.status_code
                if expected is not None:
                    if status != expected:
                        problems.append(f"{where}: {status}, expected {expected}")
                    elif after != before:
                        problems.append(f"{where}: refused with {status} but changed the database")
                elif status >= 300 and status not in SUCCESS_OR_INVALID:
                    problems.append(f"{where}: {status}, expected success or a validation error")
                elif method == "get" and action == "list" and status == 200:
                    problems += _list_leaks(route, role, user, response, own, foreign, other_team)

    assert not problems, "\n".join(problems)


def _call(client: Any, method: str, url: str) -> Any:
    if method == "get":
        return client.get(url)
    return getattr(client, method)(url, {}, format="json")


def _list_leaks(
    route: Route,
    role: str,
    user: Any,
    response: Any,
    own: models.Model,
    foreign: models.Model,
    other_team: Team,
) -> list[str]:
    seen = {row["id"] for row in rows(response)}
    problems = []
    if foreign.pk in seen and not _sees(role, user, other_team):
        problems.append(f"{role} lists {route.name}: the other team's #{foreign.pk} leaks")
    if route.name in PERSONAL_LISTS:
        return problems
    if own.pk not in seen:
        problems.append(f"{role} lists {route.name}: the own team's #{own.pk} is missing")
    if foreign.pk not in seen and _sees(role, user, other_team):
        problems.append(f"{role} reads every team but misses #{foreign.pk} in {route.name}")
    return problems
