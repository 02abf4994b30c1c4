"""A local HTTP fake of the project-level Google APIs `offload doctor` calls: Service Usage, Cloud Resource Manager
and IAP, spoken to as plain REST through google-auth's session, as offload does.

    GET  /v1/projects/P/services:batchGet?names=projects/P/services/S&names=...   {"services": [{name, state}]}
    GET  /v3/projects/P                                                          the project (state ACTIVE)
    POST /v3/projects/P:testIamPermissions   body {"permissions": [...]}         {"permissions": [held]}
    POST /v1/projects/P/iap_tunnel/zones/Z/instances/I:testIamPermissions        the same, on IAP's tunnel resource

A project starts as a fresh one does: Service Usage on, Resource Manager off (its calls answer 403
SERVICE_DISABLED, with the ErrorInfo Google sends), no other service on and no permission held. Tests change its
state through `add()` and read `requests`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import pytest

from tests.fakes.json_api import JsonApiFake

SERVICEUSAGE = "serviceusage.googleapis.com"
RESOURCEMANAGER = "cloudresourcemanager.googleapis.com"
PROJECT_NUMBER = 123456789
_NAMES = {"compute.googleapis.com": "Compute Engine API", SERVICEUSAGE: "Service Usage API",
          RESOURCEMANAGER: "Cloud Resource Manager API"}


@dataclass
class FakeProject:
    project_id: str
    number: int = PROJECT_NUMBER
    state: str = "ACTIVE"
    enabled: set[str] = field(default_factory=lambda: {SERVICEUSAGE})
    # The permissions the caller holds on the project.
    permissions: set[str] = field(default_factory=set)
    # Instance name -> the permissions the caller holds on its IAP tunnel resource.
    tunnel: dict[str, set[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: dict[str, Any]


class ProjectApiFake(JsonApiFake):
    """Both APIs on one server: start() binds 127.0.0.1 on a free port; stop() shuts it down."""

    name = "project-api-fake"
    multi_query = True

    def __init__(self) -> None:
        super().__init__()
        self.projects: dict[str, FakeProject] = {}
        self.requests: list[Request] = []

    def add(self, project_id: str, **state: Any) -> FakeProject:
        project = FakeProject(project_id, **state)
        with self._lock:
            self.projects[project_id] = project
        return project

    def calls(self, method: str | None = None) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if method is None or r.method == method]

    def answer(self, method: str, path: str, query: dict[str, Any], body: bytes) -> tuple[int, dict[str, Any]]:
        data = json.loads(body) if body else {}
        path = unquote(path)
        with self._lock:
            self.requests.append(Request(method, path, query, data))
            return self._route(method, path, query, data)

    def _route(self, method: str, path: str, query: dict[str, list[str]],
               body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if method == "GET" and path.startswith("/v1/projects/") and path.endswith("/services:batchGet"):
            project = self._project(path.removeprefix("/v1/projects/").removesuffix("/services:batchGet"))
            refused = self._through(SERVICEUSAGE, project)
            if refused or project is None:
                return refused or _error(500, "unreachable", "INTERNAL")
            return self._batch_get(project, query.get("names", []))
        if method == "POST" and "/iap_tunnel/zones/" in path and path.endswith(":testIamPermissions"):
            project_id, _, rest = path.removeprefix("/v1/projects/").partition("/iap_tunnel/zones/")
            instance = rest.removesuffix(":testIamPermissions").rsplit("/", 1)[-1]
            project = self._project(project_id)
            if project is None:
                return _error(403, "The caller does not have permission", "PERMISSION_DENIED")
            held = set(body.get("permissions", [])) & project.tunnel.get(instance, set())
            return 200, {"permissions": sorted(held)} if held else {}
        if path.startswith("/v3/projects/"):
            rest = path.removeprefix("/v3/projects/")
            if method == "POST" and rest.endswith(":testIamPermissions"):
                project = self._project(rest.removesuffix(":testIamPermissions"))
                refused = self._through(RESOURCEMANAGER, project)
                if refused or project is None:
                    return refused or _error(500, "unreachable", "INTERNAL")
                return 200, {"permissions": sorted(set(body.get("permissions", [])) & project.permissions)}
            if method == "GET" and "/" not in rest and ":" not in rest:
                project = self._project(rest)
                refused = self._through(RESOURCEMANAGER, project)
                if refused or project is None:
                    return refused or _error(500, "unreachable", "INTERNAL")
                return 200, {"name": f"projects/{project.number}", "projectId": project.project_id,
                             "state": project.state, "displayName": project.project_id}
        return _error(404, f"The requested URL {path} was not found on this server.", "NOT_FOUND")

    def _project(self, project_id: str) -> FakeProject | None:
        return self.projects.get(project_id)

    def _through(self, api: str, project: FakeProject | None) -> tuple[int, dict[str, Any]] | None:
        """The error a call to API about PROJECT gets before it is served, if any. The caller's quota project is
        the project itself, as in a fresh project: an API off there refuses every call."""
        if project is None:
            return _error(403, "The caller does not have permission", "PERMISSION_DENIED")
        if api not in project.enabled:
            return service_disabled(api, project.number)
        return None

    def _batch_get(self, project: FakeProject, names: list[str]) -> tuple[int, dict[str, Any]]:
        if len(names) > 20:
            return _error(400, "Too many services requested", "INVALID_ARGUMENT")
        services = []
        for name in names:
            service = name.rsplit("/", 1)[-1]
            services.append({"name": f"projects/{project.number}/services/{service}", "parent":
                             f"projects/{project.number}", "config": {"name": service},
                             "state": "ENABLED" if service in project.enabled else "DISABLED"})
        return 200, {"services": services}


def service_disabled(api: str, number: int) -> tuple[int, dict[str, Any]]:
    """Google's answer to a call through an API that is off in the caller's quota project."""
    title = _NAMES.get(api, api)
    message = (f"{title} has not been used in project {number} before or it is disabled. Enable it by visiting "
               f"https://console.developers.google.com/apis/api/{api}/overview?project={number} then retry.")
    return 403, {"error": {"code": 403, "message": message, "status": "PERMISSION_DENIED", "details": [
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "SERVICE_DISABLED",
         "domain": "googleapis.com", "metadata": {"service": api, "consumer": f"projects/{number}"}}]}}


def _error(status: int, message: str, state: str) -> tuple[int, dict[str, Any]]:
    return status, {"error": {"code": status, "message": message, "status": state}}


@pytest.fixture
def project_api_fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[ProjectApiFake]:
    """A running fake with OFFLOAD_SERVICEUSAGE_ENDPOINT, OFFLOAD_RESOURCEMANAGER_ENDPOINT and OFFLOAD_IAP_ENDPOINT
    pointing at it."""
    with ProjectApiFake() as fake:
        for api in ("SERVICEUSAGE", "RESOURCEMANAGER", "IAP"):
            monkeypatch.setenv(f"OFFLOAD_{api}_ENDPOINT", fake.endpoint)
        yield fake
