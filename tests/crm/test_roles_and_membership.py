from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.http import HttpResponse
from django.utils import timezone
from guardian.models import UserObjectPermission

from crm import roles, selectors
from crm.middleware import UserTimezoneMiddleware
from crm.services import roles_sync, team_member_add, team_member_remove, user_time_zone_set
from tests.factories import ContactFactory, TeamFactory

pytestmark = pytest.mark.django_db


def test_every_role_exists_after_migrate():
    assert set(Group.objects.values_list("name", flat=True)) >= set(roles.ALL_ROLES)


def test_roles_sync_is_idempotent():
    first = roles_sync()
    assert roles_sync() == first
    assert Group.objects.filter(name__in=roles.ALL_ROLES).count() == len(roles.ALL_ROLES)


def test_auditor_holds_only_view_permissions_and_may_export():
    roles_sync()
    codenames = Group.objects.get(name=roles.AUDITOR).permissions.values_list("codename", flat=True)
    assert "view_contact" in codenames
    # Reading everything and exporting conversations: nothing that changes data.
    assert all(c.startswith("view_") or c == "export_conversations" for c in codenames)


def test_membership_is_one_object_permission_per_team(marketing, team):
    ContactFactory.create_batch(20, team=team)
    assert UserObjectPermission.objects.filter(user=marketing).count() == 1


def test_visible_teams_per_persona(marketing, outsider, auditor, superuser, team, other_team):
    assert selectors.visible_team_ids(marketing) == [team.pk]
    assert selectors.visible_team_ids(outsider) == [other_team.pk]
    assert set(selectors.visible_team_ids(auditor)) == {team.pk, other_team.pk}
    assert selectors.member_team_ids(auditor) == []
    assert set(selectors.visible_team_ids(superuser)) == {team.pk, other_team.pk}


def test_removing_membership_hides_the_team(make_user, team):
    user = make_user("leaver", roles.MARKETING, team)
    team_member_remove(team=team, user=user)
    assert selectors.member_team_ids(user) == []


def test_inactive_user_sees_nothing(make_user, team):
    user = make_user("gone", roles.MARKETING, team, is_active=False)
    assert selectors.visible_team_ids(user) == []


def test_adding_membership_is_idempotent(marketing, team):
    team_member_add(team=team, user=marketing)
    assert selectors.member_team_ids(marketing) == [team.pk]
    assert TeamFactory(slug="third").pk not in selectors.member_team_ids(marketing)


def test_times_are_shown_in_the_users_zone(rf, marketing):
    user_time_zone_set(user=marketing, time_zone="America/New_York")
    request = rf.get("/")
    request.user = marketing
    seen = {}

    def view(request):
        seen["zone"] = str(timezone.get_current_timezone())
        return HttpResponse()

    UserTimezoneMiddleware(view)(request)
    assert seen["zone"] == "America/New_York"


def test_users_without_profile_see_the_display_zone(rf, settings, marketing):
    settings.DISPLAY_TIME_ZONE = "Europe/Berlin"
    request = rf.get("/")
    request.user = marketing
    seen = {}

    def view(request):
        seen["zone"] = str(timezone.get_current_timezone())
        return HttpResponse()

    UserTimezoneMiddleware(view)(request)
    assert seen["zone"] == "Europe/Berlin"
