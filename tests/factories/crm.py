from __future__ import annotations

import factory
from django.contrib.auth import get_user_model
from factory.django import DjangoModelFactory

from crm.models import Channel, Contact, ContactPoint, Language, Segment, Tag, Team


class TeamFactory(DjangoModelFactory):
    class Meta:
        model = Team
        django_get_or_create = ("slug",)

    name = factory.Sequence(lambda n: f"Team {n}")
    slug = factory.Sequence(lambda n: f"team-{n}")


class UserFactory(DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.django.Password("secret-pass-123")
    is_staff = True


class TagFactory(DjangoModelFactory):
    class Meta:
        model = Tag

    team = factory.SubFactory(TeamFactory)
    name = factory.Sequence(lambda n: f"tag-{n}")


class ContactFactory(DjangoModelFactory):
    class Meta:
        model = Contact

    team = factory.SubFactory(TeamFactory)
    first_name = factory.Faker("first_name", locale="de_DE")
    last_name = factory.Faker("last_name", locale="de_DE")
    language = Language.GERMAN
    time_zone = "Europe/Berlin"


class ContactPointFactory(DjangoModelFactory):
    class Meta:
        model = ContactPoint

    contact = factory.SubFactory(ContactFactory)
    team = factory.SelfAttribute("contact.team")
    channel = Channel.EMAIL
    address = factory.Sequence(lambda n: f"person{n}@example.org")


class SegmentFactory(DjangoModelFactory):
    class Meta:
        model = Segment

    team = factory.SubFactory(TeamFactory)
    name = factory.Sequence(lambda n: f"Segment {n}")
    rules = factory.LazyFunction(lambda: {"match": "all", "conditions": []})
