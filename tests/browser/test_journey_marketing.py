"""Marketing journey in a real browser: import contacts with consent (and a few bad rows), read
the rejected rows, build a consent segment, create a campaign with an approved template, dry-run
it, launch it, watch it complete and open the metrics dashboard."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from approvals.models import TemplateCategory
from approvals.services import template_create, template_version_create
from consent.services import suppression_add
from crm import roles
from crm.models import Channel, Contact, ContactImport, ImportStatus
from messaging.models import Campaign, CampaignRecipient, CampaignState, Message, RecipientStatus
from tests.factories import ChannelAccountFactory, ConsentTextFactory, PurposeFactory
from tests.messaging.helpers import sendable_version

pytestmark = pytest.mark.django_db(transaction=True)

SUPPRESSED_NUMBER = "+4915100000099"
HEADER = (
    "external_id,first_name,last_name,email,whatsapp,language,"
    "consent_purpose,consent_channels,consent_text_version,consent_date,consent_source"
)


def contacts_csv(consent_date: str) -> str:
    """Six good rows (three consented on WhatsApp, one on e-mail only though reachable on
    WhatsApp, one e-mail-only, one without consent) and four bad ones."""
    consent = f"filmtipps,{{}},1,{consent_date},Web form kino-nord.example.com"
    rows = [
        f"K-001,Lena,Vogel,lena@example.com,0151 11111101,de,{consent.format('whatsapp')}",
        f"K-002,Jonas,Becker,,0151 11111102,de,{consent.format('whatsapp')}",
        f"K-003,Mia,Schulz,,0151 11111103,en,{consent.format('whatsapp')}",
        f"K-004,Paul,Wagner,paul@example.com,0151 11111104,de,{consent.format('email')}",
        f"K-005,Emma,Hoffmann,emma@example.com,,de,{consent.format('email')}",
        "K-006,Noah,Koch,,0151 11111106,de,,,,,",
        "K-007,Ben,Fischer,not-an-email,,de,,,,,",  # line 8: e-mail does not parse
        "K-008,Lea,Weber,,12345,de,,,,,",  # line 9: phone number does not parse
        ",,,,,de,,,,,",  # line 10: no name, no external id, no address
        f"K-010,Max,Meyer,,{SUPPRESSED_NUMBER},de,,,,,",  # line 11: on the suppression list
    ]
    return "\n".join([HEADER, *rows]) + "\n"


@pytest.fixture
def kino(make_user, team):
    """The team's consent purpose and wording, its WhatsApp sender with an approved (also by
    Meta) template for that purpose and a draft one, and a number that was blocked before."""
    make_user("marketing", roles.MARKETING, team)
    purpose = PurposeFactory(
        team=team, key="filmtipps", name="Filmtipps", allowed_channels=["email", "whatsapp"]
    )
    ConsentTextFactory(purpose=purpose, version=1, language="de")
    account = ChannelAccountFactory(team=team, name="Kino Nord WhatsApp", slug="kino-wa")
    version = sendable_version(
        team,
        channel=Channel.WHATSAPP,
        purpose=purpose,
        name="filmtipp_herbst",
        body="Hallo {{ first_name }}, diese Woche: Herbstkino!",
    )
    draft = template_version_create(
        template=template_create(
            team=team,
            name="filmtipp_winter",
            channel=Channel.WHATSAPP,
            category=TemplateCategory.MARKETING,
            language="de",
            purpose=purpose,
            actor=None,
        ),
        actor=None,
        body="Hallo {{ first_name }}, bald: Winterkino!",
    )
    suppression_add(address=SUPPRESSED_NUMBER, channel=Channel.WHATSAPP, team=team)
    return {"account": account, "version": version, "draft": draft}


def test_marketing_imports_segments_and_runs_a_campaign(kino, journey, page, tmp_path):
    consent_date = (timezone.localdate() - dt.timedelta(days=10)).isoformat()
    upload = tmp_path / "kino-kontakte.csv"
    upload.write_text(contacts_csv(consent_date), encoding="utf-8")
    journey.login("marketing")

    # Import: upload, preview (nothing written yet), confirm, see it finish.
    page.goto("/admin/crm/contactimport/add/")
    page.set_input_files("#id_file", str(upload))
    journey.shot("import upload")
    page.click("input[type=submit][value='Upload and preview']")
    page.wait_for_url(re.compile(r"/preview/$"))
    preview = page.locator("#result_list tbody tr")
    expect(preview).to_have_count(10)
    expect(page.locator("#result_list tr.outcome-created")).to_have_count(6)
    expect(page.locator("#result_list tr.outcome-rejected")).to_have_count(4)
    journey.shot("import preview")
    assert not Contact.objects.exists()

    page.click("input[type=submit][value='Confirm and import']")
    page.wait_for_url(re.compile(r"/admin/crm/contactimport/\d+/change/$"))
    expect(page.locator("#import-status")).to_have_text("Completed")
    expect(page.locator("#import-progress")).to_have_attribute("value", "100")
    expect(page.locator("#count-created")).to_have_text("6")
    expect(page.locator("#count-rejected")).to_have_text("4")
    rejected = [
        row.locator("td").all_inner_texts() for row in page.locator("#result_list tbody tr").all()
    ]
    journey.shot("import finished with rejected rows")
    assert [(line, reason) for line, reason, _row in rejected] == [
        ("8", "Column “email”: “not-an-email” is not a valid e-mail address."),
        ("9", "Column “whatsapp”: “12345” is not a valid phone number."),
        ("10", "The row has no name, no external id and no address."),
        ("11", f"“{SUPPRESSED_NUMBER}” is on the suppression list and must not be imported."),
    ]
    assert "email: not-an-email" in rejected[0][2]  # the row as read, beside its reason
    expect(page.locator("#report-link")).to_be_visible()
    contact_import = ContactImport.objects.get()
    assert contact_import.status == ImportStatus.COMPLETED
    assert set(Contact.objects.values_list("external_id", flat=True)) == {
        f"K-00{n}" for n in range(1, 7)
    }

    # Segment: everyone who consented to film tips, on any channel; the page counts them.
    page.goto("/admin/crm/segment/add/")
    page.select_option("#id_team", label="Kino Nord")
    page.fill("#id_name", "Filmtipps-Abonnenten")
    page.fill(
        "#id_rules",
        json.dumps(
            {
                "match": "all",
                "conditions": [{"field": "consent", "op": "granted", "purpose": "filmtipps"}],
            }
        ),
    )
    journey.shot("segment rules")
    page.click("input[name=_continue]")
    expect(page.locator("#segment-preview .preview-count")).to_have_text("5 contacts match.")
    expect(page.locator("#segment-preview li")).to_have_count(5)
    journey.shot("segment preview count")

    # Campaign: the segment, the WhatsApp sender and its approved template, picked in the form.
    page.goto("/admin/messaging/campaign/add/")
    page.select_option("#id_team", label="Kino Nord")
    page.fill("#id_name", "Herbstkino")
    page.select_option("#id_segment", label="Filmtipps-Abonnenten")
    page.select_option("#id_templates-0-account", label=str(kino["account"]))
    offered = page.locator("#id_templates-0-template_version option").all_inner_texts()
    assert str(kino["version"]) in offered
    assert str(kino["draft"]) not in offered  # only approved wording can be picked
    page.select_option("#id_templates-0-template_version", label=str(kino["version"]))
    journey.shot("campaign form")
    page.click("input[name=_save]")
    page.wait_for_url(re.compile(r"/admin/messaging/campaign/$"))
    campaign = Campaign.objects.get()
    assert campaign.state == CampaignState.DRAFT
    assert campaign.templates.get().template_version == kino["version"]

    # Dry run: who would get it, and why the others would not.
    run_action(page, campaign, "dry_run")
    expect(page.locator("ul.messagelist li.info")).to_have_text(
        "Dry run of Herbstkino: contacts: 5, eligible: 3, processing restricted: 0, "
        "no address on the channel: 1, suppressed: 0, no consent: 1."
    )
    journey.shot("campaign dry run")
    assert not CampaignRecipient.objects.exists()

    # Launch and watch it complete (Celery runs the batches inline here).
    run_action(page, campaign, "launch")
    expect(page.locator("ul.messagelist li.success")).to_contain_text("1 campaign updated")
    page.reload()
    row = page.locator("#result_list tbody tr", has_text="Herbstkino")
    expect(row.locator("td.field-state")).to_have_text("Completed")
    expect(row.locator("td.field-progress_bar progress")).to_have_attribute("value", "100")
    expect(row.locator("td.field-progress_bar progress")).to_be_in_viewport(ratio=1)
    expect(row.locator("td.field-progress_bar")).to_have_text(re.compile(r"3 / 3$"))
    journey.shot("campaign completed")
    row.locator("th.field-name a").click()
    expect(page.locator(".field-progress_bar progress")).to_have_attribute("value", "100")
    expect(page.locator(".field-sent_count .readonly")).to_have_text("3")
    journey.shot("campaign page")
    campaign.refresh_from_db()
    assert (campaign.state, campaign.recipients_count, campaign.sent_count) == (
        CampaignState.COMPLETED,
        3,
        3,
    )
    assert set(
        CampaignRecipient.objects.filter(status=RecipientStatus.SENT).values_list(
            "contact__external_id", flat=True
        )
    ) == {"K-001", "K-002", "K-003"}
    assert Message.objects.filter(origin=f"campaign:{campaign.pk}").count() == 3

    # The dashboard: the campaign's messages by name, and the consent the import brought.
    page.goto("/admin/messaging/message/metrics/")
    page.wait_for_selector("svg.metrics-chart")
    journey.shot("metrics dashboard")
    tables = page.locator("table.metrics-table")
    per_campaign = tables.nth(0).locator("tbody tr")
    expect(per_campaign).to_have_count(1)
    expect(per_campaign.locator("td").nth(0)).to_have_text("Herbstkino")
    expect(per_campaign.locator("td").nth(1)).to_have_text("3")  # sent
    consent_growth = tables.nth(2).locator("tbody tr")
    expect(consent_growth).to_have_count(1)
    expect(consent_growth.locator("td")).to_have_text(["Filmtipps", "5", "0", "5"])


def run_action(page, campaign: Campaign, action: str) -> None:
    """Tick the campaign on the changelist and run an admin action on it."""
    page.goto("/admin/messaging/campaign/")
    page.check(f"input[name=_selected_action][value='{campaign.pk}']")
    page.select_option("select[name=action]", action)
    page.click("button[name=index]")
