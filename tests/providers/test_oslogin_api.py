"""The OS Login calls, made by the real google-cloud-os-login client against the local OS Login API fake."""

from __future__ import annotations

import pytest

from offload.errors import CloudApiError, ConfigError
from offload.providers.oslogin_api import OsLoginApi
from tests.fakes.oslogin_api import OsLoginFake

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGRldmVsb3Blci1rZXktb25lLWZvci1vcy1sb2dpbg dev@laptop"
OTHER = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGFub3RoZXIta2V5LWZvci10aGUtc2FtZS1kZXY"
LONG = "christopher.alexander.longname.smith@subdomain.corp.example.co.uk"


def test_the_login_name_is_read_from_the_profile_not_guessed(oslogin_fake: OsLoginFake) -> None:
    # An external account: OS Login's name carries the ext_ prefix that no guess from the email would give.
    oslogin_fake.add("dev@partner.example", "ext_dev_partner_example", has_account=True)
    profile = OsLoginApi("dev@partner.example", "p").login_profile()
    assert profile.username == "ext_dev_partner_example"
    (request,) = oslogin_fake.calls()
    assert (request.method, request.path) == ("GET", "/v1/users/dev@partner.example/loginProfile")
    assert request.query.get("projectId") == "p"


def test_importing_a_key_makes_the_account_and_returns_its_name(oslogin_fake: OsLoginFake) -> None:
    user = oslogin_fake.add(LONG, "christopher_alexander_longname_s")
    api = OsLoginApi(LONG, "p")
    assert api.login_profile().username is None
    profile = api.import_keys([KEY])
    assert profile.username == "christopher_alexander_longname_s"
    assert profile.holds(KEY) and not profile.holds(OTHER)
    (imported,) = oslogin_fake.calls("POST")
    assert imported.path == f"/v1/users/{LONG}:importSshPublicKey" and imported.query["projectId"] == "p"
    # The comment stays on this machine; OS Login gets the key itself.
    assert imported.body == {"key": " ".join(KEY.split()[:2])}
    assert list(user.keys.values()) == [" ".join(KEY.split()[:2])]


def test_a_key_the_profile_holds_is_not_imported_again(oslogin_fake: OsLoginFake) -> None:
    oslogin_fake.add("dev@example.com", "dev_example_com", has_account=True,
                     keys={"fp": " ".join(KEY.split()[:2])})
    profile = OsLoginApi("dev@example.com", "p").import_keys([KEY, OTHER])
    assert profile.username == "dev_example_com"
    assert [r.body["key"] for r in oslogin_fake.calls("POST")] == [OTHER]


def test_a_refusal_is_one_line_that_says_what_to_do(oslogin_fake: OsLoginFake) -> None:
    with pytest.raises(CloudApiError) as info:
        OsLoginApi("someone@example.com", "p").login_profile()
    line = info.value.line()
    assert "\n" not in line
    assert "cannot read the OS Login profile of someone@example.com" in line
    assert "gcloud auth application-default login" in line


def test_an_unusable_login_name_is_refused(oslogin_fake: OsLoginFake) -> None:
    oslogin_fake.add("dev@example.com", "bad name; rm -rf /", has_account=True)
    with pytest.raises(CloudApiError, match="not a POSIX user name"):
        OsLoginApi("dev@example.com", "p").login_profile()


def test_the_email_is_checked_before_any_call() -> None:
    with pytest.raises(ConfigError):
        OsLoginApi("users/../x", "p")
    with pytest.raises(ConfigError):
        OsLoginApi("dev@example.com\n", "p")
