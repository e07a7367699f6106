# sigproxy: `make run` runs the proxy with config.example.toml; `make test` runs the whole test suite.
# Both set everything up first (a virtualenv in .venv; for tests also system packages and the AWS CLI).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
TOOLS := .venv-tools
STAMP := $(VENV)/.installed
CONFIG ?= config.example.toml

.PHONY: run test lint lint-deploy check-systemd typecheck unit sysdeps setup bench fuzz clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "sigproxy needs Python >= 3.11"'
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[test]'
	touch $@

# The AWS CLI pins its own botocore, which clashes with aiobotocore's pin: it gets a venv of its own.
$(TOOLS)/bin/aws:
	test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install -q --upgrade pip
	$(TOOLS)/bin/python -m pip install -q awscli

setup: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/sigproxy run -c $(CONFIG)

sysdeps:
	bash scripts/sysdeps.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check sigproxy tests bench fuzz

# Dockerfile (hadolint), Kubernetes manifest (offline schemas) and their wiring; tools in .venv-lint.
lint-deploy: $(STAMP)
	bash scripts/lint-deploy.sh

# systemd-analyze verify and security on systemd/sigproxy.service.
check-systemd: $(STAMP)
	bash scripts/check-systemd.sh

typecheck: $(STAMP)
	$(VENV)/bin/mypy

test: sysdeps $(STAMP) $(TOOLS)/bin/aws lint typecheck lint-deploy check-systemd
	SIGPROXY_REQUIRE_RGW=1 SIGPROXY_AWS_CLI=$(abspath $(TOOLS)/bin/aws) \
	  $(VENV)/bin/python -m coverage run -m pytest $(PYTEST_ARGS)
	$(VENV)/bin/python -m coverage combine -q
	$(VENV)/bin/python -m coverage report --skip-covered --sort=cover | tail -n 25

unit: $(STAMP)
	$(VENV)/bin/python -m pytest tests/unit -q

bench: $(STAMP)
	$(VENV)/bin/python bench/small_get.py
	$(VENV)/bin/python bench/big_body.py

# Every fuzz target for FUZZ_SECONDS (default 180) each; findings are saved under fuzz/crashes/.
FUZZ_SECONDS ?= 180
fuzz: $(STAMP)
	$(VENV)/bin/python fuzz/run.py --seconds $(FUZZ_SECONDS) $(FUZZ_ARGS)

clean:
	rm -rf $(VENV) $(TOOLS) .venv-lint .pytest_cache .mypy_cache .ruff_cache .coverage .coverage.*
