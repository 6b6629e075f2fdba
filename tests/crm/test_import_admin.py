"""Import screens in admin: upload -> preview (dry run) -> confirm -> progress and report."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from crm.imports import import_file
from crm.models import Contact, ContactImport, ImportRejection, ImportStatus
from tests.crm.test_import import write_csv

pytestmark = pytest.mark.django_db

CSV = (
    b"external_id;Vorname;Nachname;E-Mail;Telefon\n"
    b"E1;Ada;Lovelace;ada@example.org;0151 23456789\n"
    b"E2;Bob;;not-an-email;\n"
    b"E3;Grace;Hopper;grace@example.org;\n"
)


def upload(client, team, content=CSV, name="contacts.csv"):
    return client.post(
        reverse("admin:crm_contactimport_add"),
        {"team": team.pk, "file": SimpleUploadedFile(name, content, content_type="text/csv")},
    )


def make_import(tmp_path, team, user):
    path = write_csv(
        tmp_path / "contacts.csv",
        [["E1", "Ada", "", "ada@example.org", "", ""], ["E2", "", "", "bad", "", ""]],
    )
    return import_file(path=path, team=team, actor=user)


def admin_client(client, user):
    client.force_login(user)
    return client


def test_upload_preview_confirm_runs_the_import_to_completion(
    client, team, marketing, django_capture_on_commit_callbacks
):
    admin_client(client, marketing)
    assert client.get(reverse("admin:crm_contactimport_add")).status_code == 200

    response = upload(client, team)
    contact_import = ContactImport.objects.get()
    preview_url = reverse("admin:crm_contactimport_preview", args=[contact_import.pk])
    assert response.status_code == 302
    assert response["Location"] == preview_url
    assert contact_import.status == ImportStatus.UPLOADED
    assert contact_import.created_by == marketing

    page = client.get(preview_url)
    assert page.status_code == 200
    html = page.content.decode()
    assert html.count("would be created") == 2
    assert "not-an-email" in html
    assert "Confirm and import" in html
    assert not Contact.objects.exists()

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("admin:crm_contactimport_confirm", args=[contact_import.pk]))
    detail_url = reverse("admin:crm_contactimport_change", args=[contact_import.pk])
    assert response.status_code == 302
    assert response["Location"] == detail_url

    contact_import.refresh_from_db()
    assert contact_import.status == ImportStatus.COMPLETED
    assert contact_import.progress_percent == 100
    assert (contact_import.created_count, contact_import.rejected_count) == (2, 1)
    assert Contact.objects.filter(team=team).count() == 2

    page = client.get(detail_url)
    html = page.content.decode()
    assert page.status_code == 200
    assert 'value="100"' in html
    assert 'id="count-created">2<' in html
    assert "not-an-email" in html
    assert 'http-equiv="refresh"' not in html
    report_url = reverse("admin:crm_contactimport_report", args=[contact_import.pk])
    assert report_url in html

    report = client.get(report_url)
    assert report.status_code == 200
    body = b"".join(report.streaming_content).decode("utf-8-sig")
    assert body.splitlines()[1].startswith("3;")


def test_confirming_twice_is_refused_with_a_message(
    client, team, marketing, django_capture_on_commit_callbacks
):
    admin_client(client, marketing)
    upload(client, team)
    contact_import = ContactImport.objects.get()
    confirm_url = reverse("admin:crm_contactimport_confirm", args=[contact_import.pk])
    with django_capture_on_commit_callbacks(execute=True):
        client.post(confirm_url)
    response = client.post(confirm_url, follow=True)
    assert "cannot become" in response.content.decode()
    assert Contact.objects.count() == 2


def test_confirm_needs_post(client, team, marketing):
    admin_client(client, marketing)
    upload(client, team)
    contact_import = ContactImport.objects.get()
    response = client.get(reverse("admin:crm_contactimport_confirm", args=[contact_import.pk]))
    assert response.status_code == 405
    contact_import.refresh_from_db()
    assert contact_import.status == ImportStatus.UPLOADED


def test_running_import_page_refreshes_itself(client, team, marketing):
    contact_import = ContactImport.objects.create(
        team=team,
        source_file="imports/x.csv",
        status=ImportStatus.RUNNING,
        total_rows=200,
        processed_rows=50,
    )
    admin_client(client, marketing)
    html = client.get(
        reverse("admin:crm_contactimport_change", args=[contact_import.pk])
    ).content.decode()
    assert 'http-equiv="refresh"' in html
    assert 'value="25"' in html


def test_bad_file_shows_an_error_and_stores_nothing(client, team, marketing, settings):
    admin_client(client, marketing)
    response = upload(client, team, content=b"hello", name="contacts.txt")
    assert response.status_code == 200
    assert "Only .csv and .xlsx" in response.content.decode()

    response = upload(client, team, content=b"Farbe;Form\nblau;rund\n")
    assert response.status_code == 200
    assert "names none of the columns" in response.content.decode()

    assert not ContactImport.objects.exists()
    assert not (settings.MEDIA_ROOT / "imports").exists()


def test_upload_into_a_team_the_user_is_not_in_is_refused(client, team, other_team, marketing):
    admin_client(client, marketing)
    response = upload(client, other_team)
    assert response.status_code == 200
    assert "Select a valid choice" in response.content.decode()
    assert not ContactImport.objects.exists()


def test_outsider_gets_404_on_every_page_of_another_teams_import(
    client, tmp_path, team, marketing, outsider
):
    contact_import = make_import(tmp_path, team, marketing)
    admin_client(client, outsider)
    for name in ("change", "preview", "report"):
        url = reverse(f"admin:crm_contactimport_{name}", args=[contact_import.pk])
        assert client.get(url).status_code == 404, name
    url = reverse("admin:crm_contactimport_confirm", args=[contact_import.pk])
    assert client.post(url).status_code == 404
    changelist = client.get(reverse("admin:crm_contactimport_changelist"))
    assert changelist.status_code == 200
    assert "contacts.csv" not in changelist.content.decode()
    rejections = client.get(reverse("admin:crm_importrejection_changelist"))
    assert "bad" not in rejections.content.decode()


def test_auditor_reads_imports_but_cannot_upload_or_confirm(
    client, tmp_path, team, marketing, auditor
):
    done = make_import(tmp_path, team, marketing)
    admin_client(client, auditor)
    assert client.get(reverse("admin:crm_contactimport_change", args=[done.pk])).status_code == 200
    assert client.get(reverse("admin:crm_contactimport_report", args=[done.pk])).status_code == 200

    assert client.get(reverse("admin:crm_contactimport_add")).status_code == 403
    assert upload(client, team).status_code == 403
    assert ContactImport.objects.count() == 1

    admin_client(client, marketing)
    upload(client, team)
    pending = ContactImport.objects.get(status=ImportStatus.UPLOADED)
    admin_client(client, auditor)
    preview = client.get(reverse("admin:crm_contactimport_preview", args=[pending.pk]))
    assert preview.status_code == 200
    assert "Confirm and import" not in preview.content.decode()
    response = client.post(reverse("admin:crm_contactimport_confirm", args=[pending.pk]))
    assert response.status_code == 403
    pending.refresh_from_db()
    assert pending.status == ImportStatus.UPLOADED


def test_editor_without_import_permission_cannot_upload(client, team, editor):
    admin_client(client, editor)
    assert upload(client, team).status_code == 403
    assert not ContactImport.objects.exists()


def test_rejected_rows_are_read_only_and_filterable_by_import(client, tmp_path, team, marketing):
    contact_import = make_import(tmp_path, team, marketing)
    rejection = ImportRejection.objects.get()
    admin_client(client, marketing)
    url = reverse("admin:crm_importrejection_changelist")
    response = client.get(f"{url}?contact_import__id__exact={contact_import.pk}")
    assert response.status_code == 200
    assert "not a valid e-mail" in response.content.decode()
    change = client.get(reverse("admin:crm_importrejection_change", args=[rejection.pk]))
    assert change.status_code == 200
    assert 'name="reason"' not in change.content.decode()
    assert (
        client.post(
            reverse("admin:crm_importrejection_delete", args=[rejection.pk]), {"post": "yes"}
        ).status_code
        == 403
    )
    assert ImportRejection.objects.count() == 1
