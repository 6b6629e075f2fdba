from __future__ import annotations

import datetime as dt

import factory
from django.utils import timezone
from factory.django import DjangoModelFactory

from consent.models import ConsentText, DataSubjectRequest, Purpose
from crm.ledger import sha256_hex
from tests.factories.crm import ContactFactory, TeamFactory


class PurposeFactory(DjangoModelFactory):
    class Meta:
        model = Purpose

    team = factory.SubFactory(TeamFactory)
    key = factory.Sequence(lambda n: f"purpose-{n}")
    name = factory.Sequence(lambda n: f"Newsletter {n}")
    allowed_channels = factory.LazyFunction(lambda: ["email", "sms", "whatsapp"])
    double_opt_in_channels = factory.LazyFunction(list)


class ConsentTextFactory(DjangoModelFactory):
    class Meta:
        model = ConsentText

    purpose = factory.SubFactory(PurposeFactory)
    version = factory.Sequence(lambda n: n + 1)
    language = "de"
    body = "Ja, ich möchte den Newsletter per E-Mail erhalten. Abmeldung jederzeit möglich."
    content_hash = factory.LazyAttribute(lambda text: sha256_hex(text.body))


class DataSubjectRequestFactory(DjangoModelFactory):
    """An open case; tests that execute one go through consent.services.dsr_open instead."""

    class Meta:
        model = DataSubjectRequest

    contact = factory.SubFactory(ContactFactory)
    team = factory.SelfAttribute("contact.team")
    kind = DataSubjectRequest.Kind.ACCESS
    received_at = factory.LazyFunction(timezone.now)
    due_at = factory.LazyAttribute(lambda case: case.received_at + dt.timedelta(days=30))
