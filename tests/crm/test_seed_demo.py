from __future__ import annotations

from io import StringIO

import phonenumbers
import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db.models import Count, F

from crm import roles, selectors
from crm.addresses import normalise_address
from crm.demo import DEMO_TEAMS, DemoInvalid, demo_seed
from crm.hashing import address_hash
from crm.models import Channel, Contact, ContactPoint, Segment, Tag, Team
from crm.selectors import segment_contacts
from crm.services import roles_sync

pytestmark = pytest.mark.django_db

User = get_user_model()
ROLE_USERS = {
    "marketing": roles.MARKETING,
    "editor": roles.EDITOR,
    "reviewer_editorial": roles.REVIEWER_EDITORIAL,
    "reviewer_legal": roles.REVIEWER_LEGAL,
    "reviewer_medical": roles.REVIEWER_MEDICAL,
    "agent": roles.AGENT,
    "auditor": roles.AUDITOR,
}


def seed(*args: str) -> str:
    out = StringIO()
    call_command("seed_demo", "--contacts", "50", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def counts() -> dict[str, int]:
    return {
        "teams": Team.objects.count(),
        "users": User.objects.count(),
        "contacts": Contact.objects.count(),
        "points": ContactPoint.objects.count(),
        "tags": Tag.objects.count(),
        "tagged": Contact.tags.through.objects.count(),
        "segments": Segment.objects.count(),
        "contact_history": Contact.history.count(),
    }


def test_seed_twice_creates_nothing_the_second_time():
    first_output = seed()
    after_first = counts()
    second_output = seed()

    assert counts() == after_first
    assert after_first["teams"] == 3
    assert after_first["contacts"] == 50
    assert after_first["users"] == 1 + len(ROLE_USERS)
    assert after_first["contact_history"] == 50
    assert "none generated" not in first_output
    assert "already hold 50 contacts; none generated" in second_output


def test_contacts_are_spread_over_the_demo_teams():
    seed()

    per_team = dict(Team.objects.annotate(n=Count("contacts")).values_list("slug", "n"))
    assert per_team == {"kino-nord": 23, "apotheke-am-markt": 17, "praxis-netzwerk": 10}
    assert sum(per_team.values()) == 50


def test_users_hold_their_role_and_team_membership():
    seed()

    admin = User.objects.get(username="admin")
    assert admin.is_superuser
    assert admin.is_staff
    for username, role in ROLE_USERS.items():
        user = User.objects.get(username=username)
        assert list(user.groups.values_list("name", flat=True)) == [role]
        assert user.is_staff
        assert not user.is_superuser
        assert user.check_password("demo-password")
    marketing = User.objects.get(username="marketing")
    assert set(selectors.member_team_ids(marketing)) == set(
        Team.objects.values_list("id", flat=True)
    )
    medical = User.objects.get(username="reviewer_medical")
    assert set(
        Team.objects.filter(id__in=selectors.member_team_ids(medical)).values_list(
            "slug", flat=True
        )
    ) == {"apotheke-am-markt", "praxis-netzwerk"}
    auditor = User.objects.get(username="auditor")
    assert selectors.member_team_ids(auditor) == []
    assert len(selectors.visible_team_ids(auditor)) == 3


def test_marketing_user_may_write_in_demo_teams():
    seed()

    marketing = User.objects.get(username="marketing")
    for team in Team.objects.all():
        assert selectors.user_may_write(marketing, "crm.add_contact", team)


def test_every_address_is_normalised_valid_and_unique_per_team():
    seed()

    points = list(ContactPoint.objects.select_related("contact"))
    assert points
    for point in points:
        assert normalise_address(point.channel, point.address) == point.address
        assert point.team_id == point.contact.team_id
        assert point.address_hash == address_hash(point.address)
        if point.channel != Channel.EMAIL:
            number = phonenumbers.parse(point.address)
            assert phonenumbers.is_valid_number(number)
            assert point.address[:5] in {"+4915", "+4916", "+4917"}
        else:
            assert point.address.rsplit("@", 1)[1] in {"example.com", "example.org", "example.net"}
    keys = [(p.team_id, p.channel, p.address) for p in points]
    assert len(keys) == len(set(keys))
    assert not Contact.objects.filter(points__isnull=True).exists()


def test_contacts_are_realistic():
    seed()

    contacts = list(Contact.objects.all())
    assert {c.language for c in contacts} <= {"de", "en"}
    assert all(c.first_name and c.last_name for c in contacts)
    assert all({"city", "customer_since"} <= set(c.attributes) for c in contacts)
    physicians = [c for c in contacts if c.team.slug == "praxis-netzwerk"]
    assert all(c.organisation and c.profession for c in physicians)
    for contact in contacts:
        contact.full_clean(exclude=["tags"])
    for contact in contacts:
        if contact.preferred_channel:
            assert contact.points.filter(channel=contact.preferred_channel).exists()
    foreign_tags = Contact.tags.through.objects.exclude(tag__team_id=F("contact__team_id"))
    assert not foreign_tags.exists()


def test_segments_are_valid_and_resolve():
    seed()

    expected = {segment.name for spec in DEMO_TEAMS for segment in spec.segments}
    assert set(Segment.objects.values_list("name", flat=True)) == expected
    for segment in Segment.objects.all():
        segment_contacts(segment).count()
    assert Segment.objects.filter(created_by__username="marketing").count() == len(expected)


def test_rerun_with_new_password_updates_the_demo_users():
    seed()
    seed("--password", "another-demo-pass")

    assert User.objects.get(username="agent").check_password("another-demo-pass")
    assert User.objects.filter(username="agent").count() == 1


def test_output_lists_credentials_and_urls():
    output = seed("--base-url", "http://127.0.0.1:8765/")

    for username in ["admin", *ROLE_USERS]:
        assert username in output
    assert "demo-password" in output
    assert "http://127.0.0.1:8765/admin/" in output
    assert "http://127.0.0.1:8765/api/docs/" in output


def test_existing_demo_team_and_user_are_reused():
    roles_sync()
    Team.objects.create(name="Kino Nord", slug="kino-nord")
    User.objects.create_user("marketing", password="old-password-123")

    seed()

    assert Team.objects.filter(slug="kino-nord").count() == 1
    assert User.objects.filter(username="marketing").count() == 1
    assert User.objects.get(username="marketing").groups.filter(name=roles.MARKETING).exists()


def test_contacts_are_not_generated_when_demo_teams_hold_contacts():
    call_command("seed_demo", "--contacts", "0", stdout=StringIO(), verbosity=0)
    kino = Team.objects.get(slug="kino-nord")
    Contact.objects.create(team=kino, first_name="Already", last_name="There")

    output = seed()

    assert "none generated" in output
    assert list(Contact.objects.values_list("first_name", flat=True)) == ["Already"]


def test_zero_contacts_creates_teams_and_users_only():
    call_command("seed_demo", "--contacts", "0", stdout=StringIO(), verbosity=0)

    assert Team.objects.count() == 3
    assert User.objects.filter(username="auditor").exists()
    assert Contact.objects.count() == 0


@pytest.mark.parametrize(
    "args",
    [["--contacts", "-1"], ["--contacts", "100000000"], ["--password", ""], ["--password", "  "]],
)
def test_bad_input_is_refused_and_changes_nothing(args):
    before = counts()

    with pytest.raises(CommandError):
        call_command("seed_demo", *args, stdout=StringIO(), verbosity=0)

    assert counts() == before


def test_service_refuses_bad_input_with_field():
    with pytest.raises(DemoInvalid) as caught:
        demo_seed(contacts=-5, password="demo-password")

    assert caught.value.field == "contacts"
    assert Team.objects.count() == 0


def test_failing_step_rolls_back_everything(monkeypatch):
    from crm import demo

    def boom(ctx):
        raise RuntimeError("step failed")

    monkeypatch.setattr(demo, "DEMO_STEPS", [*demo.DEMO_STEPS, demo.DemoStep("boom", boom)])

    with pytest.raises(RuntimeError):
        demo_seed(contacts=10, password="demo-password")

    assert Team.objects.count() == 0
    assert Contact.objects.count() == 0
    assert not User.objects.filter(username="admin").exists()


def test_registered_step_runs_after_crm_steps_and_replaces_by_name(monkeypatch):
    from crm import demo

    monkeypatch.setattr(demo, "DEMO_STEPS", list(demo.DEMO_STEPS))
    seen = []
    demo.register_demo_step(demo.DemoStep("extra", lambda ctx: seen.append("first")))
    demo.register_demo_step(demo.DemoStep("extra", lambda ctx: seen.append(len(ctx.teams))))

    demo_seed(contacts=0, password="demo-password")

    assert seen == [3]
    assert [step.name for step in demo.DEMO_STEPS][-1] == "extra"
