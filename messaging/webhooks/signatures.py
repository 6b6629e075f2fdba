"""Webhook signature checks for Meta (WhatsApp Cloud API) and Twilio, on the raw request.

Pure stdlib, so the webhook views can refuse a forged request before anything is parsed or
stored. Every comparison is constant-time and every bad input (missing header, empty secret,
odd characters) answers False instead of raising, so a forged request always gets a plain 403.
Secrets are arguments only; nothing here logs them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from typing import Final, Protocol, runtime_checkable
from urllib.parse import ParseResult, parse_qs, urlparse

META_SIGNATURE_PREFIX: Final = "sha256="
TWILIO_BODY_HASH_PARAM: Final = "bodySHA256"
_DEFAULT_PORTS: Final = {"https": 443, "http": 80}


@runtime_checkable
class _MultiValueParams(Protocol):
    """Django's QueryDict (and similar multi-dicts): several values per name."""

    def getlist(self, key: str) -> list[str]: ...


def _same(given: str, expected: str) -> bool:
    # compare_digest on str refuses non-ASCII with TypeError; a header is attacker-controlled,
    # so compare UTF-8 bytes instead.
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def meta_signature(raw_body: bytes, app_secret: str) -> str:
    """The `X-Hub-Signature-256` value Meta sends for `raw_body` (used by tests and stubs)."""
    digest = hmac.new(app_secret.encode("utf-8"), raw_body, hashlib.sha256).hexdigest()
    return META_SIGNATURE_PREFIX + digest


def meta_signature_ok(raw_body: bytes, header: str | None, app_secret: str) -> bool:
    """True if `header` is Meta's HMAC-SHA256 of the exact body bytes under `app_secret`.

    The body must be the bytes as received: re-serialised JSON signs differently.
    """
    if not header or not app_secret or not isinstance(raw_body, bytes | bytearray):
        return False
    return _same(header.strip(), meta_signature(bytes(raw_body), app_secret))


def meta_verification_challenge(params: Mapping[str, str], verify_token: str) -> str | None:
    """The GET handshake: the challenge to echo when mode and token match, else None.

    The caller answers 200 with the challenge as plain text, or a non-200 status on None.
    """
    mode = params.get("hub.mode")
    token = params.get("hub.verify_token")
    challenge = params.get("hub.challenge")
    if not verify_token or mode != "subscribe" or not isinstance(token, str):
        return None
    if not isinstance(challenge, str) or not challenge:
        return None
    return challenge if _same(token, verify_token) else None


def _param_pairs(params: Mapping[str, str] | Mapping[str, list[str]]) -> list[tuple[str, str]]:
    """(name, value) pairs, sorted by name and then value, blank values kept (Twilio's order)."""
    pairs: list[tuple[str, str]] = []
    for name in sorted(set(params)):
        values: Iterable[str]
        if isinstance(params, _MultiValueParams):
            values = params.getlist(name)
        else:
            raw = params[name]
            values = [raw] if isinstance(raw, str) else raw
        pairs.extend((name, value) for value in sorted(values))
    return pairs


def twilio_signing_string(url: str, params: Mapping[str, str] | Mapping[str, list[str]]) -> str:
    """URL followed by name+value of every parameter, sorted, without separators."""
    return url + "".join(name + value for name, value in _param_pairs(params))


def twilio_signature(
    url: str, params: Mapping[str, str] | Mapping[str, list[str]], auth_token: str
) -> str:
    """The `X-Twilio-Signature` value for a form-encoded request (base64 HMAC-SHA1)."""
    message = twilio_signing_string(url, params).encode("utf-8")
    digest = hmac.new(auth_token.encode("utf-8"), message, hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def _with_port(parsed: ParseResult) -> str:
    if parsed.port is not None:
        return parsed.geturl()
    port = _DEFAULT_PORTS["https"] if parsed.scheme == "https" else _DEFAULT_PORTS["http"]
    return parsed._replace(netloc=f"{parsed.netloc}:{port}").geturl()


def _without_port(parsed: ParseResult) -> str:
    if parsed.port is None:
        return parsed.geturl()
    return parsed._replace(netloc=parsed.netloc.rsplit(":", 1)[0]).geturl()


def _url_variants(url: str) -> list[str] | None:
    """The URL with and without its port, as Twilio's RequestValidator tries both.

    Twilio's own signing is inconsistent about writing `:443`; None for an unparsable URL.
    """
    try:
        parsed = urlparse(url)
        variants = [_without_port(parsed), _with_port(parsed)]
    except ValueError:
        return None
    return variants


def _twilio_any_variant_ok(
    url: str,
    params: Mapping[str, str] | Mapping[str, list[str]],
    header: str,
    auth_token: str,
) -> bool:
    variants = _url_variants(url)
    if variants is None:
        return False
    try:
        # Evaluate every variant (no short-circuit), as the SDK does.
        results = [_same(header, twilio_signature(v, params, auth_token)) for v in variants]
    except TypeError:
        # A parameter value that is not a string cannot have been signed by Twilio.
        return False
    return any(results)


def twilio_signature_ok(
    url: str,
    params: Mapping[str, str] | Mapping[str, list[str]],
    header: str | None,
    auth_token: str,
) -> bool:
    """True if `header` signs this form-encoded request: the public URL plus ALL parameters.

    `url` must be the URL exactly as configured at Twilio (scheme, host, path, query); behind a
    TLS-terminating proxy that is the public https URL, not the internal one. `params` may be a
    plain mapping or a Django QueryDict (repeated names are sorted by value, blanks count).
    """
    if not header or not auth_token:
        return False
    return _twilio_any_variant_ok(url, params, header.strip(), auth_token)


def twilio_json_signature_ok(
    url_with_query: str, raw_body: bytes, header: str | None, auth_token: str
) -> bool:
    """True for a signed `application/json` request from Twilio.

    Twilio puts `bodySHA256=<hex SHA-256 of the body>` in the URL's query and signs the URL
    alone. Both must hold: the hash matches the raw bytes and the signature matches the URL.
    """
    if not header or not auth_token or not isinstance(raw_body, bytes | bytearray):
        return False
    try:
        query = parse_qs(urlparse(url_with_query).query, keep_blank_values=True)
    except ValueError:
        return False
    claimed = query.get(TWILIO_BODY_HASH_PARAM)
    if not claimed or len(claimed) != 1:
        return False
    body_ok = _same(claimed[0].lower(), hashlib.sha256(bytes(raw_body)).hexdigest())
    signature_ok = _twilio_any_variant_ok(url_with_query, {}, header.strip(), auth_token)
    return body_ok and signature_ok
