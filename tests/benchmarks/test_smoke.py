"""Every benchmark at its smoke size, in one run of `python -m benchmarks.run --smoke`
(PostgreSQL; the webhook benchmark also starts gunicorn, a Celery worker and a private
redis-server). The benchmark code keeps working and each benchmark's own correctness checks
pass; figures are not judged here, `make bench` judges them at full size."""

from __future__ import annotations

import pytest

from tests.benchmarks.smoke import SMOKE_SCALE, SmokeRun, run_smoke

pytestmark = pytest.mark.postgres

DASHBOARD = "metrics dashboard (team, 90 days, all queries)"
REQUESTS = 300


def check_audience_benchmark_counts_the_real_audience(smoke: SmokeRun) -> None:
    stdout = smoke.stdout
    assert "audience count" in stdout
    audience = next(iter(smoke.figures("audience").values()))
    assert audience["size"] == SMOKE_SCALE
    assert audience["notes"]["audience"] > 0


def check_export_benchmark_exports_and_verifies(smoke: SmokeRun) -> None:
    stdout = smoke.stdout
    assert "export conversations" in stdout
    by_name = smoke.figures("export")
    exported = by_name["export conversations (jsonl+csv+manifest)"]
    assert exported["size"] == SMOKE_SCALE
    assert exported["notes"]["events"] > exported["notes"]["messages"] == SMOKE_SCALE
    assert by_name["verify export (chains, hashes, files)"]["notes"]["ok"] is True


def check_campaign_benchmark_freezes_exactly_the_audience(smoke: SmokeRun) -> None:
    stdout = smoke.stdout
    assert "campaign recipient freezing" in stdout
    by_name = smoke.figures("campaigns")
    frozen = by_name["campaign recipient freezing (launch)"]
    assert frozen["size"] == SMOKE_SCALE
    assert frozen["notes"]["recipients"] > 0
    assert frozen["notes"]["matches_audience"] is True
    assert frozen["notes"]["duplicates_after_relaunch"] == 0
    naive = by_name["campaign recipient freezing, naive (create per row)"]
    assert naive["target"] == frozen["target"]
    assert naive["notes"]["extrapolated_to"] == frozen["notes"]["recipients"]


def check_consent_benchmark_records_a_correct_ledger(smoke: SmokeRun) -> None:
    stdout = smoke.stdout
    assert "consent ledger bulk record" in stdout
    figures = smoke.figures("consent")
    bulk = figures["consent ledger bulk record (events/s)"]
    assert bulk["size"] == 600
    assert bulk["notes"]["correct"] is True
    assert bulk["notes"]["events"] == 600
    assert bulk["notes"]["projection_mismatches"] == 0
    assert bulk["notes"]["chain_gaps"] == 0
    naive = figures["consent ledger naive consent_record per event (events/s)"]
    assert naive["target"] == bulk["target"]
    assert naive["notes"]["chains_intact"] > 0


def check_contacts_benchmark_checks_its_pages_against_sql(smoke: SmokeRun) -> None:
    stdout = smoke.stdout
    assert "API contact list p50" in stdout
    figures = smoke.figures("contacts")

    api = figures["API contact list p50 (filters, cursor)"]
    assert api["size"] == 600
    assert api["notes"]["rows_checked_against_sql"] > 0
    assert len(set(api["notes"]["queries_per_request"].values())) == 1
    assert figures["API contact list p99 (filters, cursor)"]["median"] >= api["median"]

    naive = figures["naive API contact list, offset paging"]
    assert naive["notes"]["offset"] > 0

    admin = figures["admin contact changelist p50"]
    assert max(admin["notes"]["queries_per_request"].values()) <= 15
    counts = admin["notes"]["result_counts"]
    assert all(
        row["shown"] == row["exact"] for label, row in counts.items() if label != "unfiltered"
    )


def check_gate_benchmark_decides_as_planted(smoke: SmokeRun) -> None:
    stdout = smoke.stdout
    assert "send-gate decisions in campaign batches" in stdout
    figures = smoke.figures("gate")
    batch = figures["send-gate decisions in campaign batches"]
    assert batch["size"] == 600
    assert batch["notes"]["correct"] is True
    assert batch["notes"]["outcomes"] == batch["notes"]["planted"]
    single = figures["send-gate decisions, one at a time"]
    assert single["notes"]["correct"] is True
    assert single["notes"]["single_equals_batch"] is True
    assert figures["message_send one at a time (informational)"]["notes"]["correct"] is True


def check_import_benchmark_imports_reimports_and_checks_the_outcome(smoke: SmokeRun) -> None:
    stdout = smoke.stdout
    assert "CSV import" in stdout
    by_name = smoke.figures("import")
    first = by_name["CSV import (validate, dedup, report)"]
    assert first["size"] == SMOKE_SCALE
    assert first["notes"]["ok"] is True
    assert first["notes"]["created"] > first["notes"]["rejected"] > 0
    assert first["notes"]["updated"] > 0
    assert first["notes"]["report_lines"] == first["notes"]["rejected"]
    again = by_name["CSV re-import (all deduplicated, no change)"]
    assert again["notes"]["database_unchanged"] is True
    assert again["notes"]["unchanged"] == SMOKE_SCALE - first["notes"]["rejected"]
    naive = by_name["naive CSV import (save() per row)"]
    assert naive["size"] == SMOKE_SCALE
    assert naive["target"] == first["target"]


def check_metrics_benchmark_reads_real_figures(smoke: SmokeRun) -> None:
    stdout = smoke.stdout
    assert "metrics dashboard" in stdout
    figures = smoke.figures("metrics")
    assert "  API overview (team, all figures)" in figures
    figure = figures[DASHBOARD]
    assert figure["size"] == 2000
    assert figure["notes"]["verified_against_sql"] is True
    assert figure["notes"]["messages"] > 0
    assert figure["notes"]["replied"] > 0


def check_webhook_benchmark_stores_every_message_once(smoke: SmokeRun) -> None:
    stdout = smoke.stdout
    assert "webhooks whatsapp accepted" in stdout
    figures = smoke.figures("webhooks")
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


def test_every_benchmark_runs_and_checks_its_answers(tmp_path):
    smoke = run_smoke(tmp_path)
    check_audience_benchmark_counts_the_real_audience(smoke)
    check_export_benchmark_exports_and_verifies(smoke)
    check_campaign_benchmark_freezes_exactly_the_audience(smoke)
    check_consent_benchmark_records_a_correct_ledger(smoke)
    check_contacts_benchmark_checks_its_pages_against_sql(smoke)
    check_gate_benchmark_decides_as_planted(smoke)
    check_import_benchmark_imports_reimports_and_checks_the_outcome(smoke)
    check_metrics_benchmark_reads_real_figures(smoke)
    check_webhook_benchmark_stores_every_message_once(smoke)
