"""Public pages for contacts, without login: double opt-in confirmation and unsubscribe.

Opening a link (GET, HEAD) never changes anything, because mail scanners prefetch links; only
the button (POST) records. The pages carry no advertising and are never cached or indexed.
"""

from __future__ import annotations

import ipaddress
from contextlib import nullcontext
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import translation
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from consent.services import (
    Evidence,
    OptInTokenInvalid,
    UnsubscribeTokenInvalid,
    opt_in_confirm,
    opt_in_request_from_token,
    unsubscribe_apply,
    unsubscribe_is_withdrawn,
    unsubscribe_target,
)
from crm.errors import DomainError
from crm.models import Channel, Contact

# RFC 8058: the body a mail client POSTs for a one-click unsubscribe.
ONE_CLICK_FIELD = "List-Unsubscribe"
ONE_CLICK_VALUE = "One-Click"

# HTTP status of a link that cannot be used: gone when it was good once, bad request otherwise.
TOKEN_STATUS = {"expired": 410, "used": 410, "invalid": 400}


def _client_ip(request: HttpRequest) -> str | None:
    try:
        return str(ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")))
    except ValueError:
        return None


def _evidence(request: HttpRequest, *, note: str = "") -> Evidence:
    """What the page request proves: where, from which address and browser."""
    return Evidence(
        ip_address=_client_ip(request),
        user_agent=request.META.get("HTTP_USER_AGENT", ""),
        source_url=request.build_absolute_uri(request.path),
        note=note,
    )


def _language(contact: Contact | None) -> str | None:
    """The contact's language where the site speaks it; otherwise the browser's."""
    available = {code for code, _name in settings.LANGUAGES}
    if contact is not None and contact.language in available:
        return contact.language
    return None


def _page(
    request: HttpRequest,
    template: str,
    context: dict[str, Any],
    *,
    status: int = 200,
    contact: Contact | None = None,
) -> HttpResponse:
    language = _language(contact)
    with translation.override(language) if language else nullcontext():
        response = render(request, template, context, status=status)
        response["Content-Language"] = translation.get_language()
    # The token in the URL must not leak to other sites through the Referer header.
    response["Referrer-Policy"] = "no-referrer"
    response["X-Robots-Tag"] = "noindex, nofollow"
    return response


def _link_unusable(
    request: HttpRequest, message: str, *, status: int, contact: Contact | None = None
) -> HttpResponse:
    return _page(
        request,
        "consent/link_unusable.html",
        {"title": _("This link cannot be used"), "message": message},
        status=status,
        contact=contact,
    )


@never_cache
@require_http_methods(["GET", "HEAD", "POST"])
def confirm(request: HttpRequest, token: str) -> HttpResponse:
    """Double opt-in: GET shows the wording and a button; POST records `confirmed`.

    The form keeps Django's CSRF protection: a browser that opened the link has the cookie.
    """
    try:
        opt_in = opt_in_request_from_token(token)
    except OptInTokenInvalid as exc:
        return _link_unusable(request, exc.message, status=TOKEN_STATUS[exc.reason])
    contact = opt_in.contact
    if request.method == "POST":
        try:
            opt_in_confirm(request=opt_in, evidence=_evidence(request))
        except OptInTokenInvalid as exc:
            # A second click that raced the first one.
            return _link_unusable(
                request, exc.message, status=TOKEN_STATUS[exc.reason], contact=contact
            )
        except DomainError:
            return _link_unusable(
                request,
                _("This subscription can no longer be confirmed."),
                status=400,
                contact=contact,
            )
        return _page(
            request, "consent/confirmed.html", {"purpose": opt_in.purpose}, contact=contact
        )
    text = opt_in.request_event.evidence.consent_text
    return _page(
        request,
        "consent/confirm.html",
        {
            "purpose": opt_in.purpose,
            "channel": Channel(opt_in.channel).label,
            "wording": text.body if text is not None else "",
        },
        contact=contact,
    )


# csrf_exempt on purpose: RFC 8058 one-click unsubscribes are POSTed by mail providers'
# servers, with no cookie and no CSRF token. The signed token in the URL is the authorisation,
# and the worst a forged cross-site POST can do is what the link itself does: withdraw.
@csrf_exempt
@never_cache
@require_http_methods(["GET", "HEAD", "POST"])
def unsubscribe(request: HttpRequest, token: str) -> HttpResponse:
    """GET shows one button and changes nothing; POST (the button or a mail client's
    one-click) withdraws that purpose on that channel. Repeating it changes nothing more."""
    try:
        target = unsubscribe_target(token)
    except UnsubscribeTokenInvalid as exc:
        return _link_unusable(request, exc.message, status=400)
    context = {"purpose": target.purpose, "channel": Channel(target.channel).label}
    if request.method == "POST":
        one_click = request.POST.get(ONE_CLICK_FIELD) == ONE_CLICK_VALUE
        note = "one-click unsubscribe (RFC 8058)" if one_click else "unsubscribe page"
        try:
            unsubscribe_apply(token, _evidence(request, note=note))
        except DomainError:
            return _link_unusable(
                request,
                _("Your request could not be recorded. Please reply to the message instead."),
                status=400,
                contact=target.contact,
            )
        return _page(request, "consent/unsubscribed.html", context, contact=target.contact)
    context["already_withdrawn"] = unsubscribe_is_withdrawn(target)
    return _page(request, "consent/unsubscribe.html", context, contact=target.contact)
