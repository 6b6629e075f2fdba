"""The contact list's representation is written out by hand (ContactSerializer.to_representation)
for speed; it must stay exactly what DRF's generic rendering of the declared fields gives."""

from __future__ import annotations

import zoneinfo

import pytest
from django.conf import settings
from django.urls import reverse
from django.utils import timezone
from rest_framework import serializers

from crm.api.serializers import ContactSerializer
from crm.models import Contact
from tests.factories import ContactFactory, ContactPointFactory, TagFactory

pytestmark = pytest.mark.django_db


def _generic(contact: Contact) -> dict:
    """DRF's own field-by-field rendering of ContactSerializer's declared fields."""
    return dict(serializers.Serializer.to_representation(ContactSerializer(), contact))


def _contacts(team) -> list[Contact]:
    full = ContactFactory(
        team=team,
        salutation="Dr.",
        organisation="Praxis Nord",
        external_id="ERP-1",
        attributes={"plan": "gold", "seats": [1, 2]},
    )
    ContactPointFactory(contact=full, channel="email", address="anna@example.org")
    ContactPointFactory(contact=full, channel="sms", address="+4915112345678", is_primary=False)
    full.tags.add(TagFactory(team=team, name="vip"), TagFactory(team=team, name="kino"))
    bare = ContactFactory(team=team, external_id=None, organisation="", attributes={})
    return [full, bare]


@pytest.mark.parametrize("zone", ["UTC", "Europe/Berlin"])
def test_written_out_representation_equals_drfs(team, zone):
    contacts = _contacts(team)
    with timezone.override(zoneinfo.ZoneInfo(zone)):
        for contact in Contact.objects.filter(pk__in=[c.pk for c in contacts]):
            fast = ContactSerializer(contact).data
            assert list(fast.items()) == list(_generic(contact).items())


def test_every_declared_field_is_written_out(team):
    contact = _contacts(team)[0]
    assert list(ContactSerializer(contact).data) == ContactSerializer.Meta.fields


def test_api_list_rows_equal_drfs_rendering(api_client_for, marketing, team):
    _contacts(team)
    response = api_client_for(marketing).get(reverse("contact-list"))
    assert response.status_code == 200
    # Times in the zone the request showed them in (crm.middleware.UserTimezoneMiddleware).
    with timezone.override(zoneinfo.ZoneInfo(settings.DISPLAY_TIME_ZONE)):
        expected = {
            contact.pk: _generic(contact) for contact in Contact.objects.select_related("team")
        }
    assert [row["id"] for row in response.json()["results"]] == list(
        Contact.objects.order_by("-created_at", "-id").values_list("id", flat=True)
    )
    for row in response.json()["results"]:
        assert row == expected[row["id"]]
