"""The contact search document (crm.search): what it holds, and that every writer of names
and addresses keeps it current: model saves (services, admin, API), the import, the
erasure, the demo data, the migration that filled it and its PostgreSQL rebuild."""

from __future__ import annotations

import importlib
from types import SimpleNamespace

import pytest
from django.apps import apps
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from crm import services
from crm.demo import demo_seed
from crm.imports import import_file
from crm.models import Contact, ContactPoint
from crm.privacy import contact_pseudonymise
from crm.search import SEARCH_DOCUMENTS_SQL, search_document
from tests.factories import ContactFactory, ContactPointFactory

pytestmark = pytest.mark.django_db


def _recomputed(contact: Contact) -> str:
    contact.refresh_from_db()
    addresses = contact.points.values_list("address", flat=True)
    return search_document(contact, addresses)


def _assert_every_document_current() -> None:
    for contact in Contact.objects.all():
        assert contact.search_document == _recomputed(contact), contact.pk


def test_the_document_holds_full_name_organisation_and_sorted_addresses():
    anna = Contact(first_name="Anna", last_name="Schmidt", organisation="Praxis Nord")
    document = search_document(anna, ["z@x.de", "+4930123", "a@x.de"])
    assert document == "Anna Schmidt\nPraxis Nord\n+4930123\na@x.de\nz@x.de"


@pytest.mark.parametrize(
    ("parts", "document"),
    [
        (("", "", "", []), ""),
        (("", "Schmidt", "", []), "Schmidt"),
        (("Anna", "", "", ["a@x.de"]), "Anna\na@x.de"),
        (("", "", "Praxis", []), "Praxis"),
    ],
)
def test_empty_parts_leave_no_blank_lines(parts, document):
    first_name, last_name, organisation, addresses = parts
    contact = Contact(first_name=first_name, last_name=last_name, organisation=organisation)
    assert search_document(contact, addresses) == document


def test_service_writes_keep_the_document_current(team, marketing):
    contact = services.contact_create(
        team=team,
        actor=marketing,
        first_name="Anna",
        last_name="Schmidt",
        points=[("email", "Anna@Example.org"), ("sms", "+49 151 23456789")],
    )
    contact.refresh_from_db()
    assert contact.search_document == "Anna Schmidt\n+4915123456789\nanna@example.org"

    services.contact_update(contact=contact, actor=marketing, organisation="Praxis Nord")
    point = services.contact_point_add(
        contact=contact, channel="email", address="second@example.org", actor=marketing
    )
    services.contact_point_update(point=point, address="third@example.org", actor=marketing)
    services.contact_point_remove(point=contact.points.get(channel="sms"), actor=marketing)

    contact.refresh_from_db()
    assert contact.search_document == (
        "Anna Schmidt\nPraxis Nord\nanna@example.org\nthird@example.org"
    )


def test_model_saves_keep_the_document_current(team):
    """What factories, fixtures and any other save() do."""
    contact = ContactFactory(team=team, first_name="Kim", last_name="Berg")
    point = ContactPointFactory(contact=contact, address="kim@example.org")
    contact.refresh_from_db()
    assert contact.search_document == "Kim Berg\nkim@example.org"

    contact.last_name = "Weiss"
    contact.save(update_fields=["last_name"])
    contact.refresh_from_db()
    assert contact.search_document == "Kim Weiss\nkim@example.org"

    point.delete()
    contact.refresh_from_db()
    assert contact.search_document == "Kim Weiss"


def test_a_save_of_other_fields_does_not_read_the_addresses(team):
    contact = ContactFactory(team=team)
    contact.language = "en"
    with CaptureQueriesContext(connection) as queries:
        contact.save(update_fields=["language"])
    assert not [q for q in queries.captured_queries if "crm_contactpoint" in q["sql"]]


def test_erasure_leaves_no_personal_data_in_the_document(team):
    contact = ContactFactory(team=team, first_name="Anna", last_name="Schmidt", organisation="X")
    ContactPointFactory(contact=contact, address="anna.schmidt@example.org")

    contact_pseudonymise(contact=contact)

    contact.refresh_from_db()
    assert "schmidt" not in contact.search_document.lower()
    assert "anna" not in contact.search_document.lower()
    assert contact.search_document == _recomputed(contact)


def test_imports_write_the_documents_of_new_and_changed_contacts(team, marketing, tmp_path):
    path = tmp_path / "kontakte.csv"
    path.write_text(
        "Vorname,Nachname,E-Mail,Telefon\n"
        "Anna,Schmidt,anna@example.org,\n"
        "Ben,Weber,ben@example.org,+49 151 11111111\n",
        encoding="utf-8",
    )
    import_file(path=path, team=team, actor=marketing)
    _assert_every_document_current()
    anna = Contact.objects.get(first_name="Anna")
    assert anna.search_document == "Anna Schmidt\nanna@example.org"

    # A new address only, a changed name, and a row that changes nothing.
    path.write_text(
        "Vorname,Nachname,E-Mail,Telefon\n"
        "Anna,Schmidt,anna@example.org,+49 151 22222222\n"
        "Benjamin,Weber,ben@example.org,\n",
        encoding="utf-8",
    )
    history_rows = anna.history.count()
    contact_import = import_file(path=path, team=team, actor=marketing)
    assert contact_import.updated_count == 2
    _assert_every_document_current()
    anna.refresh_from_db()
    assert anna.search_document == "Anna Schmidt\n+4915122222222\nanna@example.org"
    # A new address is no change of the contact itself: no history row for the document.
    assert anna.history.count() == history_rows
    assert "Benjamin Weber" in Contact.objects.get(last_name="Weber").search_document


def test_the_demo_data_have_current_documents(db):
    demo_seed(contacts=40, password="demo-password")
    assert Contact.objects.exclude(search_document="").count() == Contact.objects.count()
    _assert_every_document_current()


def _blank_documents() -> None:
    Contact.objects.update(search_document="")


def test_the_migration_fills_every_document(team):
    for n in range(5):
        contact = ContactFactory(team=team, organisation=f"Org {n}" if n % 2 else "")
        ContactPointFactory(contact=contact)
    ContactFactory(team=team, first_name="", last_name="")
    _blank_documents()
    migration = importlib.import_module("crm.migrations.0008_contact_search_document")

    migration.fill_search_documents(apps, SimpleNamespace(connection=connection))

    _assert_every_document_current()


@pytest.mark.postgres
def test_the_postgresql_rebuild_equals_the_python_documents(team):
    """Sorting (code points), blank names and parts, non-ASCII: the SQL spells the same."""
    people = [
        ("Ägidius", "Öztürk", "Café Zürich", ["zoe@x.de", "Zoe@x.de", "ärger@x.de", "+4930"]),
        ("", "", "", ["only@x.de"]),
        ("Kim", "", "", []),
        ("", "Lee", "Org", ["b@x.de", "a@x.de"]),
        (" ", "Space", "", []),
    ]
    for first, last, organisation, addresses in people:
        contact = ContactFactory(
            team=team, first_name=first, last_name=last, organisation=organisation
        )
        for n, address in enumerate(addresses):
            ContactPoint.objects.create(
                contact=contact, team=team, channel="sms" if n == 3 else "email", address=address
            )
    _blank_documents()
    with connection.cursor() as cursor:
        cursor.execute(SEARCH_DOCUMENTS_SQL)
    _assert_every_document_current()


@pytest.fixture
def schmidt_points(team, other_team):
    """Points of a Schmidt (one address names her, one does not), of a contact found only by
    address, of somebody else, and of another team's Schmidt."""
    schmidt = ContactFactory(team=team, first_name="Eva", last_name="Schmidt")
    by_address = ContactFactory(team=team, first_name="Kai", last_name="Berg")
    other = ContactFactory(team=team, first_name="Ute", last_name="Lang")
    return {
        "schmidt_named": ContactPointFactory(contact=schmidt, address="eva.schmidt@x.de"),
        "schmidt_plain": ContactPointFactory(contact=schmidt, address="eva@y.de"),
        "by_address": ContactPointFactory(contact=by_address, address="kai@schmidt-mail.de"),
        "other": ContactPointFactory(contact=other, address="ute@x.de"),
        "foreign": ContactPointFactory(
            contact=ContactFactory(team=other_team, last_name="Schmidt"), address="s@schmidt.de"
        ),
    }


def test_the_points_api_address_filter_matches_addresses_only(
    api_client_for, marketing, schmidt_points
):
    """Asking the contact's document first must not widen the filter to the contact's other
    addresses, nor to a name that matches."""
    response = api_client_for(marketing).get(
        reverse("contact-point-list"), {"address": "SCHMIDT", "page_size": 100}
    )
    assert response.status_code == 200
    found = {row["id"] for row in response.data["results"]}
    assert found == {schmidt_points["schmidt_named"].pk, schmidt_points["by_address"].pk}


@pytest.mark.parametrize(
    ("term", "expected"),
    [
        # Address or the contact's first or last name, as the admin's search fields say.
        ("schmidt", {"schmidt_named", "schmidt_plain", "by_address"}),
        ('"eva schmidt"', set()),
        ("eva y.de", {"schmidt_plain"}),
        ('"', {"schmidt_named", "schmidt_plain", "by_address", "other"}),
        ("%", set()),
    ],
)
def test_the_points_admin_search_is_unchanged_by_the_document(
    marketing, schmidt_points, term, expected
):
    client = Client()
    client.force_login(marketing)
    response = client.get(reverse("admin:crm_contactpoint_changelist"), {"q": term})
    assert response.status_code == 200
    found = {point.pk for point in response.context["cl"].result_list}
    assert found == {schmidt_points[name].pk for name in expected}
