"""One place that reads the environment; settings import `env` and `BASE_DIR` from here."""

from __future__ import annotations

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

# django-environ parses strictly (a bad bool or int raises) and supports NAME_FILE for secrets
# mounted as files, e.g. DJANGO_SECRET_KEY_FILE=/run/secrets/django_secret_key.
env = environ.FileAwareEnv()
