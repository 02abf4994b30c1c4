"""Fixtures for provider tests: the Compute API and OS Login API fakes."""

from tests.fakes.compute_api import compute_fake  # noqa: F401  (a fixture)
from tests.fakes.oslogin_api import oslogin_fake  # noqa: F401  (a fixture)
