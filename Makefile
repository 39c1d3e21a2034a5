# The README's two commands: `make run` (the main job) and `make test` (the tests).
# Both set everything up on a fresh machine that has Python 3.11+ and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# The OpenAI tests also run on the older openai majors (built on httpx, not httpx2), each in its own venv.
# The stamp names the pinned version, so changing a pin reinstalls that venv; otherwise venvs are reused.
OPENAI_PINS := 1.109.1 2.54.0
OPENAI_STAMPS := $(foreach v,$(OPENAI_PINS),.venv-openai$(firstword $(subst ., ,$(v)))/.installed-openai-$(v))
OPENAI_TESTS := tests/test_openai_replay.py tests/test_stream_lifecycle.py tests/test_openai_features.py \
	tests/test_openai_surfaces.py

# Other OpenTelemetry instrumentations of the same SDKs, next to ours (tests/peers): the official openai-v2
# (with the util-genai release it works with), OpenLLMetry's openai instrumentation, and httpx's.
PEER_REQS := opentelemetry-instrumentation-openai-v2==2.4b0 opentelemetry-util-genai==1.1b0 \
	opentelemetry-instrumentation-openai==0.62.4 opentelemetry-instrumentation-httpx==0.66b2
PEERS_STAMP := .venv-peers/.installed-peers

# The Anthropic tests also run on anthropic 0.40 (the oldest supported) and the last 0.x release (both on httpx).
ANTHROPIC_PINS := 0.40.0 0.125.0
ANTHROPIC_STAMPS := $(foreach v,$(ANTHROPIC_PINS),.venv-anthropic-$(v)/.installed)
ANTHROPIC_TESTS := tests/test_anthropic_replay.py tests/test_anthropic_streams.py tests/test_anthropic_surfaces.py \
	tests/test_stream_real_sdk.py


# The Google GenAI tests also run on google-genai 1.0.0 (the oldest supported), 1.5.0, 1.11.0 (the first
# with HttpOptions.client_args) and the last 2.x release. Before 1.11 the replay answers through the
# transports of the requests sessions and httpx clients the SDK makes itself (tests/_google_helpers.py).
GOOGLE_PINS := 1.0.0 1.5.0 1.11.0 2.34.0
GOOGLE_STAMPS := $(foreach v,$(GOOGLE_PINS),.venv-google-$(v)/.installed)
GOOGLE_TESTS := tests/test_google_replay.py tests/test_google_features.py tests/test_google_content.py

# The package supports Python 3.11 and later: the main suite runs again on the newest interpreter this machine has
# among 3.13 and 3.12 (on PATH, or installed by pyenv), in its own venv; skipped, and said so, when it has neither.
NEWEST_PYTHON := $(shell for v in 3.13 3.12; do \
	for p in $$(command -v python$$v) $$(ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/$$v*/bin/python$$v 2>/dev/null); do \
		$$p -c "import sys" >/dev/null 2>&1 && { echo $$p; exit 0; }; done; done)
NEWEST_STAMP := $(if $(NEWEST_PYTHON),.venv-newest/.installed)

# The dashboard's browser tests drive Debian's chromium through Playwright (never a downloaded browser).
CHROMIUM := /usr/bin/chromium

.PHONY: setup run dashboard lint test test-postgres test-dashboard test-openai-matrix test-google-matrix test-anthropic-matrix test-peers test-newest-python test-fuzz bench clean

# The service's tests again on PostgreSQL (the store's second backend), the plugin's end-to-end tests that deliver
# to the real service, and what only PostgreSQL has: several service instances on one database.
# tests/postgres_server.py starts a throwaway server (installing Debian's postgresql package first when it is
# missing) on 127.0.0.1 and stops it after.
POSTGRES_TESTS := tests/test_service_*.py tests/test_cli.py tests/test_cli_errors.py tests/test_cli_limits.py \
	tests/test_otlp_receiver.py tests/test_otlp_relay.py tests/test_report_render.py tests/test_backfill.py \
	tests/test_end_to_end.py tests/test_cost_records.py tests/test_poison_end_to_end.py tests/test_ingest_fuzz.py \
	tests/test_admin_access.py tests/test_postgres_instances.py tests/test_enforcement.py tests/test_proxy.py \
	tests/test_limit_reservations.py tests/test_store_migrations.py tests/test_bedrock_end_to_end.py \
	tests/test_google_end_to_end.py tests/test_proxy_mode.py tests/test_zero_code.py \
	tests/test_configure.py::test_payi_client_gives_the_exporter_its_base_url_key_and_default_headers

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

run: setup
	$(BIN)/payi-otel demo --fresh

# The dashboard over the data the last `make run` left (http://127.0.0.1:3011/ until Ctrl-C).
dashboard: setup
	$(BIN)/payi-otel serve --data-dir .payi-otel/demo/service

# mypy checks the installed layout: exporters/ installs as payi_otel.exporters, so it type-checks a tree of links
# that has that shape (rebuilt on every run, so new modules are picked up) and reports paths as in the repository.
TYPECHECK_TREE := build/typecheck

lint: setup
	$(BIN)/ruff check src exporters tests
	$(BIN)/ruff format --check src exporters tests
	rm -rf $(TYPECHECK_TREE) && mkdir -p $(TYPECHECK_TREE)/payi_otel
	ln -s $(CURDIR)/src/payi_otel/* $(TYPECHECK_TREE)/payi_otel/
	ln -s $(CURDIR)/exporters $(TYPECHECK_TREE)/payi_otel/exporters
	bash -o pipefail -c '$(BIN)/mypy 2>&1 | sed -e "s|^$(TYPECHECK_TREE)/payi_otel/exporters/|exporters/|" \
		-e "s|^$(TYPECHECK_TREE)/payi_otel/|src/payi_otel/|"'

test: setup lint
	$(BIN)/python -m pytest -q --ignore=tests/browser
	$(MAKE) --no-print-directory test-postgres
	$(MAKE) --no-print-directory \
		-j$(words $(OPENAI_STAMPS) $(PEERS_STAMP) $(ANTHROPIC_STAMPS) $(GOOGLE_STAMPS) $(NEWEST_STAMP) $(CHROMIUM)) \
		$(OPENAI_STAMPS) $(PEERS_STAMP) $(ANTHROPIC_STAMPS) $(GOOGLE_STAMPS) $(NEWEST_STAMP) $(CHROMIUM)
	$(MAKE) --no-print-directory test-dashboard
	$(MAKE) --no-print-directory test-openai-matrix
	$(MAKE) --no-print-directory test-google-matrix
	$(MAKE) --no-print-directory test-peers
	$(MAKE) --no-print-directory test-anthropic-matrix
	$(MAKE) --no-print-directory test-newest-python
	$(MAKE) --no-print-directory test-fuzz

# Venvs install in parallel (pip is the main cost); the test runs follow one another.
test-openai-matrix:
	$(MAKE) --no-print-directory -j$(words $(OPENAI_STAMPS)) $(OPENAI_STAMPS)
	set -e; for stamp in $(OPENAI_STAMPS); do \
		echo "== openai $${stamp##*-}"; $$(dirname $$stamp)/bin/python -m pytest -q -p no:cacheprovider $(OPENAI_TESTS); \
	done

$(OPENAI_STAMPS): pyproject.toml
	$(PYTHON) -m venv $(@D)
	$(@D)/bin/python -m pip install --quiet --upgrade pip
	$(@D)/bin/python -m pip install --quiet -e ".[dev]" "openai==$(lastword $(subst -, ,$(@F)))"
	rm -f $(@D)/.installed-openai-*
	touch $@

test-anthropic-matrix:
	$(MAKE) --no-print-directory -j$(words $(ANTHROPIC_STAMPS)) $(ANTHROPIC_STAMPS)
	set -e; for stamp in $(ANTHROPIC_STAMPS); do \
		echo "== $$(dirname $$stamp)"; $$(dirname $$stamp)/bin/python -m pytest -q -p no:cacheprovider $(ANTHROPIC_TESTS); \
	done

$(ANTHROPIC_STAMPS): pyproject.toml
	$(PYTHON) -m venv $(@D)
	$(@D)/bin/python -m pip install --quiet --upgrade pip
	$(@D)/bin/python -m pip install --quiet -e ".[dev]" "anthropic==$(patsubst .venv-anthropic-%,%,$(@D))"
	touch $@

# The dashboard in headless Chromium over the demo's data; screenshots in test-artifacts/dashboard/.
BROWSER_STAMP := $(VENV)/.installed-browser-tests

test-dashboard: $(BROWSER_STAMP) $(CHROMIUM)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/browser

$(BROWSER_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[dev,browser-tests]"
	touch $@

$(CHROMIUM):
	if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null

test-postgres: setup
	$(BIN)/python tests/postgres_server.py --fast -- $(BIN)/python -m pytest -q -p no:cacheprovider $(POSTGRES_TESTS)

# schemathesis against the local service's whole OpenAPI document, every check, for FUZZ_SECONDS.
FUZZ_SECONDS ?= 150
test-fuzz: setup
	$(BIN)/python tests/fuzz/run_schemathesis.py --max-time $(FUZZ_SECONDS)

test-peers: $(PEERS_STAMP)
	.venv-peers/bin/python -m pytest -q -p no:cacheprovider tests/peers

$(PEERS_STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(@D)
	$(@D)/bin/python -m pip install --quiet --upgrade pip
	$(@D)/bin/python -m pip install --quiet -e ".[dev]" $(PEER_REQS)
	touch $@

test-google-matrix:
	$(MAKE) --no-print-directory -j$(words $(GOOGLE_STAMPS)) $(GOOGLE_STAMPS)
	set -e; for stamp in $(GOOGLE_STAMPS); do \
		echo "== $$(dirname $$stamp)"; $$(dirname $$stamp)/bin/python -m pytest -q -p no:cacheprovider $(GOOGLE_TESTS); \
	done

$(GOOGLE_STAMPS): pyproject.toml
	$(PYTHON) -m venv $(@D)
	$(@D)/bin/python -m pip install --quiet --upgrade pip
	$(@D)/bin/python -m pip install --quiet -e ".[dev]" "google-genai==$(patsubst .venv-google-%,%,$(@D))"
	touch $@

test-newest-python: $(NEWEST_STAMP)
ifeq ($(NEWEST_PYTHON),)
	@echo "== newest Python: SKIPPED, neither python3.13 nor python3.12 is on this machine"
else
	@echo "== $$(.venv-newest/bin/python --version)"
	.venv-newest/bin/python -m pytest -q -p no:cacheprovider --ignore=tests/browser
endif

.venv-newest/.installed: pyproject.toml
	$(NEWEST_PYTHON) -m venv $(@D)
	$(@D)/bin/python -m pip install --quiet --upgrade pip
	$(@D)/bin/python -m pip install --quiet -e ".[dev]"
	touch $@

bench: setup
	$(BIN)/python tests/benchmarks/run_all.py

clean:
	rm -rf $(VENV) .venv-openai* .venv-google* .venv-peers .venv-anthropic-* .venv-newest .payi-otel .pytest_cache .mypy_cache $(TYPECHECK_TREE) \
		test-artifacts
