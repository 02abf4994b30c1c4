"""The Pulumi half of offload: one component per provider type, built from a validated stack config.

Only `__main__.py` and the tests import this package; the runtime never does (it reads stack outputs).
"""
