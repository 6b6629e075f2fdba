"""Webhook signatures against the provider vectors (tests/fixtures/providers/signatures).

The Twilio vectors were made with the official SDK (twilio 9.13.0); our stdlib validator must
agree with every positive and negative one.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from django.http import QueryDict

from messaging.webhooks.signatures import (
    meta_signature,
    meta_signature_ok,
    meta_verification_challenge,
    twilio_json_signature_ok,
    twilio_signature,
    twilio_signature_ok,
    twilio_signing_string,
)

PROVIDERS = Path(__file__).resolve().parents[1] / "fixtures" / "providers"
VECTORS = json.loads((PROVIDERS / "signatures" / "vectors.json").read_bytes())
META = VECTORS["whatsapp"]
TWILIO = VECTORS["twilio"]
APP_SECRET = META["app_secret"]
AUTH_TOKEN = TWILIO["auth_token"]
TWILIO_URL = TWILIO["url"]


def fixture_bytes(relative: str) -> bytes:
    return (PROVIDERS / relative).read_bytes()


def meta_vector_id(vector: dict) -> str:
    return vector["file"].rsplit("/", 1)[-1]


# --- Meta: X-Hub-Signature-256 -------------------------------------------------------------


def test_vector_file_uses_the_documented_secrets():
    assert APP_SECRET == "test-app-secret"
    assert AUTH_TOKEN == "test-auth-token"
    assert TWILIO_URL == "https://crm.example.com/webhooks/twilio/1/"
    assert len(META["vectors"]) == 15
    assert len(TWILIO["vectors"]) == 7


@pytest.mark.parametrize("vector", META["vectors"], ids=meta_vector_id)
def test_meta_fixture_bytes_are_the_signed_bytes(vector):
    raw = fixture_bytes(vector["file"])
    assert raw == base64.b64decode(vector["raw_body_base64"])
    assert raw == vector["raw_body"].encode("utf-8")
    assert len(raw) == vector["raw_body_length_bytes"]
    assert hashlib.sha256(raw).hexdigest() == vector["raw_body_sha256_hex"]


@pytest.mark.parametrize("vector", META["vectors"], ids=meta_vector_id)
def test_meta_signature_of_every_fixture_is_accepted(vector):
    raw = fixture_bytes(vector["file"])
    assert meta_signature(raw, APP_SECRET) == vector["x_hub_signature_256"]
    assert meta_signature_ok(raw, vector["x_hub_signature_256"], APP_SECRET) is True


@pytest.mark.parametrize("vector", META["vectors"], ids=meta_vector_id)
def test_meta_signature_refused_with_the_wrong_secret(vector):
    raw = fixture_bytes(vector["file"])
    assert meta_signature_ok(raw, vector["x_hub_signature_256"], "wrong-secret") is False


@pytest.mark.parametrize("vector", META["vectors"], ids=meta_vector_id)
def test_meta_signature_refused_for_tampered_body(vector):
    raw = fixture_bytes(vector["file"])
    header = vector["x_hub_signature_256"]
    assert meta_signature_ok(raw + b"\n", header, APP_SECRET) is False
    assert meta_signature_ok(raw.replace(b'"', b"'", 1), header, APP_SECRET) is False
    assert meta_signature_ok(raw[:-1], header, APP_SECRET) is False


@pytest.mark.parametrize("vector", META["negative_vectors"][:2], ids=["compact", "ascii-escaped"])
def test_meta_reserialised_json_signs_differently(vector):
    """Same JSON value, other bytes: the file's signature does not fit, only the bytes' own."""
    file_vector = META["vectors"][0]
    assert file_vector["file"] == "whatsapp/inbound_text.json"
    original = fixture_bytes(file_vector["file"])
    reserialised = vector["raw_body"].encode("utf-8")
    assert reserialised != original
    assert json.loads(reserialised) == json.loads(original)
    assert vector["valid_for_file_signature"] is False
    assert meta_signature_ok(reserialised, file_vector["x_hub_signature_256"], APP_SECRET) is False
    assert meta_signature_ok(original, vector["x_hub_signature_256"], APP_SECRET) is False
    # The vector's own signature does fit its own bytes: verification is purely on bytes.
    assert meta_signature_ok(reserialised, vector["x_hub_signature_256"], APP_SECRET) is True


def test_meta_ascii_escaped_variant_really_escapes_non_ascii():
    escaped = META["negative_vectors"][1]["raw_body"]
    assert escaped.isascii()
    assert "\\u00e4" in escaped or "\\u00f6" in escaped


def test_meta_signature_made_with_wrong_secret_is_refused():
    vector = META["negative_vectors"][2]
    assert vector["expected_valid"] is False
    raw = fixture_bytes(vector["file"])
    assert meta_signature_ok(raw, vector["x_hub_signature_256"], APP_SECRET) is False
    assert vector["x_hub_signature_256"] == meta_signature(raw, "wrong-secret")


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "sha256=",
        "   ",
        "b2a7a5ae388d82be16b1e8bcd7310e3bb99e06d554e1555999c33e2e4d194b5c",  # no prefix
        "sha1=b2a7a5ae388d82be16b1e8bcd7310e3bb99e06d554e1555999c33e2e4d194b5c",
        "sha256=B2A7A5AE388D82BE16B1E8BCD7310E3BB99E06D554E1555999C33E2E4D194B5C",
        "sha256=b2a7a5ae388d82be16b1e8bcd7310e3bb99e06d554e1555999c33e2e4d194b5",  # short
        "sha256=ä2a7a5ae388d82be16b1e8bcd7310e3bb99e06d554e1555999c33e2e4d194b5c",  # non-ASCII
    ],
)
def test_meta_missing_empty_or_malformed_header_is_refused(header):
    raw = fixture_bytes("whatsapp/inbound_text.json")
    assert meta_signature_ok(raw, header, APP_SECRET) is False


def test_meta_empty_app_secret_never_verifies():
    raw = fixture_bytes("whatsapp/inbound_text.json")
    assert meta_signature_ok(raw, meta_signature(raw, ""), "") is False


def test_meta_signature_needs_bytes_not_text():
    vector = META["vectors"][0]
    assert meta_signature_ok(vector["raw_body"], vector["x_hub_signature_256"], APP_SECRET) is False


def test_meta_header_surrounding_whitespace_is_tolerated():
    vector = META["vectors"][0]
    raw = fixture_bytes(vector["file"])
    assert meta_signature_ok(raw, f" {vector['x_hub_signature_256']} ", APP_SECRET) is True


# --- Meta: GET verification handshake ------------------------------------------------------

HANDSHAKE = json.loads(fixture_bytes("whatsapp/verification_handshake.json"))


def test_handshake_fixture_answers_the_challenge():
    challenge = meta_verification_challenge(
        HANDSHAKE["query"], HANDSHAKE["configured_verify_token"]
    )
    assert challenge == HANDSHAKE["expected_response"]["body"] == "1158201444"


def test_handshake_works_with_a_django_querydict():
    query_string = HANDSHAKE["url"].split("?", 1)[1]
    params = QueryDict(query_string)
    assert params["hub.mode"] == "subscribe"
    assert meta_verification_challenge(params, "test-verify-token") == "1158201444"


@pytest.mark.parametrize(
    ("changes", "verify_token"),
    [
        ({"hub.verify_token": "wrong-token"}, "test-verify-token"),
        ({"hub.verify_token": "test-verify-token "}, "test-verify-token"),
        ({"hub.mode": "unsubscribe"}, "test-verify-token"),
        ({"hub.mode": "SUBSCRIBE"}, "test-verify-token"),
        ({"hub.mode": None}, "test-verify-token"),
        ({"hub.verify_token": None}, "test-verify-token"),
        ({"hub.challenge": None}, "test-verify-token"),
        ({"hub.challenge": ""}, "test-verify-token"),
        ({"hub.verify_token": "ä-non-ascii"}, "test-verify-token"),
        ({}, ""),
    ],
)
def test_handshake_refused(changes, verify_token):
    params = {**HANDSHAKE["query"], **changes}
    params = {key: value for key, value in params.items() if value is not None}
    assert meta_verification_challenge(params, verify_token) is None


# --- Twilio: X-Twilio-Signature ------------------------------------------------------------


def twilio_vector_id(vector: dict) -> str:
    return vector["file"].rsplit("/", 1)[-1]


@pytest.mark.parametrize("vector", TWILIO["vectors"], ids=twilio_vector_id)
def test_twilio_vector_params_are_the_fixture_file(vector):
    assert json.loads(fixture_bytes(vector["file"])) == vector["params"]
    assert vector["url"] == TWILIO_URL


@pytest.mark.parametrize("vector", TWILIO["vectors"], ids=twilio_vector_id)
def test_twilio_signing_string_and_signature_match_the_sdk(vector):
    assert twilio_signing_string(vector["url"], vector["params"]) == vector["signing_string"]
    assert (
        twilio_signature(vector["url"], vector["params"], AUTH_TOKEN)
        == (vector["x_twilio_signature"])
    )


@pytest.mark.parametrize("vector", TWILIO["vectors"], ids=twilio_vector_id)
def test_twilio_signature_accepted_for_plain_mapping(vector):
    assert vector["request_validator_validate"] is True
    ok = twilio_signature_ok(
        vector["url"], vector["params"], vector["x_twilio_signature"], AUTH_TOKEN
    )
    assert ok is True


@pytest.mark.parametrize("vector", TWILIO["vectors"], ids=twilio_vector_id)
def test_twilio_signature_accepted_for_replayed_form_body(vector):
    """The form body as Django parses it (QueryDict keeps blank values like FromCity=)."""
    params = QueryDict(vector["form_body"])
    assert set(params) == set(vector["params"])
    ok = twilio_signature_ok(vector["url"], params, vector["x_twilio_signature"], AUTH_TOKEN)
    assert ok is True


@pytest.mark.parametrize("vector", TWILIO["vectors"], ids=twilio_vector_id)
def test_twilio_signature_refused_with_wrong_token(vector):
    ok = twilio_signature_ok(vector["url"], vector["params"], vector["x_twilio_signature"], "nope")
    assert ok is False


@pytest.mark.parametrize(
    "vector", TWILIO["negative_vectors"], ids=lambda vector: vector["description"][:50]
)
def test_twilio_negative_vectors_agree_with_the_sdk(vector):
    ok = twilio_signature_ok(
        vector["url"], vector["params"], vector["x_twilio_signature"], AUTH_TOKEN
    )
    assert ok is vector["request_validator_validate"]


def test_twilio_http_instead_of_https_fails():
    vector = TWILIO["negative_vectors"][1]
    assert vector["url"].startswith("http://")
    assert vector["request_validator_validate"] is False
    assert (
        twilio_signature_ok(
            vector["url"], vector["params"], vector["x_twilio_signature"], AUTH_TOKEN
        )
        is False
    )


def test_twilio_signature_made_with_explicit_default_port_accepted_without_it():
    params = TWILIO["vectors"][0]["params"]
    header = twilio_signature("https://crm.example.com:443/webhooks/twilio/1/", params, AUTH_TOKEN)
    assert twilio_signature_ok(TWILIO_URL, params, header, AUTH_TOKEN) is True


def test_twilio_http_url_tries_port_80():
    url = "http://crm.example.com/hook/"
    params = {"A": "1"}
    header = twilio_signature("http://crm.example.com:80/hook/", params, AUTH_TOKEN)
    assert twilio_signature_ok(url, params, header, AUTH_TOKEN) is True
    assert twilio_signature_ok("https://crm.example.com/hook/", params, header, AUTH_TOKEN) is False


def test_twilio_blank_values_count():
    vector = TWILIO["vectors"][0]
    assert vector["params"]["FromCity"] == ""
    without_blanks = {key: value for key, value in vector["params"].items() if value}
    ok = twilio_signature_ok(TWILIO_URL, without_blanks, vector["x_twilio_signature"], AUTH_TOKEN)
    assert ok is False


def test_twilio_an_extra_parameter_breaks_the_signature():
    vector = TWILIO["vectors"][0]
    params = {**vector["params"], "Extra": "1"}
    assert (
        twilio_signature_ok(TWILIO_URL, params, vector["x_twilio_signature"], AUTH_TOKEN) is False
    )


def test_twilio_repeated_names_are_sorted_by_value():
    assert twilio_signing_string(TWILIO_URL, QueryDict("b=2&a=z&a=y&a=")) == (
        TWILIO_URL + "a" + "ay" + "az" + "b2"
    )
    header = twilio_signature(TWILIO_URL, {"a": ["", "y", "z"], "b": ["2"]}, AUTH_TOKEN)
    assert twilio_signature_ok(TWILIO_URL, QueryDict("b=2&a=z&a=y&a="), header, AUTH_TOKEN) is True
    assert twilio_signature_ok(TWILIO_URL, {"a": ["z", "", "y"], "b": "2"}, header, AUTH_TOKEN)
    assert twilio_signature_ok(TWILIO_URL, QueryDict("b=2&a=z&a=y"), header, AUTH_TOKEN) is False


@pytest.mark.parametrize("header", [None, "", "   ", "kNtGnZR/5khkqfqdK0wXER6tiXw", "ä" * 28])
def test_twilio_missing_empty_or_malformed_header_is_refused(header):
    vector = TWILIO["vectors"][0]
    assert twilio_signature_ok(TWILIO_URL, vector["params"], header, AUTH_TOKEN) is False


def test_twilio_empty_auth_token_never_verifies():
    params = TWILIO["vectors"][0]["params"]
    header = twilio_signature(TWILIO_URL, params, "")
    assert twilio_signature_ok(TWILIO_URL, params, header, "") is False


def test_twilio_non_string_parameter_is_refused_not_raised():
    vector = TWILIO["vectors"][0]
    params = {**vector["params"], "NumMedia": 0}
    assert (
        twilio_signature_ok(TWILIO_URL, params, vector["x_twilio_signature"], AUTH_TOKEN) is False
    )


def test_twilio_unparsable_url_is_refused():
    params = TWILIO["vectors"][0]["params"]
    header = TWILIO["vectors"][0]["x_twilio_signature"]
    assert (
        twilio_signature_ok("https://crm.example.com:99999999/x/", params, header, AUTH_TOKEN)
        is False
    )


# --- Twilio: application/json variant (bodySHA256) -----------------------------------------

JSON_VECTOR = TWILIO["json_body_vector"]


def test_twilio_json_body_vector_accepted():
    raw = JSON_VECTOR["raw_body"].encode("utf-8")
    assert hashlib.sha256(raw).hexdigest() == JSON_VECTOR["body_sha256_hex"]
    assert JSON_VECTOR["request_validator_validate"] is True
    ok = twilio_json_signature_ok(
        JSON_VECTOR["url"], raw, JSON_VECTOR["x_twilio_signature"], AUTH_TOKEN
    )
    assert ok is True


def test_twilio_json_body_signature_covers_the_url_alone():
    assert twilio_signature(JSON_VECTOR["url"], {}, AUTH_TOKEN) == JSON_VECTOR["x_twilio_signature"]


def test_twilio_json_tampered_body_is_refused():
    raw = JSON_VECTOR["raw_body"].replace("delivered", "read").encode("utf-8")
    ok = twilio_json_signature_ok(
        JSON_VECTOR["url"], raw, JSON_VECTOR["x_twilio_signature"], AUTH_TOKEN
    )
    assert ok is False


def test_twilio_json_body_with_matching_hash_but_forged_url_signature_is_refused():
    raw = b'{"MessageStatus":"read"}'
    url = TWILIO_URL + "?bodySHA256=" + hashlib.sha256(raw).hexdigest()
    ok = twilio_json_signature_ok(url, raw, JSON_VECTOR["x_twilio_signature"], AUTH_TOKEN)
    assert ok is False


@pytest.mark.parametrize(
    ("url", "header", "token"),
    [
        (TWILIO_URL, JSON_VECTOR["x_twilio_signature"], AUTH_TOKEN),  # no bodySHA256
        (
            JSON_VECTOR["url"].replace("https://", "http://"),
            JSON_VECTOR["x_twilio_signature"],
            AUTH_TOKEN,
        ),
        (JSON_VECTOR["url"], None, AUTH_TOKEN),
        (JSON_VECTOR["url"], "", AUTH_TOKEN),
        (JSON_VECTOR["url"], JSON_VECTOR["x_twilio_signature"], "wrong-token"),
        (JSON_VECTOR["url"], JSON_VECTOR["x_twilio_signature"], ""),
        (
            JSON_VECTOR["url"] + "&bodySHA256=" + JSON_VECTOR["body_sha256_hex"],
            JSON_VECTOR["x_twilio_signature"],
            AUTH_TOKEN,
        ),
    ],
    ids=[
        "no-body-hash",
        "http",
        "no-header",
        "empty-header",
        "wrong-token",
        "empty-token",
        "two-hashes",
    ],
)
def test_twilio_json_variant_refusals(url, header, token):
    raw = JSON_VECTOR["raw_body"].encode("utf-8")
    assert twilio_json_signature_ok(url, raw, header, token) is False


def test_twilio_json_variant_needs_bytes():
    ok = twilio_json_signature_ok(
        JSON_VECTOR["url"], JSON_VECTOR["raw_body"], JSON_VECTOR["x_twilio_signature"], AUTH_TOKEN
    )
    assert ok is False
