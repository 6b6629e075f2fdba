"""Real services for the worker tests: a private redis-server and `celery worker` processes.

Each test (and each xdist process) gets its own redis-server on a free port, so a test can stop
and restart the broker without disturbing anything else. The worker runs the real CLI
(`celery -A config worker`) on the test settings against the current test database; this
process publishes to the same private broker through `publishing_to`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import kombu.pools
import pytest
import redis

from config.celery import app as celery_app
from config.env import BASE_DIR
from tests.conftest import IN_CI

REDIS_SERVER = shutil.which("redis-server")


def require(available: bool, message: str) -> None:
    """Like tests/conftest.py: skip on a laptop without the service, fail in CI (CI=true)."""
    if available:
        return
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(
    condition: Callable[[], Any],
    *,
    timeout: float,
    what: str,
    explain: Callable[[], str] = str,
    interval: float = 0.05,
) -> Any:
    """Poll until `condition()` is truthy and return it; after `timeout` fail naming `what`,
    with `explain()` (e.g. the worker's log) attached."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}\n{explain()}")
        time.sleep(interval)


def _stop(process: subprocess.Popen[bytes], *, timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL if it does not exit in time; only our own child, by its pid."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


class RedisServer:
    """A throw-away redis-server without persistence: a restart loses everything queued."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        require(
            REDIS_SERVER is not None, "needs the redis-server binary (apt install redis-server)"
        )
        log = (self.directory / "redis.log").open("ab")
        self.process = subprocess.Popen(  # noqa: S603 - fixed arguments
            [
                str(REDIS_SERVER),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_for(self.ping, timeout=10, what=f"redis-server on port {self.port}")

    def ping(self) -> bool:
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2, socket_timeout=1)
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)
            self.process = None


def database_url(settings_dict: Mapping[str, Any]) -> str:
    """The URL of the database this test runs on (the test database, xdist suffix included)."""
    assert settings_dict["ENGINE"].endswith("postgresql"), "the worker tests need PostgreSQL"
    user = quote(settings_dict.get("USER") or "", safe="")
    password = quote(settings_dict.get("PASSWORD") or "", safe="")
    credentials = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    port = f":{settings_dict['PORT']}" if settings_dict.get("PORT") else ""
    host = settings_dict.get("HOST") or ""
    return f"postgres://{credentials}{host}{port}/{quote(settings_dict['NAME'], safe='')}"


class CeleryWorker:
    """`celery -A config worker --pool=solo` in its own process; its log is kept for failures.

    Solo pool: the task runs in the worker's main process, so SIGKILL kills it mid-task.
    """

    def __init__(self, *, env: Mapping[str, str], log_path: Path) -> None:
        self.env = dict(env)
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = self.log_path.open("ab")
        log.write(f"\n===== worker start {self.starts} =====\n".encode())
        log.flush()
        self.process = subprocess.Popen(  # noqa: S603 - fixed arguments, our own interpreter
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "--loglevel=INFO",
                "--pool=solo",
                "--queues=celery",
                f"--hostname=test-{uuid.uuid4().hex[:8]}@%h",
                "--without-mingle",
                "--without-gossip",
                "--without-heartbeat",
            ],
            cwd=BASE_DIR,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def wait_for_log(self, text: str, *, timeout: float = 30) -> None:
        """Wait until the running worker (this start of it) has logged `text`."""
        marker = f"===== worker start {self.starts} ====="

        def logged() -> bool:
            self.assert_alive()
            return text in self.log().rpartition(marker)[2]

        wait_for(logged, timeout=timeout, what=f"the worker to log {text!r}", explain=self.tail)

    def assert_alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            pytest.fail(f"the celery worker exited with {self.process.returncode}:\n{self.tail()}")

    def kill(self) -> None:
        """SIGKILL: no warm shutdown, no acknowledgement of the task it is running."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)
            self.process = None

    def tasks_succeeded(self) -> int:
        """Tasks run to the end (and acknowledged) by all starts of this worker, from its log."""
        return self.log().count("] succeeded in ")

    def log(self) -> str:
        return self.log_path.read_text("utf-8", errors="replace") if self.log_path.exists() else ""

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log().splitlines()[-lines:])


def worker_env(*, broker_url: str, database: str, **extra: str) -> dict[str, str]:
    """This process' environment with the worker's broker, database and settings."""
    inherited = {
        name: value
        for name, value in os.environ.items()
        if name not in ("CELERY_BROKER_READ_URL", "CELERY_BROKER_WRITE_URL")
    }
    return {
        **inherited,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": database,
        "CELERY_BROKER_URL": broker_url,
        "CELERY_TASK_ALWAYS_EAGER": "false",
        # Redelivery of a task whose worker died: after 2 s instead of Redis' default hour,
        # looked for every second and when a worker starts.
        "CELERY_BROKER_TRANSPORT_OPTIONS": (
            '{"visibility_timeout": 2, "unacked_restore_interval": 1,'
            ' "unacked_restore_throttle": 1}'
        ),
        **extra,
    }


def _reset_broker_pools() -> None:
    # Celery caches its broker pools on the app, and kombu keeps them per broker URL (a later
    # test's redis-server may get the same port): close and forget them all.
    kombu.pools.reset()
    celery_app._pool = None
    celery_app.amqp._producer_pool = None


@contextmanager
def publishing_to(broker_url: str) -> Iterator[None]:
    """Make this process' Celery app publish real tasks to `broker_url` instead of running them
    inline (the test settings are eager); restores the app afterwards."""
    conf = celery_app.conf
    saved = {key: conf.get(key) for key in ("broker_write_url", "task_always_eager")}
    # Publishers use the write URL; `broker_url` would lose to a CELERY_BROKER_URL variable
    # in the environment (CI sets one), which Celery reads first.
    conf.update(broker_write_url=broker_url, task_always_eager=False)
    # Never publish test tasks to a shared broker (CELERY_BROKER_WRITE_URL would win too).
    assert conf.broker_write_url == broker_url, "CELERY_BROKER_WRITE_URL is set: unset it"
    _reset_broker_pools()
    try:
        yield
    finally:
        conf.update(saved)
        _reset_broker_pools()
