from __future__ import annotations

import csv
import io

import pytest
from django.contrib.messages import get_messages
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from crm import roles, services
from crm.models import Contact, ContactPoint, Tag
from crm.services import ContactPointDuplicate, contact_create, contact_update, team_member_add
from tests.factories import ContactFactory, ContactPointFactory, TagFactory, TeamFactory

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:crm_contact_changelist")
ADD = reverse("admin:crm_contact_add")


def change_url(contact):
    return reverse("admin:crm_contact_change", args=[contact.pk])


def history_url(contact):
    return reverse("admin:crm_contact_history", args=[contact.pk])


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def messages_of(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def contact_data(*, team=None, points=(), existing=(), **fields) -> dict:
    """POST data of the contact form with its address inline.

    `existing` are (point, changes) pairs for saved addresses, `points` (channel, address) rows
    to add.
    """
    data = {
        "salutation": "",
        "first_name": "",
        "last_name": "",
        "language": "de",
        "time_zone": "Europe/Berlin",
        "organisation": "",
        "profession": "",
        "preferred_channel": "",
        "attributes": "{}",
        "external_id": "",
        "points-TOTAL_FORMS": str(len(existing) + len(points)),
        "points-INITIAL_FORMS": str(len(existing)),
        "points-MIN_NUM_FORMS": "0",
        "points-MAX_NUM_FORMS": "1000",
    }
    if team is not None:
        data["team"] = str(team.pk)
    for index, (point, changes) in enumerate(existing):
        row = {
            "id": str(point.pk),
            "contact": str(point.contact_id),
            "channel": point.channel,
            "address": point.address,
            "is_primary": "on" if point.is_primary else "",
            **changes,
        }
        data.update({f"points-{index}-{key}": value for key, value in row.items() if value != ""})
    for offset, (channel, address) in enumerate(points):
        index = len(existing) + offset
        data.update(
            {
                f"points-{index}-channel": channel,
                f"points-{index}-address": address,
                f"points-{index}-is_primary": "on",
            }
        )
    data.update({key: value for key, value in fields.items() if value is not None})
    return data


def existing_contact_data(contact: Contact, **fields) -> dict:
    base = {
        "salutation": contact.salutation,
        "first_name": contact.first_name,
        "last_name": contact.last_name,
        "language": contact.language,
        "time_zone": contact.time_zone,
        "organisation": contact.organisation,
        "profession": contact.profession,
        "preferred_channel": contact.preferred_channel,
        "external_id": contact.external_id or "",
    }
    return {**base, **fields}


def test_changelist_shows_only_own_teams_contacts(marketing, team, other_team):
    ContactFactory(team=team, first_name="Ownname")
    ContactFactory(team=other_team, first_name="Foreignname")

    response = client_for(marketing).get(CHANGELIST)

    assert response.status_code == 200
    assert "Ownname" in response.text
    assert "Foreignname" not in response.text
    assert list(response.context["cl"].result_list.values_list("first_name", flat=True)) == [
        "Ownname"
    ]


def test_team_filter_lists_only_visible_teams(make_user, team, other_team):
    TeamFactory(name="Third", slug="third")
    user = make_user("two-teams", roles.MARKETING, team)
    team_member_add(team=other_team, user=user)

    response = client_for(user).get(CHANGELIST)

    filters = {str(spec.title): spec for spec in response.context["cl"].filter_specs}
    team_choices = {label for _pk, label in filters["team"].lookup_choices}
    assert team_choices == {team.name, other_team.name}


def test_tag_filter_lists_only_visible_teams_tags(marketing, team, other_team):
    TagFactory(team=team, name="vip")
    TagFactory(team=other_team, name="secret-tag")

    response = client_for(marketing).get(CHANGELIST)

    assert "vip" in response.text
    assert "secret-tag" not in response.text


def test_tag_and_channel_filters_narrow_the_list(marketing, team):
    vip = TagFactory(team=team, name="vip")
    tagged = ContactFactory(team=team, first_name="Tagged")
    tagged.tags.add(vip)
    ContactPointFactory(contact=tagged, channel="sms", address="+4915123456789")
    ContactFactory(team=team, first_name="Plain")
    client = client_for(marketing)

    by_tag = client.get(CHANGELIST, {"tag": vip.pk})
    by_channel = client.get(CHANGELIST, {"channel": "sms"})

    assert [c.first_name for c in by_tag.context["cl"].result_list] == ["Tagged"]
    assert [c.first_name for c in by_channel.context["cl"].result_list] == ["Tagged"]


def test_search_matches_addresses_without_duplicate_rows(marketing, team):
    contact = ContactFactory(team=team, first_name="Jana")
    ContactPointFactory(contact=contact, channel="email", address="jana@example.de")
    ContactPointFactory(contact=contact, channel="sms", address="+4915123456789")
    ContactPointFactory(contact=contact, channel="whatsapp", address="+4915123456789")
    ContactFactory(team=team, first_name="Other")
    client = client_for(marketing)

    by_email = client.get(CHANGELIST, {"q": "JANA@example"})
    by_local_phone = client.get(CHANGELIST, {"q": "0151 23456789"})
    by_e164 = client.get(CHANGELIST, {"q": "+49151234"})

    for response in (by_email, by_local_phone, by_e164):
        assert [c.pk for c in response.context["cl"].result_list] == [contact.pk]


def test_search_does_not_reach_other_teams(marketing, team, other_team):
    foreign = ContactFactory(team=other_team, first_name="Jana")
    ContactPointFactory(contact=foreign, channel="email", address="jana@example.de")

    response = client_for(marketing).get(CHANGELIST, {"q": "jana"})

    assert list(response.context["cl"].result_list) == []


@pytest.mark.parametrize("method", ["get", "post"])
def test_outsider_gets_404_for_foreign_contact_and_nothing_changes(method, outsider, team):
    contact = ContactFactory(team=team, first_name="Original")
    ContactPointFactory(contact=contact, channel="email", address="orig@example.de")
    client = client_for(outsider)

    if method == "get":
        response = client.get(change_url(contact))
    else:
        response = client.post(
            change_url(contact), existing_contact_data(contact, first_name="Hijacked")
        )

    assert response.status_code == 404
    contact.refresh_from_db()
    assert contact.first_name == "Original"
    assert contact.history.count() == 1
    assert list(contact.points.values_list("address", flat=True)) == ["orig@example.de"]


def test_outsider_cannot_see_history_or_delete_foreign_contact(outsider, team):
    contact = ContactFactory(team=team)
    client = client_for(outsider)

    assert client.get(history_url(contact)).status_code == 404
    delete = reverse("admin:crm_contact_delete", args=[contact.pk])
    assert client.post(delete, {"post": "yes"}).status_code == 404
    assert Contact.objects.filter(pk=contact.pk).exists()


def test_auditor_sees_every_teams_contacts(auditor, team, other_team):
    ContactFactory(team=team, first_name="Ownname")
    ContactFactory(team=other_team, first_name="Foreignname")

    response = client_for(auditor).get(CHANGELIST)

    assert response.status_code == 200
    assert {c.first_name for c in response.context["cl"].result_list} == {
        "Ownname",
        "Foreignname",
    }


def test_auditor_change_page_is_read_only(auditor, team):
    contact = ContactFactory(team=team)

    response = client_for(auditor).get(change_url(contact))

    assert response.status_code == 200
    assert 'name="_save"' not in response.text
    assert 'name="_continue"' not in response.text
    assert response.context["has_change_permission"] is False


def test_auditor_post_to_change_is_403_and_changes_nothing(auditor, team):
    contact = ContactFactory(team=team, first_name="Original")

    response = client_for(auditor).post(
        change_url(contact), existing_contact_data(contact, first_name="Changed")
    )

    assert response.status_code == 403
    contact.refresh_from_db()
    assert contact.first_name == "Original"


def test_auditor_cannot_add_contacts(auditor, team):
    client = client_for(auditor)

    assert client.get(ADD).status_code == 403
    response = client.post(ADD, contact_data(team=team, first_name="New"))
    assert response.status_code == 403
    assert Contact.objects.count() == 0


def test_add_form_team_dropdown_lists_only_member_teams(make_user, team, other_team):
    third = TeamFactory(name="Third", slug="third")
    user = make_user("two-teams", roles.MARKETING, team)
    team_member_add(team=other_team, user=user)

    response = client_for(user).get(ADD)

    choices = {label for _value, label in response.context["adminform"].form.fields["team"].choices}
    assert choices == {"---------", team.name, other_team.name}
    assert third.name not in choices


def test_marketing_creates_contact_with_normalised_email(marketing, team):
    response = client_for(marketing).post(
        ADD,
        contact_data(
            team=team,
            first_name="Jana",
            last_name="Schmidt",
            points=[("email", "  Jana.Schmidt@Example.DE "), ("sms", "0151 23456789")],
        ),
    )

    assert response.status_code == 302, response.context["adminform"].form.errors
    contact = Contact.objects.get()
    assert contact.team == team
    assert sorted(contact.points.values_list("channel", "address", "team_id")) == [
        ("email", "jana.schmidt@example.de", team.pk),
        ("sms", "+4915123456789", team.pk),
    ]
    record = contact.history.get()
    assert record.history_user == marketing
    assert {p.history.get().history_user for p in contact.points.all()} == {marketing}


def test_invalid_phone_in_inline_is_a_form_error_and_saves_nothing(marketing, team):
    response = client_for(marketing).post(
        ADD, contact_data(team=team, first_name="Jana", points=[("sms", "12")])
    )

    assert response.status_code == 200
    formset = response.context["inline_admin_formsets"][0].formset
    assert "is not a valid phone number" in str(formset.forms[0].errors["address"])
    assert Contact.objects.count() == 0
    assert ContactPoint.objects.count() == 0


def test_duplicate_address_in_team_is_a_form_error(marketing, team):
    taken = ContactPointFactory(contact__team=team, channel="email", address="jana@example.de")

    response = client_for(marketing).post(
        ADD, contact_data(team=team, first_name="Copy", points=[("email", "JANA@example.de")])
    )

    assert response.status_code == 200
    errors = response.context["inline_admin_formsets"][0].formset.forms[0].errors
    assert f"contact #{taken.contact_id}" in str(errors["address"])
    assert Contact.objects.count() == 1


def test_same_address_twice_in_one_form_is_a_form_error(marketing, team):
    response = client_for(marketing).post(
        ADD,
        contact_data(
            team=team, points=[("email", "jana@example.de"), ("email", "Jana@Example.de")]
        ),
    )

    assert response.status_code == 200
    errors = response.context["inline_admin_formsets"][0].formset.forms[1].errors
    assert "listed twice" in str(errors["address"])
    assert Contact.objects.count() == 0


def test_same_address_in_another_team_is_allowed(marketing, team, other_team):
    ContactPointFactory(contact__team=other_team, channel="email", address="jana@example.de")

    response = client_for(marketing).post(
        ADD, contact_data(team=team, points=[("email", "jana@example.de")])
    )

    assert response.status_code == 302
    assert ContactPoint.objects.filter(team=team, address="jana@example.de").exists()


def test_duplicate_external_id_is_a_field_error(marketing, team):
    existing = ContactFactory(team=team, external_id="ERP-1")
    other = ContactFactory(team=team, external_id="ERP-2")

    response = client_for(marketing).post(
        change_url(other), contact_data(**existing_contact_data(other, external_id="ERP-1"))
    )

    assert response.status_code == 200
    assert "ERP-1" in str(response.context["adminform"].form.errors["external_id"])
    other.refresh_from_db()
    assert other.external_id == "ERP-2"
    assert existing.external_id == "ERP-1"


def test_foreign_tag_is_refused_on_the_field(marketing, team, other_team):
    foreign_tag = TagFactory(team=other_team)

    response = client_for(marketing).post(
        ADD, {**contact_data(team=team, first_name="X"), "tags": [str(foreign_tag.pk)]}
    )

    assert response.status_code == 200
    assert "tags" in response.context["adminform"].form.errors
    assert Contact.objects.count() == 0


def test_change_updates_fields_and_addresses_through_services(marketing, team):
    contact = contact_create(
        team=team,
        actor=None,
        first_name="Old",
        points=[("email", "old@example.de"), ("sms", "+4915123456789")],
    )
    email, sms = contact.points.get(channel="email"), contact.points.get(channel="sms")
    tag = TagFactory(team=team, name="vip")

    response = client_for(marketing).post(
        change_url(contact),
        {
            **contact_data(
                existing=[(email, {"address": "New@Example.DE"}), (sms, {"DELETE": "on"})],
                points=[("whatsapp", "+49 30 1234567")],
                **existing_contact_data(contact, first_name="New"),
            ),
            "tags": [str(tag.pk)],
        },
    )

    assert response.status_code == 302
    contact.refresh_from_db()
    assert contact.first_name == "New"
    assert list(contact.tags.all()) == [tag]
    assert sorted(contact.points.values_list("channel", "address")) == [
        ("email", "new@example.de"),
        ("whatsapp", "+49301234567"),
    ]
    latest = contact.history.first()
    assert latest.history_user == marketing
    assert latest.first_name == "New"
    deleted = ContactPoint.history.filter(id=sms.pk, history_type="-").get()
    assert deleted.history_user == marketing


def test_changing_channel_of_saved_address_is_refused(marketing, team):
    contact = contact_create(team=team, actor=None, points=[("sms", "+4915123456789")])
    point = contact.points.get()

    response = client_for(marketing).post(
        change_url(contact),
        contact_data(existing=[(point, {"channel": "whatsapp"})], **existing_contact_data(contact)),
    )

    assert response.status_code == 200
    assert "channel" in response.context["inline_admin_formsets"][0].formset.forms[0].errors
    point.refresh_from_db()
    assert point.channel == "sms"


def test_only_address_change_writes_no_empty_contact_history(marketing, team):
    contact = contact_create(team=team, actor=None, points=[("email", "a@example.de")])
    point = contact.points.get()

    response = client_for(marketing).post(
        change_url(contact),
        contact_data(
            existing=[(point, {"address": "b@example.de"})], **existing_contact_data(contact)
        ),
    )

    assert response.status_code == 302
    assert contact.history.count() == 1
    point.refresh_from_db()
    assert point.address == "b@example.de"


def test_history_page_lists_the_change_with_the_user(marketing, team):
    contact = contact_create(team=team, actor=marketing, first_name="Before")
    contact_update(contact=contact, actor=marketing, first_name="After")

    response = client_for(marketing).get(history_url(contact))

    assert response.status_code == 200
    assert marketing.username in response.text
    assert "Before" in response.text
    assert "After" in response.text
    records = list(response.context["page_obj"])
    assert [r.history_user for r in records] == [marketing, marketing]


def test_history_page_shows_address_changes(marketing, team):
    contact = contact_create(team=team, actor=marketing, points=[("email", "a@example.de")])

    response = client_for(marketing).get(history_url(contact))

    assert "a@example.de" in response.text
    assert len(response.context["point_history"]) == 1


def test_history_revert_is_disabled(marketing, team):
    contact = contact_create(team=team, actor=marketing, first_name="Before")
    contact_update(contact=contact, actor=marketing, first_name="After")
    first = contact.history.last()
    url = reverse("admin:crm_contact_simple_history", args=[contact.pk, first.history_id])
    client = client_for(marketing)

    assert client.get(url).status_code == 200
    assert client.post(url, existing_contact_data(contact, first_name="Before")).status_code == 403
    contact.refresh_from_db()
    assert contact.first_name == "After"


def test_outsider_cannot_open_historic_version(outsider, team):
    contact = contact_create(team=team, actor=None, first_name="Secret")
    record = contact.history.get()
    url = reverse("admin:crm_contact_simple_history", args=[contact.pk, record.history_id])

    assert client_for(outsider).get(url).status_code == 404


def test_delete_goes_through_the_service(marketing, team):
    contact = contact_create(team=team, actor=None, points=[("email", "a@example.de")])
    delete = reverse("admin:crm_contact_delete", args=[contact.pk])

    response = client_for(marketing).post(delete, {"post": "yes"})

    assert response.status_code == 302
    assert not Contact.objects.filter(pk=contact.pk).exists()
    assert Contact.history.filter(id=contact.pk, history_type="-").get().history_user == marketing


def action_post(action: str, contacts, **extra) -> dict:
    return {"action": action, "_selected_action": [str(c.pk) for c in contacts], **extra}


def test_add_tag_action_shows_intermediate_page_then_tags(marketing, team):
    contacts = ContactFactory.create_batch(3, team=team)
    tag = TagFactory(team=team, name="vip")
    client = client_for(marketing)

    page = client.post(CHANGELIST, action_post("add_tag", contacts[:2], index="0"))
    assert page.status_code == 200
    assert page.templates[0].name == "admin/intermediate_action.html"

    response = client.post(CHANGELIST, action_post("add_tag", contacts[:2], tag=tag.pk, apply="1"))

    assert response.status_code == 302
    assert "added to 2 contacts" in messages_of(response)[0]
    assert set(tag.contacts.all()) == set(contacts[:2])


def test_add_tag_action_creates_a_new_tag_of_the_team(marketing, team):
    contact = ContactFactory(team=team)

    response = client_for(marketing).post(
        CHANGELIST, action_post("add_tag", [contact], new_tag=" newsletter ", apply="1")
    )

    assert response.status_code == 302
    tag = Tag.objects.get(team=team, name="newsletter")
    assert list(tag.contacts.all()) == [contact]


def test_add_tag_action_needs_a_tag(marketing, team):
    contact = ContactFactory(team=team)

    response = client_for(marketing).post(CHANGELIST, action_post("add_tag", [contact], apply="1"))

    assert response.status_code == 200
    assert response.context["form"].non_field_errors()
    assert not contact.tags.exists()


def test_add_tag_action_refuses_contacts_of_several_teams(make_user, team, other_team):
    user = make_user("both", roles.MARKETING, team)
    team_member_add(team=other_team, user=user)
    contacts = [ContactFactory(team=team), ContactFactory(team=other_team)]
    tag = TagFactory(team=team)

    response = client_for(user).post(
        CHANGELIST, action_post("add_tag", contacts, tag=tag.pk, apply="1")
    )

    assert response.status_code == 302
    assert "single team" in messages_of(response)[0]
    assert not tag.contacts.exists()


def test_agent_may_tag_but_not_create_tags(agent, team):
    contact = ContactFactory(team=team)

    response = client_for(agent).post(
        CHANGELIST, action_post("add_tag", [contact], new_tag="fresh", apply="1")
    )

    assert response.status_code == 302
    assert "may not" in messages_of(response)[0]
    assert not Tag.objects.filter(name="fresh").exists()


def test_auditor_cannot_tag_or_assign(auditor, team, other_team):
    contact = ContactFactory(team=team)
    tag = TagFactory(team=team)
    client = client_for(auditor)

    changelist = client.get(CHANGELIST)
    choices = dict(changelist.context["action_form"].fields["action"].choices)
    assert "add_tag" not in choices
    assert "assign_team" not in choices
    assert "export_csv" in choices

    tagging = client.post(CHANGELIST, action_post("add_tag", [contact], tag=tag.pk, apply="1"))
    moving = client.post(
        CHANGELIST, action_post("assign_team", [contact], team=other_team.pk, apply="1")
    )

    assert tagging.status_code == 302
    assert moving.status_code == 302
    assert not tag.contacts.exists()
    contact.refresh_from_db()
    assert contact.team == team


def test_editor_without_change_permission_cannot_tag(editor, team):
    contact = ContactFactory(team=team)
    tag = TagFactory(team=team)

    client_for(editor).post(CHANGELIST, action_post("add_tag", [contact], tag=tag.pk, apply="1"))

    assert not tag.contacts.exists()


def test_assign_team_moves_contacts_with_addresses(make_user, team, other_team):
    user = make_user("both", roles.MARKETING, team)
    team_member_add(team=other_team, user=user)
    contact = contact_create(team=team, actor=None, points=[("email", "a@example.de")])
    client = client_for(user)

    page = client.post(CHANGELIST, action_post("assign_team", [contact], index="0"))
    assert page.status_code == 200
    assert {t.pk for t in page.context["form"].fields["team"].queryset} == {
        team.pk,
        other_team.pk,
    }

    response = client.post(
        CHANGELIST, action_post("assign_team", [contact], team=other_team.pk, apply="1")
    )

    assert response.status_code == 302
    assert "1 contact moved" in messages_of(response)[0]
    contact.refresh_from_db()
    assert contact.team == other_team
    assert contact.points.get().team == other_team
    assert contact.history.first().history_user == user


def test_assign_team_refused_on_clash_shows_message_and_moves_nothing(make_user, team, other_team):
    user = make_user("both", roles.MARKETING, team)
    team_member_add(team=other_team, user=user)
    contact = contact_create(team=team, actor=None, points=[("email", "a@example.de")])
    contact_create(team=other_team, actor=None, points=[("email", "a@example.de")])

    response = client_for(user).post(
        CHANGELIST, action_post("assign_team", [contact], team=other_team.pk, apply="1")
    )

    assert response.status_code == 302
    [message] = messages_of(response)
    assert "a@example.de" in message
    assert "already exist" in message
    contact.refresh_from_db()
    assert contact.team == team
    assert contact.points.get().team == team


def test_assign_team_only_offers_member_teams(marketing, team, other_team):
    contact = ContactFactory(team=team)

    response = client_for(marketing).post(
        CHANGELIST, action_post("assign_team", [contact], team=other_team.pk, apply="1")
    )

    assert response.status_code == 200
    assert "team" in response.context["form"].errors
    contact.refresh_from_db()
    assert contact.team == team


def test_actions_ignore_contacts_of_other_teams(outsider, marketing, team, other_team):
    foreign = ContactFactory(team=team)
    tag = TagFactory(team=other_team)

    response = client_for(outsider).post(
        CHANGELIST, action_post("add_tag", [foreign], tag=tag.pk, apply="1")
    )

    assert response.status_code == 302
    assert not tag.contacts.exists()
    assert not foreign.tags.exists()


def read_csv(response) -> list[list[str]]:
    body = b"".join(response.streaming_content).decode("utf-8")
    assert body.startswith("\ufeff")
    return list(csv.reader(io.StringIO(body.lstrip("\ufeff"))))


def test_export_csv_content(marketing, team):
    contact = contact_create(
        team=team,
        actor=None,
        first_name="Jana",
        last_name="Schmidt",
        external_id="ERP-7",
        points=[("email", "jana@example.de"), ("sms", "+4915123456789")],
        tags=[TagFactory(team=team, name="vip")],
    )

    response = client_for(marketing).post(CHANGELIST, action_post("export_csv", [contact]))

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    header, row = read_csv(response)
    assert header == [
        "name",
        "team",
        "language",
        "E-mail",
        "SMS",
        "WhatsApp",
        "tags",
        "external id",
        "created at",
    ]
    # E.164 numbers start with "+", a formula character: they are exported quoted, as text.
    assert row[:8] == [
        "Jana Schmidt",
        team.name,
        "de",
        "jana@example.de",
        "'+4915123456789",
        "",
        "vip",
        "ERP-7",
    ]
    assert row[8].startswith(str(contact.created_at.year))


def test_export_csv_neutralises_formulas(marketing, team):
    evil = ContactFactory(
        team=team, first_name='=HYPERLINK("http://evil.example","x")', last_name=""
    )
    tag = TagFactory(team=team, name="@cmd")
    evil.tags.add(tag)

    response = client_for(marketing).post(CHANGELIST, action_post("export_csv", [evil]))

    _header, row = read_csv(response)
    assert row[0] == '\'=HYPERLINK("http://evil.example","x")'
    assert row[6] == "'@cmd"


def test_auditor_may_export_every_team(auditor, team, other_team):
    contacts = [ContactFactory(team=team), ContactFactory(team=other_team)]

    response = client_for(auditor).post(CHANGELIST, action_post("export_csv", contacts))

    assert response.status_code == 200
    rows = read_csv(response)[1:]
    assert {row[1] for row in rows} == {team.name, other_team.name}


def test_export_only_contains_callers_teams(outsider, team, other_team):
    foreign = ContactFactory(team=team)
    own = ContactFactory(team=other_team, first_name="Own", last_name="One")

    response = client_for(outsider).post(CHANGELIST, action_post("export_csv", [foreign, own]))

    rows = read_csv(response)[1:]
    assert [row[0] for row in rows] == ["Own One"]


def _fill(team, count: int) -> None:
    tags = [Tag.objects.get_or_create(team=team, name=f"t{n}")[0] for n in range(3)]
    for _ in range(count):
        contact = ContactFactory(team=team)
        ContactPointFactory(contact=contact, channel="email")
        ContactPointFactory(contact=contact, channel="sms", address=f"+49151{contact.pk:08d}")
        contact.tags.add(*tags[:2])


def test_changelist_query_count_is_flat(marketing, team, django_assert_max_num_queries):
    client = client_for(marketing)
    _fill(team, 10)
    client.get(CHANGELIST)  # warm caches (content types) that a live server keeps anyway

    with CaptureQueriesContext(connection) as ten:
        assert client.get(CHANGELIST).status_code == 200
    _fill(team, 90)
    with django_assert_max_num_queries(15):
        response = client.get(CHANGELIST)
    with CaptureQueriesContext(connection) as hundred:
        client.get(CHANGELIST)

    assert len(response.context["cl"].result_list) == 100
    assert len(ten.captured_queries) == len(hundred.captured_queries)


def test_changelist_columns_show_the_loaded_addresses_and_tags(marketing, team):
    contact = contact_create(
        team=team,
        actor=None,
        first_name="Jörg",
        points=[("email", "joerg@example.org"), ("sms", "+4915112345678")],
    )
    contact.tags.add(TagFactory(team=team, name="Zahnarzt"), TagFactory(team=team, name="Apotheke"))

    row = client_for(marketing).get(CHANGELIST).content.decode()

    assert "joerg@example.org" in row
    assert "+4915112345678" in row
    assert "Apotheke, Zahnarzt" in row


def test_row_checkbox_is_djangos_own_html(team):
    from django.contrib import admin as django_admin

    from crm.admin.contacts import ContactAdmin

    contact = ContactFactory(team=team, first_name="Anna <b>", last_name="Groß")
    contact_admin = ContactAdmin(Contact, django_admin.site)

    ours = contact_admin.action_checkbox(contact)
    djangos = django_admin.ModelAdmin.action_checkbox(contact_admin, contact)

    assert ours == djangos


def test_bulk_delete_goes_through_the_service(marketing, team, other_team):
    doomed = [contact_create(team=team, actor=None) for _ in range(2)]
    foreign = ContactFactory(team=other_team)

    response = client_for(marketing).post(
        CHANGELIST, action_post("delete_selected", [*doomed, foreign], post="yes")
    )

    assert response.status_code == 302
    assert list(Contact.objects.all()) == [foreign]
    deletions = Contact.history.filter(history_type="-")
    assert {record.history_user for record in deletions} == {marketing}
    assert deletions.count() == 2


def test_add_and_change_pages_render_for_marketing(marketing, team):
    contact = contact_create(team=team, actor=None, points=[("email", "a@example.de")])
    client = client_for(marketing)

    add = client.get(ADD)
    change = client.get(change_url(contact))

    assert add.status_code == 200
    assert add.context["adminform"].form.initial["team"] == team.pk
    assert change.status_code == 200
    assert 'name="_save"' in change.text
    assert "a@example.de" in change.text


def test_history_of_a_deleted_contact_stays_visible_to_its_team(marketing, outsider, team):
    contact = contact_create(team=team, actor=marketing, first_name="Gone")
    pk = contact.pk
    client_for(marketing).post(reverse("admin:crm_contact_delete", args=[pk]), {"post": "yes"})

    url = reverse("admin:crm_contact_history", args=[pk])
    assert client_for(marketing).get(url).status_code == 200
    assert client_for(outsider).get(url).status_code == 404


def test_search_combined_with_tag_filter_has_no_duplicates(marketing, team):
    tags = [TagFactory(team=team, name=name) for name in ("a", "b")]
    contact = contact_create(
        team=team, actor=None, points=[("sms", "+4915123456789"), ("whatsapp", "+4915123456789")]
    )
    contact.tags.add(*tags)

    response = client_for(marketing).get(CHANGELIST, {"q": "0151 23456789", "tag": tags[0].pk})

    assert [c.pk for c in response.context["cl"].result_list] == [contact.pk]
    assert response.context["cl"].result_count == 1


def test_refusal_during_save_rolls_back_and_shows_message(marketing, team, monkeypatch):
    def lost_race(**kwargs):
        raise ContactPointDuplicate("a@example.de already exists in this team.", field="address")

    monkeypatch.setattr(services, "contact_point_add", lost_race)

    response = client_for(marketing).post(
        ADD, contact_data(team=team, first_name="Jana", points=[("email", "a@example.de")])
    )

    assert response.status_code == 302
    assert response["Location"] == ADD
    assert messages_of(response) == ["a@example.de already exists in this team."]
    assert Contact.objects.count() == 0
