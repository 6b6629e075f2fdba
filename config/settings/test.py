"""The test suite: base settings made fast and deterministic."""

from __future__ import annotations

from config.settings.base import *

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
# Tests call tasks inline unless a test starts a real worker against CELERY_BROKER_URL.
CELERY_TASK_ALWAYS_EAGER = True
MESSAGING_DEFAULT_PROVIDER = "console"
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
REST_FRAMEWORK = {**REST_FRAMEWORK, "DEFAULT_THROTTLE_CLASSES": []}
MEDIA_ROOT = BASE_DIR / "var" / "test-media"
LOGGING = {"version": 1, "disable_existing_loggers": False}
# Do not scan STATIC_ROOT at start-up: tests never run collectstatic.
WHITENOISE_AUTOREFRESH = True
