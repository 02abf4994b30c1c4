"""Fixtures for CLI tests: run `offload` in-process through its error boundary, and the Compute API fake."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from typer.testing import CliRunner

from offload.cli.app import main
from tests.fakes.compute_api import compute_fake  # noqa: F401  (a fixture)


@dataclass(frozen=True)
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


RunCli = Callable[..., CliResult]


@pytest.fixture
def cli() -> RunCli:
    """`cli(*args, input=None)`: run `offload ARGS` as `main()` does (one-line errors, exit codes) and capture it.

    Under the runner stdin is not a terminal, so commands that would prompt run in batch mode.
    """

    def run(*args: str, input: str | None = None) -> CliResult:
        runner = CliRunner()
        with runner.isolation(input=input) as (out, err, _):
            try:
                main(list(args))
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
            return CliResult(code, out.getvalue().decode(), err.getvalue().decode())

    return run
