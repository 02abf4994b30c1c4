"""End-to-end fixtures: the Compute API fake joins the real workers from tests/conftest.py."""

from tests.fakes.compute_api import compute_fake  # noqa: F401  (a fixture)
from tests.fakes.oslogin_api import oslogin_fake  # noqa: F401  (a fixture)
