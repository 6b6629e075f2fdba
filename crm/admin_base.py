"""Admin building blocks every app's admin uses.

Every ModelAdmin sees only the caller's teams and checks ownership (TeamScopedAdminMixin), writes
through services and reports their refusals (ServiceAdminMixin, adopt, delete_each), keeps
history in scope (ScopedHistoryMixin) and asks on one intermediate page before a bulk action
(IntermediateActionMixin). Changelists over millions of rows do not count them all
(LargeChangelistMixin).
"""

from __future__ import annotations

import html
import zoneinfo
from functools import cache
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote as url_quote

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.templatetags.admin_urls import add_preserved_filters
from django.contrib.admin.utils import quote, unquote
from django.contrib.admin.views.main import (
    ERROR_FLAG,
    IGNORED_PARAMS,
    PAGE_VAR,
    SEARCH_VAR,
    ChangeList,
)
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db import transaction
from django.db.models import Model, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.functional import cached_property
from django.utils.http import RFC3986_SUBDELIMS
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext

from crm import selectors
from crm.errors import DomainError, PermissionRefused

if TYPE_CHECKING:
    from collections.abc import Callable

    from django.db.models import Field
    from django.forms import Form
    from django.utils.functional import Promise


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


class ReadOnlyAdminMixin:
    """For ledgers and logs: viewable by whoever may view them, never changed in admin."""

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ServiceAdminMixin:
    """Out-of-scope objects are 404, and a refusal a form could not foresee becomes a message.

    Forms check input up front; a service can still refuse (another writer was faster). The
    changeform runs in a transaction, so by the time the error arrives here nothing is saved.
    """

    def get_object(
        self, request: HttpRequest, object_id: str, from_field: str | None = None
    ) -> Any:
        obj = super().get_object(request, object_id, from_field)
        if obj is None:
            # Django would redirect with "perhaps it was deleted"; the API answers 404, so do we.
            raise Http404(gettext("Not found."))
        return obj

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except PermissionRefused as error:
            raise PermissionDenied(error.message) from error
        except DomainError as error:
            report_domain_error(request, error)
            return HttpResponseRedirect(request.get_full_path())

    def delete_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        try:
            return super().delete_view(request, object_id, extra_context)
        except PermissionRefused as error:
            raise PermissionDenied(error.message) from error
        except DomainError as error:
            report_domain_error(request, error)
            return HttpResponseRedirect(request.get_full_path())


class ScopedHistoryMixin:
    """simple-history's views look objects up without the admin queryset; scope them here.

    Reverting is switched off: it would write past the services (and past inline addresses).
    """

    def _history_in_scope(self, request: HttpRequest, object_id: str) -> bool:
        pk = unquote(object_id)
        try:
            if self.get_queryset(request).filter(pk=pk).exists():
                return True
            # A deleted object: visible if its last known team is.
            last = self.model.history.filter(id=pk).order_by("-history_date").first()
        except (ValueError, ValidationError):
            return False
        return last is not None and last.team_id in selectors.visible_team_ids(request.user)

    def history_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if not self._history_in_scope(request, object_id):
            raise Http404(gettext("Not found."))
        return super().history_view(request, object_id, extra_context)

    def history_form_view(
        self,
        request: HttpRequest,
        object_id: str,
        version_id: str,
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        if not self._history_in_scope(request, object_id):
            raise Http404(gettext("Not found."))
        if request.method == "POST":
            raise PermissionDenied
        return super().history_form_view(request, object_id, version_id, extra_context)

    def revert_disabled(self, request: HttpRequest, obj: Any = None) -> bool:
        return True


def report_domain_error(request: HttpRequest, error: DomainError) -> None:
    """Show a refused service call as an admin message instead of a server error."""
    messages.error(request, error.message)


def adopt(target: Model, saved: Model) -> None:
    """Give the admin's unsaved instance the identity of the row a service created.

    Django admin keeps using the instance it passed to save_model (for inlines, the log and
    the redirect), while services build and return their own.
    """
    for field in saved._meta.concrete_fields:
        setattr(target, field.attname, getattr(saved, field.attname))
    target._state.adding = False
    target._state.db = saved._state.db


def delete_each(queryset: QuerySet, delete: Callable[[Any], None]) -> None:
    """Bulk delete through the service, all or nothing.

    Django's "delete selected" already refused protected rows and missing permissions; a
    refusal that still arrives here is answered 403 with nothing deleted.
    """
    try:
        with transaction.atomic():
            for obj in queryset:
                delete(obj)
    except DomainError as error:
        raise PermissionDenied(error.message) from error


class VisibleTeamFilter(admin.RelatedFieldListFilter):
    """The team filter offers only teams the user may see."""

    def field_choices(self, field: Field, request: HttpRequest, model_admin: Any) -> list:
        return field.get_choices(
            include_blank=False,
            ordering=self.field_admin_ordering(field, request, model_admin),
            limit_choices_to={"pk__in": selectors.visible_team_ids(request.user)},
        )


class TeamObjectFilter(admin.SimpleListFilter):
    """A list filter offering the caller's teams' objects of one kind (tags, purposes) by name,
    with the team added when the caller sees several teams.

    Subclasses set `lookup` (the changelist's query for the chosen id, or override
    `filter_by`) and `objects()`.
    """

    lookup: ClassVar[str]

    def objects(self, request: HttpRequest) -> QuerySet:
        raise NotImplementedError("The objects of the caller's teams, in display order.")

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        several_teams = len(selectors.visible_team_ids(request.user)) > 1
        return [
            (str(obj.pk), f"{obj.name} ({obj.team})" if several_teams else obj.name)
            for obj in self.objects(request)
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if value and value.isdigit():
            return self.filter_by(queryset, int(value))
        return queryset

    def filter_by(self, queryset: QuerySet, pk: int) -> QuerySet:
        """The changelist's rows that have the chosen object (by `lookup`)."""
        return queryset.filter(**{self.lookup: pk})


class TeamOwnedFormMixin:
    """For the ModelForm of a row that belongs to a team: which team, and clashes within it."""

    def team_id(self) -> int | None:
        """The chosen team on an add form; the row's own team where the team is not a field."""
        if "team" in self.fields:
            team = self.cleaned_data.get("team")
            return team.pk if team else None
        return self.instance.team_id

    def taken_in_team(self, **lookup: Any) -> bool:
        """Whether another row of the same team matches `lookup` (a name, an external id)."""
        team_id = self.team_id()
        if team_id is None:
            return False
        rows = self._meta.model.objects.filter(team_id=team_id, **lookup)
        return rows.exclude(pk=self.instance.pk).exists()


@cache
def time_zone_choices() -> list[tuple[str, str]]:
    return [(name, name) for name in sorted(zoneinfo.available_timezones())]


class IntermediateActionMixin:
    """The page between choosing an admin action and applying it: a form, and what it touches.

    An action returns `self.action_page(...)` until its form is valid; the page posts back to
    the same action with `apply` set and the selection carried along. Each admin says how the
    selection is counted (`action_summary`: ngettext_lazy with a `counter` placeholder) and how
    one selected object is listed (`action_sample_label`).
    """

    action_page_template = "admin/intermediate_action.html"
    action_summary: ClassVar[Promise]
    # How many selected objects the page lists by name.
    action_sample_size: ClassVar[int] = 20
    # Relations action_sample_label reads, loaded with the sample.
    action_sample_related: ClassVar[tuple[str, ...]] = ()

    def action_sample_label(self, obj: Any) -> str:
        return str(obj)

    def action_page(
        self,
        request: HttpRequest,
        queryset: QuerySet,
        form: Form,
        *,
        action: str,
        title: str,
        note: str = "",
    ) -> TemplateResponse:
        sample = queryset
        if self.action_sample_related:
            sample = sample.select_related(*self.action_sample_related)
        count = queryset.count()
        request.current_app = self.admin_site.name
        context = {
            **self.admin_site.each_context(request),
            "title": title,
            "subtitle": None,
            "opts": self.opts,
            "form": form,
            "note": note,
            "action": action,
            "count": count,
            "summary": self.action_summary % {"counter": count},
            "sample": [self.action_sample_label(obj) for obj in sample[: self.action_sample_size]],
            "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
            "select_across": request.POST.get("select_across", "0"),
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "media": self.media + form.media,
        }
        return TemplateResponse(request, self.action_page_template, context)


class EstimatedCountPaginator(Paginator):
    """Pages a very large queryset with PostgreSQL's row estimate instead of COUNT(*).

    Counting a million rows costs more than showing the page. Below `exact_below` estimated
    rows the exact count is cheap, so it is used (and on databases without an estimate).
    """

    exact_below = 10_000

    @cached_property
    def count(self) -> int:
        estimate = selectors.estimated_count(self.object_list)
        if estimate is None or estimate < self.exact_below:
            return super().count
        return estimate


def changelist_is_unfiltered(request: HttpRequest) -> bool:
    """Whether the changelist shows everything the user may see: no search, no list filter."""
    if request.GET.get(SEARCH_VAR, "").strip():
        return False
    return all(key in (*IGNORED_PARAMS, PAGE_VAR, ERROR_FLAG) for key in request.GET)


class LargeChangeList(ChangeList):
    """A changelist whose row links cost no URL resolving.

    Django reverses each row's change URL and then, on a filtered list, resolves it again to
    add the preserved filters (a walk over every admin URL pattern, about a sixth of a
    filtered 100-row page). Every row links to the same view, so both are done once per page.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # A change URL with a placeholder for the primary key, filters preserved as Django
        # would add them; items_for_result then finds nothing left to add.
        placeholder = "0"
        sample = reverse(
            f"admin:{self.opts.app_label}_{self.opts.model_name}_change",
            args=(placeholder,),
            current_app=self.model_admin.admin_site.name,
        )
        linked = add_preserved_filters(
            {"preserved_filters": self.preserved_filters, "opts": self.opts}, sample
        )
        head, _sep, tail = linked.rpartition(f"/{placeholder}/")
        self._row_link = (f"{head}/", f"/{tail}")
        self.preserved_filters = ""

    def url_for_result(self, result: Model) -> str:
        head, tail = self._row_link
        # Escaped as reverse() escapes a path argument.
        pk = url_quote(
            str(quote(getattr(result, self.pk_attname))), safe=RFC3986_SUBDELIMS + "/~:@"
        )
        return f"{head}{pk}{tail}"


class LargeChangelistMixin:
    """For changelists over millions of rows: no COUNT(*) over the whole scope.

    Unfiltered, the row count is PostgreSQL's estimate (EstimatedCountPaginator); filtered, it is
    exact, because a filter's estimate can be far off and the narrowed count is what the user
    asked for. The "N total" beside a filtered count (a second full count) is not shown.
    """

    show_full_result_count = False

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return LargeChangeList

    def action_checkbox(self, obj: Model) -> str:
        """Django's row checkbox, written out rather than rendered through the CheckboxInput
        widget template: the template costs about a third of a millisecond a row, a third of
        a 100-row page. The HTML is the same (tests/crm/test_contact_admin.py compares them);
        it is escaped with the standard library's html.escape, which Django's escape and
        format_html call, without their checks for lazy strings (a tenth of this method)."""
        label = gettext("Select this object for an action - {}").format(html.escape(str(obj)))
        return mark_safe(  # noqa: S308 - every value above is escaped
            f'<input type="checkbox" name="{helpers.ACTION_CHECKBOX_NAME}" '
            f'value="{html.escape(str(obj.pk))}" class="action-select" aria-label="{label}">'
        )

    def get_empty_value_display(self) -> SafeString:
        """Django's answer, asked once per cell (900 times a 100-row page of nine columns),
        without the exception and lazy-string checks Django's version costs on each call."""
        value = getattr(self, "empty_value_display", self.admin_site.empty_value_display)
        # As Django does: the display value is the admin's own, not user input.
        return SafeString(value) if type(value) is str else mark_safe(value)  # noqa: S308

    def get_paginator(
        self,
        request: HttpRequest,
        queryset: QuerySet,
        per_page: int,
        orphans: int = 0,
        allow_empty_first_page: bool = True,
    ) -> Paginator:
        paginator_class = (
            EstimatedCountPaginator if changelist_is_unfiltered(request) else self.paginator
        )
        return paginator_class(queryset, per_page, orphans, allow_empty_first_page)
