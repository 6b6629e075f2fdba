"""The API's routes and one object per resource owned by a given team, for authorisation tests.

Nothing here names a resource: each app's router adds its routes to config.urls, and
`collect_routes` finds every /api/v1/ route with its viewset and actions. To check scoping a
test needs one object of a team per resource. `make_owned_by` uses, in order: a maker in
OBJECT_MAKERS, a factory from tests.factories for the model, or `Model.objects.create(team=)`
with required foreign keys filled from factories. Ledger rows are never made by the ORM: give
them a maker that calls the real service. Add a maker or factory when a new resource needs one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import factory
import pytest
from django.apps import apps
from django.contrib.auth.models import Permission
from django.db import connection, models, transaction
from django.urls import URLPattern, URLResolver, reverse
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

import config.urls
import tests.factories
from crm.models import Team
from tests.factories import ContactFactory

API_PREFIX = "api/v1/"


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
        actor=None,
        out_dir=settings.MEDIA_ROOT / "exports" / f"matrix-{team.pk}",
        team_ids=[team.pk],
    )


def _suppression(team: Team) -> models.Model:
    from consent.services.ledger import suppression_add

    # An address is suppressed once for all teams: each team's entry needs its own.
    return suppression_add(address=f"matrix-{team.pk}@example.com", channel="email", team=team)


def _import_rejection(team: Team) -> models.Model:
    contact_import = make_owned_by(apps.get_model("crm", "ContactImport"), team)
    return contact_import.rejections.create(line_number=2, reason="matrix")


def _campaign_recipient(team: Team) -> models.Model:
    from crm.models import Channel
    from messaging.services import TemplateChoice, campaign_create, campaign_launch
    from tests.consent.helpers import grant_consent
    from tests.factories import ChannelAccountFactory, PurposeFactory
    from tests.messaging.helpers import reachable_contact, sendable_version

    channel = Channel.WHATSAPP
    purpose = PurposeFactory(team=team)
    grant_consent(reachable_contact(team, channel), purpose, channel)
    choice = TemplateChoice(
        account=ChannelAccountFactory(team=team, channel=channel),
        template_version=sendable_version(team, channel=channel, purpose=purpose),
    )
    campaign = campaign_create(team=team, actor=None, name="Matrix", templates=[choice])
    return campaign_launch(campaign=campaign, actor=None).recipients.get()


def _version_state_change(team: Team) -> models.Model:
    from approvals.services import template_version_submit

    _approval_policy(team)
    version = template_version_submit(version=_template_version(team), actor=None)
    return version.state_changes.latest("pk")


def _retention_policy(team: Team) -> models.Model:
    model = apps.get_model("consent", "RetentionPolicy")
    return model.objects.create(team=team, data_class=model.DataClass.values[0], keep_days=30)


def _retention_run(team: Team) -> models.Model:
    return _retention_policy(team).runs.create()


def _status_receipt(team: Team) -> models.Model:
    from django.utils import timezone

    message = _message(team)
    return apps.get_model("messaging", "StatusReceipt").objects.create(
        account=message.conversation.account,
        message=message,
        provider_message_id="matrix",
        provider_status="delivered",
        occurred_at=timezone.now(),
    )


def _outbox_entry(team: Team) -> models.Model:
    from django.utils import timezone

    return apps.get_model("messaging", "OutboxEntry").objects.create(
        message=_message(team), due_at=timezone.now()
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
    "consent.suppression": _suppression,
    "crm.importrejection": _import_rejection,
    "messaging.campaignrecipient": _campaign_recipient,
    "approvals.versionstatechange": _version_state_change,
    "consent.retentionpolicy": _retention_policy,
    "consent.retentionrun": _retention_run,
    "messaging.statusreceipt": _status_receipt,
    "messaging.outboxentry": _outbox_entry,
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

    def url(self, pk: Any = 1, **other_kwargs: Any) -> str:
        """The route's URL with every kwarg `pk` unless given (a file name, a user id)."""
        return reverse(self.name, kwargs=dict.fromkeys(self.kwargs, pk) | other_kwargs)

    def __str__(self) -> str:
        return self.name


def _strip(regex: str) -> str:
    return regex.removeprefix("^").removesuffix("$")


def collect_routes() -> list[Route]:
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


ROUTES = collect_routes()
LIST_ROUTES = [route for route in ROUTES if route.actions.get("get") == "list"]
DETAIL_CALLS = [(route, method) for route in ROUTES if route.is_detail for method in route.actions]
ACTIONS = sorted(
    {(route.viewset, action) for route in ROUTES for action in route.actions.values()},
    key=lambda pair: (pair[0].__name__, pair[1]),
)


def model_of(viewset: type, user: Any) -> type[models.Model]:
    view = viewset()
    view.request = Request(APIRequestFactory().get("/"))
    view.request.user = user
    view.action, view.kwargs, view.format_kwarg = "list", {}, None
    return view.get_queryset().model


def team_lookup(model: type[models.Model]) -> str:
    """The ORM path from `model` to the id of its owning Team."""
    if model is Team:
        return "pk"
    path = path_to_team(model, hops=3)
    if path is None:
        pytest.fail(f"{model.__name__} has no path to a Team; the matrix cannot check its scope")
    return path or ""


def path_to_team(model: type[models.Model], hops: int) -> str | None:
    """`team_id`, or the shortest chain of foreign keys (at most `hops`) ending in one."""
    fields = {field.name: field for field in model._meta.get_fields()}
    if isinstance(fields.get("team"), models.ForeignKey):
        return "team_id"
    if hops == 0:
        return None
    for field in model._meta.get_fields():
        if isinstance(field, models.ForeignKey) and has_team(field.related_model):
            return f"{field.name}__team_id"
    for field in model._meta.get_fields():
        if isinstance(field, models.ForeignKey):
            rest = path_to_team(field.related_model, hops - 1)
            if rest is not None:
                return f"{field.name}__{rest}"
    return None


def has_team(model: type[models.Model]) -> bool:
    return any(field.name == "team" for field in model._meta.get_fields())


def factory_for(model: type[models.Model]) -> type[factory.django.DjangoModelFactory] | None:
    for value in vars(tests.factories).values():
        if (
            isinstance(value, type)
            and issubclass(value, factory.django.DjangoModelFactory)
            and value._meta.model is model
        ):
            return value
    return None


def make_owned_by(model: type[models.Model], team: Team) -> models.Model:
    if model is Team:
        return team
    label = model._meta.label_lower
    if label in OBJECT_MAKERS:
        return OBJECT_MAKERS[label](team)
    model_factory = factory_for(model)
    if model_factory is not None:
        kwargs: dict[str, Any] = {}
        if has_team(model):
            kwargs["team"] = team
        for name, declaration in model_factory._meta.declarations.items():
            if isinstance(declaration, factory.SubFactory):
                related = model._meta.get_field(name).related_model
                if has_team(related):
                    kwargs[f"{name}__team"] = team
        return model_factory(**kwargs)
    try:
        with transaction.atomic():
            return model.objects.create(**required_relations(model, team))
    except Exception as exc:  # whatever failed, the answer is the same: add a maker
        pytest.fail(
            f"Add a factory or an OBJECT_MAKERS entry for {label} to the permission matrix "
            f"(a bare create failed: {exc!r})"
        )
    return None


def required_relations(model: type[models.Model], team: Team) -> dict[str, Any]:
    """`team`, plus a team-owned object from a factory for every other required foreign key."""
    kwargs: dict[str, Any] = {}
    for field in model._meta.concrete_fields:
        if not isinstance(field, models.ForeignKey) or field.null:
            continue
        if field.related_model is Team:
            kwargs[field.name] = team
            continue
        related_factory = factory_for(field.related_model)
        if related_factory is not None and has_team(field.related_model):
            kwargs[field.name] = related_factory(team=team)
    return kwargs


def rows(response: Any) -> list[dict[str, Any]]:
    data = response.data
    return data["results"] if isinstance(data, dict) and "results" in data else list(data)


@cache
def _count_every_table_sql() -> str:
    quote = connection.ops.quote_name
    tables = sorted(
        {model._meta.db_table for model in apps.get_models(include_auto_created=True)}
        & set(connection.introspection.table_names())
    )
    # Table names come from the app registry, not from input.
    counts = ", ".join(f"(SELECT COUNT(*) FROM {quote(table)})" for table in tables)  # noqa: S608
    return f"SELECT {counts}"


def table_counts() -> tuple[int, ...]:
    """The row count of every table, in one query: what a refused request must leave alone."""
    with connection.cursor() as cursor:
        cursor.execute(_count_every_table_sql())
        return tuple(cursor.fetchone())


def perm_exists(perm: str) -> bool:
    app_label, codename = perm.split(".", 1)
    return Permission.objects.filter(content_type__app_label=app_label, codename=codename).exists()
