"""A local HTTP fake of the OS Login REST API, spoken to by the real google-cloud-os-login client.

It serves the calls offload makes, with the JSON field names the client parses:

    GET  /v1/users/EMAIL/loginProfile?projectId=P                   the login profile
    POST /v1/users/EMAIL:importSshPublicKey?projectId=P             body {"key": ...}; the profile after it

A user's POSIX account exists once a key has been imported for a project (as OS Login does), with the name a
test sets through `add()` (an `ext_` name, an admin-chosen one); tests read `requests` and `users`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import pytest

from tests.fakes.json_api import JsonApiFake


@dataclass
class FakeUser:
    email: str
    # The name OS Login gives this user's POSIX account (made at the first key import for a project).
    username: str
    keys: dict[str, str] = field(default_factory=dict)  # fingerprint -> key line
    has_account: bool = False
    # When set, every call about this user fails with this HTTP status and message.
    error: tuple[int, str] | None = None

    def profile(self) -> dict[str, Any]:
        body: dict[str, Any] = {"name": self.email}
        if self.has_account:
            body["posixAccounts"] = [{"primary": True, "username": self.username, "uid": "1001", "gid": "1001",
                                      "homeDirectory": f"/home/{self.username}", "shell": "/bin/bash",
                                      "gecos": "", "systemId": "", "accountId": "p",
                                      "operatingSystemType": "LINUX",
                                      "name": f"users/{self.email}/projects/p"}]
        if self.keys:
            body["sshPublicKeys"] = {fp: {"key": key, "fingerprint": fp,
                                          "name": f"users/{self.email}/sshPublicKeys/{fp}"}
                                     for fp, key in self.keys.items()}
        return body


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    body: dict[str, Any]


class OsLoginFake(JsonApiFake):
    """The fake server: start() binds 127.0.0.1 on a free port; stop() shuts it down and joins its thread."""

    name = "oslogin-fake"

    def __init__(self) -> None:
        super().__init__()
        self.users: dict[str, FakeUser] = {}
        self.requests: list[Request] = []

    def add(self, email: str, username: str, **state: Any) -> FakeUser:
        user = FakeUser(email=email, username=username, **state)
        with self._lock:
            self.users[email] = user
        return user

    def calls(self, method: str | None = None) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if method is None or r.method == method]

    def answer(self, method: str, path: str, query: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        data = json.loads(body) if body else {}
        path = unquote(path)
        with self._lock:
            self.requests.append(Request(method, path, query, data))
            return self._route(method, path, query, data)

    def _route(self, method: str, path: str, query: dict[str, str],
               body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if method == "GET" and path.startswith("/v1/users/") and path.endswith("/loginProfile"):
            email, verb = path.removeprefix("/v1/users/").removesuffix("/loginProfile"), "profile"
        elif method == "POST" and path.startswith("/v1/users/") and path.endswith(":importSshPublicKey"):
            email, verb = path.removeprefix("/v1/users/").removesuffix(":importSshPublicKey"), "import"
        else:
            return _error(404, f"The requested URL {path} was not found on this server.")
        user = self.users.get(email)
        if user is None:
            return _error(403, f"The caller does not have permission to access users/{email}.")
        if user.error:
            return _error(*user.error)
        if verb == "profile":
            return 200, user.profile()
        key = str(body.get("key", "")).strip()
        parts = key.split()
        if len(parts) < 2:
            return _error(400, "Invalid SSH public key.")
        fingerprint = hashlib.sha256(parts[1].encode()).hexdigest()
        user.keys[fingerprint] = key
        if query.get("projectId"):
            user.has_account = True
        return 200, {"loginProfile": user.profile()}


def _error(status: int, message: str) -> tuple[int, dict[str, Any]]:
    state = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND"}.get(status, "INTERNAL")
    return status, {"error": {"code": status, "message": message, "status": state}}


@pytest.fixture
def oslogin_fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[OsLoginFake]:
    """A running fake with OFFLOAD_OSLOGIN_ENDPOINT pointing at it; tests add users with `add()`."""
    with OsLoginFake() as fake:
        monkeypatch.setenv("OFFLOAD_OSLOGIN_ENDPOINT", fake.endpoint)
        yield fake
