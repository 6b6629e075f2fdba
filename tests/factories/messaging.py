from __future__ import annotations

import factory
from factory.django import DjangoModelFactory

from crm.models import Channel
from messaging.models import ChannelAccount
from tests.factories.crm import TeamFactory


class ChannelAccountFactory(DjangoModelFactory):
    """A console WhatsApp sender; pass channel/provider to vary."""

    class Meta:
        model = ChannelAccount

    team = factory.SubFactory(TeamFactory)
    name = factory.Sequence(lambda n: f"Sender {n}")
    slug = factory.Sequence(lambda n: f"sender-{n}")
    channel = Channel.WHATSAPP
    provider = "console"
    address = "+4930123456"
