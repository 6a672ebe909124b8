# Sealroom. `make run` and `make test` do their own set-up (a .venv with pip).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed
PYTEST_QUICK ?= -m "not proof" --durations=25

.PHONY: run test proof lint typecheck layers migrations-check pytest setup clean

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
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
	$(BIN)/pytest -m proof --durations=25 $(PYTEST_ARGS)

clean:
	rm -rf var/test-output var/test-db.sqlite3*
