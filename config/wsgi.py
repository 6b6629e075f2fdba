from __future__ import annotations

import gc
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")

application = get_wsgi_application()
# What startup loaded (code, settings, URL patterns, translations) lives as long as the
# worker. Frozen, it is left out of the collector's full passes, which otherwise walk it
# again and again and became the slowest requests (the API list's p99, benchmarks/).
gc.freeze()
