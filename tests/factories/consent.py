from __future__ import annotations

import factory
from factory.django import DjangoModelFactory

from consent.models import ConsentText, Purpose
from crm.ledger import sha256_hex
from tests.factories.crm import TeamFactory


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
