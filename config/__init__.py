from __future__ import annotations

# Loaded with Django so that @shared_task binds to our app and `celery -A config` finds it.
from config.celery import app as celery_app

__all__ = ["celery_app"]
