"""The test suite: base settings made fast and deterministic."""

from __future__ import annotations

from config.settings.base import *

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
# Tests call tasks inline; a real worker started by a test sets CELERY_TASK_ALWAYS_EAGER=false.
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=True)
# Real-worker tests shorten Redis' redelivery of unacknowledged tasks (JSON, e.g.
# {"visibility_timeout": 2}); Redis' default waits an hour.
CELERY_BROKER_TRANSPORT_OPTIONS = env.json("CELERY_BROKER_TRANSPORT_OPTIONS", default={})
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
# Throttling stays on (tests/test_security.py proves it), with rates no test run reaches.
REST_FRAMEWORK = {
    **REST_FRAMEWORK,
    "DEFAULT_THROTTLE_RATES": {"anon": "100000/minute", "user": "100000/minute"},
}
MEDIA_ROOT = BASE_DIR / "var" / "test-media"
LOGGING = {"version": 1, "disable_existing_loggers": False}
# Do not scan STATIC_ROOT at start-up: tests never run collectstatic.
WHITENOISE_AUTOREFRESH = True
