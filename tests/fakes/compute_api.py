"""A local HTTP fake of the Compute Engine REST API, spoken to by the real google-cloud-compute client.

It serves the few calls offload makes, with the JSON field names the client parses:

    GET  /compute/v1/projects/P/zones/Z/instances                      list (filter, maxResults, pageToken)
    GET  /compute/v1/projects/P/zones/Z/instances/I                    get
    POST /compute/v1/projects/P/zones/Z/instances/I/start|stop|resume  an Operation
    GET  /compute/v1/projects/P/zones/Z/operations/OP                  the Operation, DONE after `operation_polls`
    GET  /compute/v1/projects/P/zones/Z/instances/I/getGuestAttributes?queryPath=hostkeys%2F
    POST /compute/v1/projects/P/zones/Z/instances/I/testIamPermissions  {"permissions": [held]}
    GET  /compute/v1/projects/P                                        the project, with its quotas
    GET  /compute/v1/projects/P/regions/R                              the region, with its quotas

A start or stop leaves the instance in a transitional status (STAGING, STOPPING) for `transition_gets` reads
of the instance, so callers have to poll. Tests set state through `add()`, `quota()` and `disable()`, and read
`requests`.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.fakes.json_api import JsonApiFake
from tests.fakes.project_api import PROJECT_NUMBER, service_disabled

BASE = "https://www.googleapis.com/compute/v1"
_PATH = re.compile(r"^/compute/v1/projects/(?P<project>[^/]+)/zones/(?P<zone>[^/]+)/"
                   r"(?P<kind>instances|operations)(?:/(?P<name>[^/]+)(?:/(?P<verb>[A-Za-z]+))?)?$")
_SCOPE = re.compile(r"^/compute/v1/projects/(?P<project>[^/]+)(?:/regions/(?P<region>[^/]+))?$")
_TERM = re.compile(r"""\(?\s*(?P<key>[A-Za-z][\w.-]*)\s*(?P<op>!=|=)\s*"?(?P<value>[^"\s()]*)"?\s*\)?""")


@dataclass
class FakeInstance:
    """One instance's state, which tests read and change directly."""

    name: str
    project: str
    zone: str
    status: str = "RUNNING"
    machine_type: str = "e2-standard-4"
    network_ip: str = "10.10.0.2"
    labels: dict[str, str] = field(default_factory=dict)
    # Guest attributes under hostkeys/: key type -> base64 key, as the guest environment publishes them.
    host_keys: dict[str, str] = field(default_factory=dict)
    # Other guest attributes: namespace -> {key: value} (e.g. offload/minutes-until-stop).
    attributes: dict[str, dict[str, str]] = field(default_factory=dict)
    # When set, the next start operation ends with this error (code, message) and the instance stays put.
    start_error: tuple[str, str] | None = None
    # The permissions the caller holds on the instance; None: every one asked about.
    permissions: set[str] | None = None
    # A transition in progress: the status to reach, and how many more reads show the current one.
    pending: tuple[str, int] | None = None
    id: int = 0

    def to_json(self) -> dict[str, Any]:
        zone_url = f"{BASE}/projects/{self.project}/zones/{self.zone}"
        return {
            "kind": "compute#instance",
            "id": str(self.id),
            "name": self.name,
            "zone": zone_url,
            "status": self.status,
            "machineType": f"{zone_url}/machineTypes/{self.machine_type}",
            "networkInterfaces": [{"kind": "compute#networkInterface", "name": "nic0", "networkIP": self.network_ip,
                                   "network": f"{BASE}/projects/{self.project}/global/networks/offload"}],
            "labels": dict(self.labels),
            "selfLink": f"{zone_url}/instances/{self.name}",
        }


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]

    @property
    def target(self) -> str:
        """The path below the zone, e.g. 'instances/offload-dev-0/start', for short assertions."""
        return self.path.split("/zones/", 1)[-1].split("/", 1)[-1]


class ComputeFake(JsonApiFake):
    """The fake server: start() binds 127.0.0.1 on a free port; stop() shuts it down and joins its thread."""

    name = "compute-fake"

    def __init__(self, *, transition_gets: int = 1, operation_polls: int = 1, delay: float = 0.0) -> None:
        super().__init__()
        self.transition_gets = transition_gets
        self.operation_polls = operation_polls
        # Seconds each response waits, so requests made concurrently overlap; `peak_in_flight` counts them.
        self.delay = delay
        self.peak_in_flight = 0
        self._in_flight = 0
        self.instances: dict[tuple[str, str, str], FakeInstance] = {}
        self.requests: list[Request] = []
        self._operations: dict[str, dict[str, Any]] = {}
        self._failures: list[dict[str, Any]] = []
        self._ids = itertools.count(1000)
        # (project, region or None for the project's own) -> metric -> (limit, usage)
        self.quotas: dict[tuple[str, str | None], dict[str, tuple[float, float]]] = {}
        # Projects whose Compute API is off: every call about them answers 403 SERVICE_DISABLED.
        self.disabled: set[str] = set()

    # -- test-facing API ---------------------------------------------------------------------------------

    def add(self, name: str, *, project: str = "p", zone: str = "us-west1-a", **state: Any) -> FakeInstance:
        inst = FakeInstance(name=name, project=project, zone=zone, id=next(self._ids), **state)
        with self._lock:
            self.instances[(project, zone, name)] = inst
        return inst

    def quota(self, metric: str, limit: float, usage: float = 0, *, project: str = "p",
              region: str | None = None) -> None:
        """Set a quota of the project (or of REGION in it), as the project or region resource lists it."""
        with self._lock:
            self.quotas.setdefault((project, region), {})[metric] = (limit, usage)

    def disable(self, project: str) -> None:
        """Turn the Compute API off in PROJECT."""
        with self._lock:
            self.disabled.add(project)

    def fail(self, method: str, suffix: str, status: int, message: str, *, times: int | None = None) -> None:
        """Answer requests whose path ends with SUFFIX with an HTTP error, TIMES times (None: always)."""
        with self._lock:
            self._failures.append({"method": method, "suffix": suffix, "status": status, "message": message,
                                   "times": times})

    def calls(self, method: str | None = None, target: str | None = None) -> list[Request]:
        with self._lock:
            return [r for r in self.requests
                    if (method is None or r.method == method) and (target is None or r.target == target)]

    # -- the HTTP side -----------------------------------------------------------------------------------

    def answer(self, method: str, path: str, query: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.requests.append(Request(method, path, query))
            self._in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self._in_flight)
        if self.delay:
            time.sleep(self.delay)
        with self._lock:
            self._in_flight -= 1
            return self._failure(method, path) or self._route(method, path, query, body)

    def _failure(self, method: str, path: str) -> tuple[int, dict[str, Any]] | None:
        for f in self._failures:
            if f["method"] == method and path.endswith(f["suffix"]) and f["times"] != 0:
                if f["times"] is not None:
                    f["times"] -= 1
                return _error(f["status"], f["message"])
        return None

    def _route(self, method: str, path: str, query: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        project_of = path.removeprefix("/compute/v1/projects/").split("/", 1)[0]
        if project_of in self.disabled:
            return service_disabled("compute.googleapis.com", PROJECT_NUMBER)
        scope = _SCOPE.match(path)
        if scope and method == "GET":
            return self._scope(scope["project"], scope["region"])
        m = _PATH.match(path)
        if not m:
            return _error(404, f"The requested URL {path} was not found on this server.")
        project, zone, kind, name, verb = m["project"], m["zone"], m["kind"], m["name"], m["verb"]
        if kind == "operations":
            if method == "GET" and name and not verb:
                return self._poll_operation(project, zone, name)
            return _error(404, f"The requested URL {path} was not found on this server.")
        if name is None:
            if method == "GET":
                return self._list(project, zone, query)
            return _error(405, "Method not allowed")
        inst = self.instances.get((project, zone, name))
        if inst is None:
            return _error(404, f"The resource 'projects/{project}/zones/{zone}/instances/{name}' was not found")
        if method == "GET" and verb is None:
            self._advance(inst)
            return 200, inst.to_json()
        if method == "GET" and verb == "getGuestAttributes":
            return self._guest_attributes(inst, query.get("queryPath", ""))
        if method == "POST" and verb == "testIamPermissions":
            asked = json.loads(body or b"{}").get("permissions", [])
            held = [p for p in asked if inst.permissions is None or p in inst.permissions]
            return 200, {"permissions": held} if held else {}
        if method == "POST" and verb in ("start", "stop", "resume"):
            return self._transition(inst, verb)
        return _error(404, f"The requested URL {path} was not found on this server.")

    def _scope(self, project: str, region: str | None) -> tuple[int, dict[str, Any]]:
        """The project or one of its regions, with the quotas tests set."""
        quotas = [{"metric": metric, "limit": limit, "usage": usage}
                  for metric, (limit, usage) in sorted(self.quotas.get((project, region), {}).items())]
        if region is None:
            return 200, {"kind": "compute#project", "id": str(PROJECT_NUMBER), "name": project, "quotas": quotas,
                         "selfLink": f"{BASE}/projects/{project}"}
        return 200, {"kind": "compute#region", "id": "1000", "name": region, "status": "UP", "quotas": quotas,
                     "selfLink": f"{BASE}/projects/{project}/regions/{region}"}

    def _advance(self, inst: FakeInstance) -> None:
        if inst.pending is None:
            return
        target, reads = inst.pending
        if reads <= 0:
            inst.status, inst.pending = target, None
        else:
            inst.pending = (target, reads - 1)

    def _transition(self, inst: FakeInstance, verb: str) -> tuple[int, dict[str, Any]]:
        error = None
        if verb == "start" and inst.status == "SUSPENDED":
            return _error(400, f"The instance '{inst.name}' is suspended; resume it instead.")
        if verb == "resume" and inst.status != "SUSPENDED":
            return _error(400, f"The instance '{inst.name}' is not suspended.")
        if verb in ("start", "resume"):
            if inst.start_error:
                error, inst.start_error = inst.start_error, None
            elif inst.status != "RUNNING":
                inst.status, inst.pending = "STAGING", ("RUNNING", self.transition_gets)
        elif inst.status not in ("TERMINATED",):
            inst.status, inst.pending = "STOPPING", ("TERMINATED", self.transition_gets)
        return 200, self._new_operation(inst, verb, error)

    def _new_operation(self, inst: FakeInstance, verb: str, error: tuple[str, str] | None) -> dict[str, Any]:
        op_id = next(self._ids)
        zone_url = f"{BASE}/projects/{inst.project}/zones/{inst.zone}"
        op: dict[str, Any] = {
            "kind": "compute#operation",
            "id": str(op_id),
            "name": f"operation-{op_id}-{verb}",
            "zone": zone_url,
            "operationType": verb,
            "targetLink": f"{zone_url}/instances/{inst.name}",
            "targetId": str(inst.id),
            "status": "RUNNING" if self.operation_polls > 0 else "DONE",
            "user": "dev@example.com",
            "progress": 0,
            "insertTime": "2024-01-01T00:00:00.000-00:00",
            "selfLink": f"{zone_url}/operations/operation-{op_id}-{verb}",
        }
        self._operations[op["name"]] = {"op": op, "polls": self.operation_polls, "error": error}
        if op["status"] == "DONE":
            _finish(self._operations[op["name"]])
        return dict(op)

    def _poll_operation(self, project: str, zone: str, name: str) -> tuple[int, dict[str, Any]]:
        entry = self._operations.get(name)
        if entry is None:
            return _error(404, f"The resource 'projects/{project}/zones/{zone}/operations/{name}' was not found")
        entry["polls"] -= 1
        if entry["polls"] <= 0 and entry["op"]["status"] != "DONE":
            _finish(entry)
        return 200, dict(entry["op"])

    def _list(self, project: str, zone: str, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        try:
            terms = _parse_filter(query.get("filter", ""))
        except ValueError as e:
            return _error(400, f"Invalid value for field 'filter': '{query.get('filter')}'. {e}")
        found = [i for (p, z, _), i in sorted(self.instances.items()) if (p, z) == (project, zone)
                 and all((_field(i, key) == value) == (op == "=") for key, op, value in terms)]
        start = int(query.get("pageToken") or 0)
        size = int(query.get("maxResults") or 500)
        page = found[start:start + size]
        body: dict[str, Any] = {"kind": "compute#instanceList", "id": f"projects/{project}/zones/{zone}/instances",
                                "items": [i.to_json() for i in page],
                                "selfLink": f"{BASE}/projects/{project}/zones/{zone}/instances"}
        if start + size < len(found):
            body["nextPageToken"] = str(start + size)
        return 200, body

    def _guest_attributes(self, inst: FakeInstance, query_path: str) -> tuple[int, dict[str, Any]]:
        namespace = query_path.rstrip("/")
        published = inst.host_keys if namespace == "hostkeys" else inst.attributes.get(namespace, {})
        items = [{"namespace": namespace, "key": k, "value": v} for k, v in published.items()]
        if not items:
            return _error(404, f"The resource 'projects/{inst.project}/zones/{inst.zone}/instances/{inst.name}/"
                               f"guestAttributes/{query_path}' was not found")
        return 200, {"kind": "compute#guestAttributes", "queryPath": query_path, "queryValue": {"items": items},
                     "selfLink": f"{inst.to_json()['selfLink']}/guestAttributes/{query_path}"}


def _finish(entry: dict[str, Any]) -> None:
    op = entry["op"]
    op.update(status="DONE", progress=100, endTime="2024-01-01T00:00:01.000-00:00")
    if entry["error"]:
        code, message = entry["error"]
        op["error"] = {"errors": [{"code": code, "message": message}]}
        op["httpErrorStatusCode"] = 503
        op["httpErrorMessage"] = "SERVICE UNAVAILABLE"


def _error(status: int, message: str) -> tuple[int, dict[str, Any]]:
    reason = {400: "invalid", 403: "forbidden", 404: "notFound"}.get(status, "backendError")
    return status, {"error": {"code": status, "message": message,
                              "errors": [{"message": message, "domain": "global", "reason": reason}]}}


def _parse_filter(text: str) -> list[tuple[str, str, str]]:
    """`labels.purpose = "offload" AND labels.owner = x` (or space-joined terms) -> [(key, op, value)]."""
    terms = []
    rest = text.strip()
    while rest:
        m = _TERM.match(rest)
        if not m or not m["value"]:
            raise ValueError(f"cannot parse {rest!r}")
        terms.append((m["key"], m["op"], m["value"]))
        rest = re.sub(r"^\s*AND\s+", "", rest[m.end():].strip())
    return terms


def _field(inst: FakeInstance, key: str) -> str | None:
    if key.startswith("labels."):
        return inst.labels.get(key.removeprefix("labels."))
    return {"name": inst.name, "status": inst.status}.get(key)


@pytest.fixture
def compute_fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[ComputeFake]:
    """A running fake with OFFLOAD_COMPUTE_ENDPOINT pointing at it; tests add instances with `add()`."""
    with ComputeFake() as fake:
        monkeypatch.setenv("OFFLOAD_COMPUTE_ENDPOINT", fake.endpoint)
        yield fake
