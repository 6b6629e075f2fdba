# Dialog CRM. `make demo` and `make test` set everything up from nothing (see README).
PYTHON_BIN ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
DEMO_ADDR ?= 127.0.0.1:8000
PYTEST_ARGS ?= -n 2

.PHONY: demo test install lint check-migrations check-deploy pytest serve bench clean messages

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON_BIN) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

## Set up the embedded default (SQLite, eager Celery, console provider), load demo data, serve.
demo: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py seed_demo --base-url http://$(DEMO_ADDR)
	DJANGO_DEBUG=true $(PY) manage.py runserver $(DEMO_ADDR)

## Set up and run every check and the whole test suite.
test: install lint check-migrations check-deploy pytest

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

check-migrations: install
	$(PY) manage.py makemigrations --check --dry-run

check-deploy: install
	DJANGO_SETTINGS_MODULE=config.settings.production \
	DJANGO_SECRET_KEY=check-deploy-$$(date +%s)-a-long-random-looking-secret-value-0123456789 \
	DJANGO_ALLOWED_HOSTS=crm.example.com \
	DATABASE_URL=$${DATABASE_URL:-sqlite:///var/check-deploy.sqlite3} \
	CELERY_BROKER_URL=$${CELERY_BROKER_URL:-redis://127.0.0.1:6379/0} \
	$(PY) manage.py check --deploy --fail-level WARNING

pytest: install
	$(VENV)/bin/pytest --create-db $(PYTEST_ARGS)

## Rebuild the German/English message catalogues (needs GNU gettext).
messages: install
	$(PY) manage.py makemessages -l de -l en --ignore=.venv --ignore=tests --ignore=benchmarks --no-obsolete
	$(PY) manage.py compilemessages --ignore=.venv

clean:
	rm -rf $(VENV) db.sqlite3 var media staticfiles

## Benchmarks at 1,000,000 rows on PostgreSQL (creates and drops its own database).
## BENCH_SCALE=10000 make bench for a quick run; figures also land in benchmarks/results/.
bench: install
	$(PY) -m benchmarks.run --scale $${BENCH_SCALE:-1000000}
