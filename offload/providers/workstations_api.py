"""The few Cloud Workstations API calls offload makes: read a workstation's state, start it, stop it.

There is no Cloud Workstations client among offload's libraries, so these are the REST calls themselves
(workstations.googleapis.com/v1), made with google-auth's authorized session and Application Default Credentials.
An HTTP error becomes google-api-core's exception for its status, and so the same one-line error as every other
Google Cloud call of offload (offload/providers/google_api.py). With OFFLOAD_WORKSTATIONS_ENDPOINT set (a test
fake) the calls go to that endpoint, without credentials. The libraries are imported inside the calls.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from offload.errors import CloudApiError
from offload.providers.google_api import LOGIN_HINT, GoogleApi

__all__ = ["WorkstationsApi", "WorkstationInfo", "ENDPOINT_ENV"]

ENDPOINT_ENV = "OFFLOAD_WORKSTATIONS_ENDPOINT"
HOST = "workstations.googleapis.com"
RUNNING = "STATE_RUNNING"
STARTING = "STATE_STARTING"
STOPPING = "STATE_STOPPING"
STOPPED = "STATE_STOPPED"
STATES = {RUNNING: "running", STARTING: "starting", STOPPING: "stopping", STOPPED: "stopped"}


@dataclass(frozen=True)
class WorkstationInfo:
    name: str
    state: str

    @property
    def running(self) -> bool:
        return self.state == RUNNING


class WorkstationsApi:
    """One workstation config's workstations, addressed as the API names them."""

    def __init__(self, project: str, region: str, cluster: str, config: str, *, timeout: float = 30.0,
                 poll_interval: float = 3.0, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.parent = (f"projects/{project}/locations/{region}/workstationClusters/{cluster}/"
                       f"workstationConfigs/{config}")
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.clock = clock
        self.sleep = sleep
        self.endpoint = os.environ.get(ENDPOINT_ENV) or None
        self._google = GoogleApi(
            "Cloud Workstations API", HOST, ENDPOINT_ENV, self.endpoint, login_hint=LOGIN_HINT,
            not_found_hint="check the stack outputs, or run `offload fleet up`",
            denied_hint=f"{LOGIN_HINT} with an account that holds Cloud Workstations User on the workstation",
            where=f"{project}/{region}/{cluster}/{config}")

    def get(self, workstation: str) -> WorkstationInfo:
        with self._google.errors("read workstation", workstation):
            data = self._call("GET", f"{self.parent}/workstations/{workstation}")
        return WorkstationInfo(workstation, str(data.get("state") or "STATE_UNSPECIFIED"))

    def start(self, workstation: str, *, timeout: float = 600.0) -> WorkstationInfo:
        """Start WORKSTATION, unless it runs or is starting already, and wait until it runs."""
        return self._change(workstation, "start", RUNNING, (RUNNING, STARTING), timeout)

    def stop(self, workstation: str, *, timeout: float = 600.0) -> WorkstationInfo:
        return self._change(workstation, "stop", STOPPED, (STOPPED, STOPPING), timeout)

    def _change(self, workstation: str, verb: str, target: str, underway: tuple[str, ...],
                timeout: float) -> WorkstationInfo:
        deadline = self.clock() + timeout
        info = self.get(workstation)
        while info.state == (STOPPING if verb == "start" else STARTING):
            # Neither verb is accepted while the other is under way: let it land first.
            self._pause(deadline, info, verb)
            info = self.get(workstation)
        if info.state not in underway:
            with self._google.errors(verb, f"workstation {workstation}"):
                self._call("POST", f"{self.parent}/workstations/{workstation}:{verb}", {})
        while True:
            info = self.get(workstation)
            if info.state == target:
                return info
            self._pause(deadline, info, verb)

    def _pause(self, deadline: float, info: WorkstationInfo, verb: str) -> None:
        left = deadline - self.clock()
        if left <= 0:
            raise CloudApiError(info.name, f"cannot {verb} workstation {info.name}: it is still "
                                           f"{STATES.get(info.state, info.state)} after waiting",
                                hint="check it with `gcloud workstations list` and retry")
        self.sleep(min(self.poll_interval, left))

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        from google.api_core import exceptions

        base = self.endpoint.rstrip("/") if self.endpoint else f"https://{HOST}"
        response = self._session.request(method, f"{base}/v1/{path}", json=body, timeout=self.timeout)
        if response.status_code >= 400:
            raise exceptions.from_http_response(response)
        return response.json() if response.content else {}

    @cached_property
    def _session(self) -> Any:
        if self.endpoint:
            import requests

            return requests.Session()
        from google.auth.transport.requests import AuthorizedSession

        return AuthorizedSession(self._google.client_args()["credentials"])
