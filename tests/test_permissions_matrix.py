"""The denial matrix for every endpoint under /api/v1/, found by walking config.urls.

Nothing here names a resource: each app's router adds its routes to config.urls, and every
route it registers is checked automatically:

- each routed action names its permission in the viewset's `action_perms` (a new endpoint
  without one fails here, not in production);
- anonymous callers are refused on every route and method;
- an outsider (a marketing user of `other_team`) lists none of `team`'s objects, and gets 404 on
  any detail route of one of them (403 where their role lacks the permission), changing nothing;
- the auditor lists every team's objects (except on PERSONAL_LISTS such as the review queue).

To check scoping the matrix needs one object of `team` per resource. It uses, in order: a maker
in OBJECT_MAKERS, a factory from tests.factories for the model, or `Model.objects.create(team=)`
with required foreign keys filled from factories. Ledger rows are never made by the ORM: give
them a maker that calls the real service. Add a maker or factory when a new resource needs one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import factory
import pytest
from django.apps import apps
from django.contrib.auth.models import Permission
from django.db import models, transaction
from django.urls import URLPattern, URLResolver, reverse
from rest_framework.request import Request
from rest_framework.test import APIClient, APIRequestFactory

import config.urls
import tests.factories
from crm.api.base import TeamScopedViewSet
from crm.models import Team
from tests.factories import ContactFactory

pytestmark = pytest.mark.django_db

API_PREFIX = "api/v1/"
SAFE_METHODS = {"get", "head", "options"}


# "app_label.model" -> callable(team) returning a saved object owned by `team`. Use this for
# models that must be made through a service (ledgers) or need more than a factory gives.
def _consent_event(team: Team) -> models.Model:
    from tests.consent.helpers import grant_consent
    from tests.factories import PurposeFactory

    return grant_consent(ContactFactory(team=team), PurposeFactory(team=team))


def _consent(team: Team) -> models.Model:
    event = _consent_event(team)
    return apps.get_model("consent", "Consent").objects.get(contact=event.contact)


def _message_template(team: Team) -> models.Model:
    from approvals.services import template_create

    return template_create(
        team=team,
        name="matrix_template",
        channel="email",
        category="utility",
        language="de",
        actor=None,
    )


def _template_version(team: Team) -> models.Model:
    from approvals.services import template_version_create

    return template_version_create(
        template=_message_template(team),
        actor=None,
        subject="Programm",
        body="Hallo {{ first_name }}",
    )


def _approval_policy(team: Team) -> models.Model:
    from tests.approvals.review_helpers import three_stage_policy

    return three_stage_policy(team)


def _review_decision(team: Team) -> models.Model:
    from approvals.services import template_version_submit
    from crm import roles
    from crm.services import team_member_add
    from tests.approvals.review_helpers import decide, group
    from tests.factories import UserFactory

    _approval_policy(team)
    reviewer = UserFactory()
    reviewer.groups.add(group(roles.REVIEWER_EDITORIAL))
    team_member_add(team=team, user=reviewer)
    version = template_version_submit(version=_template_version(team), actor=None)
    return decide(version, reviewer)


def _message(team: Team) -> models.Model:
    from tests.factories import ChannelAccountFactory
    from tests.messaging.helpers import reachable_contact, receive_text

    return receive_text(ChannelAccountFactory(team=team), reachable_contact(team))


def _conversation(team: Team) -> models.Model:
    return _message(team).conversation


def _conversation_event(team: Team) -> models.Model:
    return _message(team).events.get()


def _automation_rule(team: Team) -> models.Model:
    from messaging.services import automation_rule_create

    return automation_rule_create(
        team=team, actor=None, name="Matrix", keywords=["MATRIX"], action="hand_off"
    )


def _conversation_export(team: Team) -> models.Model:
    from django.conf import settings

    from messaging.services.exports import conversations_export

    _message(team)
    return conversations_export(
        actor=None, out_dir=settings.MEDIA_ROOT / "exports" / "matrix", team_ids=[team.pk]
    )


def _webhook_subscription(team: Team) -> models.Model:
    from messaging.models import WebhookSubscription
    from tests.factories import UserFactory

    return WebhookSubscription.objects.create(
        team=team,
        url="https://hooks.example.com/",
        event_types=["message.received"],
        owner=UserFactory(),
    )


OBJECT_MAKERS: dict[str, Callable[[Team], models.Model]] = {
    "consent.consentevent": _consent_event,
    "consent.consent": _consent,
    "approvals.messagetemplate": _message_template,
    "approvals.templateversion": _template_version,
    "approvals.approvalpolicy": _approval_policy,
    "approvals.reviewdecision": _review_decision,
    "messaging.message": _message,
    "messaging.conversation": _conversation,
    "messaging.conversationevent": _conversation_event,
    "messaging.automationrule": _automation_rule,
    "messaging.conversationexport": _conversation_export,
    "messaging.webhooksubscription": _webhook_subscription,
}

# Lists of what the caller may act on rather than what they may read: the auditor's is empty
# by design (the review queue holds only versions the caller may decide now).
PERSONAL_LISTS = {"review-queue-list"}


@dataclass(frozen=True)
class Route:
    name: str
    viewset: type
    actions: dict[str, str]  # HTTP method -> action name
    kwargs: tuple[str, ...]  # URL kwargs (the lookup for detail routes)

    @property
    def is_detail(self) -> bool:
        return bool(self.kwargs)

    def url(self, pk: Any = 1) -> str:
        return reverse(self.name, kwargs=dict.fromkeys(self.kwargs, pk))

    def __str__(self) -> str:
        return self.name


def _strip(regex: str) -> str:
    return regex.removeprefix("^").removesuffix("$")


def _collect_routes() -> list[Route]:
    routes: list[Route] = []

    def walk(patterns: list, prefix: str) -> None:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, prefix + _strip(str(pattern.pattern)))
            elif isinstance(pattern, URLPattern):
                callback = pattern.callback
                viewset = getattr(callback, "cls", None)
                actions = getattr(callback, "actions", None)
                if prefix.startswith(API_PREFIX) and viewset is not None and actions:
                    routes.append(
                        Route(
                            name=pattern.name,
                            viewset=viewset,
                            actions={m: a for m, a in actions.items() if m != "head"},
                            kwargs=tuple(pattern.pattern.regex.groupindex),
                        )
                    )

    walk(config.urls.urlpatterns, "")
    return routes


ROUTES = _collect_routes()
LIST_ROUTES = [route for route in ROUTES if route.actions.get("get") == "list"]
DETAIL_CALLS = [(route, method) for route in ROUTES if route.is_detail for method in route.actions]
ACTIONS = sorted(
    {(route.viewset, action) for route in ROUTES for action in route.actions.values()},
    key=lambda pair: (pair[0].__name__, pair[1]),
)


def _model_of(viewset: type, user: Any) -> type[models.Model]:
    view = viewset()
    view.request = Request(APIRequestFactory().get("/"))
    view.request.user = user
    view.action, view.kwargs, view.format_kwarg = "list", {}, None
    return view.get_queryset().model


def _team_lookup(model: type[models.Model]) -> str:
    """The ORM path from `model` to the id of its owning Team."""
    if model is Team:
        return "pk"
    path = _path_to_team(model, hops=3)
    if path is None:
        pytest.fail(f"{model.__name__} has no path to a Team; the matrix cannot check its scope")
    return path or ""


def _path_to_team(model: type[models.Model], hops: int) -> str | None:
    """`team_id`, or the shortest chain of foreign keys (at most `hops`) ending in one."""
    fields = {field.name: field for field in model._meta.get_fields()}
    if isinstance(fields.get("team"), models.ForeignKey):
        return "team_id"
    if hops == 0:
        return None
    for field in model._meta.get_fields():
        if isinstance(field, models.ForeignKey) and _has_team(field.related_model):
            return f"{field.name}__team_id"
    for field in model._meta.get_fields():
        if isinstance(field, models.ForeignKey):
            rest = _path_to_team(field.related_model, hops - 1)
            if rest is not None:
                return f"{field.name}__{rest}"
    return None


def _has_team(model: type[models.Model]) -> bool:
    return any(field.name == "team" for field in model._meta.get_fields())


def _factory_for(model: type[models.Model]) -> type[factory.django.DjangoModelFactory] | None:
    for value in vars(tests.factories).values():
        if (
            isinstance(value, type)
            and issubclass(value, factory.django.DjangoModelFactory)
            and value._meta.model is model
        ):
            return value
    return None


def _make_owned_by(model: type[models.Model], team: Team) -> models.Model:
    if model is Team:
        return team
    label = model._meta.label_lower
    if label in OBJECT_MAKERS:
        return OBJECT_MAKERS[label](team)
    model_factory = _factory_for(model)
    if model_factory is not None:
        kwargs: dict[str, Any] = {}
        if _has_team(model):
            kwargs["team"] = team
        for name, declaration in model_factory._meta.declarations.items():
            if isinstance(declaration, factory.SubFactory):
                related = model._meta.get_field(name).related_model
                if _has_team(related):
                    kwargs[f"{name}__team"] = team
        return model_factory(**kwargs)
    try:
        with transaction.atomic():
            return model.objects.create(**_required_relations(model, team))
    except Exception as exc:  # whatever failed, the answer is the same: add a maker
        pytest.fail(
            f"Add a factory or an OBJECT_MAKERS entry for {label} to the permission matrix "
            f"(a bare create failed: {exc!r})"
        )
    return None


def _required_relations(model: type[models.Model], team: Team) -> dict[str, Any]:
    """`team`, plus a team-owned object from a factory for every other required foreign key."""
    kwargs: dict[str, Any] = {}
    for field in model._meta.concrete_fields:
        if not isinstance(field, models.ForeignKey) or field.null:
            continue
        if field.related_model is Team:
            kwargs[field.name] = team
            continue
        related_factory = _factory_for(field.related_model)
        if related_factory is not None and _has_team(field.related_model):
            kwargs[field.name] = related_factory(team=team)
    return kwargs


def _rows(response: Any) -> list[dict[str, Any]]:
    data = response.data
    return data["results"] if isinstance(data, dict) and "results" in data else list(data)


def _perm_exists(perm: str) -> bool:
    app_label, codename = perm.split(".", 1)
    return Permission.objects.filter(content_type__app_label=app_label, codename=codename).exists()


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
    assert _perm_exists(perm), f"{viewset.__name__}.{action} names unknown permission {perm!r}"


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
    model = _model_of(route.viewset, auditor)
    owned = _make_owned_by(model, team)

    auditor_rows = _rows(api_client_for(auditor).get(route.url()))
    if route.name not in PERSONAL_LISTS:
        assert owned.pk in {row["id"] for row in auditor_rows}, "the auditor should see it"

    response = api_client_for(outsider).get(route.url())
    if not outsider.has_perm(route.viewset.action_perms["list"]):
        assert response.status_code == 403
        return
    # Only a list the outsider may call needs a team to scope by (an export record has none).
    lookup = _team_lookup(model)
    assert response.status_code == 200
    seen = [row["id"] for row in _rows(response)]
    assert not model.objects.filter(pk__in=seen, **{lookup: team.pk}).exists()


@pytest.mark.parametrize(("route", "method"), DETAIL_CALLS, ids=str)
def test_outsider_cannot_reach_the_teams_objects(
    api_client_for, route, method, team, other_team, outsider, auditor
):
    model = _model_of(route.viewset, auditor)
    owned = _make_owned_by(model, team)
    before = model.objects.filter(pk=owned.pk).values().get()

    response = getattr(api_client_for(outsider), method)(route.url(owned.pk), {}, format="json")

    action = route.actions[method]
    expected = 404 if outsider.has_perm(route.viewset.action_perms[action]) else 403
    assert response.status_code == expected
    assert model.objects.filter(pk=owned.pk).values().get() == before
