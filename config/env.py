"""One place that reads the environment; settings import `env` and `BASE_DIR` from here."""

from __future__ import annotations

from pathlib import Path

import environ
from environ.fileaware_mapping import FileAwareMapping

BASE_DIR = Path(__file__).resolve().parent.parent


class _StrippedFileAwareMapping(FileAwareMapping):
    """Secret files usually end with a newline that is not part of the secret."""

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key).rstrip("\r\n")


class _Env(environ.Env):
    ENVIRON = _StrippedFileAwareMapping()


# Parses strictly (a bad bool or int raises) and supports NAME_FILE for secrets mounted as
# files, e.g. DJANGO_SECRET_KEY_FILE=/run/secrets/django_secret_key.
env = _Env()
