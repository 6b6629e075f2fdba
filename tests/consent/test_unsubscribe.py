from __future__ import annotations

import datetime as dt

import pytest
from django.core import signing
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from consent.models import Consent, ConsentAction, ConsentEvent, ConsentSource, ConsentStatus
from consent.services import (
    Evidence,
    UnsubscribeTokenInvalid,
    unsubscribe_apply,
    unsubscribe_headers,
    unsubscribe_target,
    unsubscribe_token,
    unsubscribe_url,
)
from consent.services.unsubscribe import TOKEN_SALT
from tests.consent.helpers import grant_consent
from tests.factories import ContactFactory, PurposeFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def contact(team):
    return ContactFactory(team=team, language="en")


@pytest.fixture
def purpose(team):
    return PurposeFactory(team=team, name="Kino-Newsletter", allowed_channels=["email", "sms"])


@pytest.fixture
def granted(contact, purpose):
    grant_consent(contact, purpose, "email", occurred_at=timezone.now() - dt.timedelta(days=1))
    grant_consent(contact, purpose, "sms", occurred_at=timezone.now() - dt.timedelta(days=1))


@pytest.fixture
def url(contact, purpose):
    return reverse("consent:unsubscribe", args=[unsubscribe_token(contact, purpose, "email")])


def status(contact, purpose, channel="email"):
    return Consent.objects.get(contact=contact, purpose=purpose, channel=channel).status


def withdrawals():
    return ConsentEvent.objects.filter(action=ConsentAction.WITHDRAWN).count()


def test_headers_follow_rfc_8058(contact, purpose, settings):
    settings.PUBLIC_BASE_URL = "https://crm.example.org/"
    headers = unsubscribe_headers(contact, purpose, "email")
    token = unsubscribe_token(contact, purpose, "email")
    assert headers == {
        "List-Unsubscribe": f"<https://crm.example.org/u/{token}/>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    assert unsubscribe_url(contact, purpose, "email") == f"https://crm.example.org/u/{token}/"


def test_token_names_contact_purpose_and_channel(contact, purpose):
    target = unsubscribe_target(unsubscribe_token(contact, purpose, "sms"))
    assert (target.contact, target.purpose, target.channel) == (contact, purpose, "sms")


@pytest.mark.parametrize(
    "forge",
    [
        lambda token: token[:-2] + ("xx" if not token.endswith("xx") else "yy"),
        lambda token: "garbage",
        lambda token: signing.Signer(salt="other.salt").sign_object([1, 1, "email"]),
        lambda token: signing.Signer(salt=TOKEN_SALT).sign_object([1, 1, "fax"]),
        lambda token: signing.Signer(salt=TOKEN_SALT).sign_object({"c": 1}),
        lambda token: signing.Signer(salt=TOKEN_SALT).sign_object([999999, 1, "email"]),
    ],
)
def test_bad_tokens_are_refused(contact, purpose, forge):
    with pytest.raises(UnsubscribeTokenInvalid):
        unsubscribe_target(forge(unsubscribe_token(contact, purpose, "email")))


def test_token_across_teams_is_refused(contact, other_team):
    foreign = PurposeFactory(team=other_team)
    token = signing.Signer(salt=TOKEN_SALT).sign_object([contact.pk, foreign.pk, "email"])
    with pytest.raises(UnsubscribeTokenInvalid):
        unsubscribe_target(token)


def test_get_shows_one_button_and_changes_nothing(granted, contact, purpose, url):
    before = ConsentEvent.objects.count()
    response = Client().get(url)
    assert response.status_code == 200
    content = response.content.decode()
    assert "Kino-Newsletter" in content
    assert content.count("<button") == 1
    assert ConsentEvent.objects.count() == before
    assert status(contact, purpose) == ConsentStatus.GRANTED
    assert Client().head(url).status_code == 200
    assert ConsentEvent.objects.count() == before


def test_post_withdraws_that_purpose_on_that_channel_only(granted, contact, purpose, url, team):
    other = PurposeFactory(team=team, allowed_channels=["email"])
    grant_consent(contact, other, "email")
    response = Client().post(url, REMOTE_ADDR="198.51.100.7", HTTP_USER_AGENT="Thunderbird")
    assert response.status_code == 200
    assert "You are unsubscribed" in response.content.decode()
    assert status(contact, purpose, "email") == ConsentStatus.WITHDRAWN
    assert status(contact, purpose, "sms") == ConsentStatus.GRANTED
    assert status(contact, other, "email") == ConsentStatus.GRANTED
    event = ConsentEvent.objects.get(action=ConsentAction.WITHDRAWN)
    assert event.source == ConsentSource.UNSUBSCRIBE_LINK
    assert event.evidence.ip_address == "198.51.100.7"
    assert event.evidence.user_agent == "Thunderbird"
    assert event.evidence.source_url == "http://testserver" + url
    assert event.evidence.note == "unsubscribe page"


def test_one_click_post_without_cookies_or_csrf_token_withdraws(granted, contact, purpose, url):
    client = Client(enforce_csrf_checks=True)
    response = client.post(
        url,
        "List-Unsubscribe=One-Click",
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 200
    assert status(contact, purpose) == ConsentStatus.WITHDRAWN
    event = ConsentEvent.objects.get(action=ConsentAction.WITHDRAWN)
    assert event.evidence.note == "one-click unsubscribe (RFC 8058)"


def test_one_click_as_multipart_form_withdraws(granted, contact, purpose, url):
    response = Client(enforce_csrf_checks=True).post(url, {"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200
    assert status(contact, purpose) == ConsentStatus.WITHDRAWN


def test_second_post_shows_the_same_confirmation_and_records_nothing_more(
    granted, contact, purpose, url
):
    client = Client()
    first = client.post(url)
    second = client.post(url, {"List-Unsubscribe": "One-Click"})
    assert first.status_code == second.status_code == 200
    assert first.content == second.content
    assert withdrawals() == 1
    assert "already unsubscribed" in client.get(url).content.decode()


def test_apply_is_idempotent(granted, contact, purpose):
    token = unsubscribe_token(contact, purpose, "email")
    first = unsubscribe_apply(token, Evidence(note="one"))
    assert unsubscribe_apply(token, Evidence(note="two")) == first
    assert withdrawals() == 1


def test_tampered_token_shows_400_and_writes_nothing(granted, url):
    tampered = url[:-3] + ("x/" if not url.endswith("x/") else "y/")
    before = ConsentEvent.objects.count()
    client = Client(enforce_csrf_checks=True)
    for response in (
        client.get(tampered),
        client.post(tampered),
        client.post(tampered, {"List-Unsubscribe": "One-Click"}),
    ):
        assert response.status_code == 400
        assert "This unsubscribe link is not valid." in response.content.decode()
    assert ConsentEvent.objects.count() == before
    with pytest.raises(UnsubscribeTokenInvalid):
        unsubscribe_apply(tampered.split("/")[2], Evidence())
    assert ConsentEvent.objects.count() == before


def test_unsubscribe_before_any_grant_blocks_a_late_older_grant(contact, purpose, url):
    Client().post(url)
    assert status(contact, purpose) == ConsentStatus.WITHDRAWN
    grant_consent(contact, purpose, "email", occurred_at=timezone.now() - dt.timedelta(hours=1))
    assert status(contact, purpose) == ConsentStatus.WITHDRAWN


def test_a_new_grant_after_unsubscribing_is_withdrawn_again_by_the_link(
    granted, contact, purpose, url
):
    client = Client()
    client.post(url)
    grant_consent(contact, purpose, "email")
    assert status(contact, purpose) == ConsentStatus.GRANTED
    client.post(url)
    assert status(contact, purpose) == ConsentStatus.WITHDRAWN
    assert withdrawals() == 2


def test_page_speaks_the_contacts_language(granted, contact, url):
    response = Client(headers={"accept-language": "de"}).get(url)
    assert response["Content-Language"] == "en"
    assert '<html lang="en">' in response.content.decode()
