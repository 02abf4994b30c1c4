"""The live GCE calls, made by the real google-cloud-compute client against the local Compute API fake."""

from __future__ import annotations

import socket

import pytest

from offload.errors import CloudApiError, CloudNotFound, ConfigError
from offload.outputs import WorkerRecord
from offload.pricing import hourly_cost
from offload.providers.gce_api import ComputeApi, InstanceInfo, label_filter
from tests.fakes.compute_api import ComputeFake

ED25519 = "AAAAC3NzaC1lZDI1NTE5AAAAIG9mZmxvYWQtdGVzdC1ob3N0LWtleS1lZDI1NTE5"
RSA = "AAAAB3NzaC1yc2EAAAADAQABAAABAQC9"


def _api(**kw: float) -> ComputeApi:
    return ComputeApi("p", "us-west1-a", poll_interval=0.01, **kw)


def test_get_reads_status_machine_type_address_and_labels(compute_fake: ComputeFake) -> None:
    compute_fake.add("offload-dev-0", machine_type="n2-standard-8", network_ip="10.10.0.7",
                     labels={"purpose": "offload-worker", "owner": "dev_example_com"})
    info = _api().get("offload-dev-0")
    assert info == InstanceInfo(name="offload-dev-0", status="RUNNING", machine_type="n2-standard-8",
                                internal_ip="10.10.0.7",
                                labels={"purpose": "offload-worker", "owner": "dev_example_com"})
    assert info.running and not info.stopped
    assert info.hourly_cost == hourly_cost("n2-standard-8")
    assert [r.target for r in compute_fake.requests] == ["instances/offload-dev-0"]


def test_start_issues_start_then_polls_operation_and_instance_until_running(compute_fake: ComputeFake) -> None:
    compute_fake.transition_gets = 3
    compute_fake.operation_polls = 2
    compute_fake.add("w0", status="TERMINATED")
    info = _api().start("w0")
    assert info.status == "RUNNING"
    assert compute_fake.instances[("p", "us-west1-a", "w0")].status == "RUNNING"
    posts = compute_fake.calls("POST")
    assert [r.target for r in posts] == ["instances/w0/start"]
    op_polls = [r for r in compute_fake.calls("GET") if r.target.startswith("operations/")]
    assert len(op_polls) == 2, "the operation is polled on the configured endpoint until DONE"
    assert len(compute_fake.calls("GET", "instances/w0")) >= 4, "the instance is read until it is RUNNING"


def test_start_of_a_running_instance_changes_nothing(compute_fake: ComputeFake) -> None:
    compute_fake.add("w0")
    assert _api().start("w0").running
    assert compute_fake.calls("POST") == []


def test_start_resumes_a_suspended_instance(compute_fake: ComputeFake) -> None:
    compute_fake.add("w0", status="SUSPENDED")
    assert _api().start("w0").running
    assert [r.target for r in compute_fake.calls("POST")] == ["instances/w0/resume"]


def test_start_waits_for_a_stopping_instance_to_land_first(compute_fake: ComputeFake) -> None:
    inst = compute_fake.add("w0", status="STOPPING")
    inst.pending = ("TERMINATED", 2)
    assert _api().start("w0").running
    assert [r.target for r in compute_fake.calls("POST")] == ["instances/w0/start"]


def test_start_without_wait_returns_the_transitional_state(compute_fake: ComputeFake) -> None:
    compute_fake.transition_gets = 5
    compute_fake.add("w0", status="TERMINATED")
    assert _api().start("w0", wait=False).status == "STAGING"


def test_start_times_out_with_one_line(compute_fake: ComputeFake) -> None:
    compute_fake.transition_gets = 10_000
    compute_fake.operation_polls = 0
    compute_fake.add("w0", status="TERMINATED")
    with pytest.raises(CloudApiError) as e:
        _api().start("w0", timeout=0.3)
    assert e.value.worker == "w0"
    assert e.value.line() == ("cannot start instance w0: it is still STAGING after waiting "
                              "(check it with `offload fleet list` and retry)")


def test_a_failed_start_operation_is_one_line(compute_fake: ComputeFake) -> None:
    compute_fake.add("w0", status="TERMINATED",
                     start_error=("ZONE_RESOURCE_POOL_EXHAUSTED",
                                  "The zone 'projects/p/zones/us-west1-a' does not have enough resources\n"
                                  "available to fulfill the request."))
    with pytest.raises(CloudApiError) as e:
        _api().start("w0")
    assert e.value.line() == ("cannot start instance w0: ZONE_RESOURCE_POOL_EXHAUSTED: The zone "
                              "'projects/p/zones/us-west1-a' does not have enough resources available to fulfill "
                              "the request.")


def test_stop_polls_until_terminated(compute_fake: ComputeFake) -> None:
    compute_fake.transition_gets = 2
    compute_fake.add("w0")
    assert _api().stop("w0").status == "TERMINATED"
    assert [r.target for r in compute_fake.calls("POST")] == ["instances/w0/stop"]


def test_stop_without_wait_and_of_a_stopped_instance(compute_fake: ComputeFake) -> None:
    compute_fake.transition_gets = 5
    compute_fake.add("w0")
    compute_fake.add("w1", status="TERMINATED")
    assert _api().stop("w0", wait=False).status == "STOPPING"
    assert _api().stop("w1").status == "TERMINATED"
    assert [r.target for r in compute_fake.calls("POST")] == ["instances/w0/stop"]


def test_list_filters_on_labels(compute_fake: ComputeFake) -> None:
    compute_fake.add("a", labels={"purpose": "offload-worker", "owner": "dev_example_com"})
    compute_fake.add("b", labels={"purpose": "offload-worker", "owner": "someone_else"})
    compute_fake.add("c", labels={"purpose": "web"})
    compute_fake.add("d", zone="us-east1-b", labels={"purpose": "offload-worker", "owner": "dev_example_com"})
    api = _api()
    mine = api.list({"purpose": "offload-worker", "owner": "dev_example_com"})
    assert [i.name for i in mine] == ["a"]
    assert [i.name for i in api.list()] == ["a", "b", "c"]
    assert compute_fake.calls("GET", "instances")[0].query["filter"] == \
        'labels.owner = "dev_example_com" AND labels.purpose = "offload-worker"'


def test_label_filter_refuses_what_is_not_a_label() -> None:
    assert label_filter({}) == ""
    with pytest.raises(ConfigError):
        label_filter({"owner": 'x" OR name = "y'})
    for key, value in (("owner\n", "x"), ("owner", "x\n")):
        with pytest.raises(ConfigError):
            label_filter({key: value})


def test_host_keys_come_from_guest_attributes(compute_fake: ComputeFake) -> None:
    compute_fake.add("w0", host_keys={"ssh-ed25519": ED25519, "ssh-rsa": f"ssh-rsa {RSA}", "bogus": "!!"})
    assert _api().host_keys("w0") == [f"ssh-ed25519 {ED25519}", f"ssh-rsa {RSA}"]
    request = compute_fake.calls("GET", "instances/w0/getGuestAttributes")[0]
    assert request.query == {"queryPath": "hostkeys/"}


def test_host_keys_are_empty_until_published(compute_fake: ComputeFake) -> None:
    compute_fake.add("w0")
    assert _api().host_keys("w0") == []


def test_missing_instance_is_one_line_with_a_next_step(compute_fake: ComputeFake) -> None:
    with pytest.raises(CloudNotFound) as e:
        _api().get("gone")
    assert e.value.line() == ("cannot read gone: not found in project p zone us-west1-a "
                              "(check the stack outputs, or run `offload fleet up`)")


def test_not_found_is_the_apis_404_and_not_words_in_a_message(compute_fake: ComputeFake) -> None:
    """The client's NotFound (HTTP 404) is what makes a CloudNotFound; another failure whose message happens to
    say "not found" stays a plain CloudApiError."""
    compute_fake.add("w0", status="TERMINATED")
    compute_fake.fail("POST", "/instances/w0/start", 400, "The resource 'projects/p/global/images/x' was not found")
    with pytest.raises(CloudApiError) as e:
        _api().start("w0")
    assert not isinstance(e.value, CloudNotFound)
    assert "was not found" in e.value.message
    compute_fake.fail("GET", "/instances/w0", 404, "The resource 'projects/p/zones/us-west1-a/instances/w0' is gone")
    with pytest.raises(CloudNotFound):
        _api().get("w0")


def test_permission_denied_says_how_to_log_in(compute_fake: ComputeFake) -> None:
    compute_fake.add("w0", status="TERMINATED")
    compute_fake.fail("POST", "/instances/w0/start", 403,
                      "Required 'compute.instances.start' permission for 'projects/p/zones/us-west1-a/instances/w0'")
    with pytest.raises(CloudApiError) as e:
        _api().start("w0")
    line = e.value.line()
    assert "\n" not in line
    assert line.startswith("cannot start w0: permission denied in project p zone us-west1-a: Required "
                           "'compute.instances.start' permission")
    assert line.endswith("(run `gcloud auth application-default login` with an account allowed to manage "
                         "instances in p)")


def test_transient_read_failures_are_retried(compute_fake: ComputeFake) -> None:
    compute_fake.add("w0")
    compute_fake.fail("GET", "/instances/w0", 503, "Backend Error", times=2)
    assert _api().get("w0").running
    assert len(compute_fake.calls("GET", "instances/w0")) == 3


def test_unreachable_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("OFFLOAD_COMPUTE_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(CloudApiError) as e:
        _api().get("w0")
    assert e.value.line() == (f"cannot read w0: cannot reach the Compute API at http://127.0.0.1:{port}: "
                              f"ConnectionError (check your network or OFFLOAD_COMPUTE_ENDPOINT)")


def test_missing_credentials_say_how_to_log_in(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.delenv("OFFLOAD_COMPUTE_ENDPOINT", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    with pytest.raises(CloudApiError) as e:
        _api().get("w0")
    assert e.value.line() == ("cannot read w0: no Google Cloud credentials found "
                              "(run `gcloud auth application-default login`)")


def test_for_worker_needs_instance_project_and_zone() -> None:
    ssh = WorkerRecord(name="box", host="10.0.0.1", workspace="/srv/offload")
    with pytest.raises(ConfigError, match="no instance, project, zone"):
        ComputeApi.for_worker(ssh)
    gce = WorkerRecord(name="w", host="10.0.0.2", workspace="/w", instance="w", project="p", zone="us-west1-a")
    api = ComputeApi.for_worker(gce)
    assert (api.project, api.zone) == ("p", "us-west1-a")


@pytest.mark.parametrize(("machine_type", "cost"), [
    ("e2-standard-4", 0.134012),
    ("zones/us-west1-a/machineTypes/e2-standard-2", 0.067006),
    ("n2-standard-8", 0.388472),
    ("c3-standard-8", 0.41744),
    ("e2-medium", 0.033503),
    ("m1-megamem-96", None),
    ("custom-4-16384", None),
    ("e2-standard-4\n", None),
    (None, None),
])
def test_hourly_cost(machine_type: str | None, cost: float | None) -> None:
    assert hourly_cost(machine_type) == cost
