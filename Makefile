# sigproxy: `make run` runs the proxy with config.example.toml; `make test` runs the whole test suite;
# `make demo` runs a local demo (a local AWS emulator and sigproxy signing for it), no AWS account needed.
# Each sets up what it needs first, in the virtualenv .venv: `run` only what running needs, `demo` adds the
# emulator, `test` adds the test and lint tools (and system packages and the AWS CLI).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
TOOLS := .venv-tools
RUN_STAMP := $(VENV)/.installed-run
DEMO_STAMP := $(VENV)/.installed-demo
STAMP := $(VENV)/.installed-test
CONFIG ?= config.example.toml

.PHONY: run demo test coverage lint lint-deploy check-systemd typecheck unit sysdeps setup bench fuzz clean

$(VENV)/bin/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "sigproxy needs Python >= 3.11"'
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip

# The editable install builds the modules sigproxy/compiled.py names with mypyc, in place (about 100 s): again
# whenever a source changes, as what mypyc compiles depends on the types of every module it imports.
SOURCES := setup.py pyproject.toml $(wildcard sigproxy/*.py sigproxy/*/*.py)

# What running needs, nothing more. The demo and test stamps install it with their extra in one pip call
# (one resolution, one editable build: quicker on a fresh clone), so they mark it done too.
$(RUN_STAMP): $(SOURCES) | $(VENV)/bin/python
	$(VENV)/bin/python -m pip install -q -e .
	touch $@

$(DEMO_STAMP): $(SOURCES) | $(VENV)/bin/python
	$(VENV)/bin/python -m pip install -q -e '.[demo]'
	touch $@ $(RUN_STAMP)

$(STAMP): $(SOURCES) | $(VENV)/bin/python
	$(VENV)/bin/python -m pip install -q -e '.[test]'
	touch $@ $(RUN_STAMP)

# The AWS CLI pins its own botocore, which clashes with aiobotocore's pin: it gets a venv of its own.
$(TOOLS)/bin/aws:
	test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install -q --upgrade pip
	$(TOOLS)/bin/python -m pip install -q awscli

setup: $(STAMP)

run: $(RUN_STAMP)
	$(VENV)/bin/sigproxy run -c $(CONFIG)

# Starts moto's server (IAM signature checks on) and sigproxy signing for it, prints what to paste in another
# terminal, and stops both on Ctrl-C.
demo: $(DEMO_STAMP)
	$(VENV)/bin/python scripts/demo.py

sysdeps:
	PYTHON=$(PYTHON) bash scripts/sysdeps.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check sigproxy tests bench fuzz scripts

# Dockerfile (hadolint), Kubernetes manifest (offline schemas) and their wiring; tools in .venv-lint.
lint-deploy: $(STAMP)
	bash scripts/lint-deploy.sh

# systemd-analyze verify and security on systemd/sigproxy.service.
check-systemd: $(STAMP)
	bash scripts/check-systemd.sh

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# The suite runs the compiled modules, as shipped. Coverage cannot trace compiled code: its report leaves them
# out; `make coverage` runs the suite on the source (SIGPROXY_PURE_PYTHON=1) and reports every module.
COMPILED = $(shell $(PYTHON) -c 'import runpy; print(",".join(runpy.run_path("sigproxy/compiled.py")["SOURCES"]))')

# compileall first: the suite starts sigproxy and the test servers in a few hundred subprocesses, and where
# PYTHONDONTWRITEBYTECODE is set (or the .pyc files are stale) each one compiled the modules it imports again:
# 0.8G instructions, about a fifth of a start. compileall writes them whatever that variable says.
test: sysdeps $(STAMP) $(TOOLS)/bin/aws lint typecheck lint-deploy check-systemd
	$(VENV)/bin/python -m compileall -q sigproxy tests
	SIGPROXY_REQUIRE_RGW=1 SIGPROXY_AWS_CLI=$(abspath $(TOOLS)/bin/aws) \
	  $(VENV)/bin/python -m coverage run -m pytest $(PYTEST_ARGS)
	$(VENV)/bin/python -m coverage combine -q
	$(VENV)/bin/python -m coverage report --omit='$(COMPILED)' --skip-covered --sort=cover | tail -n 25

coverage: sysdeps $(STAMP) $(TOOLS)/bin/aws
	SIGPROXY_PURE_PYTHON=1 SIGPROXY_REQUIRE_RGW=1 SIGPROXY_AWS_CLI=$(abspath $(TOOLS)/bin/aws) \
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
