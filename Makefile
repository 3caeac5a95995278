# The README's two commands: `make demo` and `make test`. Both create the environment themselves
# on a fresh machine with Python 3.11+, make and the package registry.
PYTHON ?= python3
UV_VERSION := 0.13.9
UV := .tools/bin/uv
VENV := .venv
# Demo-only HMAC key for person joins; production sets its own secret (README, "Secrets").
DEMO_ID_HASH_KEY := tubetrail-demo-key-not-for-production

.PHONY: demo stop test test-quick bench browser-check env clean

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --quiet --python $(PYTHON)
	touch $@

env: $(VENV)/.synced

# Two workers, whole files each (module fixtures build a city once): most tests wait on a Prefect
# server or a subprocess, not the CPU. TEST_WORKERS=0 runs them in this process.
TEST_WORKERS ?= 2
test: $(VENV)/.synced
	$(VENV)/bin/python -m pytest -q $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

# The quick lane: every test but those marked `prefect` (the Prefect harness, a server of their own;
# tests/conftest.py marks them), on the same workers.
test-quick: $(VENV)/.synced
	$(VENV)/bin/python -m pytest -q -m "not prefect" $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

# The demo's Prefect home (the server's SQLite database, local results) is data/demo/prefect, so
# `make clean` removes it; Prefect's INFO lines go to data/demo/prefect.log, not the terminal.
DEMO_PREFECT_HOME ?= $(CURDIR)/data/demo/prefect
demo: $(VENV)/.synced
	mkdir -p $(DEMO_PREFECT_HOME)
	TUBETRAIL_ID_HASH_KEY=$${TUBETRAIL_ID_HASH_KEY:-$(DEMO_ID_HASH_KEY)} PREFECT_HOME=$(DEMO_PREFECT_HOME) \
		$(VENV)/bin/tubetrail demo

# Stops what the demo left running (pids in data/demo/*.pid): `tubetrail serve`, then the report
# server, then the Prefect server. The system Python: it needs nothing from the venv.
stop:
	$(PYTHON) -m devtools.stop data/demo

# After `make demo`: headless Chromium against the UI and the demo's report.html (screenshots in
# data/demo/screenshots). Installs Debian's chromium and a CJK font when missing (needs root).
browser-check: $(VENV)/.synced
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium fonts-noto-cjk)
	$(VENV)/bin/python -m devtools.browser_check --report data/demo/report/report.html --ui http://127.0.0.1:4200 --out data/demo/screenshots

bench: $(VENV)/.synced
	TUBETRAIL_ID_HASH_KEY=$${TUBETRAIL_ID_HASH_KEY:-$(DEMO_ID_HASH_KEY)} $(VENV)/bin/python -m bench.run

clean: stop
	rm -rf .tools $(VENV) data/demo
