"""The IAP TCP-forwarding tunnel as an SSH ProxyCommand: how a GCE worker with no reachable address is dialled."""

from __future__ import annotations

import re
import shlex

from offload.errors import ConfigError
from offload.outputs import WorkerRecord

# Close to GCE's naming rules but not stricter than the API is about short names; '%' in particular must
# never appear, since ssh expands %-tokens in ProxyCommand.
_INSTANCE = re.compile(r"[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?")
_PROJECT = re.compile(r"(?:[a-z][-a-z0-9.]{0,61}:)?[a-z][-a-z0-9]{0,61}")
_ZONE = re.compile(r"[a-z][-a-z0-9]{0,62}")


def iap_proxy_command(worker: WorkerRecord) -> str:
    """`gcloud compute start-iap-tunnel` for WORKER's instance, relaying stdin/stdout to port %p."""
    checks = (("instance", worker.instance, _INSTANCE), ("project", worker.project, _PROJECT),
              ("zone", worker.zone, _ZONE))
    for key, value, pattern in checks:
        if not value:
            raise ConfigError(f"worker {worker.name!r} has no {key} in the stack outputs, so it cannot be "
                              f"reached through IAP")
        if not pattern.fullmatch(value):
            raise ConfigError(f"worker {worker.name!r} has an invalid GCE {key} {value!r}")
    q = shlex.quote
    return (f"gcloud compute start-iap-tunnel {q(worker.instance or '')} %p --listen-on-stdin "
            f"--project={q(worker.project or '')} --zone={q(worker.zone or '')} --verbosity=warning")
