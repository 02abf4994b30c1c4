# offload: development tasks. `make test` is the full suite against real sshd and Docker workers.

PYTHON ?= python3
# Everything, for the tests: every extra (pulumi, pulumi-gcp, pulumi-docker, the Google clients) and the test needs.
VENV := .venv
STAMP := $(VENV)/.installed
# The core alone (no pulumi, no Google Cloud package), which is all the local worker needs, plus pytest (and the
# timeout plugin its settings name) for the demo's job: about a seventh of the size of everything.
DEMO_VENV := .venv-core
DEMO_STAMP := $(DEMO_VENV)/.installed
# Installing packages and starting the test workers needs root.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: venv deps test unit demo clean

# Reinstalled only when pyproject.toml changes.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

venv: $(STAMP)

$(DEMO_STAMP): pyproject.toml
	$(PYTHON) -m venv $(DEMO_VENV)
	$(DEMO_VENV)/bin/pip install -q -e . 'pytest>=8' 'pytest-timeout>=2.3'
	touch $@

deps:
	$(SUDO) scripts/install-test-deps.sh

test: $(STAMP) deps
	$(VENV)/bin/python -m pytest -q

# The tests that need neither sshd nor Docker.
unit: $(STAMP)
	$(VENV)/bin/python -m pytest -q -m "not sshd and not docker"

# The main job on the built-in local worker: offload this project's own fast tests into a fresh worktree
# of the working tree (uncommitted edits included), stream them, and exit with their exit code.
demo: $(DEMO_STAMP)
	$(DEMO_VENV)/bin/offload run --wait -- $(abspath $(DEMO_VENV))/bin/python -m pytest -q -p no:cacheprovider \
		tests/jobs/test_playbook.py tests/runtime/test_sync.py
	$(DEMO_VENV)/bin/offload status

clean:
	rm -rf $(VENV) $(DEMO_VENV) build dist .pytest_cache *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
