from __future__ import annotations

import pytest

from crm.addresses import AddressInvalid
from crm.errors import PermissionRefused
from crm.models import Contact, ContactPoint
from crm.services import (
    ContactInvalid,
    ContactPointDuplicate,
    TeamMoveRefused,
    contact_create,
    contact_point_add,
    contact_update,
    contacts_assign_team,
    contacts_tag,
    tag_create,
    team_member_add,
)
from tests.factories import ContactFactory, ContactPointFactory, TagFactory

pytestmark = pytest.mark.django_db


def test_contact_is_created_with_normalised_addresses(marketing, team):
    contact = contact_create(
        team=team,
        actor=marketing,
        first_name="Jana",
        last_name="Schmidt",
        points=[("email", " Jana@Example.DE "), ("sms", "0151 23456789")],
    )
    addresses = sorted(contact.points.values_list("channel", "address"))
    assert addresses == [("email", "jana@example.de"), ("sms", "+4915123456789")]
    assert contact.points.first().team_id == team.pk


def test_invalid_address_creates_nothing(marketing, team):
    with pytest.raises(AddressInvalid):
        contact_create(team=team, actor=marketing, first_name="Jana", points=[("sms", "12")])
    assert Contact.objects.count() == 0
    assert ContactPoint.objects.count() == 0


def test_duplicate_address_in_team_is_refused(marketing, team):
    ContactPointFactory(contact__team=team, channel="email", address="jana@example.de")
    with pytest.raises(ContactPointDuplicate):
        contact_create(
            team=team, actor=marketing, first_name="J", points=[("email", "JANA@example.de")]
        )
    assert Contact.objects.count() == 1


def test_same_address_is_allowed_in_another_team(marketing, team, other_team):
    ContactPointFactory(contact__team=other_team, channel="email", address="jana@example.de")
    contact = contact_create(
        team=team, actor=marketing, first_name="J", points=[("email", "jana@example.de")]
    )
    assert contact.points.count() == 1


def test_external_id_is_unique_within_team(marketing, team):
    ContactFactory(team=team, external_id="ERP-1")
    with pytest.raises(ContactInvalid) as error:
        contact_create(team=team, actor=marketing, external_id="ERP-1")
    assert error.value.field == "external_id"


def test_outsider_cannot_create_in_foreign_team(outsider, team):
    with pytest.raises(PermissionRefused):
        contact_create(team=team, actor=outsider, first_name="X")
    assert Contact.objects.count() == 0


def test_auditor_cannot_change_contacts(auditor, team):
    contact = ContactFactory(team=team, first_name="Old")
    with pytest.raises(PermissionRefused):
        contact_update(contact=contact, actor=auditor, first_name="New")
    contact.refresh_from_db()
    assert contact.first_name == "Old"


def test_unknown_field_and_bad_time_zone_are_refused(marketing, team):
    contact = ContactFactory(team=team)
    with pytest.raises(ContactInvalid):
        contact_update(contact=contact, actor=marketing, shoe_size=42)
    with pytest.raises(Exception, match="time zone"):
        contact_update(contact=contact, actor=marketing, time_zone="Mars/Olympus")
    contact.refresh_from_db()
    assert contact.time_zone == "Europe/Berlin"


def test_history_records_who_changed_what(marketing, team):
    contact = contact_create(team=team, actor=marketing, first_name="Jana")
    contact_update(contact=contact, actor=marketing, first_name="Johanna", reason="typo")
    latest = contact.history.first()
    assert latest.first_name == "Johanna"
    assert latest.history_user == marketing
    assert latest.history_change_reason == "typo"
    assert contact.history.count() == 2


def test_contact_point_add_refuses_invalid_and_duplicate(marketing, team):
    contact = ContactFactory(team=team)
    contact_point_add(
        contact=contact, channel="whatsapp", address="+49 160 1234567", actor=marketing
    )
    with pytest.raises(ContactPointDuplicate):
        contact_point_add(
            contact=contact, channel="whatsapp", address="01601234567", actor=marketing
        )
    with pytest.raises(AddressInvalid):
        contact_point_add(contact=contact, channel="email", address="nope", actor=marketing)
    assert contact.points.count() == 1


def test_tagging_only_touches_the_tags_team(marketing, team, other_team):
    tag = tag_create(team=team, name="VIP", actor=marketing)
    own = ContactFactory.create_batch(3, team=team)
    ContactFactory(team=other_team)
    assert contacts_tag(contacts=Contact.objects.all(), tag=tag, actor=marketing) == 3
    assert contacts_tag(contacts=Contact.objects.all(), tag=tag, actor=marketing) == 0
    assert {c.pk for c in tag.contacts.all()} == {c.pk for c in own}


def test_move_to_team_moves_addresses_and_drops_tags(marketing, team, other_team):
    team_member_add(team=other_team, user=marketing)
    contact = ContactFactory(team=team)
    ContactPointFactory(contact=contact, address="a@example.org")
    contact.tags.add(TagFactory(team=team))
    moved = contacts_assign_team(
        contacts=Contact.objects.filter(pk=contact.pk), team=other_team, actor=marketing
    )
    assert moved == 1
    contact.refresh_from_db()
    assert contact.team == other_team
    assert contact.points.get().team == other_team
    assert contact.tags.count() == 0


def test_move_refused_as_a_whole_when_an_address_clashes(marketing, team, other_team):
    team_member_add(team=other_team, user=marketing)
    clean = ContactFactory(team=team)
    clashing = ContactFactory(team=team)
    ContactPointFactory(contact=clashing, address="same@example.org")
    ContactPointFactory(contact__team=other_team, address="same@example.org")
    with pytest.raises(TeamMoveRefused):
        contacts_assign_team(
            contacts=Contact.objects.filter(pk__in=[clean.pk, clashing.pk]),
            team=other_team,
            actor=marketing,
        )
    clean.refresh_from_db()
    assert clean.team == team


def test_move_needs_membership_of_target_team(marketing, team, other_team):
    contact = ContactFactory(team=team)
    with pytest.raises(PermissionRefused):
        contacts_assign_team(
            contacts=Contact.objects.filter(pk=contact.pk), team=other_team, actor=marketing
        )
    contact.refresh_from_db()
    assert contact.team == team
