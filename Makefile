# Everything a person or CI runs goes through here; `make help` lists it.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PROTO_SRC := $(shell find proto -name '*.proto')

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (Python 3.11) on PATH"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

.PHONY: install
install: $(VENV)/.installed browser proto node_modules/.installed ## create the virtualenv, install dependencies, Chromium and fonts, buf, generate code

.PHONY: node
node: ## install Node.js and npm if missing (apt-get as root), for buf
	@command -v npm >/dev/null && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing nodejs npm with apt-get"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends nodejs npm; \
	else \
	  echo "need Node.js and npm on PATH (buf, run by make lint, comes from npm): apt-get install nodejs npm"; \
	  exit 1; \
	fi

# npm packages, pinned by the lockfile: buf (for lint) and the browser
# libraries the gateway serves (GrapesJS for /editor, Swagger UI for /docs).
# buf ships as @bufbuild/buf with its binary in a per-platform package, so the
# lockfile alone pins it; --ignore-scripts: its postinstall only relinks that
# binary (and Swagger UI's @scarf/scarf would report the install), and nothing
# may fetch from outside the registry.
node_modules/.installed: package.json package-lock.json | node
	npm ci --ignore-scripts --no-audit --no-fund
	touch $@

.PHONY: browser
browser: $(VENV)/.installed ## install Chromium and fonts if missing (apt as root, else playwright)
	@$(PY) -m services.browser_setup

.PHONY: proto
proto: $(VENV)/.installed .stamp-proto ## generate gRPC/protobuf code from proto/

.stamp-proto: $(PROTO_SRC) $(VENV)/.installed
	rm -f litho/*/v1/*_pb2*.py litho/*/v1/*_pb2*.pyi
	$(PY) -m grpc_tools.protoc -Iproto --python_out=. --grpc_python_out=. \
	  --plugin=protoc-gen-mypy=$(VENV)/bin/protoc-gen-mypy --mypy_out=. \
	  --plugin=protoc-gen-mypy_grpc=$(VENV)/bin/protoc-gen-mypy_grpc --mypy_grpc_out=. \
	  $(PROTO_SRC)
	touch $@

.PHONY: run
run: install ## start NATS and every service with the embedded defaults; prints the URL and an API key
	$(PY) -m services

.PHONY: test
test: install lint ## lint, the whole suite (embedded mode), then its `production` part on MongoDB, S3, 2 renderers, 2 gateways
	$(PY) -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing on purpose"; fi; \
	[ $$rc -eq 0 ] || exit $$rc; \
	LITHO_TEST_MODE=production $(PY) -m pytest -m production; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "production mode collected no tests: failing on purpose"; fi; exit $$rc

.PHONY: chart
chart: $(VENV)/.installed ## lint and render the Helm chart (defaults and deploy/helm/litho/ci/*.yaml), validate every manifest
	$(PY) -m deploy.chart_check

.PHONY: bench
bench: install ## start the real stack, measure, write bench/report.md and bench/report.json
	$(PY) -m bench

.PHONY: load
load: install ## drive a stack (LITHO_URL and LITHO_API_KEY, or one started here) with a mix of requests; report per kind and the 5xx count into bench/report.md
	$(PY) -m bench.load

# The gRPC API as each release shipped it: one buf image per version, written
# once by `make release-protos`. `make lint` checks today's protos against the
# newest by version order (not mtime), from the working tree: no git tags,
# so a shallow CI clone checks the same.
PROTO_RELEASES ?= proto/releases
PROTO_BASELINE = $(addprefix $(PROTO_RELEASES)/,$(lastword $(shell ls $(PROTO_RELEASES) 2>/dev/null | grep -E '^v[0-9]+\.[0-9]+\.[0-9]+\.binpb$$' | sort -V)))

.PHONY: release-protos
release-protos: node_modules/.installed ## write the released API's image (VERSION=x.y.z) to proto/releases/vx.y.z.binpb
	@[[ "$(VERSION)" =~ ^[0-9]+\.[0-9]+\.[0-9]+$$ ]] || { echo "usage: make release-protos VERSION=x.y.z (three numbers, e.g. 0.2.0)"; exit 1; }
	@[ ! -e $(PROTO_RELEASES)/v$(VERSION).binpb ] || { echo "$(PROTO_RELEASES)/v$(VERSION).binpb exists: a released API is never rewritten"; exit 1; }
	node_modules/.bin/buf lint
	@[ -z "$(PROTO_BASELINE)" ] || node_modules/.bin/buf breaking --exclude-imports --against $(PROTO_BASELINE)
	@mkdir -p $(PROTO_RELEASES)
	node_modules/.bin/buf build -o $(PROTO_RELEASES)/v$(VERSION).binpb
	@echo "wrote $(PROTO_RELEASES)/v$(VERSION).binpb: commit it with the release and tag that commit v$(VERSION)"

.PHONY: lint
lint: install ## buf lint (STANDARD) and buf breaking (FILE, against the newest proto/releases/) of the protos, ruff and mypy --strict
	node_modules/.bin/buf lint
	@[ -n "$(PROTO_BASELINE)" ] || { echo "no released API (v*.binpb) in $(PROTO_RELEASES)/ to check against: make release-protos VERSION=x.y.z"; exit 1; }
	node_modules/.bin/buf breaking --exclude-imports --against $(PROTO_BASELINE)
	$(VENV)/bin/ruff check litho services tests bench deploy
	$(VENV)/bin/mypy litho services tests bench deploy

.PHONY: clean
clean: ## remove the virtualenv, node_modules, generated code and caches (keeps data/)
	rm -rf $(VENV) node_modules .stamp-proto .pytest_cache .mypy_cache .ruff_cache
	rm -f litho/*/v1/*_pb2*.py litho/*/v1/*_pb2*.pyi
