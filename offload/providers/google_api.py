"""What offload's Google Cloud clients (Compute, OS Login) share: how a client is made, and the one translator of
their exceptions into a one-line CloudApiError that says what to do next (CloudNotFound for the API's 404 and
CloudPermissionDenied for its 401 and 403, so callers tell a missing resource or a missing grant by its class).

The google-cloud libraries cost seconds to import, so they are imported inside the calls, never at module import.
Credentials are Application Default Credentials; with the API's endpoint setting (an emulator or a test fake) the
client talks plain REST to that endpoint without credentials.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from offload.errors import CloudApiError, CloudNotFound, CloudPermissionDenied, CloudServiceDisabled

if TYPE_CHECKING:
    import requests

LOGIN_HINT = "run `gcloud auth application-default login`"
_SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
# "GET https://compute.googleapis.com/...: The resource ... was not found" -> the part after the URL.
_HTTP_PREFIX = re.compile(r"^(GET|POST|PUT|PATCH|DELETE) \S+: ")


@dataclass(frozen=True)
class GoogleApi:
    """One Google Cloud API as offload calls it and speaks of its failures."""

    name: str                 # "Compute API"
    host: str                 # its public host, named when it cannot be reached
    endpoint_env: str         # the setting that points offload at an emulator or a fake instead
    endpoint: str | None      # that setting's value, when set
    login_hint: str           # how to get credentials the API accepts
    not_found_hint: str
    denied_hint: str
    where: str = ""           # where its resources live ("project P zone Z"), for not-found and denied messages

    def client_args(self) -> dict[str, Any]:
        """Keyword arguments for the API's client: anonymous plain REST to the endpoint setting when it is set,
        else Application Default Credentials."""
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

    def url(self, path: str) -> str:
        """PATH ('/v1/...') on the endpoint setting, else on the API's public host."""
        return f"{(self.endpoint or f'https://{self.host}').rstrip('/')}{path}"

    def session(self) -> "requests.Session":
        """An HTTP session for an API offload calls as plain REST (no client library of it is installed): without
        credentials to the endpoint setting when it is set, else authorized by Application Default Credentials."""
        import requests

        if self.endpoint:
            return requests.Session()
        from google.auth.transport.requests import AuthorizedSession

        return AuthorizedSession(self.client_args()["credentials"])

    @staticmethod
    def raise_for_status(response: "requests.Response") -> None:
        """Raise the google-api-core exception for an HTTP error RESPONSE (inside `errors()`, to translate it)."""
        if response.status_code >= 400:
            from google.api_core import exceptions

            raise exceptions.from_http_response(response)

    @contextlib.contextmanager
    def errors(self, action: str, subject: str) -> Iterator[None]:
        """Turn client and auth exceptions raised inside into a one-line CloudApiError about SUBJECT (the worker
        or the developer it concerns), worded `cannot ACTION SUBJECT: ...`."""
        import google.auth.exceptions as auth_errors
        import requests
        from google.api_core import exceptions

        cannot = f"cannot {action} {subject}"
        where = f" in {self.where}" if self.where else ""
        try:
            yield
        except auth_errors.DefaultCredentialsError:
            raise CloudApiError(subject, f"{cannot}: no Google Cloud credentials found", hint=self.login_hint) from None
        except auth_errors.RefreshError as e:
            raise CloudApiError(subject, one_line(f"{cannot}: Google Cloud credentials could not be refreshed: "
                                                   f"{_first(e)}"), hint=self.login_hint) from None
        except exceptions.NotFound:
            raise CloudNotFound(subject, f"{cannot}: not found{where}", hint=self.not_found_hint) from None
        except exceptions.Forbidden as e:
            if e.reason == "SERVICE_DISABLED":
                service = (e.metadata or {}).get("service")
                consumer = (e.metadata or {}).get("consumer")
                fix = (f"gcloud services enable {service} --project {consumer.removeprefix('projects/')}"
                       if service and consumer else "enable the API it names")
                raise CloudServiceDisabled(subject, one_line(f"{cannot}: {service or 'an API'} is off"
                                                             f"{' in ' + consumer if consumer else ''}"),
                                           service=service, consumer=consumer, hint=fix) from None
            raise CloudPermissionDenied(subject, one_line(f"{cannot}: permission denied{where}: {_api_message(e)}"),
                                        hint=self.denied_hint) from None
        except exceptions.Unauthorized as e:
            raise CloudPermissionDenied(subject, one_line(f"{cannot}: permission denied{where}: {_api_message(e)}"),
                                        hint=self.denied_hint) from None
        except exceptions.RetryError as e:
            cause = _api_message(e.cause) if e.cause is not None else str(e)
            raise CloudApiError(subject, one_line(f"{cannot}: the {self.name} kept failing: {cause}"),
                                hint="retry in a minute") from None
        except exceptions.GoogleAPICallError as e:
            raise CloudApiError(subject, one_line(f"{cannot}: {e.code or ''} {_api_message(e)}")) from None
        except requests.exceptions.RequestException as e:
            raise CloudApiError(subject, one_line(f"{cannot}: cannot reach the {self.name} at "
                                                   f"{self.endpoint or self.host}: {type(e).__name__}"),
                                hint=f"check your network{' or ' + self.endpoint_env if self.endpoint else ''}"
                                ) from None


@dataclass(frozen=True)
class Credentials:
    """What Application Default Credentials are: whose (a user's, a service account's) and the quota project
    their calls are billed to."""

    kind: str                  # "user", "service account", or the credentials' class for other kinds
    account: str | None        # a service account's email; a user's is not in the file
    quota_project: str | None
    project: str | None        # the project they come from, when they say


def application_default_credentials() -> Credentials:
    """The Application Default Credentials, read locally (nothing is refreshed); a CloudApiError when there are
    none."""
    import google.auth
    import google.auth.exceptions as auth_errors

    warnings.filterwarnings("ignore", message="Your application has authenticated using end user credentials",
                            category=UserWarning)
    try:
        credentials, project = google.auth.default(scopes=_SCOPES)
    except auth_errors.DefaultCredentialsError:
        raise CloudApiError("credentials", "no Application Default Credentials found", hint=LOGIN_HINT) from None
    account = getattr(credentials, "service_account_email", None)
    module = type(credentials).__module__
    kind = ("user" if module == "google.oauth2.credentials" else
            "service account" if module == "google.oauth2.service_account" else type(credentials).__name__)
    return Credentials(kind, account if isinstance(account, str) and "@" in account else None,
                       getattr(credentials, "quota_project_id", None) or None, project or None)


def _api_message(e: BaseException) -> str:
    """The API's own message, without the request line the client puts before it."""
    message = getattr(e, "message", None) or str(e)
    return _HTTP_PREFIX.sub("", str(message))


def _first(e: BaseException) -> str:
    return str(e.args[0]) if e.args else str(e)


def one_line(text: str) -> str:
    """TEXT with every run of whitespace, newlines included, as one space."""
    return " ".join(text.split())
