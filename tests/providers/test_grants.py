"""New IAM grants on their way: a freshly deployed stack's denials are waited out, anything else fails at once.

The Compute API is the local fake answering 403 for the first calls; the worker is a real sshd. The wait's clock and
sleep are the test's own, so nothing here sleeps for real.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from offload.errors import (AuthFailed, CloudApiError, CloudPermissionDenied, HostKeyUnknown, IapDenied,
                            WorkerUnreachable)
from offload.outputs import ProviderType, StackOutputs, WorkerRecord
from offload.providers.base import ProviderOptions
from offload.providers.gce import GceLinuxProvider
from offload.providers.grants import FRESH_SECONDS, NOTICE, WAIT_SECONDS, GrantWait
from offload.runtime.connection import ConnectOptions, fingerprint
from offload.runtime.hostkeys import KnownHosts, host_id
from tests.fakes.compute_api import ComputeFake
from tests.workers import SshdWorker, sshd_record

DENIED = "Required 'compute.instances.getGuestAttributes' permission for 'projects/p/zones/us-west1-a/instances/w-0'"


class FakeTime:
    """A clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _failing(errors: list[Exception]):
    calls = []

    def attempt() -> str:
        calls.append(1)
        if errors:
            raise errors.pop(0)
        return "ok"

    return attempt, calls


def test_a_fresh_stacks_denials_are_retried_with_backoff_after_one_line() -> None:
    t, notices = FakeTime(), []
    wait = GrantWait(30.0, notices.append, clock=t.clock, sleep=t.sleep)
    attempt, calls = _failing([CloudPermissionDenied("w", "denied"), IapDenied("w", "4033"),
                               AuthFailed("w", "refused"), CloudPermissionDenied("w", "denied")])
    assert wait.run(attempt) == "ok"
    assert len(calls) == 5 and notices == [NOTICE]
    assert NOTICE == "waiting for new IAM grants to take effect (up to 5 min)"
    assert t.sleeps == [2.0, 4.0, 8.0, 16.0], "doubling pauses"


def test_the_wait_gives_up_after_about_five_minutes_with_the_last_denial() -> None:
    t = FakeTime()
    wait = GrantWait(0.0, lambda m: None, clock=t.clock, sleep=t.sleep)
    with pytest.raises(CloudPermissionDenied):
        wait.run(lambda: (_ for _ in ()).throw(CloudPermissionDenied("w", "still denied")))
    assert sum(t.sleeps) == pytest.approx(WAIT_SECONDS)
    assert max(t.sleeps) <= 20.0


@pytest.mark.parametrize("deployed_ago", [None, FRESH_SECONDS + 1])
def test_a_stack_deployed_long_ago_or_at_an_unknown_time_fails_at_once(deployed_ago: float | None) -> None:
    t, notices = FakeTime(), []
    attempt, calls = _failing([CloudPermissionDenied("w", "denied")])
    with pytest.raises(CloudPermissionDenied):
        GrantWait(deployed_ago, notices.append, clock=t.clock, sleep=t.sleep).run(attempt)
    assert (len(calls), notices, t.sleeps) == (1, [], [])


@pytest.mark.parametrize("error", [CloudApiError("w", "backend error"), WorkerUnreachable("w", "connection refused")])
def test_anything_but_a_denial_fails_at_once_even_when_fresh(error: Exception) -> None:
    t, notices = FakeTime(), []
    attempt, calls = _failing([error])
    with pytest.raises(type(error)):
        GrantWait(5.0, notices.append, clock=t.clock, sleep=t.sleep).run(attempt)
    assert (len(calls), notices, t.sleeps) == (1, [], [])


def _deployed(seconds_ago: float) -> str:
    return (datetime.now(timezone.utc) - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _gce(sshd_worker: SshdWorker, tmp_path: Path, deployed_at: str | None, t: FakeTime, notices: list[str],
         **record: object) -> GceLinuxProvider:
    worker = WorkerRecord.from_dict(sshd_record(sshd_worker, name="w-0", instance="w-0", project="p",
                                                zone="us-west1-a", host_keys=[], **record))
    outputs = StackOutputs(ProviderType.GCE_LINUX, "", (worker,), deployed_at=deployed_at)
    connect = ConnectOptions(identity=sshd_worker.key_path, known_hosts=KnownHosts(tmp_path / "known_hosts"),
                             notice=notices.append)
    return GceLinuxProvider(worker, outputs, ProviderOptions(connect=connect, clock=t.clock, sleep=t.sleep))


@pytest.fixture
def instance(compute_fake: ComputeFake, sshd_worker: SshdWorker, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OFFLOAD_PERSIST", "0")  # the provider's own connection, not the agent's
    return compute_fake.add("w-0", status="RUNNING", host_keys={"ssh-ed25519": sshd_worker.host_key.split()[1]})


def test_a_fresh_stack_waits_for_its_guest_attributes_grant_instead_of_trusting_on_first_use(
        instance, compute_fake: ComputeFake, sshd_worker: SshdWorker, tmp_path: Path) -> None:
    compute_fake.fail("GET", "/getGuestAttributes", 403, DENIED, times=3)
    t, notices = FakeTime(), []
    with _gce(sshd_worker, tmp_path, _deployed(20), t, notices) as provider:
        assert provider.exec(["echo", "in"]).text() == "in\n"
    assert notices == [NOTICE], "one line, and no trust on first use"
    assert len(compute_fake.calls("GET", "instances/w-0/getGuestAttributes")) == 4
    assert t.sleeps == [2.0, 4.0, 8.0]
    known = KnownHosts(tmp_path / "known_hosts").lookup(host_id(sshd_worker.host, sshd_worker.port))
    assert known == [sshd_worker.host_key], "the key the instance publishes"


def test_a_stack_deployed_long_ago_trusts_on_first_use_and_says_so_with_the_fingerprint(
        instance, compute_fake: ComputeFake, sshd_worker: SshdWorker, tmp_path: Path) -> None:
    compute_fake.fail("GET", "/getGuestAttributes", 403, DENIED)
    t, notices = FakeTime(), []
    with _gce(sshd_worker, tmp_path, _deployed(3600), t, notices) as provider:
        assert provider.exec(["echo", "in"]).text() == "in\n"
    assert t.sleeps == []
    assert len(notices) == 2, notices
    assert notices[0].startswith("warning: cannot read the host keys of worker w-0 from its guest attributes "
                                 "(cannot read host keys of w-0: permission denied")
    assert "falling back to trust on first use" in notices[0]
    assert notices[1].startswith(f"warning: trusting host key {fingerprint(sshd_worker.host_key)} of worker w-0 "
                                 f"({host_id(sshd_worker.host, sshd_worker.port)}) on first use")


@pytest.mark.parametrize("where", ["outputs", "options"])
def test_strict_host_keys_refuse_what_first_use_would_trust(
        instance, compute_fake: ComputeFake, sshd_worker: SshdWorker, tmp_path: Path, where: str) -> None:
    compute_fake.fail("GET", "/getGuestAttributes", 403, DENIED)
    t, notices = FakeTime(), []
    provider = _gce(sshd_worker, tmp_path, None, t, notices,
                    **({"strict_host_keys": True} if where == "outputs" else {}))
    provider.options.connect.strict_host_keys = where == "options"
    with provider, pytest.raises(HostKeyUnknown) as refused:
        provider.ensure_ready()
    line = refused.value.line()
    assert "\n" not in line and refused.value.exit_code == 4
    assert line.startswith(f"host key {fingerprint(sshd_worker.host_key)} of worker w-0 "
                           f"({host_id(sshd_worker.host, sshd_worker.port)}) is "
                           "not pinned, published or known, and strict host-key checking refuses to trust it")
    assert notices == []
    assert KnownHosts(tmp_path / "known_hosts").lookup(host_id(sshd_worker.host, sshd_worker.port)) == []


# gcloud's IAP tunnel as the test has it: refused with IAP's 4033 while the file COUNT holds a number above 0
# (counted down on each try), then a relay of stdin and stdout to the sshd on the port it is given.
IAP_GCLOUD = """\
import os, socket, sys, threading
count = os.environ["OFFLOAD_TEST_IAP_DENIALS"]
left = int(open(count).read())
if left > 0:
    open(count, "w").write(str(left - 1))
    print("ERROR: (gcloud.compute.start-iap-tunnel) Error while connecting [4033: 'not authorized'].",
          file=sys.stderr)
    sys.exit(1)
sock = socket.create_connection(("127.0.0.1", int(sys.argv[4])))
def up():
    while data := os.read(0, 65536):
        sock.sendall(data)
    sock.shutdown(socket.SHUT_WR)
threading.Thread(target=up, daemon=True).start()
while data := sock.recv(65536):
    os.write(1, data)
"""


def test_iaps_4033_of_a_fresh_stack_is_waited_out(instance, sshd_worker: SshdWorker, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import sys

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gcloud").write_text(f"#!{sys.executable}\n{IAP_GCLOUD}")
    (bin_dir / "gcloud").chmod(0o755)
    count = tmp_path / "denials"
    count.write_text("2")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("OFFLOAD_TEST_IAP_DENIALS", str(count))
    t, notices = FakeTime(), []
    provider = _gce(sshd_worker, tmp_path, _deployed(60), t, notices)
    provider.options.via_iap = True
    with provider:
        assert provider.exec(["echo", "through iap"]).text() == "through iap\n"
    assert count.read_text() == "0" and notices == [NOTICE] and t.sleeps == [2.0, 4.0]

    count.write_text("1")
    t, notices = FakeTime(), []
    stale = _gce(sshd_worker, tmp_path, _deployed(FRESH_SECONDS + 60), t, notices)
    stale.options.via_iap = True
    with stale, pytest.raises(IapDenied) as denied:
        stale.ensure_ready()
    assert "4033: 'not authorized'" in denied.value.line() and "roles/iap.tunnelResourceAccessor" in denied.value.line()
    assert (notices, t.sleeps) == ([], [])


def test_a_fresh_workstations_403_is_waited_out_and_the_workstation_started(
        sshd_worker: SshdWorker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import sys

    from offload.providers.workstation import WorkstationProvider
    from tests.e2e.test_workstation import TUNNEL
    from tests.fakes.workstations_api import WorkstationsFake

    flag = tmp_path / "running"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gcloud").write_text(f"#!{sys.executable}\n{TUNNEL}")
    (bin_dir / "gcloud").chmod(0o755)
    for name, value in (("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}"), ("OFFLOAD_PERSIST", "0"),
                        ("OFFLOAD_TEST_TUNNEL_TARGET", str(sshd_worker.port)),
                        ("OFFLOAD_TEST_TUNNEL_LOG", str(tmp_path / "tunnels")),
                        ("OFFLOAD_TEST_WS_RUNNING", str(flag))):
        monkeypatch.setenv(name, value)
    with WorkstationsFake(on_running=lambda ws: flag.touch()) as fake:
        monkeypatch.setenv("OFFLOAD_WORKSTATIONS_ENDPOINT", fake.endpoint)
        fake.add("ws-0", state="STATE_STOPPED")
        fake.fail("GET", "/workstations/ws-0", 403, "Permission 'workstations.workstations.get' denied", times=2)
        worker = WorkerRecord.from_dict(sshd_record(sshd_worker, name="ws-0", host="ws-0", port=22, instance="ws-0",
                                                    project="p", region="us-central1", workstation_cluster="c",
                                                    workstation_config="f"))
        outputs = StackOutputs(ProviderType.WORKSTATION, "", (worker,), deployed_at=_deployed(30))
        t, notices = FakeTime(), []
        connect = ConnectOptions(identity=sshd_worker.key_path, known_hosts=KnownHosts(tmp_path / "kh"),
                                 notice=notices.append)
        with WorkstationProvider(worker, outputs, ProviderOptions(connect=connect, clock=t.clock,
                                                                  sleep=t.sleep)) as provider:
            provider.ensure_ready(wake=True)
            assert provider.exec(["echo", "up"]).text() == "up\n"
        assert notices == [NOTICE]
        assert [c.target for c in fake.calls("POST")] == ["ws-0:start"]
        assert t.sleeps[:2] == [2.0, 4.0], "the two denials, then the start's polls"


def test_a_fresh_stacks_refused_os_login_is_waited_out_once_os_login_holds_the_key(
        instance, start_sshd, oslogin_fake, tmp_path: Path) -> None:
    """OS Login takes the key at once, but the login grant (roles/compute.osAdminLogin) has not reached the instance:
    the login is refused until it does (here: the sshd learns the key when the wait's first pause ends)."""
    worker = start_sshd(authorized_keys=[])
    oslogin_fake.add("dev@example.com", worker.user)
    public = " ".join(Path(f"{worker.key_path}.pub").read_text().split()[:2])

    class GrantArrives(FakeTime):
        def sleep(self, seconds: float) -> None:
            super().sleep(seconds)
            if seconds == 2.0:  # the grant wait's first pause, after OS Login's own 30 s for the key
                worker.authorized_keys_path.write_text(f"{public}\n")

    for deployed, ok in ((_deployed(10), True), (_deployed(FRESH_SECONDS + 60), False)):
        worker.authorized_keys_path.write_text("")
        t, notices = GrantArrives(), []
        record = WorkerRecord.from_dict(sshd_record(worker, name="w-0", instance="w-0", project="p",
                                                    zone="us-west1-a", host_keys=[worker.host_key],
                                                    user="dev_example_com"))
        outputs = StackOutputs(ProviderType.GCE_LINUX, "dev@example.com", (record,), deployed_at=deployed)
        connect = ConnectOptions(identity=worker.key_path, known_hosts=KnownHosts(tmp_path / "kh"),
                                 notice=notices.append)
        provider = GceLinuxProvider(record, outputs, ProviderOptions(connect=connect, clock=t.clock, sleep=t.sleep))
        with provider:
            if ok:
                assert provider.exec(["id", "-un"]).text() == f"{worker.user}\n"
                assert notices == [NOTICE]
            else:
                with pytest.raises(AuthFailed):
                    provider.ensure_ready()
                assert notices == [] and 2.0 not in t.sleeps
        assert sum(1 for s in t.sleeps if s == 1) >= 29, "OS Login's own wait for the key came first"
