from __future__ import annotations

import pytest

from consent.models import Consent, ConsentAction, ConsentEvent, ConsentSource, ConsentStatus
from consent.services import suppression_add
from crm.imports import import_file
from crm.models import Contact
from tests.crm.test_import import read_report, write_csv
from tests.factories import ConsentTextFactory, ContactFactory, ContactPointFactory, PurposeFactory

pytestmark = pytest.mark.django_db

HEADER = [
    "first_name",
    "email",
    "phone",
    "consent_purpose",
    "consent_text_version",
    "consent_date",
    "consent_source",
    "consent_ip",
]


@pytest.fixture
def purpose(team):
    purpose = PurposeFactory(team=team, key="newsletter", allowed_channels=["email"])
    ConsentTextFactory(purpose=purpose, version=3, language="de")
    return purpose


def run(tmp_path, rows, team, actor, header=HEADER):
    path = write_csv(tmp_path / "contacts.csv", rows, header=header)
    return import_file(path=path, team=team, actor=actor)


def test_row_with_full_evidence_records_a_grant(tmp_path, team, marketing, purpose):
    result = run(
        tmp_path,
        [["Ada", "ada@example.org", "", "newsletter", "3", "2025-03-01", "Web form", "192.0.2.1"]],
        team,
        marketing,
    )
    assert result.warning_count == 0
    event = ConsentEvent.objects.get()
    assert (event.action, event.source, event.channel) == (
        ConsentAction.GRANTED,
        ConsentSource.IMPORT,
        "email",
    )
    assert event.evidence.consent_text.version == 3
    assert event.evidence.ip_address == "192.0.2.1"
    assert event.occurred_at.date().isoformat() == "2025-03-01"
    assert Consent.objects.get().status == ConsentStatus.GRANTED


@pytest.mark.parametrize(
    ("cells", "why"),
    [
        (["newsletter", "", "2025-03-01", "Web form", ""], "consent text version"),
        (["newsletter", "3", "", "Web form", ""], "consent date"),
        (["newsletter", "3", "2025-03-01", "", ""], "consent source"),
        (["newsletter", "9", "2025-03-01", "Web form", ""], "does not exist"),
        (["newsletter", "3", "soon", "Web form", ""], "not a date"),
        (["sweepstakes", "3", "2025-03-01", "Web form", ""], "unknown purpose"),
        (["newsletter", "3", "2025-03-01", "Web form", "nope"], "IP address"),
        (["newsletter", "3", "2099-03-01", "Web form", ""], "future"),
    ],
)
def test_claim_without_evidence_imports_the_contact_without_consent(
    tmp_path, team, marketing, purpose, cells, why
):
    result = run(tmp_path, [["Ada", "ada@example.org", "", *cells]], team, marketing)
    assert Contact.objects.filter(first_name="Ada").exists()
    assert ConsentEvent.objects.count() == 0
    assert Consent.objects.count() == 0
    assert result.warning_count == 1
    assert result.rejected_count == 0
    warning = result.rejections.get(is_warning=True)
    assert why in warning.reason
    assert any(why in " ".join(line) for line in read_report(result))


def test_reimport_records_no_second_grant(tmp_path, team, marketing, purpose):
    row = ["Ada", "ada@example.org", "", "newsletter", "3", "2025-03-01", "Web form", ""]
    run(tmp_path, [row], team, marketing)
    run(tmp_path, [row], team, marketing)
    assert ConsentEvent.objects.count() == 1


def test_suppressed_address_is_refused(tmp_path, team, marketing, purpose):
    suppression_add(address="gone@example.org")
    result = run(
        tmp_path,
        [
            ["Gone", "GONE@example.org", "", "", "", "", "", ""],
            ["Kept", "kept@example.org", "", "", "", "", "", ""],
        ],
        team,
        marketing,
    )
    assert list(Contact.objects.values_list("first_name", flat=True)) == ["Kept"]
    assert "suppression list" in result.rejections.get().reason


def test_erased_contacts_address_cannot_come_back_by_import(tmp_path, team, marketing, purpose):
    from consent.services.subjects import contact_erase

    contact = ContactFactory(team=team)
    ContactPointFactory(contact=contact, address="erased@example.org")
    contact_erase(contact=contact, actor=None)
    result = run(
        tmp_path, [["Back", "erased@example.org", "", "", "", "", "", ""]], team, marketing
    )
    assert result.rejected_count == 1
    assert not Contact.objects.filter(first_name="Back").exists()
