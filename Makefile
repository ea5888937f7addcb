# One task runner for people and CI. `make help` lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin

.PHONY: help setup gen up status test lint format typecheck protos chart

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup: ## install what is missing (apt, Python 3.12 venv, pinned wheels, npm) and generate code
	@bash scripts/setup.sh

gen: ## regenerate all code from protos/ (Python stubs, Python and TypeScript clients)
	@bash scripts/gen-protos.sh

up: setup ## start the whole platform on loopback; Ctrl-C stops it (OSM=path.osm.pbf for another city, SIM=1 for a simulated city)
	@$(BIN)/python -m ops up $(if $(OSM),--osm $(OSM)) $(if $(SIM),--simulate demo)

status: ## health of every service, directly and through the edge
	@$(BIN)/python -m ops status

test: setup ## lint, type-check, contract checks and the whole test suite (what CI runs)
	@bash scripts/test.sh

lint: ## ruff lint and format check
	@$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: ## apply ruff formatting and safe fixes
	@$(BIN)/ruff check --fix . && $(BIN)/ruff format .

typecheck: ## mypy (strict) on all non-generated code
	@$(BIN)/mypy .

protos: ## buf lint, format check and breaking-change check against main
	@bash scripts/check-protos.sh

chart: ## helm lint, render and validate the chart (Kubernetes schemas, Envoy config)
	@bash scripts/check-chart.sh
