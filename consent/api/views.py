"""The consent REST API: purposes, consent texts, consent state, the ledger, suppressions and
the review queue of possible withdrawals.

Querysets come from `consent.selectors` (another team's object is a 404), every action names
its permission in `action_perms` (auditors read everything and every write is a 403), and every
write calls one service. The ledger is list/retrieve/create only: events are never changed.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.db.models import QuerySet
from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import exceptions, mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from consent import selectors, services
from consent.api import filters
from consent.api import serializers as api
from consent.models import (
    Consent,
    ConsentAction,
    ConsentEvent,
    ConsentSource,
    ConsentText,
    Purpose,
    Suppression,
    WithdrawalReview,
)
from crm.api.base import READ_ACTIONS, FilteredViewSet, model_perms
from crm.api.pagination import DefaultCursorPagination


class LedgerCursorPagination(DefaultCursorPagination):
    """The ledger pages by when events were recorded, newest first."""

    ordering = ("-recorded_at", "-id")


class IdCursorPagination(DefaultCursorPagination):
    """For rows without created_at (the consent projection): the id never changes."""

    ordering = ("-id",)


class ConsentApiViewSet(FilteredViewSet):
    """A method the viewset does not offer (PATCH on the ledger) is 405, not a role's 403."""

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        if self.action is None:
            raise exceptions.MethodNotAllowed(request.method)
        super().initial(request, *args, **kwargs)


@extend_schema_view(
    list=extend_schema(summary=_("Purposes of your teams")),
    retrieve=extend_schema(summary=_("One purpose")),
    create=extend_schema(summary=_("Create a purpose; channels and keywords are checked")),
    update=extend_schema(
        summary=_("Change a purpose (not its team or key)"),
        request=api.PurposeUpdateInputSerializer,
        responses=api.PurposeSerializer,
    ),
    partial_update=extend_schema(
        summary=_("Change some fields of a purpose"),
        request=api.PurposeUpdateInputSerializer,
        responses=api.PurposeSerializer,
    ),
)
class PurposeViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    ConsentApiViewSet,
):
    serializer_class = api.PurposeSerializer
    filterset_class = filters.PurposeFilter
    input_serializers: ClassVar[dict[str, type[serializers.BaseSerializer]]] = {
        "update": api.PurposeUpdateInputSerializer,
        "partial_update": api.PurposeUpdateInputSerializer,
    }
    action_perms = model_perms(
        "consent", "purpose", ("list", "retrieve", "create", "update", "partial_update")
    )

    def get_queryset(self) -> QuerySet[Purpose]:
        return selectors.purposes_visible_to(self.request.user)

    def perform_create(self, serializer: serializers.BaseSerializer) -> None:
        data = dict(serializer.validated_data)
        serializer.instance = services.purpose_create(
            team=data.pop("team"),
            key=data.pop("key"),
            name=data.pop("name"),
            actor=self.request.user,
            **data,
        )

    def perform_update(self, serializer: serializers.BaseSerializer) -> None:
        serializer.instance = services.purpose_update(
            purpose=serializer.instance, actor=self.request.user, **serializer.validated_data
        )


@extend_schema_view(
    list=extend_schema(summary=_("Consent texts (versioned wording) of your teams' purposes")),
    retrieve=extend_schema(summary=_("One consent text version")),
    create=extend_schema(
        summary=_("Publish new wording: the next version for the purpose and language")
    ),
)
class ConsentTextViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    ConsentApiViewSet,
):
    """Texts are never edited: new wording is a new version."""

    serializer_class = api.ConsentTextSerializer
    filterset_class = filters.ConsentTextFilter
    action_perms = model_perms("consent", "consenttext", ("list", "retrieve", "create"))

    def get_queryset(self) -> QuerySet[ConsentText]:
        return selectors.consent_texts_visible_to(self.request.user)

    def perform_create(self, serializer: serializers.BaseSerializer) -> None:
        data = serializer.validated_data
        serializer.instance = services.consent_text_publish(
            purpose=data["purpose"],
            language=data["language"],
            body=data["body"],
            actor=self.request.user,
        )


def _collect_event(request: Request, data: dict[str, Any]) -> ConsentEvent:
    return services.consent_collect(
        contact=data["contact"],
        purpose=data["purpose"],
        channel=data["channel"],
        action=data["action"],
        source=ConsentSource.API,
        evidence=data["evidence"],
        actor=request.user,
        occurred_at=data.get("occurred_at"),
    )


@extend_schema_view(
    list=extend_schema(summary=_("Current consent per contact, purpose and channel")),
    retrieve=extend_schema(summary=_("One contact's consent for one purpose and channel")),
)
class ConsentViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ConsentApiViewSet):
    """A read-only projection of the ledger; changes go through events or `withdraw`."""

    serializer_class = api.ConsentSerializer
    filterset_class = filters.ConsentFilter
    pagination_class = IdCursorPagination
    input_serializers: ClassVar[dict[str, type[serializers.BaseSerializer]]] = {
        "withdraw": api.ConsentWithdrawInputSerializer,
        "events": api.ConsentEventCreateInputSerializer,
    }
    action_perms = model_perms("consent", "consent", READ_ACTIONS) | {
        "withdraw": "consent.add_consentevent",
        "events": "consent.add_consentevent",
    }

    def get_queryset(self) -> QuerySet[Consent]:
        return selectors.consents_visible_to(self.request.user)

    @extend_schema(
        summary=_("Withdraw consent for a purpose on a channel (effective at once)"),
        request=api.ConsentWithdrawInputSerializer,
        responses=api.ConsentSerializer,
    )
    @action(detail=False, methods=["post"])
    def withdraw(self, request: Request) -> Response:
        data = self.validated_input(request)
        event = services.consent_record(
            contact=data["contact"],
            purpose=data["purpose"],
            channel=data["channel"],
            action=ConsentAction.WITHDRAWN,
            source=ConsentSource.API,
            evidence=services.Evidence(note=data.get("note", "")),
            actor=request.user,
        )
        consent = self.get_queryset().get(
            contact_id=event.contact_id, purpose_id=event.purpose_id, channel=event.channel
        )
        return Response(api.ConsentSerializer(consent, context=self.get_serializer_context()).data)

    @extend_schema(
        summary=_("Record a consent event (same as POST /consent-events/)"),
        request=api.ConsentEventCreateInputSerializer,
        responses={201: api.ConsentEventSerializer},
    )
    @action(detail=False, methods=["post"])
    def events(self, request: Request) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        serializer.instance = _collect_event(request, dict(serializer.validated_data))
        return Response(serializer.data, status=status.HTTP_201_CREATED)


@extend_schema_view(
    list=extend_schema(summary=_("The consent ledger, newest first")),
    retrieve=extend_schema(summary=_("One consent event with its evidence")),
    create=extend_schema(
        summary=_("Record a consent event with evidence (grant, withdrawal or opt-in request)"),
        request=api.ConsentEventCreateInputSerializer,
        responses={201: api.ConsentEventSerializer},
    ),
)
class ConsentEventViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    ConsentApiViewSet,
):
    """Append-only: there is no update and no delete."""

    serializer_class = api.ConsentEventSerializer
    filterset_class = filters.ConsentEventFilter
    pagination_class = LedgerCursorPagination
    input_serializers: ClassVar[dict[str, type[serializers.BaseSerializer]]] = {
        "create": api.ConsentEventCreateInputSerializer,
    }
    action_perms = model_perms("consent", "consentevent", ("list", "retrieve", "create"))

    def get_queryset(self) -> QuerySet[ConsentEvent]:
        return selectors.consent_events_visible_to(self.request.user)

    def perform_create(self, serializer: serializers.BaseSerializer) -> None:
        serializer.instance = _collect_event(self.request, dict(serializer.validated_data))


@extend_schema_view(
    list=extend_schema(summary=_("Suppressed addresses your teams added (hashes only)")),
    create=extend_schema(
        summary=_("Suppress an address in every team; only its hash is stored"),
        request=api.SuppressionCreateInputSerializer,
        responses={201: api.SuppressionSerializer},
    ),
)
class SuppressionViewSet(mixins.ListModelMixin, mixins.CreateModelMixin, ConsentApiViewSet):
    serializer_class = api.SuppressionSerializer
    filterset_class = filters.SuppressionFilter
    input_serializers: ClassVar[dict[str, type[serializers.BaseSerializer]]] = {
        "create": api.SuppressionCreateInputSerializer,
    }
    action_perms = model_perms("consent", "suppression", ("list", "create"))

    def get_queryset(self) -> QuerySet[Suppression]:
        return selectors.suppressions_visible_to(self.request.user)

    def perform_create(self, serializer: serializers.BaseSerializer) -> None:
        data = serializer.validated_data
        serializer.instance = services.suppression_add_manual(
            team=data["team"],
            channel=data["channel"],
            address=data["address"],
            note=data.get("note", ""),
            actor=self.request.user,
        )


@extend_schema_view(
    list=extend_schema(summary=_("Messages that may be withdrawals, for a person to decide")),
    retrieve=extend_schema(summary=_("One entry of the review queue")),
)
class WithdrawalReviewViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ConsentApiViewSet):
    serializer_class = api.WithdrawalReviewSerializer
    filterset_class = filters.WithdrawalReviewFilter
    input_serializers: ClassVar[dict[str, type[serializers.BaseSerializer]]] = {
        "confirm": api.WithdrawalReviewConfirmInputSerializer,
    }
    action_perms = model_perms(
        "consent", "withdrawalreview", READ_ACTIONS, confirm="change", dismiss="change"
    )

    def get_queryset(self) -> QuerySet[WithdrawalReview]:
        return selectors.withdrawal_reviews_visible_to(self.request.user)

    def _answer(self, review: WithdrawalReview) -> Response:
        review = self.get_queryset().get(pk=review.pk)
        return Response(
            api.WithdrawalReviewSerializer(review, context=self.get_serializer_context()).data
        )

    @extend_schema(
        summary=_("It is a withdrawal: record it (with a note) and close the entry"),
        request=api.WithdrawalReviewConfirmInputSerializer,
        responses=api.WithdrawalReviewSerializer,
    )
    @action(detail=True, methods=["post"])
    def confirm(self, request: Request, pk: str | None = None) -> Response:
        review = self.get_object()
        data = self.validated_input(request)
        purposes = None
        if "purposes" in data:
            purposes = [
                api.resolve_purpose(review.team_id, reference, field="purposes")
                for reference in data["purposes"]
            ]
        services.withdrawal_review_confirm(
            review=review, actor=request.user, note=data["note"], purposes=purposes
        )
        return self._answer(review)

    @extend_schema(
        summary=_("It is not a withdrawal: close the entry, consent stays"),
        request=None,
        responses=api.WithdrawalReviewSerializer,
    )
    @action(detail=True, methods=["post"])
    def dismiss(self, request: Request, pk: str | None = None) -> Response:
        review = self.get_object()
        services.withdrawal_review_dismiss(review=review, actor=request.user)
        return self._answer(review)
