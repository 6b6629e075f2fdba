"""schemathesis against /api/schema/: no generated input makes any endpoint answer 5xx.

The schema is read from the running app (WSGI, in process), every operation gets generated
requests — valid and invalid bodies, query strings and path parameters — as an authenticated
superuser of a team that holds data, so detail routes and actions reach real objects.
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from django.core import signals
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error

from config.wsgi import application

schema = schemathesis.openapi.from_wsgi("/api/schema/", application)


@pytest.fixture
def keep_the_test_connection():
    """Django closes a connection whose autocommit differs from its setting at the end of each
    request; inside the test's transaction that would end it. Django's test client unhooks the
    same handler; schemathesis calls the WSGI app directly, so unhook it here."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def token(superuser, team, keep_the_test_connection):
    from tests.factories import ContactFactory

    ContactFactory.create_batch(3, team=team)
    return Token.objects.create(user=superuser).key


@schema.parametrize()
@settings(
    # A few examples per operation keep the suite short; FUZZ_EXAMPLES=200 for a deep run.
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "5")),
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
@pytest.mark.django_db
def test_no_input_makes_the_api_fail(case, token):
    response = case.call(headers={"Authorization": f"Token {token}"})
    case.validate_response(response, checks=[not_a_server_error])


def test_numbers_too_large_for_the_database_are_a_400():
    # Found by the fuzzer: SQLite cannot bind integers past 2**63 and raised OverflowError.
    from crm.api.base import exception_handler

    response = exception_handler(OverflowError("Python int too large"), {})

    assert response.status_code == 400
    assert response.data["code"] == "invalid"
