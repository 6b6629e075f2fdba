"""Smoke-size run of the webhook benchmark (PostgreSQL, Redis, gunicorn and a Celery worker)."""

from __future__ import annotations

import pytest

from tests.benchmarks.smoke import figures_by_name, run_benchmarks

pytestmark = pytest.mark.postgres

REQUESTS = 300


def test_webhook_benchmark_stores_every_message_once(db, tmp_path):
    stdout = run_benchmarks(tmp_path, "webhooks", scale=REQUESTS)
    assert "webhooks whatsapp accepted" in stdout
    figures = figures_by_name(tmp_path, "webhooks")
    accepted = figures["webhooks whatsapp accepted (inbox + worker)"]
    notes = accepted["notes"]
    assert accepted["size"] == REQUESTS
    assert notes["requests"] == REQUESTS
    assert notes["duplicates_sent"] == REQUESTS // 10
    assert notes["answered_200"] == REQUESTS
    assert notes["answers"] == {"accepted": notes["distinct_payloads"], "duplicate": REQUESTS // 10}
    assert notes["messages_stored"] == notes["distinct_payloads"]
    assert notes["messages_lost"] == notes["messages_duplicated"] == 0
    assert notes["inbox_not_processed"] == 0
    naive = figures["webhooks whatsapp naive (processed in request)"]["notes"]
    assert naive["messages_stored"] == naive["distinct_payloads"]
    assert naive["messages_duplicated"] == 0
