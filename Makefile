# The commands the README shows. Everything bootstraps itself: a fresh clone
# needs only Python 3.11+, Java 17+ and Maven (Kafka's jars come from Maven Central).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: run test test-cluster check install kafka-jars browser prometheus dev-up dev-down lint typecheck \
	contracts unit bench clean floors fuzz asyncapi-parser

# Two distributions from one checkout, both editable: the product (`relink`,
# the package `services/`) and the workshop (`relink-devtools`, the package
# `devtools/`: devstack, simulators, benchmarks, soak, baseline, demo seed).
# pip's warnings about running as root and about its own version are noise here.
PIP := PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 $(BIN)/pip
$(STAMP): pyproject.toml devtools/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[test,dev,browser]' -e ./devtools
	touch $(STAMP)

install: $(STAMP) prometheus

# Fetch Kafka's jars once (cached under ~/.cache/relink/kafka).
kafka-jars: $(STAMP)
	$(BIN)/python -c "from devtools.devstack.kafka import KafkaJars; from devtools.devstack.settings import DevstackSettings as S; s=S(); KafkaJars(cache=s.kafka_jars_cache.expanduser(), version=s.kafka_version).fetch()"

# Debian's Chromium for the real-browser test (tools that download their own
# browser cannot work on these machines), with an emoji font so the pages and
# the README's screenshots show the brief's emoji rather than empty boxes.
# Installed once, when we may (root with apt-get); otherwise it says what to install.
CHROMIUM ?= /usr/bin/chromium
EMOJI_FONT ?= /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf
browser:
	@missing=""; \
	[ -x "$(CHROMIUM)" ] || missing="chromium"; \
	[ -f "$(EMOJI_FONT)" ] || missing="$$missing fonts-noto-color-emoji"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's$$missing for the browser test"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null 2>&1 || \
	    (apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null); \
	  else echo "missing for the browser test:$$missing (apt-get install$$missing)"; fi; \
	fi

# The official AsyncAPI parser (npm's @asyncapi/parser, pinned by
# devtools/asyncapi/package-lock.json) for tests/events/test_asyncapi.py;
# Debian's nodejs and npm where missing (root with apt-get).
ASYNCAPI := devtools/asyncapi
asyncapi-parser: $(ASYNCAPI)/node_modules/.installed
$(ASYNCAPI)/node_modules/.installed: $(ASYNCAPI)/package.json $(ASYNCAPI)/package-lock.json
	@command -v npm >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's nodejs and npm for the AsyncAPI parser"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm >/dev/null 2>&1 || \
	    (apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm >/dev/null); \
	  else echo "missing for the AsyncAPI test: nodejs npm (apt-get install nodejs npm)"; exit 1; fi; }
	npm ci --prefix $(ASYNCAPI) --no-audit --no-fund --loglevel=error
	touch $@

# Debian's Prometheus (the package has promtool too) for the real-Prometheus test
# and the alert rules' checks (tests/ops/). Installed once, when we may (root with
# apt-get), as Chromium above; otherwise it says what to install.
prometheus:
	@if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's prometheus for the metrics tests"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q prometheus >/dev/null 2>&1 || \
	    (apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q prometheus >/dev/null); \
	  else echo "missing for the metrics tests: prometheus (apt-get install prometheus)"; fi; \
	fi

# The whole stack with its embedded defaults; Ctrl-C stops everything.
run: $(STAMP) kafka-jars
	$(BIN)/relink run

# The gates, fastest first, stopping at the first that fails: lint, types,
# import contracts, unit tests; then the slow suites against a real
# PostgreSQL and a real Kafka broker.
test: check kafka-jars browser prometheus asyncapi-parser
	$(BIN)/pytest --ignore=tests/unit --ignore=tests/cluster $(PYTEST_ARGS)

# The tests on the devstack's 3-node SASL/SCRAM Kafka cluster (it takes the
# single broker's ports, so they run on their own): refused credentials and
# ACLs, and switches through the real processes while brokers are SIGKILLed.
test-cluster: check kafka-jars
	$(BIN)/pytest -q tests/cluster $(PYTEST_ARGS)

# The gateway's OpenAPI document fuzzed for longer than the suite does, with a
# new seed each time (the suite's bounded run: tests/gateway/test_openapi_fuzz.py).
FUZZ_EXAMPLES ?= 300
fuzz: $(STAMP) kafka-jars
	RELINK_FUZZ_MAX_EXAMPLES=$(FUZZ_EXAMPLES) RELINK_FUZZ_SEED=$$(date +%s) \
		$(BIN)/pytest -q -s tests/gateway/test_openapi_fuzz.py

# Everything but the slow suites, for use while working (and pre-commit's checks).
check: lint typecheck contracts unit

dev-up: $(STAMP) kafka-jars
	$(BIN)/relink dev up

dev-down: $(STAMP)
	$(BIN)/relink dev down

lint: $(STAMP)
	$(BIN)/ruff check services devtools tests
	$(BIN)/ruff format --check services devtools tests

# mypy strict over the product, the workshop and the tests (the packages of
# pyproject.toml's [tool.mypy]).
typecheck: $(STAMP)
	$(BIN)/mypy

# The import contracts of pyproject.toml's [tool.importlinter].
contracts: $(STAMP)
	$(BIN)/lint-imports

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit $(PYTEST_ARGS)

# The dependency floors of pyproject.toml, checked once by hand (not part of
# `make test`): a scratch venv with the LOWEST version each direct dependency
# allows (uv's --resolution lowest-direct; transitive ones at their newest),
# then every module imported, the CLI built, and the unit tests run.
FLOORS := .floors
floors:
	rm -rf $(FLOORS)
	$(PYTHON) -m venv $(FLOORS)
	$(FLOORS)/bin/pip install --quiet uv
	$(FLOORS)/bin/uv pip install --python $(FLOORS)/bin/python --resolution lowest-direct -e '.[test]' -e ./devtools
	$(FLOORS)/bin/python -W ignore -c "import importlib, pkgutil, services; [importlib.import_module(m.name) for m in pkgutil.walk_packages(services.__path__, 'services.') if '.migrations.' not in m.name and not m.name.endswith('__main__')]"
	$(FLOORS)/bin/relink --help >/dev/null
	$(FLOORS)/bin/python -m pytest tests/unit -q -p no:cacheprovider

clean:
	-$(BIN)/relink dev down
	rm -rf .devstack build devtools/build
