"""A short path for provider webhooks past the browser middleware.

A signed machine-to-machine POST to /webhooks/ uses no session, user, CSRF token, flash
message, user time zone, edit history or login lock-out, yet that stack cost more CPU than the
webhook itself. Placed right after SecurityMiddleware (and WhiteNoise), this middleware calls
the resolved webhook view directly; every other path, and any /webhooks/ path that does not
resolve to a webhook view (e.g. a missing slash, left to CommonMiddleware), takes the full
stack. The views authenticate by the provider's signature; nothing they do relies on the
skipped middleware.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from django.http import HttpRequest, HttpResponse
from django.urls import Resolver404, resolve
from django.utils import translation

WEBHOOK_PATH_PREFIX: Final = "/webhooks/"
# messaging/urls.py's app_name: only its views take the short path.
WEBHOOK_URL_NAMESPACE: Final = "messaging"
# The skipped clickjacking and CSP middleware would add these; a webhook answer is never a
# page, so the strictest policy is the right one.
WEBHOOK_RESPONSE_HEADERS: Final = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
}


class WebhookShortPathMiddleware:
    """Serve /webhooks/<provider>/<account>/ without the session-based middleware."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not request.path_info.startswith(WEBHOOK_PATH_PREFIX):
            return self.get_response(request)
        try:
            match = resolve(request.path_info)
        except Resolver404:
            return self.get_response(request)
        if match.namespace != WEBHOOK_URL_NAMESPACE:
            return self.get_response(request)
        request.resolver_match = match
        # As LocaleMiddleware would: error details in the language the caller asks for, and
        # never in the one a previous request left active on this thread.
        with translation.override(translation.get_language_from_request(request)):
            response = match.func(request, *match.args, **match.kwargs)
        for header, value in WEBHOOK_RESPONSE_HEADERS.items():
            response.headers.setdefault(header, value)
        # As CommonMiddleware would: a framed answer keeps the provider's connection reusable.
        if not response.streaming:
            response.headers.setdefault("Content-Length", str(len(response.content)))
        return response
