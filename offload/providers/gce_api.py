"""The few live Compute Engine calls offload makes: read, start, stop and list instances, and read host keys.

google-cloud-compute costs about two seconds to import, so it is imported inside the calls, never at module
import. Credentials and errors are those of every Google Cloud client of offload (offload/providers/google_api.py);
with OFFLOAD_COMPUTE_ENDPOINT set (an emulator or a test fake) the client talks plain REST to that endpoint without
credentials.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from offload.errors import CloudApiError, CloudNotFound, ConfigError
from offload.outputs import WorkerRecord, validate_host_key
from offload.pricing import hourly_cost
from offload.providers.google_api import LOGIN_HINT, GoogleApi, one_line

if TYPE_CHECKING:
    from google.cloud import compute_v1

__all__ = ["ComputeApi", "InstanceInfo", "hourly_cost", "ENDPOINT_ENV"]

ENDPOINT_ENV = "OFFLOAD_COMPUTE_ENDPOINT"
_LABEL_KEY = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_LABEL_VALUE = re.compile(r"[a-z0-9_-]{0,63}")

RUNNING = "RUNNING"
TERMINATED = "TERMINATED"
SUSPENDED = "SUSPENDED"
_STARTING = ("PROVISIONING", "STAGING", "REPAIRING")
_STOPPING = ("STOPPING", "SUSPENDING")
_STOPPED = (TERMINATED, SUSPENDED)


@dataclass(frozen=True)
class InstanceInfo:
    """What offload needs to know about one instance right now."""

    name: str
    status: str
    machine_type: str | None = None
    internal_ip: str | None = None
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def running(self) -> bool:
        return self.status == RUNNING

    @property
    def stopped(self) -> bool:
        return self.status in _STOPPED

    @property
    def hourly_cost(self) -> float | None:
        return hourly_cost(self.machine_type)


class ComputeApi:
    """Instances of one project and zone. The clients are made on first use and may be shared by threads."""

    def __init__(self, project: str, zone: str, *, timeout: float = 30.0, poll_interval: float = 2.0) -> None:
        self.project = project
        self.zone = zone
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.endpoint = os.environ.get(ENDPOINT_ENV) or None
        self._google = GoogleApi(
            "Compute API", "compute.googleapis.com", ENDPOINT_ENV, self.endpoint, login_hint=LOGIN_HINT,
            not_found_hint="check the stack outputs, or run `offload fleet up`",
            denied_hint=f"{LOGIN_HINT} with an account allowed to manage instances in {project}",
            where=f"project {project} zone {zone}")

    @classmethod
    def for_worker(cls, worker: WorkerRecord, **kwargs: Any) -> "ComputeApi":
        """The API for WORKER's instance; a worker without instance, project and zone is not a GCE worker."""
        missing = [k for k in ("instance", "project", "zone") if not getattr(worker, k)]
        if missing:
            raise ConfigError(f"worker {worker.name!r} has no {', '.join(missing)} in the stack outputs, "
                              f"so it is not a GCE instance")
        return cls(worker.project or "", worker.zone or "", **kwargs)

    # -- reads ------------------------------------------------------------------------------------------

    def get(self, instance: str) -> InstanceInfo:
        with self._google.errors("read", instance):
            return _info(self._instances.get(project=self.project, zone=self.zone, instance=instance,
                                             retry=self._retry, timeout=self.timeout))

    def list(self, labels: Mapping[str, str] | None = None) -> list[InstanceInfo]:
        """Instances of the zone whose labels include LABELS (all of them when LABELS is empty)."""
        from google.cloud import compute_v1

        request = compute_v1.ListInstancesRequest(project=self.project, zone=self.zone,
                                                  filter=label_filter(labels or {}))
        with self._google.errors("list", f"instances in {self.project}/{self.zone}"):
            return [_info(i) for i in self._instances.list(request=request, retry=self._retry,
                                                            timeout=self.timeout)]

    def host_keys(self, instance: str) -> list[str]:
        """The host keys the guest environment published ('ssh-ed25519 AAAA...' lines); [] before it has."""
        from google.cloud import compute_v1

        request = compute_v1.GetGuestAttributesInstanceRequest(project=self.project, zone=self.zone,
                                                               instance=instance, query_path="hostkeys/")
        try:
            with self._google.errors("read host keys of", instance):
                attrs = self._instances.get_guest_attributes(request=request, retry=self._retry,
                                                             timeout=self.timeout)
        except CloudNotFound:
            return []  # still booting, or guest attributes are off: no keys published yet
        keys = []
        for item in attrs.query_value.items:
            if item.namespace != "hostkeys" or not item.value:
                continue
            line = item.value if item.value.startswith(f"{item.key} ") else f"{item.key} {item.value}"
            with contextlib.suppress(ConfigError):
                keys.append(validate_host_key(line, "hostkeys"))
        return keys

    def guest_attributes(self, instance: str, namespace: str) -> dict[str, str]:
        """The guest attributes under NAMESPACE/ as {key: value}; {} before the guest has published any."""
        from google.cloud import compute_v1

        request = compute_v1.GetGuestAttributesInstanceRequest(project=self.project, zone=self.zone,
                                                               instance=instance, query_path=f"{namespace}/")
        try:
            with self._google.errors("read guest attributes of", instance):
                attrs = self._instances.get_guest_attributes(request=request, retry=self._retry,
                                                             timeout=self.timeout)
        except CloudNotFound:
            return {}
        return {item.key: item.value for item in attrs.query_value.items if item.namespace == namespace}

    def held_permissions(self, instance: str, permissions: Sequence[str]) -> set[str]:
        """Which of PERMISSIONS the caller holds on INSTANCE (`instances.testIamPermissions`)."""
        from google.cloud import compute_v1

        request = compute_v1.TestIamPermissionsInstanceRequest(
            project=self.project, zone=self.zone, resource=instance,
            test_permissions_request_resource=compute_v1.TestPermissionsRequest(permissions=list(permissions)))
        with self._google.errors("test permissions on", instance):
            found = self._instances.test_iam_permissions(request=request, retry=self._retry, timeout=self.timeout)
        return set(found.permissions)

    # -- state changes ----------------------------------------------------------------------------------

    def start(self, instance: str, *, wait: bool = True, timeout: float = 300.0) -> InstanceInfo:
        """Start (or resume) INSTANCE; with WAIT, poll until it is RUNNING or TIMEOUT seconds pass."""
        deadline = time.monotonic() + timeout
        info = self.get(instance)
        while info.status in _STOPPING:
            # Neither start nor resume is accepted while the instance is going down: let it land first.
            self._pause(deadline, info, "start")
            info = self.get(instance)
        if info.running:
            return info
        op = None
        if info.status not in _STARTING:
            verb = "resume" if info.status == SUSPENDED else "start"
            with self._google.errors(verb, instance):
                call = self._instances.resume_unary if verb == "resume" else self._instances.start_unary
                op = call(project=self.project, zone=self.zone, instance=instance, timeout=self.timeout)
            self._check_operation(op, verb, instance)
        if not wait:
            return self.get(instance)
        return self._wait_for(instance, (RUNNING,), op, deadline, "start")

    def stop(self, instance: str, *, wait: bool = True, timeout: float = 300.0) -> InstanceInfo:
        """Stop INSTANCE (its disks stay); with WAIT, poll until it is TERMINATED or TIMEOUT seconds pass."""
        deadline = time.monotonic() + timeout
        info = self.get(instance)
        if info.status == TERMINATED:
            return info
        with self._google.errors("stop", instance):
            op = self._instances.stop_unary(project=self.project, zone=self.zone, instance=instance,
                                            timeout=self.timeout)
        self._check_operation(op, "stop", instance)
        if not wait:
            return self.get(instance)
        return self._wait_for(instance, (TERMINATED,), op, deadline, "stop")

    # -- internals --------------------------------------------------------------------------------------

    def _wait_for(self, instance: str, targets: tuple[str, ...], op: "compute_v1.Operation | None",
                  deadline: float, verb: str) -> InstanceInfo:
        while True:
            if op is not None and not op.done:
                # The instances client would poll its operation on the default host, not on our endpoint.
                with self._google.errors(verb, instance):
                    op = self._operations.get(project=self.project, zone=self.zone, operation=op.name,
                                              retry=self._retry, timeout=self.timeout)
                self._check_operation(op, verb, instance)
            info = self.get(instance)
            if info.status in targets:
                return info
            self._pause(deadline, info, verb)

    def _pause(self, deadline: float, info: InstanceInfo, verb: str) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise CloudApiError(info.name, f"cannot {verb} instance {info.name}: it is still {info.status} "
                                           f"after waiting", hint="check it with `offload fleet list` and retry")
        time.sleep(min(self.poll_interval, left))

    def _check_operation(self, op: "compute_v1.Operation", verb: str, instance: str) -> None:
        if not op.done:
            return
        errors = list(op.error.errors) if op.error else []
        if errors or op.http_error_status_code >= 400:
            detail = "; ".join(f"{e.code}: {e.message}" for e in errors) or op.http_error_message
            raise CloudApiError(instance, one_line(f"cannot {verb} instance {instance}: {detail}"))

    @cached_property
    def _client_args(self) -> dict[str, Any]:
        return self._google.client_args()  # once: both clients use the same credentials

    @cached_property
    def _instances(self) -> "compute_v1.InstancesClient":
        from google.cloud import compute_v1

        return compute_v1.InstancesClient(**self._client_args)

    @cached_property
    def _operations(self) -> "compute_v1.ZoneOperationsClient":
        from google.cloud import compute_v1

        return compute_v1.ZoneOperationsClient(**self._client_args)

    @cached_property
    def _retry(self) -> Any:
        # Reads are idempotent: retry the transient failures, within this API's own timeout.
        from google.api_core import exceptions, retry

        return retry.Retry(initial=0.2, maximum=5.0, multiplier=2.0, timeout=self.timeout,
                           predicate=retry.if_exception_type(exceptions.ServiceUnavailable,
                                                             exceptions.DeadlineExceeded,
                                                             exceptions.TooManyRequests))


def label_filter(labels: Mapping[str, str]) -> str:
    """A Compute list filter matching every label in LABELS: `labels.k = "v" AND ...`."""
    terms = []
    for key, value in sorted(labels.items()):
        if not _LABEL_KEY.fullmatch(key) or not _LABEL_VALUE.fullmatch(value):
            raise ConfigError(f"label {key}={value!r} is not a valid GCE label (lowercase letters, digits, '_', '-')")
        terms.append(f'labels.{key} = "{value}"')
    return " AND ".join(terms)


def _info(inst: "compute_v1.Instance") -> InstanceInfo:
    nics = list(inst.network_interfaces)
    return InstanceInfo(
        name=inst.name,
        status=inst.status,
        machine_type=inst.machine_type.rsplit("/", 1)[-1] or None,
        internal_ip=(nics[0].network_i_p or None) if nics else None,
        labels=dict(inst.labels),
    )
