# Two commands matter: `make run` and `make test`. Both set everything up on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test install lint fmt bench db-start db-stop clean tools

$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements.lock -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Local tools the tests need that do not come from PyPI (anvil from npm). Installed under
# .tools/ (ignored); a missing npm is reported loudly by the tests that need it.
tools: install
	@bash scripts/install_tools.sh

db-start: install
	$(PY) -m backoffice.embedded_db start

db-stop:
	-test -x $(PY) && $(PY) -m backoffice.embedded_db stop

run: install tools
	$(PY) scripts/run.py

test: install tools
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

fmt: install
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

bench: install
	$(PY) bench/bench_money_core.py $(BENCH_ARGS)

clean: db-stop
	rm -rf .data $(VENV) .tools
