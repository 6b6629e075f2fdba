"""crm.backends.RolePermissionBackend: ModelBackend's answers, read in one query."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import AnonymousUser, Group, Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext

from crm import roles
from crm.backends import RolePermissionBackend
from tests.factories import ContactFactory

pytestmark = pytest.mark.django_db


def fresh(user):
    """The user as a new request loads it: no permission caches yet."""
    return get_user_model().objects.get(pk=user.pk)


def test_the_settings_use_it_in_place_of_model_backend():
    assert "crm.backends.RolePermissionBackend" in settings.AUTHENTICATION_BACKENDS
    assert "django.contrib.auth.backends.ModelBackend" not in settings.AUTHENTICATION_BACKENDS


@pytest.mark.parametrize(
    "role", [roles.MARKETING, roles.EDITOR, roles.REVIEWER_LEGAL, roles.AUDITOR, None]
)
def test_permissions_are_what_model_backend_answers(make_user, team, role):
    user = make_user("someone", role, team)
    # A permission of the user's own besides the role's (or instead of one).
    user.user_permissions.add(Permission.objects.get(codename="view_tag"))

    ours = RolePermissionBackend().get_all_permissions(fresh(user))

    assert ours == ModelBackend().get_all_permissions(fresh(user))
    assert "crm.view_tag" in ours


def test_a_permission_of_both_the_user_and_a_role_is_named_once(make_user, team):
    user = make_user("both", roles.MARKETING, team)
    user.user_permissions.add(Permission.objects.get(codename="view_contact"))
    assert RolePermissionBackend().get_all_permissions(fresh(user)) == (
        ModelBackend().get_all_permissions(fresh(user))
    )


def test_inactive_anonymous_and_object_questions_get_no_permissions(make_user, team):
    contact = ContactFactory(team=team)
    inactive = make_user("gone", roles.MARKETING, team, is_active=False)
    active = make_user("here", roles.MARKETING, team)
    backend = RolePermissionBackend()
    assert backend.get_all_permissions(fresh(inactive)) == set()
    assert backend.get_all_permissions(AnonymousUser()) == set()
    assert backend.get_all_permissions(fresh(active), obj=contact) == set()
    assert not fresh(inactive).has_perm("crm.view_contact")


def test_superusers_have_every_permission(superuser):
    every = {
        f"{app_label}.{codename}"
        for app_label, codename in Permission.objects.values_list(
            "content_type__app_label", "codename"
        )
    }
    assert RolePermissionBackend().get_all_permissions(fresh(superuser)) == every


def test_one_query_answers_every_question_of_a_request(marketing):
    user = fresh(marketing)
    with CaptureQueriesContext(connection) as queries:
        assert user.has_perm("crm.view_contact")
        assert user.has_perm("crm.change_contact")
        assert not user.has_perm("crm.delete_team")
    # ModelBackend: two queries (the user's and the groups' permissions); guardian's backend
    # asks nothing for a question without an object.
    assert len(queries.captured_queries) == 1


def test_a_role_taken_away_is_gone_for_the_next_request(marketing):
    assert fresh(marketing).has_perm("crm.view_contact")
    marketing.groups.remove(Group.objects.get(name=roles.MARKETING))
    assert not fresh(marketing).has_perm("crm.view_contact")
