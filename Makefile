# The two commands: `make demo` and `make test`. Both set up the virtualenv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000
# The demo's web server is the production one (gunicorn, DEBUG off); two workers suit a laptop.
WEB_WORKERS ?= 2
SEED ?= 0
TEST_DATA_DIR ?= $(CURDIR)/var/test
PYTEST_ARGS ?=

.PHONY: demo test venv chromium lint clean

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $(STAMP)

venv: $(STAMP)

# Embedded default: SQLite + filesystem Celery broker under var/, no servers needed.
demo: $(STAMP)
	$(PY) manage.py migrate --noinput
	$(PY) manage.py make_demo --seed $(SEED) --users
	$(PY) manage.py train_demo_model --seed $(SEED) --background
	$(PY) manage.py collectstatic --noinput -v0
	@echo ""
	@echo "Quorum is starting at http://$(HOST):$(PORT)/  (admin: http://$(HOST):$(PORT)/admin/)"
	@echo "Press Ctrl-C to stop the web server and the Celery worker."
	@trap 'kill 0' INT TERM EXIT; \
	$(VENV)/bin/celery -A config worker -Q default,gpu --pool=solo --loglevel=WARNING & \
	QUORUM_BIND=$(HOST):$(PORT) QUORUM_WEB_WORKERS=$(WEB_WORKERS) QUORUM_ALLOW_DEVELOPMENT_SECRET_KEY=1 \
	  $(VENV)/bin/gunicorn -c config/gunicorn.conf.py

# Browser tests drive Debian's chromium through Playwright (never a downloaded browser).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "browser tests need Chromium: sudo apt-get install chromium" >&2; fi; }

# Two pytest processes: the main suite, then tests/e2e, which deploys Quorum as separate
# processes (gunicorn, Celery worker) and must not load Django or Celery itself (-p no:django).
# The e2e run gets PYTEST_ARGS too unless they name test paths; E2E_ARGS overrides
# (E2E_ARGS=skip runs no e2e test). Exit code 5 (nothing selected) is not a failure.
E2E_ARGS ?= $(if $(findstring tests/,$(PYTEST_ARGS)),skip,$(PYTEST_ARGS))
test: $(STAMP) chromium
	mkdir -p $(TEST_DATA_DIR)
	QUORUM_DATA_DIR=$(TEST_DATA_DIR) $(PY) -m pytest --ignore=tests/e2e $(PYTEST_ARGS) || [ $$? -eq 5 ]
	@if [ "$(E2E_ARGS)" = skip ]; then echo "tests/e2e skipped (E2E_ARGS=skip)"; else \
	  echo "QUORUM_DATA_DIR=$(TEST_DATA_DIR) $(PY) -m pytest -p no:django tests/e2e $(E2E_ARGS)"; \
	  QUORUM_DATA_DIR=$(TEST_DATA_DIR) $(PY) -m pytest -p no:django tests/e2e $(E2E_ARGS) || [ $$? -eq 5 ]; fi

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf var test-output
