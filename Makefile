# Two commands do everything on a fresh machine: `make profile` and `make test`.
# Each creates .venv and installs the project on first use; the stamp file makes that idle later.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PORT   ?= 8000
SCENARIO ?= io

.PHONY: help profile soak tour test serve lint typecheck clean locust smoke bench bench-pyspy

help:
	@echo "make profile    profile the target app under load (the main job)"
	@echo "make test       run the test suite"
	@echo "make soak       10 minutes of mixed healthy load; fails if memory grows steadily (not in CI)"
	@echo "make tour       measure each claim of FastAPI's concurrency page (about 80 s)"
	@echo "make locust     Locust web UI on 127.0.0.1:8089; each test is profiled, see its Profile tab (SCENARIO=io|cpu|...)"
	@echo "make smoke      short headless load tests with pass/fail budgets (CI); outputs in profiles/<run>/"
	@echo "make bench      measure the harness itself: accuracy, overhead, headroom (~13 min); benchmarks/results/"
	@echo "make bench-pyspy  what one py-spy sample costs, per thread and per process (~5 min); benchmarks/results/"
	@echo "make serve      run the target app on 127.0.0.1:$(PORT) (with its upstream stub)"
	@echo "make lint       ruff"
	@echo "make typecheck  mypy --strict on loadlab/ and target_app/"
	@echo "make clean      remove .venv, caches and generated data (keeps profiles/)"

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "loadlab needs Python 3.11 or newer; set PYTHON=python3.11 (or newer)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

# make profile [SCENARIO=io] [APP=mypkg.main:app LOCUSTFILE=my_locustfile.py] [USERS=20] [DURATION=8] [ARGS=...]
profile: $(STAMP)
	$(BIN)/loadlab profile --scenario $(SCENARIO) $(if $(APP),--app $(APP)) $(if $(LOCUSTFILE),--locustfile $(LOCUSTFILE)) $(if $(USERS),--users $(USERS)) $(if $(DURATION),--duration $(DURATION)) $(ARGS)

# Not in CI: 10 minutes of mixed healthy load; fails if the server's memory grows steadily.
soak: $(STAMP)
	$(BIN)/loadlab soak $(ARGS)

tour: $(STAMP)
	$(BIN)/loadlab tour

test: $(STAMP)
	$(BIN)/python -m pytest

# Not a test: it measures and writes benchmarks/results/<timestamp>.json and .md (see benchmarks/README.md).
bench: $(STAMP)
	$(BIN)/loadlab bench $(ARGS)

bench-pyspy: $(STAMP)
	$(BIN)/python -m benchmarks.pyspy_cost $(ARGS)

serve: $(STAMP)
	$(BIN)/python -m target_app --port $(PORT)

locust: $(STAMP)
	$(BIN)/loadlab ui --scenario $(SCENARIO) --app-port $(PORT)

smoke: $(STAMP)
	$(BIN)/loadlab smoke

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .data .mypy_cache .ruff_cache .pytest_cache *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
