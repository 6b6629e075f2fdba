"""Personas and clients shared by the whole suite.

Every persona except `outsider` belongs to `team`; `outsider` is a marketing user of
`other_team`. `auditor` belongs to no team and reads all of them.
"""

from __future__ import annotations

import os

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.utils import translation
from rest_framework.test import APIClient

from crm import roles
from crm.services import roles_sync, team_member_add
from tests.factories import TeamFactory, UserFactory

IN_CI = os.environ.get("CI", "").lower() == "true"


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Service-bound tests skip on a laptop without the service, and fail in CI instead."""
    if item.get_closest_marker("postgres") and connection.vendor != "postgresql":
        message = "needs PostgreSQL: set DATABASE_URL=postgres://..."
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(autouse=True)
def _media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture(autouse=True)
def _english_by_default():
    """Requests with Accept-Language: de leave German active in the thread; each test starts
    in English so messages compare the same whatever ran before."""
    translation.activate("en")
    yield
    translation.deactivate()


@pytest.fixture
def team(db):
    return TeamFactory(name="Kino Nord", slug="kino-nord")


@pytest.fixture
def other_team(db):
    return TeamFactory(name="Apotheke Süd", slug="apotheke-sued")


@pytest.fixture
def make_user(db):
    roles_sync()

    def make(username: str, role: str | None = None, team=None, **extra):
        user = UserFactory(username=username, **extra)
        if role:
            user.groups.add(Group.objects.get(name=role))
        if team is not None:
            team_member_add(team=team, user=user)
        return user

    return make


@pytest.fixture
def marketing(make_user, team):
    return make_user("marketing", roles.MARKETING, team)


@pytest.fixture
def editor(make_user, team):
    return make_user("editor", roles.EDITOR, team)


@pytest.fixture
def reviewer_editorial(make_user, team):
    return make_user("reviewer_editorial", roles.REVIEWER_EDITORIAL, team)


@pytest.fixture
def reviewer_legal(make_user, team):
    return make_user("reviewer_legal", roles.REVIEWER_LEGAL, team)


@pytest.fixture
def reviewer_medical(make_user, team):
    return make_user("reviewer_medical", roles.REVIEWER_MEDICAL, team)


@pytest.fixture
def agent(make_user, team):
    return make_user("agent", roles.AGENT, team)


@pytest.fixture
def auditor(make_user):
    return make_user("auditor", roles.AUDITOR)


@pytest.fixture
def outsider(make_user, other_team):
    return make_user("outsider", roles.MARKETING, other_team)


@pytest.fixture
def superuser(make_user):
    return make_user("admin", is_superuser=True)


@pytest.fixture
def api_client_for():
    def client_for(user) -> APIClient:
        client = APIClient()
        if user is not None:
            client.force_authenticate(user=user)
        return client

    return client_for
