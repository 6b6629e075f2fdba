"""The contact tables carry only the indexes their queries use (migrations crm 0007, 0008).

An import writes every contact, contact point and their history rows through each index of
their tables, so indexes no query reads are left out: the single-column team indexes (every
contact index and the points' unique address constraint lead with the team), the points'
creation time, the address hash's LIKE twin, and all history indexes but those by object id,
contact, history date and user. The lookups that used them are still index scans.
"""

from __future__ import annotations

import pytest
from django.db import transaction
from django.db.models import ProtectedError

from crm import roles
from crm.imports import import_file
from crm.models import Contact, ContactPoint
from tests.db_plans import index_names, plan, postgres_only, referenced_tables

pytestmark = pytest.mark.django_db

INDEXES = {
    "crm_contact": {
        "crm_contact_pkey",
        "crm_contact_created_at_67bd9b6e",
        "crm_contact_team_created",
        "crm_contact_team_name",
        "crm_contact_team_language",
        "crm_contact_unique_external_id",
        "crm_contact_search_trgm",
    },
    "crm_contactpoint": {
        "crm_contactpoint_pkey",
        "crm_contactpoint_unique_address",
        "crm_contactpoint_contact_id_5865b4c3",
        "crm_contactpoint_address",
        "crm_contactpoint_address_hash",
    },
    "crm_historicalcontact": {
        "crm_historicalcontact_pkey",
        "crm_historicalcontact_id_70479939",
        "crm_historicalcontact_history_date_7d9debdf",
        "crm_historicalcontact_history_user_id_46e22627",
    },
    "crm_historicalcontactpoint": {
        "crm_historicalcontactpoint_pkey",
        "crm_historicalcontactpoint_id_6146074d",
        "crm_historicalcontactpoint_contact_id_b1e7c508",
        "crm_historicalcontactpoint_history_date_cc91cbbf",
        "crm_historicalcontactpoint_history_user_id_1702accd",
    },
}


@postgres_only
@pytest.mark.parametrize("table", sorted(INDEXES))
def test_the_contact_tables_have_only_the_indexes_their_queries_use(table):
    assert index_names(table) == INDEXES[table]


@postgres_only
@pytest.mark.parametrize(
    ("sql", "index"),
    [
        # PROTECT on team deletion; team-scoped lists.
        ("SELECT id FROM crm_contact WHERE team_id = %s", "crm_contact_team_"),
        ("SELECT id FROM crm_contactpoint WHERE team_id = %s", "crm_contactpoint_unique_address"),
        # The suppression list joins points by hash.
        (
            "SELECT id FROM crm_contactpoint WHERE address_hash = %s",
            "crm_contactpoint_address_hash",
        ),
        # Erasure rewrites a contact's history and its points' history.
        ("SELECT history_id FROM crm_historicalcontact WHERE id = %s", "historicalcontact_id"),
        (
            "SELECT history_id FROM crm_historicalcontactpoint WHERE contact_id = %s",
            "historicalcontactpoint_contact_id",
        ),
    ],
)
def test_lookups_of_the_dropped_indexes_use_the_remaining_ones(sql, index):
    param = "0" * 64 if "address_hash" in sql else 1
    with transaction.atomic():
        assert index in plan(sql, [param])


@postgres_only
@pytest.mark.parametrize(
    ("table", "references"),
    [
        # The acting user of history rows is not checked by the database.
        ("crm_historicalcontact", set()),
        ("crm_historicalcontactpoint", set()),
        # A point's team is its contact's (checked there), copied for the unique constraint.
        ("crm_contactpoint", {"crm_contact"}),
        ("crm_contact", {"crm_team"}),
    ],
)
def test_the_database_checks_each_reference_once(table, references):
    assert referenced_tables(table) == references


def test_a_team_with_contacts_still_cannot_be_deleted(team):
    ContactPoint.objects.create(
        contact=Contact.objects.create(team=team), team=team, channel="email", address="a@b.de"
    )
    with pytest.raises(ProtectedError):
        team.delete()
    assert ContactPoint.objects.filter(team=team).count() == 1


def test_deleting_a_user_still_empties_the_user_of_its_history_rows(team, make_user, tmp_path):
    user = make_user("leaving", roles.MARKETING, team)
    path = tmp_path / "kontakte.csv"
    path.write_text("E-Mail\nkim@example.org\n", encoding="utf-8")
    contact_import = import_file(path=path, team=team, actor=user)
    assert contact_import.created_count == 1
    point = ContactPoint.objects.get(address="kim@example.org")
    assert point.contact.history.get().history_user == user
    assert point.history.get().history_user == user

    user.delete()

    assert point.contact.history.get().history_user_id is None
    assert point.history.get().history_user_id is None
