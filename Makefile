# Appointment Desk. Needs only python3 (3.11+) and make.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
FLASK := $(VENV)/bin/flask --app wsgi
HOST ?= 127.0.0.1
PORT ?= 5000

.PHONY: install run test lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

# Create/migrate the embedded SQLite database, load demo data once, serve with the scheduler.
run: install
	APP_CONFIG=config.DevelopmentConfig $(FLASK) db upgrade
	APP_CONFIG=config.DevelopmentConfig $(FLASK) crm demo
	@echo "Appointment Desk at http://$(HOST):$(PORT)  (Ctrl-C stops the server and the scheduler)"
	APP_CONFIG=config.DevelopmentConfig $(PY) -m crm.devserver --host $(HOST) --port $(PORT)

# With TEST_DATABASE_URL the PostgreSQL run goes on beside the SQLite one (two cores, half the wait); its
# output follows the SQLite run's. Redis's tests run once, in the SQLite run: both would share its keys.
test: install
	@if [ -z "$$TEST_DATABASE_URL" ]; then \
		$(PY) -m pytest -q; status=$$?; \
		echo "TEST_DATABASE_URL not set: PostgreSQL run skipped"; exit $$status; \
	fi; \
	log=$$(mktemp); \
	env -u TEST_REDIS_URL CRM_TEST_DB="$$TEST_DATABASE_URL" $(PY) -m pytest -q -p no:cacheprovider -m "not browser" >"$$log" 2>&1 & \
	pg=$$!; \
	echo "== SQLite (PostgreSQL runs alongside) =="; \
	$(PY) -m pytest -q; sqlite=$$?; \
	wait $$pg; postgresql=$$?; \
	echo "== PostgreSQL =="; cat "$$log"; rm -f "$$log"; \
	echo "SQLite exit $$sqlite, PostgreSQL exit $$postgresql"; \
	[ $$sqlite -eq 0 ] && [ $$postgresql -eq 0 ]

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check crm tests bench config.py wsgi.py

# Benchmarks (SPEC 11), each printing JSON. PostgreSQL runs when TEST_DATABASE_URL or DATABASE_URL points at one.
# Full-size targets: make bench PHYSICIANS=100000 LEADS=1000000 (loading a million leads takes minutes).
PHYSICIANS ?= 100000
LEADS ?= 100000
bench: install
	$(PY) bench/intake.py
	$(PY) bench/match.py --physicians $(PHYSICIANS) --leads 200
	$(PY) bench/queue.py --leads $(LEADS)
	$(PY) bench/reports.py --leads $(LEADS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache tests/artifacts
