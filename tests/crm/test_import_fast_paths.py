"""The import's fast paths give the same answers as the general ones: phone numbers without
phonenumbers.parse, e-mail addresses without EmailValidator, model instances without
Model.__init__, COPY instead of bulk_create."""

from __future__ import annotations

import random
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from crm.addresses import AddressInvalid, normalise_email, normalise_phone
from crm.imports import import_file, writes
from crm.imports.emails import normalise_import_email
from crm.imports.phones import normalise_import_phone
from crm.models import Channel, Contact, ContactPoint
from crm.services import contact_create
from tests.crm.test_import import HEADER, write_csv
from tests.factories import TeamFactory

pytestmark = pytest.mark.django_db

SPELLINGS = [
    "0151 12345678",
    "0151-1234 5678",
    "(0151) 12345678",
    "0151/12345678",
    "+49 151 12345678",
    "+4915112345678",
    "0049 (151) 1234-5678",
    "+49 (0) 151 12345678",
    "030 12345678",
    "089 1234567",
    "+43 664 1234567",
    "+41 79 123 45 67",
    "+33 6 12 34 56 78",
    "+39 06 1234 5678",
    "+39 347 123 4567",
    "+1 212 555 0101",
    "+44 7400 000001",
    "+7 912 345 67 89",
    "+90 532 123 45 67",
    "+800 1234 5678",
    "0800 1234567",
    "0900 1234567",
    "+49 1511234",
    "12345",
    "0151 1234567890123",
    "+999 1234567",
    "0151 ١٢٣٤٥٦٧٨",
    "0151 CALL-NOW",
    "+",
    "00",
    "0",
]


def outcome(normalise, raw):
    try:
        return normalise(raw)
    except AddressInvalid as exc:
        return ("refused", str(exc.message))


@pytest.mark.parametrize("raw", SPELLINGS)
def test_import_phone_normalisation_equals_the_general_one(raw):
    assert outcome(normalise_import_phone, raw) == outcome(normalise_phone, raw)


def test_import_phone_normalisation_equals_the_general_one_on_random_numbers():
    rng = random.Random(7)
    prefixes = ["+49", "0049", "0", "+43", "+41", "+33", "+39", "+1", "+44", "+31", "+48", "00"]
    for _ in range(1500):
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(2, 13)))
        separator = rng.choice(["", " ", "-", "/"])
        raw = f"{rng.choice(prefixes)}{separator}{digits[:3]}{separator}{digits[3:]}"
        assert outcome(normalise_import_phone, raw) == outcome(normalise_phone, raw), raw


def test_instance_maker_copies_defaults_and_keeps_the_team_cached(team):
    make = writes.InstanceMaker(Contact, team=team, language="en")
    first, second = make(first_name="Ada"), make(first_name="Bea")
    first.attributes["x"] = "1"
    assert second.attributes == {}
    assert (first.first_name, second.first_name, first.language) == ("Ada", "Bea", "en")
    assert first.pk is None
    assert first._state.adding
    with CaptureQueriesContext(connection) as queries:
        assert first.team == team
    assert not queries.captured_queries
    first.save()
    assert Contact.objects.get(pk=first.pk).attributes == {"x": "1"}


def _snapshot(team):
    """What an import wrote for `team`, without ids and timestamps."""
    contacts = {
        c.pk: (c.first_name, c.last_name, c.external_id, c.language, c.attributes)
        for c in Contact.objects.filter(team=team)
    }
    points = sorted(
        (contacts[p.contact_id], p.channel, p.address, p.address_hash, p.is_primary)
        for p in ContactPoint.objects.filter(team=team)
    )
    contact_history = sorted(
        (h.first_name, h.external_id, h.history_type, h.history_user_id, h.history_change_reason)
        for h in Contact.history.filter(team=team)
    )
    point_history = sorted(
        (h.address, h.history_type, h.history_user_id, h.contact_id in contacts)
        for h in ContactPoint.history.filter(team=team)
    )
    return sorted(contacts.values(), key=repr), points, contact_history, point_history


@pytest.mark.postgres
def test_copy_path_writes_what_the_orm_path_writes(tmp_path, make_user, monkeypatch):
    rows = [
        ["K1", "Jürgen", "Müller", "Juergen@Example.org", "0151 12345678", "vip"],
        ["", "Bärbel", "Groß", "baerbel@example.org", "+43 664 1234567", ""],
        ["K1", "Jürgen", "Müller", "juergen@example.org", "+49 151 12345678", "vip"],
        ["", "", "", "", "12345", ""],
        ["K3", "Özlem", "", "", "0049 (170) 1234-5678", "messe"],
    ]
    path = write_csv(tmp_path / "kontakte.csv", rows, header=HEADER)
    results = []
    for use_copy in (True, False):
        team = TeamFactory()
        actor = make_user(f"importer{use_copy}", "marketing", team)
        monkeypatch.setattr(writes, "uses_copy", lambda use_copy=use_copy: use_copy)
        contact_import = import_file(path=path, team=team, actor=actor, batch_size=2)
        snapshot = _snapshot(team)
        # The importing user differs per team; compare "it is the importer" instead.
        contact_history = [(*h[:3], h[3] == actor.pk, h[4].split("#")[0]) for h in snapshot[2]]
        point_history = [(h[0], h[1], h[2] == actor.pk, h[3]) for h in snapshot[3]]
        counts = (contact_import.created_count, contact_import.unchanged_count)
        results.append((counts, snapshot[0], snapshot[1], contact_history, point_history))
    copied, bulk_created = results
    assert copied == bulk_created
    assert copied[0] == (3, 1)
    assert len(copied[4]) == 5  # two addresses each for Jürgen and Bärbel, one for Özlem


@pytest.mark.parametrize(
    "raw",
    [
        "Ada.Lovelace@Example.ORG",
        " jürgen.mueller.12@mail.example.com ",
        "a+b_c%d-e@sub-domain.example.de",
        "a..b@example.org",
        ".a@example.org",
        "a.@example.org",
        "a@-example.org",
        "a@example-.org",
        "a@example.o",
        "a@example.123",
        "a@localhost",
        "a@[127.0.0.1]",
        "a@xn--mller-kva.de",
        "jürgen@müller.de",
        '"quoted local"@example.org',
        "a@b@example.org",
        "kein-at-zeichen.example.org",
        "baerbel(at)example.org",
        f"{'x' * 300}@example.org",
        f"a@{'b' * 64}.de",
        "@example.org",
        "a@",
    ],
)
def test_import_email_normalisation_equals_the_general_one(raw):
    assert outcome(normalise_import_email, raw) == outcome(normalise_email, raw)


def test_matched_contacts_load_without_timestamps_and_updates_keep_created_at(
    tmp_path, team, marketing
):
    """Matched contacts are loaded without their timestamps (writes.load); the contacts a
    batch updates get created_at in one query, so their "~" history rows carry it."""
    existing = [
        contact_create(
            team=team,
            actor=marketing,
            external_id=f"E{i}",
            points=[(Channel.EMAIL, f"p{i}@example.org")],
        )
        for i in range(6)
    ]
    rows = [[f"E{i}", f"Neu{i}", "", f"p{i}@example.org", "", ""] for i in range(6)]
    path = write_csv(tmp_path / "contacts.csv", rows)

    with CaptureQueriesContext(connection) as one_batch:
        result = import_file(path=path, team=team, actor=marketing, batch_size=10)

    assert (result.updated_count, result.rejected_count) == (6, 0)
    for contact in existing:
        contact.refresh_from_db()
        latest = contact.history.latest()
        assert (latest.history_type, latest.first_name) == ("~", contact.first_name)
        assert latest.created_at == contact.created_at
    assert contact.first_name == "Neu5"
    # The six contacts cost no query of their own (no refresh per deferred field).
    by_one_id = re.compile(r'^SELECT .* WHERE "crm_contact"\."id" = \d')
    assert not [q for q in one_batch.captured_queries if by_one_id.search(q["sql"])]
