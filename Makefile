# offload: development tasks. `make test` is the full suite against real sshd and Docker workers.

PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
# Installing packages and starting the test workers needs root.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: venv deps test unit demo clean

# Reinstalled only when pyproject.toml changes.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

venv: $(STAMP)

deps:
	$(SUDO) scripts/install-test-deps.sh

test: $(STAMP) deps
	$(VENV)/bin/python -m pytest -q

# The tests that need neither sshd nor Docker.
unit: $(STAMP)
	$(VENV)/bin/python -m pytest -q -m "not sshd and not docker"

# The main job on the built-in local worker: offload this project's own fast tests into a fresh worktree
# of the working tree (uncommitted edits included), stream them, and exit with their exit code.
demo: $(STAMP)
	$(VENV)/bin/offload run --wait -- $(abspath $(VENV))/bin/python -m pytest -q -p no:cacheprovider \
		tests/jobs/test_playbook.py tests/runtime/test_sync.py
	$(VENV)/bin/offload status

clean:
	rm -rf $(VENV) build dist .pytest_cache *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
