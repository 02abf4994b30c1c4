"""Fixtures for provider tests: the Compute API fake."""

from tests.fakes.compute_api import compute_fake  # noqa: F401  (a fixture)
