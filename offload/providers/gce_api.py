"""The few live Compute Engine calls offload makes: read, start, stop and list instances, and read host keys.

google-cloud-compute costs about two seconds to import, so it is imported inside the calls, never at module
import. Credentials are Application Default Credentials; with OFFLOAD_COMPUTE_ENDPOINT set (an emulator or a
test fake) the client talks plain REST to that endpoint without credentials.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from offload.errors import CloudApiError, ConfigError
from offload.outputs import WorkerRecord, validate_host_key
from offload.pricing import hourly_cost

if TYPE_CHECKING:
    from google.cloud import compute_v1

__all__ = ["ComputeApi", "InstanceInfo", "hourly_cost", "ENDPOINT_ENV", "ADC_HINT"]

ENDPOINT_ENV = "OFFLOAD_COMPUTE_ENDPOINT"
ADC_HINT = "run `gcloud auth application-default login`"
_SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
_LABEL_KEY = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_LABEL_VALUE = re.compile(r"[a-z0-9_-]{0,63}")
# "GET https://compute.googleapis.com/...: The resource ... was not found" -> the part after the URL.
_HTTP_PREFIX = re.compile(r"^(GET|POST|PUT|PATCH|DELETE) \S+: ")

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
        with self._errors("read", instance):
            return _info(self._instances.get(project=self.project, zone=self.zone, instance=instance,
                                             retry=self._retry, timeout=self.timeout))

    def list(self, labels: Mapping[str, str] | None = None) -> list[InstanceInfo]:
        """Instances of the zone whose labels include LABELS (all of them when LABELS is empty)."""
        from google.cloud import compute_v1

        request = compute_v1.ListInstancesRequest(project=self.project, zone=self.zone,
                                                  filter=label_filter(labels or {}))
        with self._errors("list", f"instances in {self.project}/{self.zone}"):
            return [_info(i) for i in self._instances.list(request=request, retry=self._retry,
                                                            timeout=self.timeout)]

    def host_keys(self, instance: str) -> list[str]:
        """The host keys the guest environment published ('ssh-ed25519 AAAA...' lines); [] before it has."""
        from google.api_core import exceptions
        from google.cloud import compute_v1

        request = compute_v1.GetGuestAttributesInstanceRequest(project=self.project, zone=self.zone,
                                                               instance=instance, query_path="hostkeys/")
        with self._errors("read host keys of", instance):
            try:
                attrs = self._instances.get_guest_attributes(request=request, retry=self._retry,
                                                             timeout=self.timeout)
            except exceptions.NotFound:
                # Still booting, or guest attributes are off: no keys published yet.
                return []
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
        from google.api_core import exceptions
        from google.cloud import compute_v1

        request = compute_v1.GetGuestAttributesInstanceRequest(project=self.project, zone=self.zone,
                                                               instance=instance, query_path=f"{namespace}/")
        with self._errors("read guest attributes of", instance):
            try:
                attrs = self._instances.get_guest_attributes(request=request, retry=self._retry,
                                                             timeout=self.timeout)
            except exceptions.NotFound:
                return {}
        return {item.key: item.value for item in attrs.query_value.items if item.namespace == namespace}

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
            with self._errors(verb, instance):
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
        with self._errors("stop", instance):
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
                with self._errors(verb, instance):
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
            raise CloudApiError(instance, _one_line(f"cannot {verb} instance {instance}: {detail}"))

    @cached_property
    def _client_args(self) -> dict[str, Any]:
        if self.endpoint:
            from google.auth.credentials import AnonymousCredentials

            return {"credentials": AnonymousCredentials(), "transport": "rest",
                    "client_options": {"api_endpoint": self.endpoint}}
        import google.auth

        # User ADC (`gcloud auth application-default login`) warns about quota projects on every request.
        warnings.filterwarnings("ignore", message="Your application has authenticated using end user credentials",
                                category=UserWarning)
        credentials, _ = google.auth.default(scopes=_SCOPES)
        return {"credentials": credentials, "transport": "rest"}

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

    @contextlib.contextmanager
    def _errors(self, action: str, instance: str) -> Iterator[None]:
        """Turn client and auth exceptions into a one-line CloudApiError that says what to do next."""
        import google.auth.exceptions as auth_errors
        import requests
        from google.api_core import exceptions

        where = f"project {self.project} zone {self.zone}"
        try:
            yield
        except auth_errors.DefaultCredentialsError:
            raise CloudApiError(instance, f"cannot {action} {instance}: no Google Cloud credentials found",
                                hint=ADC_HINT) from None
        except auth_errors.RefreshError as e:
            raise CloudApiError(instance, _one_line(f"cannot {action} {instance}: Google Cloud credentials "
                                                    f"could not be refreshed: {_first(e)}"), hint=ADC_HINT) from None
        except exceptions.NotFound:
            raise CloudApiError(instance, f"cannot {action} {instance}: not found in {where}",
                                hint="check the stack outputs, or run `offload fleet up`") from None
        except (exceptions.Forbidden, exceptions.Unauthorized) as e:
            raise CloudApiError(instance, _one_line(f"cannot {action} {instance}: permission denied in {where}: "
                                                    f"{_api_message(e)}"),
                                hint=f"{ADC_HINT} with an account allowed to manage instances in {self.project}"
                                ) from None
        except exceptions.RetryError as e:
            cause = _api_message(e.cause) if e.cause is not None else str(e)
            raise CloudApiError(instance, _one_line(f"cannot {action} {instance}: the Compute API kept failing: "
                                                    f"{cause}"), hint="retry in a minute") from None
        except exceptions.GoogleAPICallError as e:
            raise CloudApiError(instance, _one_line(f"cannot {action} {instance}: {e.code or ''} "
                                                    f"{_api_message(e)}")) from None
        except requests.exceptions.RequestException as e:
            endpoint = self.endpoint or "compute.googleapis.com"
            raise CloudApiError(instance, _one_line(f"cannot {action} {instance}: cannot reach the Compute API at "
                                                    f"{endpoint}: {type(e).__name__}"),
                                hint=f"check your network{' or ' + ENDPOINT_ENV if self.endpoint else ''}") from None


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


def _api_message(e: BaseException) -> str:
    message = getattr(e, "message", None) or str(e)
    return _HTTP_PREFIX.sub("", str(message))


def _first(e: BaseException) -> str:
    return str(e.args[0]) if e.args else str(e)


def _one_line(text: str) -> str:
    return " ".join(text.split())
