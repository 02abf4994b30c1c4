"""The project-level Google calls `offload doctor` makes before a first deploy: which services are on (Service
Usage), whether the project exists and which permissions the caller holds in it (Resource Manager), and the
Compute Engine quotas left in it and in its region.

Service Usage, Resource Manager and IAP have no client library among offload's dependencies, so they are called as
plain REST through google-auth's AuthorizedSession; quotas come from google-cloud-compute. Everything is imported
inside the calls, and errors go through the one translator of offload's Google clients (google_api.py). With
OFFLOAD_SERVICEUSAGE_ENDPOINT, OFFLOAD_RESOURCEMANAGER_ENDPOINT, OFFLOAD_IAP_ENDPOINT or OFFLOAD_COMPUTE_ENDPOINT
set (test fakes) each talks to that endpoint without credentials.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from offload.providers.gce_api import ENDPOINT_ENV as COMPUTE_ENDPOINT_ENV
from offload.providers.google_api import LOGIN_HINT, GoogleApi

if TYPE_CHECKING:
    import requests

__all__ = ["ProjectApi", "Quota", "SERVICEUSAGE_ENDPOINT_ENV", "RESOURCEMANAGER_ENDPOINT_ENV", "IAP_ENDPOINT_ENV"]

SERVICEUSAGE_ENDPOINT_ENV = "OFFLOAD_SERVICEUSAGE_ENDPOINT"
RESOURCEMANAGER_ENDPOINT_ENV = "OFFLOAD_RESOURCEMANAGER_ENDPOINT"
IAP_ENDPOINT_ENV = "OFFLOAD_IAP_ENDPOINT"
# services:batchGet takes at most this many names a request.
_BATCH = 20


@dataclass(frozen=True)
class Quota:
    """One Compute Engine quota: its limit and what is in use."""

    metric: str
    limit: float
    usage: float

    @property
    def left(self) -> float:
        return self.limit - self.usage


class ProjectApi:
    """One project, as the account of the Application Default Credentials sees it."""

    def __init__(self, project: str, *, timeout: float = 30.0) -> None:
        self.project = project
        self.timeout = timeout
        denied = f"{LOGIN_HINT} with an account that may see project {project}"
        self._services = GoogleApi("Service Usage API", "serviceusage.googleapis.com", SERVICEUSAGE_ENDPOINT_ENV,
                                   os.environ.get(SERVICEUSAGE_ENDPOINT_ENV) or None, login_hint=LOGIN_HINT,
                                   not_found_hint=f"check gcp:project ({project})", denied_hint=denied,
                                   where=f"project {project}")
        self._manager = GoogleApi("Cloud Resource Manager API", "cloudresourcemanager.googleapis.com",
                                  RESOURCEMANAGER_ENDPOINT_ENV, os.environ.get(RESOURCEMANAGER_ENDPOINT_ENV) or None,
                                  login_hint=LOGIN_HINT, not_found_hint=f"check gcp:project ({project})",
                                  denied_hint=denied, where=f"project {project}")
        self._iap = GoogleApi("IAP API", "iap.googleapis.com", IAP_ENDPOINT_ENV,
                              os.environ.get(IAP_ENDPOINT_ENV) or None, login_hint=LOGIN_HINT,
                              not_found_hint="check the stack outputs, or run `offload fleet up`", denied_hint=denied,
                              where=f"project {project}")
        self._compute = GoogleApi("Compute API", "compute.googleapis.com", COMPUTE_ENDPOINT_ENV,
                                  os.environ.get(COMPUTE_ENDPOINT_ENV) or None, login_hint=LOGIN_HINT,
                                  not_found_hint=f"check gcp:project ({project}) and gcp:zone", denied_hint=denied,
                                  where=f"project {project}")

    # -- Resource Manager -------------------------------------------------------------------------------

    def state(self) -> str:
        """The project's lifecycle state (`ACTIVE`, `DELETE_REQUESTED`); CloudNotFound when there is none (or the
        caller may not see it: Resource Manager answers both alike)."""
        with self._manager.errors("read", f"project {self.project}"):
            response = self._manager_session.get(self._manager.url(f"/v3/projects/{self.project}"),
                                                 timeout=self.timeout)
            self._manager.raise_for_status(response)
        return str(response.json().get("state") or "STATE_UNSPECIFIED")

    def held_permissions(self, permissions: Sequence[str]) -> set[str]:
        """Which of PERMISSIONS the caller holds on the project (`projects.testIamPermissions`)."""
        with self._manager.errors("test permissions in", f"project {self.project}"):
            response = self._manager_session.post(
                self._manager.url(f"/v3/projects/{self.project}:testIamPermissions"),
                json={"permissions": list(permissions)}, timeout=self.timeout)
            self._manager.raise_for_status(response)
        return set(response.json().get("permissions") or ())

    # -- Service Usage ----------------------------------------------------------------------------------

    def enabled(self, services: Sequence[str]) -> dict[str, bool]:
        """Whether each of SERVICES (`compute.googleapis.com`) is on in the project."""
        found: dict[str, bool] = {}
        for start in range(0, len(services), _BATCH):
            names = [f"projects/{self.project}/services/{s}" for s in services[start:start + _BATCH]]
            with self._services.errors("read the services of", f"project {self.project}"):
                response = self._services_session.get(
                    self._services.url(f"/v1/projects/{self.project}/services:batchGet"),
                    params=[("names", n) for n in names], timeout=self.timeout)
                self._services.raise_for_status(response)
            for service in response.json().get("services") or ():
                name = str(service.get("name", "")).rsplit("/", 1)[-1]
                found[name] = service.get("state") == "ENABLED"
        return {s: found.get(s, False) for s in services}

    # -- IAP --------------------------------------------------------------------------------------------

    def held_on_tunnel(self, zone: str, instance: str, permissions: Sequence[str]) -> set[str]:
        """Which of PERMISSIONS the caller holds on INSTANCE's IAP tunnel resource, where the stack grants the
        tunnel (the Compute instance does not answer for IAP's permissions)."""
        resource = f"projects/{self.project}/iap_tunnel/zones/{zone}/instances/{instance}"
        with self._iap.errors("test tunnel permissions on", instance):
            response = self._iap_session.post(self._iap.url(f"/v1/{resource}:testIamPermissions"),
                                              json={"permissions": list(permissions)}, timeout=self.timeout)
            self._iap.raise_for_status(response)
        return set(response.json().get("permissions") or ())

    # -- Compute Engine quotas --------------------------------------------------------------------------

    def region_quotas(self, region: str) -> dict[str, Quota]:
        from google.cloud import compute_v1

        client = compute_v1.RegionsClient(**self._compute.client_args())
        with self._compute.errors("read the quotas of", f"region {region} of project {self.project}"):
            found = client.get(project=self.project, region=region, timeout=self.timeout)
        return _quotas(found.quotas)

    def project_quotas(self) -> dict[str, Quota]:
        from google.cloud import compute_v1

        client = compute_v1.ProjectsClient(**self._compute.client_args())
        with self._compute.errors("read the quotas of", f"project {self.project}"):
            found = client.get(project=self.project, timeout=self.timeout)
        return _quotas(found.quotas)

    # -- internals --------------------------------------------------------------------------------------

    @cached_property
    def _manager_session(self) -> "requests.Session":
        return self._manager.session()

    @cached_property
    def _iap_session(self) -> "requests.Session":
        return self._iap.session()

    @cached_property
    def _services_session(self) -> "requests.Session":
        return self._services.session()


def _quotas(items: Any) -> dict[str, Quota]:
    return {str(q.metric): Quota(str(q.metric), float(q.limit), float(q.usage)) for q in items}
