"""Everything, runnable with no environment at all: the embedded default.

SQLite, eager Celery and the console message provider, so `make demo` needs no services.
Production (production.py) only hardens and requires secrets; tests (test.py) only speed up.
"""

from __future__ import annotations

import datetime as dt

from csp.constants import NONCE, NONE, SELF
from django.utils.translation import gettext_lazy as _

from config.env import BASE_DIR, env

# Never use the default outside a laptop; production.py requires DJANGO_SECRET_KEY.
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="insecure-dev-key-change-me-" + "x" * 32)
# Debug pages and auto-reload. Off unless asked for.
DEBUG = env.bool("DJANGO_DEBUG", default=False)
# Host names this site answers to (comma separated).
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
# Origins allowed to POST with a session (e.g. https://crm.example.com), comma separated.
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "guardian",
    "simple_history",
    "axes",
    "crm",
    "consent",
    "approvals",
    "messaging",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Signed provider webhooks skip everything below (sessions, CSRF, auth, CSP...).
    "messaging.middleware.WebhookShortPathMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "crm.middleware.UserTimezoneMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "simple_history.middleware.HistoryRequestMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, as django-axes requires: it turns a locked-out login into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Embedded default: a SQLite file in the project. CI and production: postgres://user:pw@host/db.
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
# Keep connections open between requests (seconds); 0 closes after each request.
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
if DATABASES["default"]["ENGINE"].endswith("postgresql"):
    # JIT compilation costs more than it saves on this app's short queries (measured: 1.9 s of
    # a 2.5 s audience count went into compiling).
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("options", "-c jit=off")
    # Behind a PgBouncer in transaction mode (before 1.21, or without max_prepared_statements)
    # a statement's server connection changes between transactions: no server-side cursors
    # and no prepared statements (the send gate prepares its facts query otherwise).
    DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = env.bool(
        "DATABASE_TRANSACTION_POOLING", default=False
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTHENTICATION_BACKENDS = [
    # First: refuses logins of a locked-out username + address before a password is checked.
    "axes.backends.AxesStandaloneBackend",
    # ModelBackend, with the permissions read in one query (crm/backends.py).
    "crm.backends.RolePermissionBackend",
    "guardian.backends.ObjectPermissionBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Login brute force (django-axes): after LOGIN_FAILURE_LIMIT failed logins for one username
# from one address, that pair is locked out for LOGIN_COOLOFF_MINUTES (HTTP 429). Failed
# attempts are kept in the database (admin: Axes > Access attempts), passwords never.
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = dt.timedelta(minutes=env.int("LOGIN_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "admin/login_locked_out.html"
# Behind N reverse proxies the client address is the N-th from the right in X-Forwarded-For.
AXES_IPWARE_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0) or None
AXES_IPWARE_META_PRECEDENCE_ORDER = (
    ["HTTP_X_FORWARDED_FOR", "REMOTE_ADDR"]
    if env.int("TRUSTED_PROXY_COUNT", default=0)
    else ["REMOTE_ADDR"]
)

# Content-Security-Policy on every response (django-csp): scripts only from this site or with
# the per-request nonce (templates write nonce="{{ request.csp_nonce }}"), no plugins, no
# framing. Inline style attributes stay allowed: Django's admin widgets use them.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, NONCE],
        "style-src": [SELF, "'unsafe-inline'"],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

# guardian: no anonymous user row; object permissions only for real users.
ANONYMOUS_USER_NAME = None
GUARDIAN_MONKEY_PATCH_USER = False

# Language the UI falls back to when the browser asks for neither German nor English.
LANGUAGE_CODE = env.str("DJANGO_LANGUAGE_CODE", default="en")
LANGUAGES = [("en", _("English")), ("de", _("German"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
USE_I18N = True
USE_TZ = True
# Stored times are UTC; this zone is shown to users who have not picked their own.
TIME_ZONE = "UTC"
DISPLAY_TIME_ZONE = env.str("DISPLAY_TIME_ZONE", default="Europe/Berlin")

STATIC_URL = "static/"
STATIC_ROOT = env.path("DJANGO_STATIC_ROOT", default=BASE_DIR / "staticfiles")
# Uploaded imports and generated reports/exports.
MEDIA_URL = "media/"
MEDIA_ROOT = env.path("DJANGO_MEDIA_ROOT", default=BASE_DIR / "media")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Largest upload kept in memory before spooling to disk; imports stream from disk.
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
# Largest import file accepted from admin or API, in megabytes.
IMPORT_MAX_UPLOAD_MB = env.int("IMPORT_MAX_UPLOAD_MB", default=200)

# Phone numbers written without a country code are read as numbers of this region (ISO 3166).
PHONE_DEFAULT_REGION = env.str("PHONE_DEFAULT_REGION", default="DE")

# Mail for notifications and e-mail messages: smtp://user:pw@host:587 (or consolemail://).
EMAIL_CONFIG = env.email_url("EMAIL_URL", default="consolemail://")
vars().update(EMAIL_CONFIG)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Dialog CRM <noreply@localhost>")

# Celery. No broker configured ("memory://"): tasks run inline so the demo needs no services.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="memory://")
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default=None)
CELERY_TASK_ALWAYS_EAGER = env.bool(
    "CELERY_TASK_ALWAYS_EAGER", default=CELERY_BROKER_URL == "memory://"
)
CELERY_TASK_EAGER_PROPAGATES = True
# A task is acknowledged after it ran, so a worker killed mid-task hands it to another worker.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BEAT_SCHEDULE: dict[str, dict] = {}

# Seconds a provider call may take: to connect, then to answer. A timeout after connecting
# leaves the message `unknown` (it may have been sent) for reconciliation, so keep it generous.
MESSAGING_PROVIDER_CONNECT_TIMEOUT = env.float("MESSAGING_PROVIDER_CONNECT_TIMEOUT", default=5.0)
MESSAGING_PROVIDER_TIMEOUT = env.float("MESSAGING_PROVIDER_TIMEOUT", default=20.0)
# WhatsApp Cloud API: the Graph API version is pinned (Meta's examples use v26.0); the base URL
# is only changed to point tests or a sandbox at a stub.
WHATSAPP_GRAPH_API_VERSION = env.str("WHATSAPP_GRAPH_API_VERSION", default="v26.0")
WHATSAPP_GRAPH_BASE_URL = env.str("WHATSAPP_GRAPH_BASE_URL", default="https://graph.facebook.com")
# Twilio REST API base URL (only changed to point tests or a sandbox at a stub).
TWILIO_API_BASE_URL = env.str("TWILIO_API_BASE_URL", default="https://api.twilio.com")

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_PAGINATION_CLASS": "crm.api.pagination.DefaultCursorPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "crm.api.base.exception_handler",
    "DEFAULT_THROTTLE_CLASSES": [
        "rest_framework.throttling.AnonRateThrottle",
        "rest_framework.throttling.UserRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": env.str("API_THROTTLE_ANON", default="60/minute"),
        "user": env.str("API_THROTTLE_USER", default="6000/minute"),
    },
}
SPECTACULAR_SETTINGS = {
    # Swagger UI from this site's static files (no CDN; the CSP allows nothing else).
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "TITLE": "Dialog CRM API",
    "DESCRIPTION": "Contacts, consent, approved templates and audited conversations.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    # One schema name per shared choice set (e.g. `channel` and `preferred_channel`).
    "ENUM_NAME_OVERRIDES": {
        "ChannelEnum": "crm.models.Channel",
        "LanguageEnum": "crm.models.Language",
        # Three choice sets share the field name "kind"; the first keeps its earlier name.
        "KindEnum": "consent.models.DataSubjectRequest.Kind",
        "MessageKindEnum": "messaging.models.MessageKind",
        "EventKindEnum": "messaging.models.EventKind",
    },
}

CACHES = {
    "default": env.cache_url("CACHE_URL", default="locmemcache://"),
}

LOGIN_URL = "admin:login"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# Public address of this site, used in links sent to contacts (double opt-in, unsubscribe).
PUBLIC_BASE_URL = env.str("PUBLIC_BASE_URL", default="http://127.0.0.1:8000")
# Double opt-in: how long a confirmation link is valid, and how many requests per day a
# contact may receive for one purpose and channel.
CONSENT_OPT_IN_TTL_HOURS = env.int("CONSENT_OPT_IN_TTL_HOURS", default=72)
CONSENT_OPT_IN_MAX_PER_DAY = env.int("CONSENT_OPT_IN_MAX_PER_DAY", default=3)
# Who delivers double opt-in confirmations (dotted path to a callable(request, token)):
# messaging sends SMS/WhatsApp through its send gate and hands e-mail to consent's sender.
CONSENT_CONFIRMATION_SENDER = env.str(
    "CONSENT_CONFIRMATION_SENDER", default="messaging.confirmation.send_confirmation"
)
# Consent validity (consent.tasks): expire consents past their validity every hour, and once a
# day ask contacts to reconfirm consents that expire within their purpose's reconfirmation window.
CELERY_BEAT_SCHEDULE["consent-expire"] = {
    "task": "consent.tasks.expire_consents",
    "schedule": 60 * 60,
}
CELERY_BEAT_SCHEDULE["consent-request-reconfirmations"] = {
    "task": "consent.tasks.request_reconfirmations",
    "schedule": 24 * 60 * 60,
}
# Retention (consent.tasks.apply_retention): once a day, apply every active RetentionPolicy
# (blank old consent evidence, pseudonymise or delete inactive contacts, old message bodies)
# and record a RetentionRun per policy. Policies are edited in the admin, not here.
CELERY_BEAT_SCHEDULE["consent-apply-retention"] = {
    "task": "consent.tasks.apply_retention",
    "schedule": 24 * 60 * 60,
}
# Approvals. Who checks WhatsApp templates after internal approval (dotted path to a class
# implementing approvals.providers.TemplateProvider); the fake answers "pending" unless
# APPROVALS_FAKE_PROVIDER_APPROVES is set (then it approves at once, for the demo).
APPROVALS_TEMPLATE_PROVIDER = env.str(
    "APPROVALS_TEMPLATE_PROVIDER", default="approvals.providers.FakeTemplateProvider"
)
APPROVALS_FAKE_PROVIDER_APPROVES = env.bool("APPROVALS_FAKE_PROVIDER_APPROVES", default=False)
# Days before approved content expires (valid_until) that the template owner is e-mailed, once.
APPROVALS_EXPIRY_NOTICE_DAYS = env.int("APPROVALS_EXPIRY_NOTICE_DAYS", default=14)
# Hourly: retire approved versions past valid_until. Daily: warn owners of expiring content.
CELERY_BEAT_SCHEDULE["approvals-retire-expired"] = {
    "task": "approvals.tasks.retire_expired_versions",
    "schedule": 60 * 60,
}
CELERY_BEAT_SCHEDULE["approvals-notify-expiring"] = {
    "task": "approvals.tasks.notify_expiring_versions",
    "schedule": 24 * 60 * 60,
}
# Messaging delivery (messaging.services.delivery). A queued message's outbox row is leased for
# MESSAGING_OUTBOX_LEASE_SECONDS when dispatched; if its task is lost (broker outage, worker
# gone) the dispatcher sends it again after that. Transient provider errors are retried up to
# MESSAGING_MAX_ATTEMPTS times, waiting base * 2^n seconds (capped at the max). Messages whose
# outcome stayed unknown with no receipt are failed as `unconfirmed` after the hours given.
MESSAGING_OUTBOX_LEASE_SECONDS = env.int("MESSAGING_OUTBOX_LEASE_SECONDS", default=120)
MESSAGING_MAX_ATTEMPTS = env.int("MESSAGING_MAX_ATTEMPTS", default=8)
MESSAGING_RETRY_BASE_SECONDS = env.int("MESSAGING_RETRY_BASE_SECONDS", default=30)
MESSAGING_RETRY_MAX_SECONDS = env.int("MESSAGING_RETRY_MAX_SECONDS", default=3600)
MESSAGING_UNKNOWN_AFTER_HOURS = env.int("MESSAGING_UNKNOWN_AFTER_HOURS", default=48)
# Words in an inbound message that hand the conversation to a person (whole words, case and
# umlauts ignored), comma separated.
MESSAGING_HANDOFF_WORDS = env.list(
    "MESSAGING_HANDOFF_WORDS", default=["agent", "mensch", "berater", "human", "mitarbeiter"]
)
# Largest webhook body accepted from a provider (bytes); larger requests get 413 unread.
MESSAGING_WEBHOOK_MAX_BYTES = env.int("MESSAGING_WEBHOOK_MAX_BYTES", default=1024 * 1024)
# Every 15 s: dispatch due outbox rows (scheduled sends, retries, lost tasks); every 30 s: start
# scheduled campaigns that are due. Hourly: fail
# messages whose outcome stayed unknown.
CELERY_BEAT_SCHEDULE["messaging-dispatch-due"] = {
    "task": "messaging.tasks.dispatch_due_messages",
    "schedule": 15,
}
CELERY_BEAT_SCHEDULE["messaging-start-due-campaigns"] = {
    "task": "messaging.tasks.start_due_campaigns",
    "schedule": 30,
}
# A running campaign whose next batch is overdue by MESSAGING_CAMPAIGN_STALL_SECONDS (its task
# lost in a broker outage or with a worker) gets it queued again by a sweep every minute.
MESSAGING_CAMPAIGN_STALL_SECONDS = env.int("MESSAGING_CAMPAIGN_STALL_SECONDS", default=300)
CELERY_BEAT_SCHEDULE["messaging-resume-stalled-campaigns"] = {
    "task": "messaging.tasks.resume_stalled_campaigns",
    "schedule": 60,
}
CELERY_BEAT_SCHEDULE["messaging-reconcile-unknown"] = {
    "task": "messaging.tasks.reconcile_unknown_messages",
    "schedule": 60 * 60,
}
# Outbound event webhooks (messaging.services.events). A delivery is tried up to
# MESSAGING_WEBHOOK_MAX_ATTEMPTS times, waiting MESSAGING_WEBHOOK_RETRY_BASE_SECONDS * 2^n
# (capped at MESSAGING_RETRY_MAX_SECONDS); after MESSAGING_WEBHOOK_DISABLE_AFTER deliveries in a
# row have failed, the subscription is disabled and its owner e-mailed. Subscriber URLs must be
# https (http too with MESSAGING_WEBHOOK_ALLOW_HTTP) and resolve to public addresses only.
MESSAGING_WEBHOOK_MAX_ATTEMPTS = env.int("MESSAGING_WEBHOOK_MAX_ATTEMPTS", default=8)
MESSAGING_WEBHOOK_RETRY_BASE_SECONDS = env.int("MESSAGING_WEBHOOK_RETRY_BASE_SECONDS", default=30)
MESSAGING_WEBHOOK_DISABLE_AFTER = env.int("MESSAGING_WEBHOOK_DISABLE_AFTER", default=5)
MESSAGING_WEBHOOK_TIMEOUT = env.float("MESSAGING_WEBHOOK_TIMEOUT", default=10.0)
MESSAGING_WEBHOOK_ALLOW_HTTP = env.bool("MESSAGING_WEBHOOK_ALLOW_HTTP", default=False)
# Test-only: lets tests deliver to a stub server on 127.0.0.1. Never set it in production.
MESSAGING_WEBHOOK_ALLOW_PRIVATE = False
# Idempotency-Key (crm.api.idempotency): how long a POST's stored result is replayed.
IDEMPOTENCY_KEY_TTL_HOURS = env.int("IDEMPOTENCY_KEY_TTL_HOURS", default=24)
# Every minute: queue again webhook deliveries whose task was lost (overdue by a lease).
CELERY_BEAT_SCHEDULE["messaging-dispatch-lost-webhooks"] = {
    "task": "messaging.tasks.dispatch_lost_webhooks",
    "schedule": 60,
}
# Every minute: queue again accepted WhatsApp webhooks whose processing task was lost or crashed
# (still pending 5 minutes after receipt or after their last attempt; given up after 5 attempts).
CELERY_BEAT_SCHEDULE["messaging-dispatch-lost-inbound-webhooks"] = {
    "task": "messaging.tasks.dispatch_lost_inbound_webhooks",
    "schedule": 60,
}
