"""Freezing counts the recipients it wrote instead of counting the table again: the count
is what the table holds, after one or two passes, and a second freeze adds nobody. And the
database checks only the references the freeze does not guarantee itself."""

from __future__ import annotations

import pytest

from crm.models import Channel
from messaging.models import CampaignRecipient, ChannelMode
from messaging.services import TemplateChoice, campaign_create, campaign_launch
from messaging.services.campaigns import _freeze, campaign_templates
from tests.consent.helpers import grant_consent
from tests.db_plans import postgres_only, referenced_tables
from tests.factories import ChannelAccountFactory, ContactPointFactory, PurposeFactory
from tests.messaging.helpers import reachable_contact, sendable_version

pytestmark = pytest.mark.django_db

WA, MAIL = Channel.WHATSAPP, Channel.EMAIL


def _campaign(team, purpose, mode):
    """Fixed: WhatsApp only (one pass). Preferred: WhatsApp then mail (four passes)."""
    choices = [
        TemplateChoice(
            ChannelAccountFactory(team=team, channel=WA),
            sendable_version(team, channel=WA, purpose=purpose),
        )
    ]
    if mode == ChannelMode.PREFERRED:
        choices.append(
            TemplateChoice(
                ChannelAccountFactory(team=team, channel=MAIL),
                sendable_version(
                    team,
                    channel=MAIL,
                    purpose=purpose,
                    body="Hallo {{ first_name }}. Abmelden: {{ unsubscribe_url }}",
                ),
            )
        )
    return campaign_create(
        team=team, actor=None, name="Freeze", channel_mode=mode, templates=choices
    )


@pytest.mark.parametrize("mode", [ChannelMode.FIXED, ChannelMode.PREFERRED])
def test_the_frozen_count_is_the_table_and_a_second_freeze_adds_nobody(team, mode):
    purpose = PurposeFactory(team=team, allowed_channels=[WA, MAIL])
    # On both channels (found by several passes), on one, and preferring mail.
    both = reachable_contact(team, WA, preferred_channel=MAIL)
    ContactPointFactory(contact=both, channel=MAIL, address="both@example.org")
    only_whatsapp = reachable_contact(team, WA)
    only_mail = reachable_contact(team, MAIL, preferred_channel=MAIL)
    for contact, channels in ((both, (WA, MAIL)), (only_whatsapp, (WA,)), (only_mail, (MAIL,))):
        for channel in channels:
            grant_consent(contact, purpose, channel)
    campaign = _campaign(team, purpose, mode)
    expected = 3 if mode == ChannelMode.PREFERRED else 2

    launched = campaign_launch(campaign=campaign, actor=None)
    stored = CampaignRecipient.objects.filter(campaign=launched)

    assert launched.recipients_count == stored.count() == expected
    assert launched.recipients.get(contact=both).channel == (
        MAIL if mode == ChannelMode.PREFERRED else WA
    )
    assert _freeze(launched, campaign_templates(launched)) == expected
    assert stored.count() == expected


@postgres_only
def test_the_database_checks_only_the_recipients_contact_and_message():
    assert referenced_tables("messaging_campaignrecipient") == {"crm_contact", "messaging_message"}


def test_deleting_a_campaign_still_deletes_its_recipients(team):
    purpose = PurposeFactory(team=team, allowed_channels=[WA, MAIL])
    grant_consent(reachable_contact(team, WA), purpose, WA)
    launched = campaign_launch(campaign=_campaign(team, purpose, ChannelMode.FIXED), actor=None)
    assert CampaignRecipient.objects.filter(campaign=launched).count() == 1

    launched.delete()

    assert not CampaignRecipient.objects.exists()
