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

# The local worker runs jobs in tmux, in a git worktree.
demo: $(STAMP)
	@command -v tmux >/dev/null && command -v git >/dev/null || \
		{ $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq tmux git; }
	$(VENV)/bin/offload run --wait -- git log --oneline -1

clean:
	rm -rf $(VENV) build dist .pytest_cache *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
