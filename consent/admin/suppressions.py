"""The suppression list in admin: addresses never messaged, stored only as hashes."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from consent import selectors, services
from consent.models import Suppression
from crm.addresses import AddressInvalid, normalise_address, normalise_email, normalise_phone
from crm.admin_base import ServiceAdminMixin, TeamScopedAdminMixin, adopt
from crm.hashing import address_hash


class SuppressionAddForm(forms.ModelForm):
    """Takes an address, keeps only its hash: the address itself is never saved."""

    address = forms.CharField(
        max_length=254,
        label=_("address"),
        help_text=_("E-mail address or phone number; only its hash is stored."),
    )

    class Meta:
        model = Suppression
        fields = ["team", "channel", "address", "reason", "note"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "channel" in self.fields:
            self.fields["channel"].required = True

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        channel, address = cleaned.get("channel"), cleaned.get("address")
        if channel and address:
            try:
                cleaned["address"] = normalise_address(channel, address)
            except AddressInvalid as error:
                self.add_error("address", error.message)
                return cleaned
            if Suppression.objects.filter(address_hash=address_hash(cleaned["address"])).exists():
                self.add_error("address", _("This address is already suppressed."))
        return cleaned


def _search_hash(term: str) -> str | None:
    """The hash a typed address would be stored under, so the list can be searched by address."""
    for normalise in (normalise_email, normalise_phone):
        try:
            return address_hash(normalise(term))
        except AddressInvalid:
            continue
    return None


@admin.register(Suppression)
class SuppressionAdmin(ServiceAdminMixin, TeamScopedAdminMixin, admin.ModelAdmin):
    """Addresses that are never messaged, in any team. Only hashes are stored or shown."""

    form = SuppressionAddForm
    list_display = ("short_hash", "channel", "reason", "team", "note", "created_at")
    list_filter = ("channel", "reason")
    search_fields = ("address_hash",)
    search_help_text = _("Type an e-mail address or phone number to see whether it is suppressed.")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Suppression]:
        return selectors.suppressions_visible_to(request.user)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Suppression], search_term: str
    ) -> tuple[QuerySet[Suppression], bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        hashed = _search_hash(term)
        return queryset.filter(address_hash=hashed or term.lower()), False

    def get_fields(self, request: HttpRequest, obj: Suppression | None = None) -> list[str]:
        if obj is None:
            return ["team", "channel", "address", "reason", "note"]
        return ["address_hash", "channel", "reason", "team", "note", "created_at"]

    def get_readonly_fields(self, request: HttpRequest, obj: Suppression | None = None) -> tuple:
        return () if obj is None else tuple(self.get_fields(request, obj))

    def has_change_permission(self, request: HttpRequest, obj: Suppression | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Suppression | None = None) -> bool:
        # A suppression survives erasure and re-import; it is not lifted in the admin.
        return False

    @admin.display(description=_("address hash"))
    def short_hash(self, entry: Suppression) -> str:
        return f"{entry.address_hash[:16]}…"

    def save_model(
        self, request: HttpRequest, obj: Suppression, form: SuppressionAddForm, change: bool
    ) -> None:
        cleaned = form.cleaned_data
        entry = services.suppression_add_manual(
            team=cleaned["team"],
            channel=cleaned["channel"],
            address=cleaned["address"],
            note=cleaned.get("note", ""),
            reason=cleaned["reason"],
            actor=request.user,
        )
        adopt(obj, entry)
