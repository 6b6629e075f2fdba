"""Auditor journey: find one contact's conversations, export a period of them from the admin,
download the files and verify them offline; the auditor cannot change a contact.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from io import StringIO
from unittest import mock

import pytest
from django.core.management import call_command
from django.urls import reverse

from crm.models import Contact
from messaging.models import ConversationExport, Message
from tests.factories import ChannelAccountFactory
from tests.messaging.helpers import reachable_contact, receive_text

pytestmark = pytest.mark.django_db(transaction=True)

CONVERSATIONS = reverse("admin:messaging_conversation_changelist")
EXPORT_ADD = reverse("admin:messaging_conversationexport_add")
EXPORT_FILES = {"events.csv", "events.jsonl", "manifest.json", "messages.csv", "messages.jsonl"}


def at(day: str) -> dt.datetime:
    return dt.datetime.fromisoformat(f"{day}T10:00:00+00:00")


def received_on(account, contact, text: str, day: str) -> Message:
    """An inbound message recorded as if it had arrived on that day."""
    with mock.patch("django.utils.timezone.now", return_value=at(day)):
        return receive_text(account, contact, text, at=at(day))


@pytest.fixture
def archive(team):
    """Anna wrote in March and in June; Ben, another contact, in March."""
    account = ChannelAccountFactory(team=team)
    anna = reachable_contact(team, first_name="Anna", last_name="Archivarin")
    ben = reachable_contact(team, first_name="Ben", last_name="Beispiel")
    march = received_on(account, anna, "Gibt es im März Sondervorstellungen?", "2026-03-10")
    received_on(account, anna, "Und im Sommer?", "2026-06-15")
    received_on(account, ben, "Hallo Kino", "2026-03-12")
    return {"anna": anna, "ben": ben, "march": march}


def test_auditor_exports_one_contacts_period_and_changes_nothing(
    journey, page, auditor, archive, tmp_path
):
    anna, march = archive["anna"], archive["march"]
    assert Message.objects.get(pk=march.pk).created_at == at("2026-03-10")

    # 1. Find Anna's conversations in the conversation list.
    journey.login(auditor.username)
    page.goto(CONVERSATIONS)
    page.fill("#searchbar", "Archivarin")
    page.press("#searchbar", "Enter")
    page.wait_for_url(re.compile(r"\?q=Archivarin"))
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 1
    assert "Anna Archivarin" in rows.first.inner_text()
    assert "Ben Beispiel" not in page.locator("#result_list").inner_text()
    journey.shot("conversations of one contact")

    # The conversation page links the contact; its id is what the export asks for.
    rows.first.locator("th a, td a").first.click()
    contact_link = page.get_by_role("link", name="Anna Archivarin")
    contact_url = contact_link.get_attribute("href")
    contact_id = int(re.search(r"/contact/(\d+)/change/", contact_url).group(1))
    assert contact_id == anna.pk
    journey.shot("conversation of the contact")

    # 2. Export March 2026 of that contact.
    page.goto(EXPORT_ADD)
    page.fill("#id_contact", str(contact_id))
    page.fill("#id_since_0", "2026-03-01")
    page.fill("#id_since_1", "00:00:00")
    page.fill("#id_until_0", "2026-04-01")
    page.fill("#id_until_1", "00:00:00")
    journey.shot("export form for march")
    page.click("input[value=Export]")
    page.wait_for_url(re.compile(r"/conversationexport/\d+/change/$"))
    assert page.locator("ul.messagelist li.success").inner_text() == "Exported 1 conversation."
    export = ConversationExport.objects.get()
    assert (export.actor, export.conversation_count, export.message_count) == (auditor, 1, 1)
    links = page.locator(".field-download_links a")
    assert {links.nth(i).inner_text() for i in range(links.count())} == EXPORT_FILES
    journey.shot("export recorded with its files")

    # 3. Download every file through the browser and verify them offline.
    downloaded = tmp_path / "export"
    downloaded.mkdir()
    for index in range(links.count()):
        with page.expect_download() as download_info:
            links.nth(index).click()
        download = download_info.value
        download.save_as(downloaded / download.suggested_filename)
    assert {path.name for path in downloaded.iterdir()} == EXPORT_FILES

    output = StringIO()
    call_command(
        "verify_export", str(downloaded), "--manifest-sha256", export.manifest_sha256, stdout=output
    )
    assert output.getvalue().startswith("OK: 1 messages")
    messages = [
        json.loads(line)
        for line in (downloaded / "messages.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    assert [(m["id"], m["contact"]) for m in messages] == [(march.pk, anna.pk)]
    manifest = json.loads((downloaded / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["exported_by"] == auditor.username
    assert manifest["counts"]["messages"] == 1

    # 4. The auditor cannot change a contact: the page is read-only and a forged POST is 403.
    page.goto(contact_url)
    assert page.locator("#content h1").inner_text() == "View contact"
    assert page.locator("input[name=_save]").count() == 0
    assert page.locator("input[name=first_name]").count() == 0
    assert page.locator(".fieldBox.field-first_name .readonly").inner_text() == "Anna"
    journey.shot("contact is read-only for the auditor")
    token = page.locator("input[name=csrfmiddlewaretoken]").first.input_value()
    before = Contact.objects.filter(pk=anna.pk).values().get()
    response = page.request.post(
        contact_url,
        form={
            "csrfmiddlewaretoken": token,
            "team": str(anna.team_id),
            "first_name": "Gefälscht",
            "last_name": anna.last_name,
            "language": anna.language,
            "_save": "Save",
        },
        headers={"Referer": page.url},
    )
    assert response.status == 403
    assert Contact.objects.filter(pk=anna.pk).values().get() == before
