"""Hardening that is not one app's business: login brute force, API throttling, security headers
and the Content-Security-Policy, secrets kept out of error reports and logs."""

from __future__ import annotations

import logging
import re

import pytest
from django.core.cache import cache
from django.views.debug import SafeExceptionReporterFilter
from rest_framework.throttling import UserRateThrottle

pytestmark = pytest.mark.django_db

LOGIN = "/admin/login/?next=/admin/"
PASSWORD = "secret-pass-123"  # tests.factories.UserFactory


def _login(client, username: str, password: str, address: str = "203.0.113.7"):
    return client.post(LOGIN, {"username": username, "password": password}, REMOTE_ADDR=address)


def test_login_is_locked_after_repeated_failures(client, marketing, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert _login(client, "marketing", "wrong-guess").status_code == 200
    assert _login(client, "marketing", "wrong-guess").status_code == 429

    locked = _login(client, "marketing", PASSWORD)

    assert locked.status_code == 429
    assert "Too many failed logins" in locked.content.decode()
    assert "_auth_user_id" not in client.session


def test_lockout_is_per_user_and_address(client, marketing, editor, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        _login(client, "marketing", "wrong-guess")

    assert _login(client, "editor", PASSWORD).status_code == 302
    client.logout()
    assert _login(client, "marketing", PASSWORD, address="198.51.100.4").status_code == 302


def test_a_successful_login_resets_the_failures(client, marketing, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        _login(client, "marketing", "wrong-guess")
    assert _login(client, "marketing", PASSWORD).status_code == 302
    client.logout()

    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        _login(client, "marketing", "wrong-guess")
    assert _login(client, "marketing", PASSWORD).status_code == 302


def test_lockout_page_is_german_for_german_browsers(client, marketing, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        _login(client, "marketing", "wrong-guess")

    locked = client.post(
        LOGIN,
        {"username": "marketing", "password": PASSWORD},
        REMOTE_ADDR="203.0.113.7",
        HTTP_ACCEPT_LANGUAGE="de",
    )

    assert locked.status_code == 429
    assert "Zu viele fehlgeschlagene Anmeldungen" in locked.content.decode()


def test_failed_logins_never_record_the_password(client, marketing, caplog):
    from axes.models import AccessAttempt

    caplog.set_level(logging.DEBUG)
    _login(client, "marketing", "hunter2-very-secret")

    attempt = AccessAttempt.objects.get(username="marketing")
    assert "hunter2-very-secret" not in attempt.post_data
    assert "hunter2-very-secret" not in caplog.text


@pytest.fixture
def tight_throttle(monkeypatch):
    cache.clear()
    monkeypatch.setattr(UserRateThrottle, "rate", "5/minute", raising=False)
    yield
    cache.clear()


def test_authenticated_api_callers_are_throttled(api_client_for, marketing, tight_throttle):
    client = api_client_for(marketing)
    statuses = [client.get("/api/v1/contacts/").status_code for _ in range(6)]

    assert statuses == [200] * 5 + [429]
    assert "Retry-After" in client.get("/api/v1/contacts/").headers


def test_admin_pages_carry_security_headers_and_a_csp(client, marketing):
    client.force_login(marketing)
    response = client.get("/admin/")

    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "same-origin"
    assert response.headers["Cross-Origin-Opener-Policy"] == "same-origin"
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert "object-src 'none'" in policy
    script_src = re.search(r"script-src ([^;]*)", policy).group(1)
    assert "'unsafe-inline'" not in script_src


def test_inline_script_runs_only_with_the_requests_nonce(client, marketing, team):
    from tests.factories import SegmentFactory

    segment = SegmentFactory(team=team)
    client.force_login(marketing)
    response = client.get(f"/admin/crm/segment/{segment.pk}/change/")

    assert response.status_code == 200
    nonce = re.search(r"'nonce-([^']+)'", response.headers["Content-Security-Policy"]).group(1)
    scripts = re.findall(r"<script(?![^>]*\ssrc=)([^>]*)>", response.content.decode())
    assert scripts, "the segment preview script is inline"
    assert all(f'nonce="{nonce}"' in attributes for attributes in scripts)


def test_api_docs_load_nothing_from_a_cdn(client, marketing):
    client.force_login(marketing)
    page = client.get("/api/docs/").content.decode()

    assert "cdn.jsdelivr.net" not in page
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/" in page
    script = client.get("/api/docs/?script=")
    assert script.status_code == 200


def test_error_reports_hide_secrets(settings):
    settings.SECRET_KEY = "a-secret-key-that-must-not-leak-0123456789"
    settings.EMAIL_HOST_PASSWORD = "smtp-password-that-must-not-leak"
    safe = SafeExceptionReporterFilter().get_safe_settings()

    assert settings.SECRET_KEY not in str(safe)
    assert settings.EMAIL_HOST_PASSWORD not in str(safe)
