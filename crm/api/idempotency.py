"""`Idempotency-Key` for POSTs: a retried request returns the first result, runs nothing twice.

A client sends a unique key (a UUID) with a POST. The first request runs and its answer is
stored per user and key for IDEMPOTENCY_KEY_TTL_HOURS; a retry with the same key, path and
body gets that answer again without running the view. The same key with another path or body
is a 422, and a retry while the first request still runs is a 409. Only successful answers
(2xx) are kept: after an error the client may retry with the same key and it runs again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import IntegrityError, transaction
from django.http.request import RawPostDataException
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from rest_framework.exceptions import APIException
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from crm.errors import DomainError
from crm.models import IdempotencyRecord

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255


class IdempotencyKeyInvalid(DomainError):
    code = "idempotency_key_invalid"


class IdempotencyKeyReused(DomainError):
    code = "idempotency_key_reused"
    status_code = 422


class IdempotencyKeyInFlight(DomainError):
    code = "idempotency_key_in_flight"
    status_code = 409


def _body_hash(request: Request) -> str:
    try:
        body = request.body
    except (RawPostDataException, RequestDataTooBig) as exc:
        raise IdempotencyKeyInvalid(
            _("Idempotency-Key is not supported for this request body.")
        ) from exc
    return hashlib.sha256(body).hexdigest()


class IdempotentPostMixin:
    """For DRF views: honours `Idempotency-Key` on every POST of an authenticated user."""

    _idempotency_record: IdempotencyRecord | None = None

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        key = request.headers.get(HEADER) if request.method == "POST" else None
        # Hashed before authentication reads the stream (a multipart body cannot be re-read).
        body_hash = _body_hash(request) if key is not None else ""
        super().initial(request, *args, **kwargs)
        if key is None or not request.user.is_authenticated:
            return
        if not key or len(key) > MAX_KEY_LENGTH:
            raise IdempotencyKeyInvalid(
                _("The Idempotency-Key header must have 1 to 255 characters."), field=HEADER
            )
        fingerprint = (request.method, request.path[:500], body_hash)
        record = self._idempotency_claim(request.user, key, fingerprint)
        if record is not None:
            self._idempotency_record = record
            return
        stored = IdempotencyRecord.objects.filter(user=request.user, key=key).first()
        if stored is None:
            # The first request failed and freed the key a moment ago: the client may retry.
            raise IdempotencyKeyInFlight(
                _("A request with this Idempotency-Key is still running; retry later.")
            )
        if (stored.method, stored.path, stored.body_hash) != fingerprint:
            raise IdempotencyKeyReused(
                _("This Idempotency-Key was used for another request; use a new key.")
            )
        if stored.status_code is None:
            raise IdempotencyKeyInFlight(
                _("A request with this Idempotency-Key is still running; retry later.")
            )
        replay = Response(stored.response_body, status=stored.status_code)
        replay["Idempotent-Replayed"] = "true"
        # dispatch() looks the handler up after initial(): answer with the stored result.
        setattr(self, request.method.lower(), lambda *args, **kwargs: replay)

    def _idempotency_claim(
        self, user: Any, key: str, fingerprint: tuple[str, str, str]
    ) -> IdempotencyRecord | None:
        """A new record for this key (None when one exists: a retry or a concurrent twin)."""
        expired = timezone.now() - dt.timedelta(hours=settings.IDEMPOTENCY_KEY_TTL_HOURS)
        # Pruned per user here, so the table stays as small as its callers' last day.
        IdempotencyRecord.objects.filter(user=user, created_at__lt=expired).delete()
        method, path, body_hash = fingerprint
        try:
            # Committed at once, so a concurrent duplicate meets the unique constraint and is
            # told the first request still runs.
            with transaction.atomic():
                return IdempotencyRecord.objects.create(
                    user=user, key=key, method=method, path=path, body_hash=body_hash
                )
        except IntegrityError:
            return None

    def finalize_response(
        self, request: Request, response: Response, *args: Any, **kwargs: Any
    ) -> Response:
        record, self._idempotency_record = self._idempotency_record, None
        if record is not None:
            if 200 <= response.status_code < 300:
                record.status_code = response.status_code
                # Stored as rendered, so a replay shows exactly what the first answer showed.
                record.response_body = json.loads(JSONRenderer().render(response.data) or b"null")
                record.save(update_fields=["status_code", "response_body"])
            else:
                record.delete()
        return super().finalize_response(request, response, *args, **kwargs)

    def handle_exception(self, exc: Exception) -> Response:
        # An uncaught error never reaches finalize_response: free the key for a retry.
        record = self._idempotency_record
        if record is not None and not isinstance(exc, DomainError | APIException):
            self._idempotency_record = None
            record.delete()
        return super().handle_exception(exc)
