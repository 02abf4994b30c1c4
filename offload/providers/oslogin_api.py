"""The two OS Login calls offload makes: read the developer's login profile, and register their SSH key.

OS Login chooses the POSIX name a developer logs in as, and it is not always the email with '_' for every other
character: external accounts get an `ext_` prefix, long names are cut, and admins may set names of their own.
So the runtime asks: `posixAccounts[].username` of the login profile is the name to log in with. A key that OS
Login does not hold is refused at the first login, so the developer's public key is imported to the profile.

Like the Compute API's, the client is imported inside the calls, and its credentials and errors are those of every
Google Cloud client of offload (offload/providers/google_api.py); with OFFLOAD_OSLOGIN_ENDPOINT set (a test fake)
the client talks plain REST to that endpoint without credentials.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from offload.errors import CloudApiError, ConfigError
from offload.providers.google_api import LOGIN_HINT, GoogleApi

if TYPE_CHECKING:
    from google.cloud import oslogin_v1

__all__ = ["OsLoginApi", "LoginProfile", "ENDPOINT_ENV"]

ENDPOINT_ENV = "OFFLOAD_OSLOGIN_ENDPOINT"
ADC_HINT = f"{LOGIN_HINT} as the stack's developer"
_EMAIL = re.compile(r"[^\s/@]+@[^\s/@]+")
_USERNAME = re.compile(r"[a-z_][a-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class LoginProfile:
    """What OS Login says about a user: the POSIX name for a project, and the keys it holds (as key lines)."""

    email: str
    username: str | None
    keys: tuple[str, ...] = ()

    def holds(self, key: str) -> bool:
        """Whether KEY ('type base64 [comment]') is among the profile's keys, comments aside."""
        return _key_id(key) in {_key_id(k) for k in self.keys}


class OsLoginApi:
    """One developer's OS Login profile, as seen from one project."""

    def __init__(self, email: str, project: str | None = None, *, timeout: float = 30.0) -> None:
        if not _EMAIL.fullmatch(email or ""):
            raise ConfigError(f"OS Login needs the developer's email; got {email!r}")
        self.email = email
        self.project = project
        self.timeout = timeout
        self.endpoint = os.environ.get(ENDPOINT_ENV) or None
        refused = f"{ADC_HINT}; a profile can only be changed by its own account"
        self._google = GoogleApi("OS Login API", "oslogin.googleapis.com", ENDPOINT_ENV, self.endpoint,
                                 login_hint=ADC_HINT, not_found_hint=refused, denied_hint=refused)

    @property
    def user(self) -> str:
        return f"users/{self.email}"

    def login_profile(self) -> LoginProfile:
        """The developer's login profile; its username is None until OS Login has made a POSIX account (the
        first key import for the project, or the first login, makes it)."""
        from google.cloud import oslogin_v1

        request = oslogin_v1.GetLoginProfileRequest(name=self.user, project_id=self.project or "")
        with self._google.errors("read the OS Login profile of", self.email):
            profile = self._client.get_login_profile(request=request, timeout=self.timeout)
        return self._profile(profile)

    def import_keys(self, keys: Sequence[str]) -> LoginProfile:
        """Register each of KEYS (public key lines) not yet on the profile; the profile afterwards."""
        from google.cloud import oslogin_v1
        from google.cloud.oslogin_v1 import common

        profile = self.login_profile()
        for key in keys:
            if profile.holds(key) and profile.username:
                continue
            request = oslogin_v1.ImportSshPublicKeyRequest(
                parent=self.user, ssh_public_key=common.SshPublicKey(key=_key_id(key)),
                project_id=self.project or "")
            with self._google.errors("register an SSH key with the OS Login profile of", self.email):
                response = self._client.import_ssh_public_key(request=request, timeout=self.timeout)
            profile = self._profile(response.login_profile)
        return profile

    # -- internals --------------------------------------------------------------------------------------

    def _profile(self, profile: "oslogin_v1.LoginProfile") -> LoginProfile:
        accounts = list(profile.posix_accounts)
        # The primary account is the one OS Login logs in with; a profile read for a project may list only that
        # project's account, which is the one to use there.
        chosen = next((a for a in accounts if a.primary), None) or next(
            (a for a in accounts if self.project and a.account_id == self.project), None) or (
            accounts[0] if accounts else None)
        username = chosen.username if chosen is not None else None
        if username is not None and not _USERNAME.fullmatch(username):
            raise CloudApiError(self.email, f"OS Login gave {self.email} the login name {username!r}, which is not "
                                            "a POSIX user name offload can use")
        keys = tuple(k.key for k in profile.ssh_public_keys.values() if k.key)
        return LoginProfile(self.email, username or None, keys)

    @cached_property
    def _client(self) -> "oslogin_v1.OsLoginServiceClient":
        from google.cloud import oslogin_v1

        return oslogin_v1.OsLoginServiceClient(**self._google.client_args())


def _key_id(key: str) -> str:
    """'type base64' of a public key line: OS Login compares keys without their comments."""
    parts = key.split()
    return " ".join(parts[:2]) if len(parts) >= 2 else key.strip()
