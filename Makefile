# Two commands matter: `make run` and `make test`. Both set everything up on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test install lint fmt bench bench-intake bench-admin bench-pipeline demo-payments test-e2e db-start db-stop clean tools browser screenshots

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

# Signed demo payments to the server `make run` started (same secret, same port).
N ?= 20
demo-payments: install
	DEBUG=$${DEBUG:-true} NOWPAYMENTS_IPN_SECRET=$${NOWPAYMENTS_IPN_SECRET:-demo-ipn-secret} \
		$(PY) manage.py demo_payments $(N) --url http://127.0.0.1:$${RUN_WEB_PORT:-8000} \
		--sandbox http://127.0.0.1:$${RUN_SANDBOX_PORT:-8100}

test: install tools browser
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

# Webhook intake under 200 concurrent senders (gunicorn, DEBUG off) and sweep-to-exchange time.
bench-intake: install
	$(PY) bench/bench_intake.py $(BENCH_ARGS)

# Only the end-to-end tests (real processes); `make test` runs them too.
test-e2e: install tools
	$(PY) -m pytest tests/e2e $(PYTEST_ARGS)

# Debian's chromium for the admin's browser tests (Playwright drives it; it never downloads a
# browser). Installed with apt-get when missing; where that is impossible (no apt-get, not
# root and no password-less sudo) this fails loudly rather than letting the tests skip.
export CHROMIUM_PATH ?= /usr/bin/chromium
browser:
	@if [ -x "$(CHROMIUM_PATH)" ]; then exit 0; fi; \
	echo "chromium missing at $(CHROMIUM_PATH): installing Debian's chromium"; \
	if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get update && apt-get install -y chromium; \
	elif command -v apt-get >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
		sudo -n apt-get update && sudo -n apt-get install -y chromium; \
	else \
		echo "ERROR: cannot install chromium here (needs apt-get as root or password-less" \
			"sudo). Install Debian's chromium or set CHROMIUM_PATH." >&2; exit 1; \
	fi; \
	test -x "$(CHROMIUM_PATH)" || { echo "ERROR: chromium still missing at $(CHROMIUM_PATH)" >&2; exit 1; }

# Dashboard, batch page, fee report and client statement screenshots with realistic data,
# for a reviewer: artifacts/*.png.
screenshots: install browser
	SCREENSHOTS_DIR=$(CURDIR)/artifacts $(PY) -m pytest tests/admin/test_browser_screenshots.py -q
	@ls -1 $(CURDIR)/artifacts/*.png

# Admin page times and query counts on 1,000,000 accumulations and 10,000 batches
# (`BENCH_ARGS=--reuse` keeps the loaded database between runs).
bench-admin: install
	$(PY) bench/bench_admin.py $(BENCH_ARGS)

# The whole system of processes under 200 IPN/s for 10 minutes (bench/bench_pipeline.py).
bench-pipeline: install
	$(PY) bench/bench_pipeline.py $(BENCH_ARGS)

clean: db-stop
	rm -rf .data $(VENV) .tools
