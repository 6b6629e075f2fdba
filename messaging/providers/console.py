"""The embedded default: no network, every message is logged and kept in memory.

For the demo and the test suite: `outbox` holds what was "sent" in this process (like
django.core.mail.outbox); `outbox_clear()` empties it. Credentials are accepted and ignored,
and never logged.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from messaging.providers.base import OutboundMessage, SendResult

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConsoleRecord:
    """One message the console provider accepted."""

    provider_message_id: str
    message: OutboundMessage


outbox: list[ConsoleRecord] = []
_lock = threading.Lock()


def outbox_clear() -> None:
    """Forget everything sent so far (tests call this between cases)."""
    with _lock:
        outbox.clear()


class ConsoleProvider:
    """Accepts every message at once with a fake id `console-<uuid>`."""

    def send(self, message: OutboundMessage, credentials: Mapping[str, str]) -> SendResult:
        provider_message_id = f"console-{uuid.uuid4()}"
        with _lock:
            outbox.append(ConsoleRecord(provider_message_id=provider_message_id, message=message))
        logger.info(
            "console provider: %s %s to %s (key %s): %s",
            provider_message_id,
            message.kind,
            message.to,
            message.idempotency_key or "-",
            message.template_name if message.kind == "template" else message.text,
        )
        return SendResult(
            provider_message_id=provider_message_id,
            status="sent",
            raw={"id": provider_message_id},
        )
