# spcs-whisper: `make run` installs and starts the service; `make test` installs and runs the tests.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# CPU build of torch for the local/CI path (an unpinned torch pulls a multi-GB CUDA build).
TORCH  ?= torch==2.13.0

.PHONY: run install install-test test test-unit test-integration lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e '.[inference,snowflake]'
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install -q -e '.[inference,snowflake,test]'
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

run: install
	$(VENV)/bin/spcs-whisper serve

lint: install-test
	$(VENV)/bin/ruff check service tests bench
	$(VENV)/bin/ruff format --check service tests bench

test: install-test lint
	$(PY) -m pytest -q

test-unit: install-test
	$(PY) -m pytest -q tests/unit

bench: install-test
	$(PY) -m bench.run

clean:
	rm -rf $(VENV) data .pytest_cache
