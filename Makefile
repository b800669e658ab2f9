# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# compat mode keeps twisted/plugins/ visible to `twist` (a plain editable install hides it).
PIP_INSTALL := $(BIN)/python -m pip install --quiet --disable-pip-version-check --config-settings editable_mode=compat -e

.PHONY: run test lint bench micro install install-test install-bench clean

$(BIN)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) .
	touch $@

$(BIN)/.installed-test: $(BIN)/.installed
	$(PIP_INSTALL) '.[test]'
	touch $@

install: $(BIN)/.installed
install-test: $(BIN)/.installed-test

# An example cluster: the twisted.web "hello" site on 2 workers, port 8080.  Ctrl-C stops it.
run: install
	cd examples && ../$(BIN)/twist --log-format text cluster --workers 2 --listen tcp:8080 hello.site

# Lint first (seconds): ruff, the import contract between master and worker, and mypy with
# mypy-zope on twistcluster/ and benchmarks/ (all configured in pyproject.toml).
lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

# The suite runs in PYTEST_WORKERS processes side by side (pytest-xdist; its tests mostly wait on
# the processes they start); 0 runs it in this one.  CONTRIBUTING.md says how to run one test.
PYTEST_WORKERS ?= 3
test: lint
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist worksteal

$(BIN)/.installed-bench: $(BIN)/.installed-test
	$(PIP_INSTALL) '.[test,bench]'
	touch $@

install-bench: $(BIN)/.installed-bench

# Every configuration side by side (about 14 minutes): tables and JSON in benchmarks/results/.
# Pass options through BENCH_ARGS, e.g. make bench BENCH_ARGS='--quick --only twistcluster-rr-2,node-rr-2'.
# wrk (required) and Node are installed with apt-get when missing, if this runs as root.
bench: install-bench
	@command -v wrk >/dev/null && command -v node >/dev/null || [ "$$(id -u)" != 0 ] || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nodejs >/dev/null) || \
	  echo "make bench: could not install wrk and nodejs"
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

# The master's hand-off path alone (fake workers, a local client): its CPU per connection, and
# with MICRO_ARGS=--micro-callgrind its instructions per connection (needs valgrind; a few minutes).
micro: install-bench
	$(BIN)/python -m benchmarks --micro $(MICRO_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info _trial_temp .pytest_cache
