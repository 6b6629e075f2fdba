"""Data-subject requests through the API, the admin and `manage.py dsr`; retention in admin."""

from __future__ import annotations

import datetime as dt
import io
import json

import pytest
from django.contrib.messages import get_messages
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from consent.models import DataSubjectRequest, RetentionPolicy, RetentionRun
from consent.services import dsr_execute, dsr_open, retention_apply
from crm import services as crm_services
from crm.models import Contact
from tests.consent.helpers import grant_consent
from tests.factories import ContactFactory, PurposeFactory

pytestmark = pytest.mark.django_db

Kind = DataSubjectRequest.Kind
Status = DataSubjectRequest.Status
LIST = reverse("data-subject-request-list")
CHANGELIST = reverse("admin:consent_datasubjectrequest_changelist")
ADD = reverse("admin:consent_datasubjectrequest_add")


def detail(case, action=None):
    if action is None:
        return reverse("data-subject-request-detail", args=[case.pk])
    return reverse(f"data-subject-request-{action}", args=[case.pk])


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def messages_of(response) -> str:
    """Every message queued so far (they pile up while no page shows them)."""
    return " | ".join(str(message) for message in get_messages(response.wsgi_request))


@pytest.fixture
def contact(team, marketing):
    return crm_services.contact_create(
        team=team,
        actor=marketing,
        first_name="Greta",
        last_name="Anfrage",
        points=[("email", "greta@example.org")],
    )


@pytest.fixture
def case(contact, marketing):
    return dsr_open(contact=contact, kind=Kind.ACCESS, actor=marketing)


# API


def test_marketing_opens_a_case(api_client_for, marketing, contact):
    response = api_client_for(marketing).post(
        LIST, {"contact": contact.pk, "kind": "erasure"}, format="json"
    )
    assert response.status_code == 201, response.data
    case = DataSubjectRequest.objects.get()
    assert response.data["id"] == case.pk
    assert response.data["status"] == "open"
    assert response.data["is_overdue"] is False
    assert case.due_at > timezone.now() + dt.timedelta(days=27)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"kind": "forget_me"}, "kind"),
        ({"kind": "access", "received_at": "not a date"}, "received_at"),
        ({"kind": "access", "received_at": "2999-01-01T00:00:00Z"}, "received_at"),
    ],
)
def test_bad_input_opens_nothing(api_client_for, marketing, contact, payload, field):
    response = api_client_for(marketing).post(
        LIST, {"contact": contact.pk, **payload}, format="json"
    )
    assert response.status_code == 400
    assert field in response.data
    assert not DataSubjectRequest.objects.exists()


def test_a_contact_of_another_team_is_not_found(api_client_for, outsider, contact):
    response = api_client_for(outsider).post(
        LIST, {"contact": contact.pk, "kind": "access"}, format="json"
    )
    assert response.status_code == 404
    assert not DataSubjectRequest.objects.exists()


def test_outsiders_get_404_on_cases_of_the_team(api_client_for, outsider, case):
    client = api_client_for(outsider)
    assert client.get(detail(case)).status_code == 404
    assert client.post(detail(case, "execute")).status_code == 404
    assert client.post(detail(case, "verify-identity"), {"method": "x"}).status_code == 404
    assert client.get(LIST).data["results"] == []


def test_the_auditor_reads_everything_and_writes_nothing(api_client_for, auditor, case, contact):
    client = api_client_for(auditor)
    assert [row["id"] for row in client.get(LIST).data["results"]] == [case.pk]
    assert client.get(detail(case)).status_code == 200
    assert (
        client.post(LIST, {"contact": contact.pk, "kind": "access"}, format="json").status_code
        == 403
    )
    assert client.post(detail(case, "verify-identity"), {"method": "x"}).status_code == 403
    assert client.post(detail(case, "execute")).status_code == 403
    assert client.post(detail(case, "reject"), {"reason": "x"}).status_code == 403
    case.refresh_from_db()
    assert (case.status, case.identity_verified) == (Status.OPEN, False)


def test_agents_have_no_access_to_cases(api_client_for, agent, case):
    assert api_client_for(agent).get(LIST).status_code == 403


def test_verify_execute_and_download_an_access_export(api_client_for, marketing, case):
    client = api_client_for(marketing)

    refused = client.post(detail(case, "execute"))
    assert refused.status_code == 409
    assert refused.data["code"] == "identity_not_verified"

    assert client.post(detail(case, "verify-identity"), {}, format="json").status_code == 400
    verified = client.post(
        detail(case, "verify-identity"), {"method": "reply from greta@"}, format="json"
    )
    assert verified.status_code == 200
    assert verified.data["identity_verified"] is True

    executed = client.post(detail(case, "execute"))
    assert executed.status_code == 200
    assert executed.data["status"] == "completed"
    assert executed.data["has_result"] is True

    download = client.get(detail(case, "result"))
    assert download.status_code == 200
    assert "attachment" in download["Content-Disposition"]
    export = json.loads(b"".join(download.streaming_content))
    assert export["contact"]["last_name"] == "Anfrage"


def test_no_result_is_404(api_client_for, marketing, case):
    assert api_client_for(marketing).get(detail(case, "result")).status_code == 404


def test_reject_needs_a_reason(api_client_for, marketing, case):
    client = api_client_for(marketing)
    assert client.post(detail(case, "reject"), {"reason": ""}, format="json").status_code == 400
    response = client.post(detail(case, "reject"), {"reason": "not the subject"}, format="json")
    assert response.status_code == 200
    assert response.data["status"] == "rejected"
    again = client.post(detail(case, "reject"), {"reason": "again"}, format="json")
    assert again.status_code == 409


def test_list_filters_overdue_cases(api_client_for, marketing, contact):
    old = dsr_open(
        contact=contact,
        kind=Kind.ERASURE,
        actor=marketing,
        received_at=timezone.now() - dt.timedelta(days=40),
    )
    fresh = dsr_open(contact=contact, kind=Kind.ACCESS, actor=marketing)
    client = api_client_for(marketing)
    assert [r["id"] for r in client.get(LIST, {"overdue": "true"}).data["results"]] == [old.pk]
    assert [r["id"] for r in client.get(LIST, {"overdue": "false"}).data["results"]] == [fresh.pk]
    assert [r["id"] for r in client.get(LIST, {"kind": "access"}).data["results"]] == [fresh.pk]


# Admin


def test_the_changelist_highlights_overdue_cases(marketing, contact):
    old = dsr_open(
        contact=contact,
        kind=Kind.ERASURE,
        actor=marketing,
        received_at=timezone.now() - dt.timedelta(days=40),
    )
    dsr_open(contact=contact, kind=Kind.ACCESS, actor=marketing)
    client = client_for(marketing)

    page = client.get(CHANGELIST)
    assert page.status_code == 200
    assert page.content.count(b"dsr-overdue") == 1

    overdue = client.get(CHANGELIST, {"overdue": "yes"})
    assert list(overdue.context["cl"].result_list) == [old]


def test_admin_opens_a_case_through_the_service(marketing, contact):
    response = client_for(marketing).post(
        ADD,
        {
            "contact": str(contact.pk),
            "kind": "restriction",
            # Yesterday: today at 08:00 is still in the future before 08:00 in Berlin.
            "received_at_0": (timezone.now() - dt.timedelta(days=1)).strftime("%Y-%m-%d"),
            "received_at_1": "08:00:00",
            "identity_method": "",
        },
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    case = DataSubjectRequest.objects.get()
    assert case.kind == Kind.RESTRICTION
    assert case.team_id == contact.team_id
    assert case.due_at > case.received_at


def test_admin_refuses_a_contact_of_another_team(marketing, other_team):
    foreign = ContactFactory(team=other_team)
    response = client_for(marketing).post(
        ADD,
        {
            "contact": str(foreign.pk),
            "kind": "access",
            "received_at_0": timezone.now().strftime("%Y-%m-%d"),
            "received_at_1": "08:00:00",
        },
    )
    assert response.status_code == 200
    assert "contact" in response.context["adminform"].form.errors
    assert not DataSubjectRequest.objects.exists()


def action_post(action: str, cases, **extra) -> dict:
    return {"action": action, "_selected_action": [str(c.pk) for c in cases], **extra}


def test_verify_then_execute_actions(marketing, case, contact):
    client = client_for(marketing)

    page = client.post(CHANGELIST, action_post("verify_identity", [case]))
    assert page.status_code == 200
    assert page.templates[0].name == "admin/intermediate_action.html"

    refused = client.post(CHANGELIST, action_post("execute", [case], apply="1"))
    assert refused.status_code == 302
    assert "Verify the requester's identity" in messages_of(refused)

    done = client.post(
        CHANGELIST, action_post("verify_identity", [case], method="ID card", apply="1")
    )
    assert "Identity recorded for 1 request." in messages_of(done)

    confirm = client.post(CHANGELIST, action_post("execute", [case]))
    assert confirm.status_code == 200
    case.refresh_from_db()
    assert case.status == Status.OPEN

    executed = client.post(CHANGELIST, action_post("execute", [case], apply="1"))
    assert "1 request executed." in messages_of(executed)
    case.refresh_from_db()
    assert case.status == Status.COMPLETED
    assert case.identity_method == "ID card"

    download = client.get(reverse("admin:consent_datasubjectrequest_result", args=[case.pk]))
    assert download.status_code == 200
    assert json.loads(b"".join(download.streaming_content))["contact"]["id"] == contact.pk


def test_reject_action(marketing, case):
    client = client_for(marketing)
    page = client.post(CHANGELIST, action_post("reject", [case], apply="1"))
    assert page.status_code == 200  # the reason is missing: the form comes back
    client.post(CHANGELIST, action_post("reject", [case], reason="duplicate", apply="1"))
    case.refresh_from_db()
    assert (case.status, case.outcome) == (Status.REJECTED, "duplicate")


def test_the_case_page_is_read_only(marketing, case):
    client = client_for(marketing)
    url = reverse("admin:consent_datasubjectrequest_change", args=[case.pk])
    page = client.get(url)
    assert page.status_code == 200
    assert not page.context["has_change_permission"]
    client.post(url, {"kind": "erasure"})
    case.refresh_from_db()
    assert case.kind == Kind.ACCESS


def test_the_auditor_views_but_has_no_actions(auditor, case):
    client = client_for(auditor)
    page = client.get(CHANGELIST)
    assert page.status_code == 200
    assert page.context["action_form"] is None
    assert client.get(ADD).status_code == 403
    client.post(CHANGELIST, action_post("execute", [case], apply="1"))
    case.refresh_from_db()
    assert case.status == Status.OPEN


def test_outsiders_cannot_reach_the_teams_cases_in_admin(outsider, case, marketing):
    dsr_open(contact=case.contact, kind=Kind.ACCESS, actor=marketing, identity_method="x")
    client = client_for(outsider)
    assert (
        client.get(reverse("admin:consent_datasubjectrequest_change", args=[case.pk])).status_code
        == 404
    )
    assert (
        client.get(reverse("admin:consent_datasubjectrequest_result", args=[case.pk])).status_code
        == 404
    )
    assert list(client.get(CHANGELIST).context["cl"].result_list) == []
    client.post(CHANGELIST, action_post("reject", [case], reason="x", apply="1"))
    case.refresh_from_db()
    assert case.status == Status.OPEN


def test_retention_policies_are_changed_by_superusers_only(marketing, auditor, superuser):
    policy = RetentionPolicy.objects.create(data_class="messages", keep_days=90)
    retention_apply()
    url = reverse("admin:consent_retentionpolicy_change", args=[policy.pk])
    for user in (marketing, auditor):
        client = client_for(user)
        page = client.get(url)
        assert page.status_code == 200
        assert not page.context["has_change_permission"]
        assert client.get(reverse("admin:consent_retentionpolicy_add")).status_code == 403
        runs = client.get(reverse("admin:consent_retentionrun_changelist"))
        assert runs.status_code == 200
        assert len(runs.context["cl"].result_list) == 1

    client = client_for(superuser)
    response = client.post(
        reverse("admin:consent_retentionpolicy_add"),
        {
            "data_class": "consent_evidence",
            "keep_days": "1095",
            "action": "pseudonymise",
            "is_active": "on",
        },
    )
    assert response.status_code == 302
    assert RetentionPolicy.objects.count() == 2
    applied = client.post(
        reverse("admin:consent_retentionpolicy_changelist"),
        {"action": "apply_now", "_selected_action": [str(policy.pk)]},
    )
    assert applied.status_code == 302
    assert RetentionRun.objects.count() == 2


def test_retention_runs_are_read_only(superuser):
    policy = RetentionPolicy.objects.create(data_class="messages", keep_days=90)
    [run] = retention_apply()
    page = client_for(superuser).get(reverse("admin:consent_retentionrun_change", args=[run.pk]))
    assert page.status_code == 200
    assert not page.context["has_change_permission"]
    assert policy.runs.count() == 1


# manage.py dsr


def test_command_export_writes_the_access_export_and_records_a_case(contact, tmp_path, team):
    PurposeFactory(team=team)
    out = tmp_path / "export.json"
    call_command(
        "dsr", "export", "--contact", str(contact.pk), "--out", str(out), stderr=io.StringIO()
    )
    data = json.loads(out.read_text())
    assert data["contact"]["first_name"] == "Greta"
    case = DataSubjectRequest.objects.get()
    assert (case.kind, case.status, case.handled_by_label) == (
        Kind.ACCESS,
        Status.COMPLETED,
        "system",
    )

    again = tmp_path / "again.json"
    call_command(
        "dsr", "export", "--request", str(case.pk), "--out", str(again), stderr=io.StringIO()
    )
    assert json.loads(again.read_text())["contact"]["id"] == contact.pk


def test_command_erase_needs_yes(contact, team):
    grant_consent(contact, PurposeFactory(team=team), "email")
    with pytest.raises(CommandError, match="--yes"):
        call_command("dsr", "erase", "--contact", str(contact.pk))
    assert not DataSubjectRequest.objects.exists()

    call_command("dsr", "erase", "--contact", str(contact.pk), "--yes", stdout=io.StringIO())
    contact.refresh_from_db()
    assert contact.erased_at is not None
    assert DataSubjectRequest.objects.get().kind == Kind.ERASURE


def test_command_open_verify_execute_list(contact):
    out = io.StringIO()
    call_command("dsr", "open", "--contact", str(contact.pk), "--kind", "restriction", stdout=out)
    case = DataSubjectRequest.objects.get()
    with pytest.raises(CommandError, match="Verify"):
        call_command("dsr", "execute", "--request", str(case.pk))
    call_command("dsr", "verify", "--request", str(case.pk), "--method", "phone call", stdout=out)
    call_command("dsr", "list", stdout=out)
    call_command("dsr", "execute", "--request", str(case.pk), stdout=out)
    contact.refresh_from_db()
    assert contact.is_restricted
    call_command("dsr", "lift-restriction", "--contact", str(contact.pk), stdout=out)
    contact.refresh_from_db()
    assert not contact.is_restricted
    assert f"#{case.pk} restriction" in out.getvalue()


def test_command_refuses_bad_input(contact, marketing, outsider):
    with pytest.raises(CommandError, match="no contact"):
        call_command("dsr", "open", "--contact", "999999", "--kind", "access")
    with pytest.raises(CommandError, match="time zone"):
        call_command(
            "dsr",
            "open",
            "--contact",
            str(contact.pk),
            "--kind",
            "access",
            "--received-at",
            "2025-01-01T10:00",
        )
    with pytest.raises(CommandError, match="may not"):
        call_command(
            "dsr",
            "--user",
            "outsider",
            "open",
            "--contact",
            str(contact.pk),
            "--kind",
            "access",
        )
    assert not DataSubjectRequest.objects.exists()
    assert Contact.objects.filter(pk=contact.pk, erased_at__isnull=True).exists()


def test_execute_of_an_erasure_case_via_service_keeps_case_scrubbed(contact, marketing):
    case = dsr_open(
        contact=contact, kind=Kind.ERASURE, actor=marketing, identity_method="Greta Anfrage, ID"
    )
    case = dsr_execute(request=case, actor=marketing)
    case.refresh_from_db()
    assert "Anfrage" not in case.identity_method
    assert case.status == Status.COMPLETED


def test_the_case_list_does_not_grow_queries_with_cases(
    api_client_for, marketing, team, django_assert_max_num_queries
):
    for contact in ContactFactory.create_batch(5, team=team):
        dsr_open(contact=contact, kind=Kind.ACCESS, actor=marketing)
    client = api_client_for(marketing)
    client.get(LIST)  # the first request fills the per-user permission and team caches
    with django_assert_max_num_queries(2):
        response = client.get(LIST)
    assert len(response.data["results"]) == 5
