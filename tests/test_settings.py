"""Production settings: refuse to start without their secrets, and pass `check --deploy`.

Each case runs in a fresh interpreter with a cleaned environment, because settings are read
once per process and this test process runs on config.settings.test.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from config.env import BASE_DIR

REQUIRED = {
    "DJANGO_SECRET_KEY": "prod-test-8f3a1c9e2b7d4f6a0e5c3b1d9f7a2e4c6b8d0f1a3c5e7b9d-secret",
    "DJANGO_ALLOWED_HOSTS": "crm.example.com",
    "DATABASE_URL": "sqlite:////tmp/dialog-crm-settings-test.sqlite3",
    "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
}
LOAD_SETTINGS = (
    "import django\n"
    "from django.core.exceptions import ImproperlyConfigured\n"
    "try:\n"
    "    django.setup()\n"
    "except ImproperlyConfigured as exc:\n"
    "    print('ImproperlyConfigured:', exc)\n"
    "    raise SystemExit(3)\n"
    "from django.conf import settings\n"
    "print('loaded', settings.SECRET_KEY[:4], settings.DEBUG)\n"
)


def clean_env(**extra: str) -> dict[str, str]:
    """Only what a bare interpreter needs, so nothing from this shell or CI leaks in."""
    env = {key: os.environ[key] for key in ("PATH", "HOME", "LANG", "TMPDIR") if key in os.environ}
    env["DJANGO_SETTINGS_MODULE"] = "config.settings.production"
    env.update(extra)
    return env


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - fixed arguments, our own interpreter
        [sys.executable, *args],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_production_refuses_to_load_without(missing):
    env = clean_env(**{key: value for key, value in REQUIRED.items() if key != missing})

    result = run(["-c", LOAD_SETTINGS], env)

    assert result.returncode == 3, result.stdout + result.stderr
    assert "ImproperlyConfigured" in result.stdout
    assert missing in result.stdout


def test_production_loads_with_everything_given():
    result = run(["-c", LOAD_SETTINGS], clean_env(**REQUIRED))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "loaded prod False" in result.stdout


def test_secret_can_come_from_a_file(tmp_path):
    secret_file = tmp_path / "secret_key"
    secret_file.write_text(REQUIRED["DJANGO_SECRET_KEY"].replace("prod", "file"))
    given = {key: value for key, value in REQUIRED.items() if key != "DJANGO_SECRET_KEY"}

    result = run(["-c", LOAD_SETTINGS], clean_env(**given, DJANGO_SECRET_KEY_FILE=str(secret_file)))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "loaded file" in result.stdout


def test_debug_cannot_be_switched_on_in_production():
    result = run(["-c", LOAD_SETTINGS], clean_env(**REQUIRED, DJANGO_DEBUG="true"))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "loaded prod False" in result.stdout


def test_check_deploy_is_clean_with_the_required_settings():
    result = run(
        ["manage.py", "check", "--deploy", "--fail-level", "WARNING"], clean_env(**REQUIRED)
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_check_deploy_fails_in_the_embedded_default():
    env = clean_env()
    env["DJANGO_SETTINGS_MODULE"] = "config.settings.base"

    result = run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], env)

    assert result.returncode != 0
    assert "security.W" in result.stdout + result.stderr


def test_secrets_can_come_from_files_without_their_trailing_newline(tmp_path, monkeypatch):
    from config.env import env

    secret_file = tmp_path / "secret"
    secret_file.write_text("from-a-file\n")
    monkeypatch.setenv("SOME_TEST_SECRET_FILE", str(secret_file))
    assert env.str("SOME_TEST_SECRET") == "from-a-file"


@pytest.mark.parametrize(("value", "expected"), [(None, "False"), ("true", "True")])
def test_transaction_pooling_turns_server_side_cursors_off(value, expected):
    """DATABASE_TRANSACTION_POOLING: PgBouncer in transaction mode, so no prepared statements."""
    extra = {"DATABASE_URL": "postgres://crm@db.internal:5432/crm"}
    if value is not None:
        extra["DATABASE_TRANSACTION_POOLING"] = value
    script = (
        "import django\ndjango.setup()\nfrom django.conf import settings\n"
        "print(settings.DATABASES['default']['DISABLE_SERVER_SIDE_CURSORS'])\n"
    )
    result = run(["-c", script], clean_env(**{**REQUIRED, **extra}))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == expected
