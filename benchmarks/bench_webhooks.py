"""Inbound webhook throughput: signed WhatsApp payloads against gunicorn on loopback.

A WhatsApp Cloud account reads its app secret from the environment, as in production. Up to
20,000 POSTs to /webhooks/whatsapp/<account>/ carry Meta's payload shape and a correct
X-Hub-Signature-256; 10 % are exact re-sends of earlier payloads. An asyncio client with
keep-alive connections sends them to gunicorn (config.settings.base, DEBUG off, Redis
broker); a Celery worker processes the webhook inbox meanwhile. The judged figure is the
acceptance rate (req/s until every request is answered); processed messages/s and the time
until the inbox is empty are informational. Afterwards every distinct message must be stored
exactly once, every inbox row processed, nothing quarantined and no answer other than 200.

The naive figure runs the same requests through the same server with eager Celery: each
request processes its payload before answering (the path before the webhook inbox).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.db import connections
from django.db.models import Count

from benchmarks.harness import Figure, median

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "providers" / "whatsapp" / "inbound_text.json"
REQUESTS = 20_000
NAIVE_REQUESTS = 2_000
DUPLICATE_SHARE = 0.10
# Many messages per sender, as in a busy account: contacts and conversations are reused.
SENDERS = 500
TARGET_REQ_PER_S = 500.0
# The test suite's smoke run (run.py --smoke) needs enough data for every figure to be non-zero.
SMOKE_SIZE = 300
CREDENTIALS_ENV = "BENCH_WA"
PHONE_NUMBER_ID = "118765432109876"
# A private redis-server per run (the `redis-server` binary must be installed): runs of other
# checkouts or an aborted run can never take this run's tasks.
_broker = {"url": ""}
# Two cores: two gunicorn processes with a few threads each; one asyncio client process with
# enough keep-alive connections to keep every server thread busy.
GUNICORN_WORKERS = int(os.environ.get("BENCH_GUNICORN_WORKERS", "2"))
GUNICORN_THREADS = int(os.environ.get("BENCH_GUNICORN_THREADS", "4"))
CLIENT_PROCESSES = int(os.environ.get("BENCH_CLIENT_PROCESSES", "1"))
CLIENT_CONNECTIONS = int(os.environ.get("BENCH_CLIENT_CONNECTIONS", "16"))
DRAIN_TIMEOUT_S = 1800.0
START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Request:
    body: bytes
    signature: str
    provider_message_id: str


@dataclass
class Outcome:
    statuses: Counter
    answers: Counter
    latencies: list[float]
    errors: list[str]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _account(app_secret: str) -> Any:
    from crm.models import Team
    from messaging.services import channel_account_create

    os.environ[f"{CREDENTIALS_ENV}_APP_SECRET"] = app_secret
    key = secrets.token_hex(4)
    team = Team.objects.create(name=f"Bench webhooks {key}", slug=f"bench-wh-{key}")
    return channel_account_create(
        team=team,
        actor=None,
        name="Bench WhatsApp",
        slug=f"bench-wa-{secrets.token_hex(4)}",
        channel="whatsapp",
        provider="whatsapp_cloud",
        credentials_env=CREDENTIALS_ENV,
        external_id=PHONE_NUMBER_ID,
        address="+4915735998877",
    )


def _requests(total: int, run_key: str, app_secret: str) -> list[Request]:
    """`total` signed requests: distinct payloads, then re-sends of earlier ones mixed in."""
    from messaging.webhooks.signatures import meta_signature

    template = json.loads(FIXTURE.read_bytes())
    duplicates = int(total * DUPLICATE_SHARE)
    distinct = total - duplicates
    now = int(time.time())
    originals = []
    for index in range(distinct):
        value = template["entry"][0]["changes"][0]["value"]
        sender = f"49151{12_340_000 + index % SENDERS}"
        value["contacts"][0] = {"profile": {"name": f"Kundin {index % SENDERS}"}, "wa_id": sender}
        wamid = f"wamid.bench.{run_key}.{index}"
        value["messages"][0] = {
            "from": sender,
            "id": wamid,
            "timestamp": str(now),
            "type": "text",
            "text": {"body": f"Guten Tag, eine Frage zu Termin {index}."},
        }
        # Meta's bodies are compact-ish UTF-8; any bytes work as long as they are signed.
        body = json.dumps(template, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        originals.append(Request(body, meta_signature(body, app_secret), wamid))
    # Every tenth request re-sends, byte for byte, one sent about half the run before.
    ordered: list[Request] = []
    for index, original in enumerate(originals):
        ordered.append(original)
        if index % 9 == 8 and len(ordered) < total:
            ordered.append(originals[index // 2])
    ordered.extend(originals[: total - len(ordered)])
    return ordered


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """(status, body) of one HTTP/1.1 response: Content-Length or chunked framing."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        return int(status_line.split()[1]), await reader.readexactly(int(headers["content-length"]))
    body = b""
    while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
        body += (await reader.readexactly(size + 2))[:-2]
    await reader.readuntil(b"\r\n")  # the empty trailer
    return int(status_line.split()[1]), body


async def _connection(
    port: int, path: str, requests: list[tuple[bytes, str]], queue: Iterator[int], outcome: Outcome
) -> None:
    """One keep-alive connection sending requests from the shared `queue` until it is empty."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for index in queue:
            body, signature = requests[index]
            started = time.perf_counter()
            try:
                writer.write(
                    f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                    "Content-Type: application/json\r\n"
                    f"X-Hub-Signature-256: {signature}\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n".encode("ascii")
                    + body
                )
                status, answer_body = await _read_response(reader)
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                outcome.errors.append(repr(exc))
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                continue
            outcome.latencies.append(time.perf_counter() - started)
            outcome.statuses[status] += 1
            outcome.answers[json.loads(answer_body).get("status", "") if status == 200 else ""] += 1
    finally:
        writer.close()


def _client_process(
    port: int, path: str, requests: list[tuple[bytes, str]], start: Any, results: Any
) -> None:
    """One client process: CLIENT_CONNECTIONS keep-alive connections on one asyncio loop.

    A minimal HTTP/1.1 client on raw streams: a full client library cost about as much CPU per
    request as the server's own work, on the same two cores, so the figure measured the client.
    """
    outcome = Outcome(Counter(), Counter(), [], [])
    queue = iter(range(len(requests)))  # shared: each connection takes the next request

    async def main() -> None:
        await asyncio.gather(
            *(_connection(port, path, requests, queue, outcome) for _ in range(CLIENT_CONNECTIONS))
        )

    start.wait()
    asyncio.run(main())
    results.put(outcome)


def _send(port: int, path: str, requests: list[Request]) -> tuple[float, Outcome]:
    """Send every request from CLIENT_PROCESSES processes; (seconds, merged outcome)."""
    context = multiprocessing.get_context("fork")
    start = context.Event()
    results = context.Queue()
    payloads = [(request.body, request.signature) for request in requests]
    processes = [
        context.Process(
            target=_client_process,
            args=(port, path, payloads[offset::CLIENT_PROCESSES], start, results),
        )
        for offset in range(CLIENT_PROCESSES)
    ]
    connections.close_all()  # no database connection may be shared with the children
    for process in processes:
        process.start()
    time.sleep(1.0)  # let the children start before the clock starts
    started = time.perf_counter()
    start.set()
    merged = Outcome(Counter(), Counter(), [], [])
    for _ in processes:
        outcome = results.get(timeout=DRAIN_TIMEOUT_S)
        merged.statuses.update(outcome.statuses)
        merged.answers.update(outcome.answers)
        merged.latencies.extend(outcome.latencies)
        merged.errors.extend(outcome.errors)
    elapsed = time.perf_counter() - started
    for process in processes:
        process.join()
    return elapsed, merged


def _cpu_seconds(parent: int) -> float:
    """User + system CPU seconds of `parent`'s child processes (gunicorn or Celery workers)."""
    ticks = os.sysconf("SC_CLK_TCK")
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    total = 0
    for child in children:
        fields = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def _server_environment(*, eager: bool) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "config.settings.base",
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "CELERY_BROKER_URL": _broker["url"],
        "CELERY_TASK_ALWAYS_EAGER": "true" if eager else "false",
        "LOG_LEVEL": "WARNING",
    }


def _start(command: list[str], environment: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _gunicorn(port: int, environment: dict[str, str]) -> subprocess.Popen:
    process = _start(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "config.wsgi:application",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(GUNICORN_WORKERS),
            "--worker-class",
            "gthread",
            "--threads",
            str(GUNICORN_THREADS),
            "--keep-alive",
            "30",
            "--log-level",
            "warning",
        ],
        environment,
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(process.stderr.read().decode()[-3000:])
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            time.sleep(0.2)
    # One warm-up request per worker imports the URL conf and views before the clock starts.
    import httpx

    for _ in range(GUNICORN_WORKERS * 2):
        httpx.get(f"http://127.0.0.1:{port}/webhooks/whatsapp/warm-up/", timeout=30)
    return process


def _celery_worker(environment: dict[str, str]) -> subprocess.Popen:
    return _start(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "--concurrency",
            "2",
            "--loglevel",
            "warning",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        environment,
    )


@contextmanager
def _private_redis() -> Iterator[str]:
    port = _free_port()
    process = _start(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        dict(os.environ),
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.1)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        _stop(process)


def _wait_until_drained(account: Any, expected: int) -> float:
    """Seconds until every accepted row of `account` left the pending state."""
    from messaging.models import InboundWebhook, InboxStatus

    started = time.perf_counter()
    while time.perf_counter() - started < DRAIN_TIMEOUT_S:
        rows = InboundWebhook.objects.filter(account=account)
        if rows.count() >= expected and not rows.filter(status=InboxStatus.PENDING).exists():
            return time.perf_counter() - started
        time.sleep(0.25)
    raise RuntimeError(f"the webhook inbox did not drain within {DRAIN_TIMEOUT_S:.0f} s")


def _verify(account: Any, requests: list[Request], outcome: Outcome) -> dict[str, int]:
    """Every distinct message exactly once, every answer 200; raises on any difference."""
    from messaging.models import InboundWebhook, InboxStatus, Message, QuarantinedPayload

    expected_ids = {request.provider_message_id for request in requests}
    duplicates_sent = len(requests) - len(expected_ids)
    stored = Message.objects.filter(account=account, direction="inbound")
    stored_ids = set(stored.values_list("provider_message_id", flat=True))
    doubled = stored.values("provider_message_id").annotate(n=Count("id")).filter(n__gt=1).count()
    checks = {
        "requests": len(requests),
        "distinct_payloads": len(expected_ids),
        "duplicates_sent": duplicates_sent,
        "answered_200": outcome.statuses[200],
        "answered_5xx": sum(n for status, n in outcome.statuses.items() if status >= 500),
        "transport_errors": len(outcome.errors),
        "messages_stored": stored.count(),
        "messages_lost": len(expected_ids - stored_ids),
        "messages_unexpected": len(stored_ids - expected_ids),
        "messages_duplicated": doubled,
        "quarantined": QuarantinedPayload.objects.filter(account=account).count(),
        "inbox_rows": InboundWebhook.objects.filter(account=account).count(),
        "inbox_not_processed": InboundWebhook.objects.filter(account=account)
        .exclude(status=InboxStatus.PROCESSED)
        .count(),
    }
    problems = [
        checks["answered_200"] != len(requests),
        checks["transport_errors"] != 0,
        checks["messages_stored"] != len(expected_ids),
        checks["messages_lost"] != 0,
        checks["messages_unexpected"] != 0,
        checks["messages_duplicated"] != 0,
        checks["quarantined"] != 0,
        checks["inbox_rows"] != len(expected_ids),
        checks["inbox_not_processed"] != 0,
    ]
    if any(problems):
        raise AssertionError(
            f"webhook benchmark result is wrong: {checks} {outcome.statuses} {outcome.errors[:3]}"
        )
    return checks


def _latency_notes(outcome: Outcome) -> dict[str, float]:
    latencies = sorted(outcome.latencies)
    return {
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
    }


def _measure(total: int, *, eager: bool, run_key: str) -> tuple[float, dict[str, Any]]:
    """One run on a fresh account: (accepted req/s, notes with the verified counts)."""
    app_secret = secrets.token_hex(16)
    account = _account(app_secret)
    requests = _requests(total, run_key, app_secret)
    environment = _server_environment(eager=eager)
    port = _free_port()
    server = _gunicorn(port, environment)
    worker = None if eager else _celery_worker(environment)
    try:
        path = f"/webhooks/whatsapp/{account.slug}/"
        server_cpu = _cpu_seconds(server.pid)
        seconds, outcome = _send(port, path, requests)
        server_cpu = _cpu_seconds(server.pid) - server_cpu
        drain_seconds = _wait_until_drained(account, len({r.body for r in requests}))
        worker_cpu = 0.0 if worker is None else _cpu_seconds(worker.pid)
    finally:
        _stop(server)
        if worker is not None:
            _stop(worker)
    checks = _verify(account, requests, outcome)
    end_to_end = seconds + drain_seconds
    notes = {
        **checks,
        **_latency_notes(outcome),
        "answers": dict(outcome.answers),
        "accept_seconds": round(seconds, 2),
        "drained_after_accept_seconds": round(drain_seconds, 2),
        "processed_messages_per_s": round(checks["distinct_payloads"] / end_to_end, 1),
        # CPU per request, independent of what else runs on the machine: 2 cores / this is
        # the acceptance rate the server could reach with the cores to itself.
        "server_cpu_ms_per_request": round(server_cpu * 1000 / len(requests), 2),
        "worker_cpu_ms_per_message": round(worker_cpu * 1000 / checks["distinct_payloads"], 2),
        "load_average_1min": round(os.getloadavg()[0], 1),
        "gunicorn": f"{GUNICORN_WORKERS} gthread workers x {GUNICORN_THREADS} threads",
        "client": f"{CLIENT_PROCESSES} asyncio processes x {CLIENT_CONNECTIONS} keep-alive "
        "connections",
        "celery_worker": "inline (eager)" if eager else "prefork, concurrency 2, Redis broker",
        "cpu_cores": os.cpu_count(),
    }
    return len(requests) / seconds, notes


def run(size: int, runs: int) -> list[Figure]:
    total = min(size, REQUESTS)
    # A third of the run (at most 2,000): the naive path is slow, the smoke run must be short.
    naive_total = min(NAIVE_REQUESTS, max(total // 3, 1))
    rates, notes = [], {}
    with _private_redis() as broker_url:
        _broker["url"] = broker_url
        for run_index in range(runs):
            rate, notes = _measure(total, eager=False, run_key=f"inbox{run_index}")
            rates.append(rate)
        naive_rate, naive_notes = _measure(naive_total, eager=True, run_key="naive")
    naive_notes["sample"] = f"{naive_total:,} requests (smaller sample), processed in-request"
    return [
        Figure(
            name="webhooks whatsapp accepted (inbox + worker)",
            size=total,
            unit="req/s",
            median=median(rates),
            target=TARGET_REQ_PER_S,
            higher_is_better=True,
            runs=rates,
            notes=notes,
        ),
        Figure(
            name="webhooks whatsapp naive (processed in request)",
            size=naive_total,
            unit="req/s",
            median=naive_rate,
            target=TARGET_REQ_PER_S,
            higher_is_better=True,
            runs=[naive_rate],
            notes=naive_notes,
        ),
    ]
