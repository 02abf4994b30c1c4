"""A local HTTP fake of the Cloud Workstations REST API (v1), for offload's own REST calls.

    GET  /v1/projects/P/locations/R/workstationClusters/C/workstationConfigs/F/workstations/W   the workstation
    POST .../workstations/W:start | :stop                                                        an Operation

A start or stop leaves the workstation in STATE_STARTING or STATE_STOPPING for `transition_gets` reads, so callers
have to poll; `on_running` is called when a workstation reaches STATE_RUNNING (a test brings up what stands in for
it). Tests set state through `add()`, make calls fail through `fail()`, and read `requests`.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.fakes.json_api import JsonApiFake

_PATH = re.compile(r"^/v1/projects/(?P<project>[^/]+)/locations/(?P<region>[^/]+)/workstationClusters/(?P<cluster>[^/]+)"
                   r"/workstationConfigs/(?P<config>[^/]+)/workstations/(?P<name>[^/:]+)(?::(?P<verb>start|stop))?$")


@dataclass
class FakeWorkstation:
    name: str
    project: str
    region: str
    cluster: str
    config: str
    state: str = "STATE_STOPPED"
    pending: tuple[str, int] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": f"projects/{self.project}/locations/{self.region}/workstationClusters/{self.cluster}/"
                        f"workstationConfigs/{self.config}/workstations/{self.name}",
                "state": self.state, "host": f"{self.name}.cluster-x.cloudworkstations.dev"}


@dataclass(frozen=True)
class Request:
    method: str
    path: str

    @property
    def target(self) -> str:
        """'W', 'W:start' or 'W:stop', for short assertions."""
        return self.path.rsplit("/", 1)[-1]


class WorkstationsFake(JsonApiFake):
    name = "workstations-fake"

    def __init__(self, *, transition_gets: int = 1, on_running: Callable[[FakeWorkstation], None] | None = None) -> None:
        super().__init__()
        self.transition_gets = transition_gets
        self.on_running = on_running
        self.workstations: dict[tuple[str, str, str, str, str], FakeWorkstation] = {}
        self.requests: list[Request] = []
        self._failures: list[dict[str, Any]] = []
        self._ids = itertools.count(1)

    def add(self, name: str, *, project: str = "p", region: str = "us-central1", cluster: str = "c",
            config: str = "f", **state: Any) -> FakeWorkstation:
        ws = FakeWorkstation(name, project, region, cluster, config, **state)
        with self._lock:
            self.workstations[(project, region, cluster, config, name)] = ws
        return ws

    def fail(self, method: str, suffix: str, status: int, message: str, *, times: int | None = None) -> None:
        """Answer requests whose path ends with SUFFIX with an HTTP error, TIMES times (None: always)."""
        with self._lock:
            self._failures.append({"method": method, "suffix": suffix, "status": status, "message": message,
                                   "times": times})

    def calls(self, method: str | None = None, target: str | None = None) -> list[Request]:
        with self._lock:
            return [r for r in self.requests
                    if (method is None or r.method == method) and (target is None or r.target == target)]

    def answer(self, method: str, path: str, query: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        reached = None
        with self._lock:
            self.requests.append(Request(method, path))
            status, answer, reached = self._answer(method, path)
        if reached is not None and self.on_running is not None:
            self.on_running(reached)
        return status, answer

    def _answer(self, method: str, path: str) -> tuple[int, dict[str, Any], FakeWorkstation | None]:
        for f in self._failures:
            if f["method"] == method and path.endswith(f["suffix"]) and f["times"] != 0:
                if f["times"] is not None:
                    f["times"] -= 1
                return (*_error(f["status"], f["message"]), None)
        m = _PATH.match(path)
        ws = self.workstations.get((m["project"], m["region"], m["cluster"], m["config"], m["name"])) if m else None
        if ws is None:
            return (*_error(404, f"Resource '{path}' was not found"), None)
        if method == "GET" and m["verb"] is None:
            reached = None
            if ws.pending is not None:
                target, reads = ws.pending
                if reads <= 0:
                    ws.state, ws.pending = target, None
                    reached = ws if target == "STATE_RUNNING" else None
                else:
                    ws.pending = (target, reads - 1)
            return 200, ws.to_json(), reached
        if method == "POST" and m["verb"] == "start":
            if ws.state == "STATE_STOPPED":
                ws.state, ws.pending = "STATE_STARTING", ("STATE_RUNNING", self.transition_gets)
            return 200, self._operation(ws, "start"), None
        if method == "POST" and m["verb"] == "stop":
            if ws.state == "STATE_RUNNING":
                ws.state, ws.pending = "STATE_STOPPING", ("STATE_STOPPED", self.transition_gets)
            return 200, self._operation(ws, "stop"), None
        return (*_error(404, f"Resource '{path}' was not found"), None)

    def _operation(self, ws: FakeWorkstation, verb: str) -> dict[str, Any]:
        return {"name": f"projects/{ws.project}/locations/{ws.region}/operations/operation-{next(self._ids)}-{verb}",
                "metadata": {"target": ws.to_json()["name"], "verb": verb}, "done": False}


def _error(status: int, message: str) -> tuple[int, dict[str, Any]]:
    state = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND"}.get(status, "INTERNAL")
    return status, {"error": {"code": status, "message": message, "status": state}}


@pytest.fixture
def workstations_fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[WorkstationsFake]:
    """A running fake with OFFLOAD_WORKSTATIONS_ENDPOINT pointing at it; tests add workstations with `add()`."""
    with WorkstationsFake() as fake:
        monkeypatch.setenv("OFFLOAD_WORKSTATIONS_ENDPOINT", fake.endpoint)
        yield fake
