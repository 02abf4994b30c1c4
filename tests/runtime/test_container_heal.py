"""Healing a COS worker's container goes through the systemd unit that owns it, never a `docker run` by hand."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from offload.errors import WorkerError
from offload.runtime.container import heal_by_unit
from offload.runtime.transport import LocalTransport


def _stub(bin_dir: Path, name: str, body: str, log: Path) -> None:
    path = bin_dir / name
    path.write_text(f'#!/bin/bash\necho "{name} $*" >> {log}\n{body}\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def host(tmp_path: Path) -> tuple[LocalTransport, Path, Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    log.touch()
    transport = LocalTransport("w0", env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    return transport, bin_dir, log


def test_the_unit_is_restarted_and_the_container_awaited(host: tuple[LocalTransport, Path, Path],
                                                        tmp_path: Path) -> None:
    transport, bin_dir, log = host
    inspected = tmp_path / "inspected"
    _stub(bin_dir, "systemctl", "exit 0", log)
    _stub(bin_dir, "sudo", '[ "$1" = -n ] && shift; exec "$@"', log)
    # The container appears on the second look, as it does while the unit pulls and starts it.
    _stub(bin_dir, "docker", f"""if [ -e {inspected} ]; then echo running; exit 0; fi
touch {inspected}; echo "Error: No such container: offload-worker" >&2; exit 1""", log)
    assert heal_by_unit(transport, "offload-worker", "offload-worker.service", poll=0.01) == "restarted"
    calls = log.read_text().splitlines()
    assert calls[:3] == ["systemctl cat offload-worker.service", "sudo -n systemctl restart offload-worker.service",
                         "systemctl restart offload-worker.service"]
    assert not any(c.startswith("docker run") for c in calls)


def test_a_host_without_the_unit_is_left_to_the_plain_heal(host: tuple[LocalTransport, Path, Path]) -> None:
    transport, bin_dir, log = host
    _stub(bin_dir, "systemctl", "exit 1", log)
    assert heal_by_unit(transport, "offload-worker", "offload-worker.service") is None
    assert log.read_text().splitlines() == ["systemctl cat offload-worker.service"]


def test_a_container_that_never_comes_back_is_one_clear_error(host: tuple[LocalTransport, Path, Path]) -> None:
    transport, bin_dir, log = host
    _stub(bin_dir, "systemctl", "exit 0", log)
    _stub(bin_dir, "sudo", '[ "$1" = -n ] && shift; exec "$@"', log)
    _stub(bin_dir, "docker", "echo exited", log)
    with pytest.raises(WorkerError) as info:
        heal_by_unit(transport, "offload-worker", "offload-worker.service", timeout=0.05, poll=0.01)
    assert "still exited" in info.value.line() and "journalctl -u offload-worker.service" in info.value.line()


def test_a_login_outside_the_docker_group_runs_docker_through_sudo(host: tuple[LocalTransport, Path, Path]) -> None:
    from offload.runtime.transport import ContainerTransport

    transport, bin_dir, log = host
    _stub(bin_dir, "sudo", '[ "$1" = -n ] && shift; exec "$@"', log)
    _stub(bin_dir, "docker", "echo inside", log)
    wrapped = ContainerTransport(transport, "offload-worker", docker=["sudo", "-n", "docker"])
    assert wrapped.run(["true"]).stdout == b"inside\n"
    assert log.read_text().splitlines() == ["sudo -n docker exec -i offload-worker true",
                                            "docker exec -i offload-worker true"]


def test_the_cos_provider_uses_sudo_only_for_a_name_the_boot_did_not_put_in_the_docker_group(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from offload.outputs import StackOutputs
    from offload.providers.gce import GceCosProvider, remember_login

    monkeypatch.setenv("OFFLOAD_CACHE_DIR", str(tmp_path / "cache"))
    record = {"name": "w0", "host": "10.0.0.2", "user": "dev_partner_example", "container": "offload-worker",
              "workspace": "/mnt/disks/data/offload", "instance": "w0", "project": "p", "zone": "us-west1-a"}
    outputs = StackOutputs.from_dict({"provider": "gce-cos", "developer": "dev@partner.example",
                                      "workers": [record]})
    assert GceCosProvider(outputs.workers[0], outputs).docker_command() == ["docker"]
    # OS Login gave this developer another name, remembered from an earlier login.
    remember_login("dev@partner.example", "p", "ext_dev_partner_example")
    provider = GceCosProvider(outputs.workers[0], outputs)
    assert provider.record.user == "ext_dev_partner_example"
    assert provider.docker_command() == ["sudo", "-n", "docker"]
