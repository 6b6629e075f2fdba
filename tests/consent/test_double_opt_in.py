from __future__ import annotations

import datetime as dt
import re
import time
from unittest import mock

import pytest
from django.core import mail, signing
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from consent.models import (
    Consent,
    ConsentAction,
    ConsentEvent,
    ConsentEvidence,
    ConsentSource,
    ConsentStatus,
    OptInRequest,
)
from consent.services import (
    Evidence,
    OptInRateLimited,
    OptInTokenInvalid,
    opt_in_request,
    opt_in_request_from_token,
    opt_in_token,
)
from tests.factories import ConsentTextFactory, ContactFactory, ContactPointFactory, PurposeFactory

pytestmark = pytest.mark.django_db

WORDING = "Ja, ich möchte den Kino-Newsletter per E-Mail erhalten. Abmeldung jederzeit."


@pytest.fixture
def contact(team):
    contact = ContactFactory(team=team, language="de")
    ContactPointFactory(contact=contact, channel="email", address="ada@example.org")
    return contact


@pytest.fixture
def purpose(team):
    return PurposeFactory(
        team=team,
        key="kino-newsletter",
        name="Kino-Newsletter",
        allowed_channels=["email", "sms"],
        double_opt_in_channels=["email"],
    )


@pytest.fixture
def text(purpose):
    return ConsentTextFactory(purpose=purpose, body=WORDING)


def request_opt_in(contact, purpose, text, **kwargs):
    return opt_in_request(
        contact=contact,
        purpose=purpose,
        channel="email",
        evidence=Evidence(consent_text=text, ip_address="203.0.113.9", user_agent="Form"),
        **kwargs,
    )


@pytest.fixture
def opt_in(contact, purpose, text):
    return request_opt_in(contact, purpose, text)


def confirm_url(opt_in):
    return reverse("consent:confirm", args=[opt_in_token(opt_in)])


def ledger_size():
    return ConsentEvent.objects.count(), ConsentEvidence.objects.count()


def csrf_client():
    """A browser: CSRF is enforced, and the cookie comes from opening the page."""
    return Client(enforce_csrf_checks=True)


def post_confirm(client, url, **extra):
    return client.post(url, {"csrfmiddlewaretoken": client.cookies["csrftoken"].value}, **extra)


def test_request_records_requested_and_mails_a_link(
    contact, purpose, text, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        opt_in = request_opt_in(contact, purpose, text)
    assert opt_in.request_event.action == ConsentAction.REQUESTED
    state = Consent.objects.get(contact=contact, purpose=purpose, channel="email")
    assert state.status == ConsentStatus.PENDING
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["ada@example.org"]
    link = re.search(r"http\S+/c/(\S+)/", mail.outbox[0].body)
    assert link is not None
    assert opt_in_request_from_token(link.group(1)) == opt_in


def test_get_shows_wording_and_button_and_records_nothing(opt_in):
    before = ledger_size()
    response = csrf_client().get(confirm_url(opt_in))
    assert response.status_code == 200
    content = response.content.decode()
    assert "Kino-Newsletter" in content
    assert WORDING in content
    assert '<form method="post">' in content
    assert 'name="csrfmiddlewaretoken"' in content
    assert ledger_size() == before
    opt_in.refresh_from_db()
    assert opt_in.confirmed_event is None
    assert response["Cache-Control"].startswith("max-age=0")
    assert response["Referrer-Policy"] == "no-referrer"


def test_head_records_nothing(opt_in):
    before = ledger_size()
    assert Client().head(confirm_url(opt_in)).status_code == 200
    assert ledger_size() == before


def test_page_carries_no_advertising_links_or_images(opt_in):
    client = csrf_client()
    url = confirm_url(opt_in)
    pages = [client.get(url), post_confirm(client, url)]
    for response in pages:
        content = response.content.decode().lower()
        assert "<a " not in content
        assert "<img" not in content
        assert "<script" not in content


def test_page_speaks_the_contacts_language(opt_in, contact):
    response = Client(headers={"accept-language": "en"}).get(confirm_url(opt_in))
    assert response["Content-Language"] == "de"
    assert '<html lang="de">' in response.content.decode()


def test_post_records_confirmed_with_evidence(opt_in, contact, purpose, text):
    client = csrf_client()
    url = confirm_url(opt_in)
    client.get(url)
    response = post_confirm(client, url, REMOTE_ADDR="198.51.100.23", HTTP_USER_AGENT="Mozilla/5.0")
    assert response.status_code == 200
    assert "Kino-Newsletter" in response.content.decode()
    opt_in.refresh_from_db()
    event = opt_in.confirmed_event
    assert event.action == ConsentAction.CONFIRMED
    assert event.source == ConsentSource.DOUBLE_OPT_IN
    assert event.evidence.ip_address == "198.51.100.23"
    assert event.evidence.user_agent == "Mozilla/5.0"
    assert event.evidence.source_url == "http://testserver" + url
    assert event.evidence.consent_text == text
    state = Consent.objects.get(contact=contact, purpose=purpose, channel="email")
    assert state.status == ConsentStatus.GRANTED
    assert state.last_event == event


def test_post_without_csrf_token_is_refused_and_records_nothing(opt_in):
    before = ledger_size()
    response = csrf_client().post(confirm_url(opt_in))
    assert response.status_code == 403
    assert ledger_size() == before


def test_tampered_token_shows_a_clear_page_and_records_nothing(opt_in):
    token = opt_in_token(opt_in)
    tampered = token[:-3] + ("abc" if not token.endswith("abc") else "xyz")
    before = ledger_size()
    client = Client()
    for response in (
        client.get(reverse("consent:confirm", args=[tampered])),
        client.post(reverse("consent:confirm", args=[tampered])),
        client.get(reverse("consent:confirm", args=["not-a-token"])),
    ):
        assert response.status_code == 400
        assert "This confirmation link is not valid." in response.content.decode()
        assert "Nothing was recorded." in response.content.decode()
    assert ledger_size() == before


def test_token_of_another_signing_purpose_is_refused(opt_in):
    foreign = signing.dumps({"r": opt_in.pk}, salt="something.else")
    response = Client().post(reverse("consent:confirm", args=[foreign]))
    assert response.status_code == 400
    opt_in.refresh_from_db()
    assert opt_in.confirmed_event is None


def test_expired_request_shows_a_clear_page_and_records_nothing(opt_in):
    OptInRequest.objects.filter(pk=opt_in.pk).update(
        expires_at=timezone.now() - dt.timedelta(minutes=1)
    )
    before = ledger_size()
    client = csrf_client()
    url = confirm_url(opt_in)
    response = client.get(url)
    assert response.status_code == 410
    assert "This confirmation link has expired." in response.content.decode()
    assert Client().post(url).status_code == 410
    assert ledger_size() == before


def test_signature_older_than_the_ttl_is_expired(opt_in, settings):
    too_old = int(time.time()) - (settings.CONSENT_OPT_IN_TTL_HOURS + 1) * 3600
    with mock.patch.object(
        signing.TimestampSigner, "timestamp", return_value=signing.b62_encode(too_old)
    ):
        token = opt_in_token(opt_in)
    with pytest.raises(OptInTokenInvalid) as excinfo:
        opt_in_request_from_token(token)
    assert excinfo.value.reason == "expired"
    before = ledger_size()
    assert Client().post(reverse("consent:confirm", args=[token])).status_code == 410
    assert ledger_size() == before


def test_used_token_shows_a_clear_page_and_records_nothing_more(opt_in):
    client = csrf_client()
    url = confirm_url(opt_in)
    client.get(url)
    assert post_confirm(client, url).status_code == 200
    before = ledger_size()
    again = post_confirm(client, url)
    assert again.status_code == 410
    assert "already confirmed" in again.content.decode()
    assert client.get(url).status_code == 410
    assert ledger_size() == before
    assert ConsentEvent.objects.filter(action=ConsentAction.CONFIRMED).count() == 1


def test_confirmation_refused_by_a_rule_records_nothing(opt_in, contact):
    contact.is_restricted = True
    contact.save()
    client = csrf_client()
    url = confirm_url(opt_in)
    client.get(url)
    before = ledger_size()
    response = post_confirm(client, url)
    assert response.status_code == 400
    assert "can no longer be confirmed" in response.content.decode()
    assert ledger_size() == before
    opt_in.refresh_from_db()
    assert opt_in.confirmed_event is None


def test_fourth_request_in_a_day_is_rate_limited_and_writes_nothing(contact, purpose, text):
    for _ in range(3):
        request_opt_in(contact, purpose, text)
    before = (*ledger_size(), OptInRequest.objects.count())
    with pytest.raises(OptInRateLimited):
        request_opt_in(contact, purpose, text)
    assert (*ledger_size(), OptInRequest.objects.count()) == before


def test_rate_limit_counts_per_purpose_and_channel(contact, purpose, text, team):
    for _ in range(3):
        request_opt_in(contact, purpose, text)
    other = PurposeFactory(team=team, allowed_channels=["email"], double_opt_in_channels=["email"])
    request_opt_in(contact, other, ConsentTextFactory(purpose=other))
    opt_in_request(
        contact=contact, purpose=purpose, channel="sms", evidence=Evidence(consent_text=text)
    )
    assert OptInRequest.objects.filter(contact=contact).count() == 5


def test_requests_older_than_a_day_do_not_count(contact, purpose, text):
    for _ in range(3):
        old = request_opt_in(contact, purpose, text)
        OptInRequest.objects.filter(pk=old.pk).update(
            created_at=timezone.now() - dt.timedelta(hours=25)
        )
    assert request_opt_in(contact, purpose, text).pk is not None
