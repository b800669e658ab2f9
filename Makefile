# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# compat mode keeps twisted/plugins/ visible to `twist` (a plain editable install hides it).
PIP_INSTALL := $(BIN)/python -m pip install --quiet --disable-pip-version-check --config-settings editable_mode=compat -e

.PHONY: run test bench install install-test clean

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

test: install-test
	$(BIN)/python -m pytest -q

bench: install-test
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) build *.egg-info _trial_temp .pytest_cache
