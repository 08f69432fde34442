# amili-import: `make demo` and `make test` are all a fresh clone needs (Python 3.11+ and make).
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR := demo-out

.PHONY: help demo test lint typecheck bench sandbox clean

help: ## Show this help
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Python 3.11 or newer is needed (found $$($(PYTHON) --version))"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=25.1"
	$(BIN)/python -m pip install --quiet -e . --group dev
	touch $(STAMP)

demo: $(STAMP) ## Start the sandbox, import the samples, print the summary and report path
	$(BIN)/python -m importer.sandbox.demo --out $(DEMO_DIR)

test: $(STAMP) ## Lint, type-check and run the whole test suite
	$(BIN)/ruff check importer tests bench
	$(BIN)/mypy importer
	$(BIN)/pytest -n 2 -q

lint: $(STAMP) ## Lint and type-check only
	$(BIN)/ruff check importer tests bench
	$(BIN)/ruff format --check importer tests bench || true
	$(BIN)/mypy importer

bench: $(STAMP) ## Run the benchmarks (validation, workbook reading, posting, sandbox load)
	$(BIN)/python -m pip install --quiet -e . --group bench
	$(BIN)/python -m bench.run --out bench-out

sandbox: $(STAMP) ## Run the local Amili sandbox on http://127.0.0.1:8080
	$(BIN)/amili-import sandbox --cases samples/cases.json

clean: ## Remove the virtualenv, caches and demo/bench output
	rm -rf $(VENV) $(DEMO_DIR) bench-out .pytest_cache .mypy_cache .ruff_cache *.egg-info
