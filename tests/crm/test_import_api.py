"""/api/v1/contact-imports/: upload starts the import; progress, rejected rows, report; scope."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from crm.models import Contact, ContactImport
from tests.crm.test_import_admin import CSV, make_import

pytestmark = pytest.mark.django_db

URL = "/api/v1/contact-imports/"


def post_file(client, team, content=CSV, name="contacts.csv"):
    return client.post(
        URL,
        {"team": team.pk, "file": SimpleUploadedFile(name, content, content_type="text/csv")},
        format="multipart",
    )


def test_upload_runs_the_import_and_reports_counts_rejections_and_report(
    api_client_for, team, marketing, django_capture_on_commit_callbacks
):
    client = api_client_for(marketing)
    with django_capture_on_commit_callbacks(execute=True):
        response = post_file(client, team)

    assert response.status_code == 201, response.data
    body = response.json()
    # The task ran after the request's commit (the test captures and then runs it).
    assert body["status"] == "queued"
    assert body["columns"] == ["external_id", "Vorname", "Nachname", "E-Mail", "Telefon"]
    assert Contact.objects.filter(team=team).count() == 2

    detail = client.get(f"{URL}{body['id']}/").json()
    assert detail["status"] == "completed"
    assert (detail["created_count"], detail["rejected_count"]) == (2, 1)
    assert (detail["processed_rows"], detail["progress_percent"]) == (3, 100)
    listing = client.get(URL).json()
    assert [item["id"] for item in listing["results"]] == [body["id"]]

    rejections = client.get(f"{URL}{body['id']}/rejections/").json()
    assert [(r["line_number"], r["raw"]["E-Mail"]) for r in rejections["results"]] == [
        (3, "not-an-email")
    ]
    assert "not a valid e-mail" in rejections["results"][0]["reason"]

    report = client.get(detail["report_url"])
    assert report.status_code == 200
    assert b"not-an-email" in b"".join(report.streaming_content)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("contacts.txt", CSV, "Only .csv and .xlsx"),
        ("contacts.csv", b"", "empty"),
        ("contacts.csv", b"Farbe\nblau\n", "names none of the columns"),
        ("contacts.xlsx", b"not a zip", "not a readable XLSX"),
    ],
)
def test_bad_files_are_400_and_nothing_is_stored(
    api_client_for, team, marketing, settings, name, content, message
):
    response = post_file(api_client_for(marketing), team, content=content, name=name)
    assert response.status_code == 400
    body = response.json()
    assert "file" in body
    assert message in str(body)
    assert not ContactImport.objects.exists()
    assert not (settings.MEDIA_ROOT / "imports").exists()


def test_too_large_file_is_400_and_nothing_is_stored(api_client_for, team, marketing, settings):
    settings.IMPORT_MAX_UPLOAD_MB = 1
    content = b"email\n" + b"someone@example.org\n" * 60_000  # about 1.2 MB
    response = post_file(api_client_for(marketing), team, content=content)
    assert response.status_code == 400
    assert response.json()["code"] == "import_file_invalid"
    assert "larger than 1 MB" in response.json()["file"][0]
    assert not ContactImport.objects.exists()
    assert not Contact.objects.exists()


def test_upload_into_another_team_is_400(api_client_for, team, other_team, marketing):
    response = post_file(api_client_for(marketing), other_team)
    assert response.status_code == 400
    assert "team" in response.json()
    assert not ContactImport.objects.exists()


@pytest.mark.parametrize("persona", ["auditor", "editor", "agent"])
def test_roles_without_import_permission_cannot_upload(api_client_for, team, persona, request):
    user = request.getfixturevalue(persona)
    response = post_file(api_client_for(user), team)
    assert response.status_code == 403
    assert not ContactImport.objects.exists()


def test_anonymous_cannot_list_or_upload(api_client_for, team):
    client = api_client_for(None)
    assert client.get(URL).status_code in (401, 403)
    assert post_file(client, team).status_code in (401, 403)


def test_outsider_gets_404_on_another_teams_import(
    api_client_for, tmp_path, team, marketing, outsider
):
    contact_import = make_import(tmp_path, team, marketing)
    client = api_client_for(outsider)
    for suffix in ("", "rejections/", "report/"):
        assert client.get(f"{URL}{contact_import.pk}/{suffix}").status_code == 404, suffix
    assert client.get(URL).json()["results"] == []


def test_auditor_reads_every_teams_imports(api_client_for, tmp_path, team, marketing, auditor):
    contact_import = make_import(tmp_path, team, marketing)
    client = api_client_for(auditor)
    assert client.get(f"{URL}{contact_import.pk}/").status_code == 200
    assert client.get(f"{URL}{contact_import.pk}/rejections/").status_code == 200
    assert [item["id"] for item in client.get(URL).json()["results"]] == [contact_import.pk]


def test_imports_cannot_be_changed_or_deleted(api_client_for, tmp_path, team, marketing):
    contact_import = make_import(tmp_path, team, marketing)
    client = api_client_for(marketing)
    # No such route: the base permission refuses unmapped methods before DRF answers 405.
    patch = client.patch(f"{URL}{contact_import.pk}/", {"status": "queued"})
    assert patch.status_code in (403, 405)
    assert client.delete(f"{URL}{contact_import.pk}/").status_code in (403, 405)
    contact_import.refresh_from_db()
    assert contact_import.status == "completed"


def test_schema_documents_the_endpoint(api_client_for, superuser):
    response = api_client_for(superuser).get("/api/schema/")
    assert response.status_code == 200
    assert b"/api/v1/contact-imports/{id}/rejections/" in response.content
