"""The review queue in admin: messages that may be withdrawals, decided by a person."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django import forms
from django.contrib import admin, messages
from django.db import transaction
from django.db.models import Case, IntegerField, QuerySet, Value, When
from django.http import HttpRequest, HttpResponse
from django.utils.html import format_html
from django.utils.text import Truncator
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext, ngettext_lazy

from consent import selectors, services
from consent.admin.consents import contact_panel_link
from consent.models import WithdrawalReview
from crm import selectors as crm_selectors
from crm.admin_base import (
    IntermediateActionMixin,
    ReadOnlyAdminMixin,
    ServiceAdminMixin,
    TeamScopedAdminMixin,
    report_domain_error,
)
from crm.errors import DomainError

if TYPE_CHECKING:
    from collections.abc import Callable


class ConfirmWithdrawalForm(forms.Form):
    note = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        label=_("note"),
        help_text=_("Why these messages are withdrawals; stored as evidence."),
    )

    def clean_note(self) -> str:
        note = self.cleaned_data["note"].strip()
        if not note:
            raise forms.ValidationError(_("Say in a note why this is a withdrawal."))
        return note


class DismissForm(forms.Form):
    """Only a confirmation step: dismissing leaves consent as it is."""


@admin.register(WithdrawalReview)
class WithdrawalReviewAdmin(
    IntermediateActionMixin,
    ReadOnlyAdminMixin,
    ServiceAdminMixin,
    TeamScopedAdminMixin,
    admin.ModelAdmin,
):
    """Messages that may be withdrawals; open entries first, oldest first.

    Entries are read-only: the actions decide them, through the services.
    """

    list_display = (
        "created_at",
        "contact_panel",
        "channel",
        "excerpt",
        "matched",
        "status",
        "decided_by",
        "decided_at",
    )
    list_filter = ("status", "channel")
    list_select_related = ("contact", "decided_by")
    search_fields = ("text", "contact__first_name", "contact__last_name")
    actions = ["confirm_withdrawal", "dismiss"]
    action_summary = ngettext_lazy(
        "This applies to %(counter)s selected message:",
        "This applies to %(counter)s selected messages:",
        "counter",
    )
    fields = (
        "contact",
        "channel",
        "text",
        "matched",
        "inbound_message_ref",
        "status",
        "decided_by",
        "decided_at",
        "created_at",
    )
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[WithdrawalReview]:
        open_first = Case(
            When(status=WithdrawalReview.Status.OPEN, then=Value(0)),
            default=Value(1),
            output_field=IntegerField(),
        )
        return (
            selectors.withdrawal_reviews_visible_to(request.user)
            .annotate(open_first=open_first)
            .order_by("open_first", "created_at")
        )

    def get_ordering(self, request: HttpRequest) -> list[str]:
        return ["open_first", "created_at"]

    def has_decide_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("consent.change_withdrawalreview") and bool(
            crm_selectors.member_team_ids(request.user)
        )

    @admin.display(description=_("contact"), ordering="contact__last_name")
    def contact_panel(self, review: WithdrawalReview) -> str:
        return contact_panel_link(review.contact)

    @admin.display(description=_("message"))
    def excerpt(self, review: WithdrawalReview) -> str:
        return Truncator(review.text).chars(80)

    def action_sample_label(self, review: WithdrawalReview) -> str:
        return format_html(
            "{} ({}, {}): “{}”",
            review.contact,
            review.get_channel_display(),
            review.get_status_display(),
            Truncator(review.text).chars(120),
        )

    @admin.action(description=_("It is a withdrawal: record it…"), permissions=["decide"])
    def confirm_withdrawal(
        self, request: HttpRequest, queryset: QuerySet[WithdrawalReview]
    ) -> HttpResponse | None:
        form = ConfirmWithdrawalForm(request.POST if "apply" in request.POST else None)
        if not form.is_valid():
            return self.action_page(
                request,
                queryset,
                form,
                action="confirm_withdrawal",
                title=_("Record these messages as withdrawals"),
                note=_(
                    "Every purpose collected on the message's channel is withdrawn, effective "
                    "when the message arrived."
                ),
            )

        def decide(review: WithdrawalReview) -> None:
            services.withdrawal_review_confirm(
                review=review, actor=request.user, note=form.cleaned_data["note"]
            )

        return self._decide_all(request, queryset, decide)

    @admin.action(description=_("Not a withdrawal: dismiss…"), permissions=["decide"])
    def dismiss(
        self, request: HttpRequest, queryset: QuerySet[WithdrawalReview]
    ) -> HttpResponse | None:
        form = DismissForm()
        if "apply" not in request.POST:
            return self.action_page(
                request,
                queryset,
                form,
                action="dismiss",
                title=_("Dismiss these messages"),
                note=_("Consent stays as it is; the entries leave the queue."),
            )

        def decide(review: WithdrawalReview) -> None:
            services.withdrawal_review_dismiss(review=review, actor=request.user)

        return self._decide_all(request, queryset, decide)

    def _decide_all(
        self,
        request: HttpRequest,
        queryset: QuerySet[WithdrawalReview],
        decide: Callable[[WithdrawalReview], None],
    ) -> None:
        """All or nothing: one refused entry (another team, already decided) stops the batch."""
        reviews = list(queryset)
        try:
            with transaction.atomic():
                for review in reviews:
                    decide(review)
        except DomainError as error:
            report_domain_error(request, error)
            return
        self.message_user(
            request,
            ngettext("%(count)d entry decided.", "%(count)d entries decided.", len(reviews))
            % {"count": len(reviews)},
            messages.SUCCESS,
        )
