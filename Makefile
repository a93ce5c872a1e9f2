# ehr-fed: the two commands of the README, plus benchmarks.
#   make demo   creates .venv, installs, runs the demo on embedded synthetic hospitals
#   make test   creates .venv, installs, runs the whole test suite (notebooks included)
#   make bench  runs benchmarks/ (JSON on stdout)

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# two workers (the machines have 2 cores); a test file's tests stay on one worker (module fixtures)
PYTEST_ARGS ?= -n 2 --dist loadfile

.PHONY: demo test bench postgres-server lint clean

$(STAMP): setup.cfg pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "ehr-fed needs Python 3.11+, found " + sys.version' 
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The OMOP tests run against a real PostgreSQL server that the tests start themselves;
# here we only make sure its binaries are installed.
postgres-server:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; then \
		echo "PostgreSQL server binaries present"; \
	else \
		echo "Installing the PostgreSQL server (apt-get)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq postgresql >/dev/null; \
	fi

demo: $(STAMP)
	$(VENV)/bin/ehr-fed demo

test: $(STAMP) postgres-server
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: $(STAMP)
	@for b in benchmarks/*.py; do echo "== $$b" >&2; $(PY) $$b || exit 1; done

lint: $(STAMP)
	$(VENV)/bin/ruff check ehr_fed tests benchmarks

clean:
	rm -rf $(VENV) .cache .pytest_cache
