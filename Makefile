# Portrait — every target installs what it needs into .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.install-stamp

.PHONY: browser install test test-cluster lint typecheck unit integration demo bench chaos schemas models eval test-st clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# Debian's Chromium and its driver (the agent page test drives them) and a CJK font, when
# missing; apt only reaches the Debian registry.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null && fc-list :lang=zh | grep -q . \
	  || apt-get install -y -qq chromium chromium-driver fonts-wqy-microhei \
	  || (apt-get update -qq && apt-get install -y -qq chromium chromium-driver fonts-wqy-microhei)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

typecheck: install
	$(BIN)/mypy

test: lint typecheck browser
	$(BIN)/portrait schemas --check
	$(BIN)/pytest -q

# The state on a local 3-master Redis Cluster: the cluster-vs-standalone tests (their own
# cluster), then the whole suite with every test Redis a cluster
# (PORTRAIT_REDIS_CLUSTER=true; tests that read a standalone Redis's keys directly are
# left out; the fault suite kills a node instead of cutting its AOF).
test-cluster: install browser
	$(BIN)/pytest -q tests/state/test_cluster.py
	PORTRAIT_REDIS_CLUSTER=true $(BIN)/pytest -q

unit: install
	$(BIN)/pytest -q -m "not integration"

integration: install browser
	$(BIN)/pytest -q -m integration

demo: install
	$(BIN)/portrait demo

bench: install
	$(BIN)/portrait bench
	$(BIN)/portrait bench --emotion
	$(BIN)/portrait bench --prompts
	$(BIN)/portrait bench --replay
	$(BIN)/portrait bench --growth
	$(BIN)/portrait bench --api
	$(BIN)/portrait bench --durability
	$(BIN)/portrait bench --cluster --events 10000

chaos: install
	$(BIN)/portrait chaos

schemas: install
	$(BIN)/portrait schemas

models: install
	$(BIN)/python -m models.train_emotion
	$(BIN)/python -m models.customer_model

eval: install
	$(BIN)/python -m models.train_emotion --eval-only

# sentence-transformers needs torch (≈1.5 GB): its own venv, its own target
test-st:
	test -x .venv-st/bin/python || $(PYTHON) -m venv .venv-st
	.venv-st/bin/python -m pip install --quiet -e ".[dev,st]"
	.venv-st/bin/pytest -q tests/models/test_encoder_st.py

clean:
	rm -rf $(VENV) .venv-st build *.egg-info .pytest_cache .mypy_cache .ruff_cache
