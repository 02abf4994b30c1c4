"""Hourly on-demand list prices of common GCE machine types: an estimate for `fleet list`, not a bill.

Prices are us-central1 on-demand rates in USD, computed from each family's per-vCPU and per-GB rates. Other
regions cost up to about 20% more; sustained-use and committed-use discounts are not applied.
"""

from __future__ import annotations

import re

# family -> (USD per vCPU-hour, USD per GB-hour)
_RATES: dict[str, tuple[float, float]] = {
    "e2": (0.021811, 0.002923),
    "n2": (0.031611, 0.004237),
    "n2d": (0.027502, 0.003686),
    "c3": (0.03398, 0.00455),
    "c3d": (0.029563, 0.003959),
    "t2d": (0.027502, 0.003686),
    "n4": (0.030266, 0.004082),
}

# (family, shape) -> GB of memory per vCPU
_MEMORY_PER_VCPU: dict[tuple[str, str], float] = {
    **{(f, "standard"): 4.0 for f in _RATES},
    **{(f, "highmem"): 8.0 for f in ("e2", "n2", "n2d", "c3", "c3d", "n4")},
    **{(f, "highcpu"): 1.0 for f in ("e2", "n2", "n2d")},
    ("c3", "highcpu"): 2.0,
    ("c3d", "highcpu"): 2.0,
    ("n4", "highcpu"): 2.0,
}

# Shared-core types are priced as fractions of their nominal shape.
_SHARED_CORE: dict[str, float] = {
    "e2-micro": 0.008376,
    "e2-small": 0.016751,
    "e2-medium": 0.033503,
}

_SHAPE = re.compile(r"(?P<family>[a-z0-9]+)-(?P<shape>standard|highmem|highcpu)-(?P<vcpus>\d{1,3})")


def hourly_cost(machine_type: str | None) -> float | None:
    """The on-demand USD per hour of MACHINE_TYPE (a short name such as 'e2-standard-4'), or None if unknown."""
    if not machine_type:
        return None
    name = machine_type.rsplit("/", 1)[-1]
    if name in _SHARED_CORE:
        return _SHARED_CORE[name]
    m = _SHAPE.fullmatch(name)
    if not m or m["family"] not in _RATES or (m["family"], m["shape"]) not in _MEMORY_PER_VCPU:
        return None
    vcpus = int(m["vcpus"])
    per_vcpu, per_gb = _RATES[m["family"]]
    memory_gb = vcpus * _MEMORY_PER_VCPU[(m["family"], m["shape"])]
    return round(vcpus * per_vcpu + memory_gb * per_gb, 6)
