"""The provider layer on its own: the factory, the shared verbs, and provisioning real workers."""

from __future__ import annotations

import inspect
import subprocess
from pathlib import Path

import pytest

from offload.outputs import ProviderType, StackOutputs, WorkerRecord
from offload.providers import WorkerProvider, provider_for
from offload.providers.gce import GceCosProvider, GceLinuxProvider
from offload.providers.local import LocalProvider
from offload.providers.local_docker import LocalDockerProvider
from offload.providers.ssh import SshProvider
from offload.providers.workstation import WorkstationProvider
from offload.runtime.connection import ConnectOptions
from offload.providers.base import ProviderOptions
from offload.runtime.hostkeys import KnownHosts
from offload.runtime.transport import ContainerTransport, SshTransport
from tests.fakes.compute_api import ComputeFake
from tests.workers import DockerWorker, SshDockerWorker, SshdWorker, docker_record, sshd_record

VERBS = ("provision", "ensure_ready", "exec", "sync", "launch", "get_status", "stop", "start", "attach", "close",
         "ssh_entry", "trust_host_keys")


@pytest.mark.parametrize(("kind", "cls"), [
    (ProviderType.GCE_COS, GceCosProvider), (ProviderType.GCE_LINUX, GceLinuxProvider),
    (ProviderType.WORKSTATION, WorkstationProvider), (ProviderType.LOCAL_DOCKER, LocalDockerProvider),
    (ProviderType.SSH, SshProvider), (ProviderType.LOCAL, LocalProvider),
])
def test_factory_picks_the_implementation_from_the_provider(kind: ProviderType, cls: type) -> None:
    record = WorkerRecord(name="w", host="10.0.0.9", workspace="/w", instance="i", project="p", zone="z")
    provider = provider_for(StackOutputs(kind, "dev@example.com", (record,)), record)
    assert type(provider) is cls and provider.kind is kind
    assert isinstance(provider, WorkerProvider) and not inspect.isabstract(cls)
    # Every provider has the same shape: each verb takes what the interface's verb takes.
    for verb in VERBS:
        assert (inspect.signature(getattr(cls, verb)).parameters
                == inspect.signature(getattr(WorkerProvider, verb)).parameters), verb


def _options(tmp_path: Path, key: Path) -> ProviderOptions:
    return ProviderOptions(connect=ConnectOptions(identity=key, known_hosts=KnownHosts(tmp_path / "kh")))


def test_ssh_provision_makes_the_workspace_over_one_connection(sshd_worker: SshdWorker, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OFFLOAD_PERSIST", "0")  # the provider's own connection, not the agent's
    record = WorkerRecord.from_dict(sshd_record(sshd_worker, workspace=f"{sshd_worker.workspace}/fresh"))
    outputs = StackOutputs(ProviderType.SSH, "d", (record,))
    before = sshd_worker.accepted_count()
    with provider_for(outputs, record, _options(tmp_path, sshd_worker.key_path)) as provider:
        provider.provision()
        assert isinstance(provider.transport, SshTransport)
        assert provider.exec(["ls", record.workspace]).text().split() == ["jobs", "repos", "trees"]
    assert sshd_worker.accepted_count() - before == 1


def test_containerized_ssh_worker_wraps_steps_in_docker_exec(ssh_docker_worker: SshDockerWorker,
                                                             tmp_path: Path) -> None:
    record = WorkerRecord.from_dict(sshd_record(ssh_docker_worker))
    outputs = StackOutputs(ProviderType.SSH, "d", (record,))
    with provider_for(outputs, record, _options(tmp_path, ssh_docker_worker.ssh.key_path)) as provider:
        assert isinstance(provider.transport, ContainerTransport)
        assert provider.transport.wrap(["true"]) == ["docker", "exec", "-i", ssh_docker_worker.container.name,
                                                     "true"]
        import socket

        here = socket.gethostname().encode()
        assert provider.host.run(["hostname"]).stdout.strip() == here
        assert provider.exec(["hostname"]).stdout.strip() not in (here, b"")


def test_local_docker_provision_creates_a_missing_container(docker_worker: DockerWorker, tmp_path: Path) -> None:
    name = f"{docker_worker.name}-made"
    record = WorkerRecord.from_dict(docker_record(docker_worker, name=name, container=name,
                                                  image=docker_worker.image,
                                                  workspace=str(tmp_path / "ws")))
    outputs = StackOutputs(ProviderType.LOCAL_DOCKER, "d", (record,))
    try:
        with provider_for(outputs, record) as provider:
            assert provider.get_status().state == "missing"
            provider.provision()
            assert provider.get_status().state == "running"
            assert provider.exec(["ls", record.workspace]).text().split() == ["cache", "home", "jobs", "repos", "trees"]
            provider.stop()
            assert provider.get_status().state == "stopped"
            provider.start()
            assert provider.get_status().state == "running"
        policy = subprocess.run(["docker", "inspect", "-f", "{{.HostConfig.RestartPolicy.Name}}", name],
                                capture_output=True, text=True).stdout.strip()
        assert policy == "always"
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def test_missing_container_without_an_image_is_a_clear_error(docker_worker: DockerWorker, tmp_path: Path) -> None:
    from offload.errors import WorkerError

    record = WorkerRecord.from_dict(docker_record(docker_worker, container="offload-no-such-container"))
    outputs = StackOutputs(ProviderType.LOCAL_DOCKER, "d", (record,))
    with provider_for(outputs, record) as provider:
        with pytest.raises(WorkerError, match="not running"):
            provider.exec(["true"])  # a read starts nothing
        with pytest.raises(WorkerError, match="missing .* no image"):
            provider.provision()


def test_a_gce_worker_is_missing_only_when_the_compute_api_says_404(compute_fake: ComputeFake) -> None:
    compute_fake.add("here")
    compute_fake.fail("GET", "/instances/here", 400, "Invalid value: the zone was not found in this project")
    gone = WorkerRecord(name="gone", host="10.0.0.9", workspace="/w", instance="gone", project="p",
                        zone="us-west1-a")
    here = WorkerRecord(name="here", host="10.0.0.8", workspace="/w", instance="here", project="p",
                        zone="us-west1-a")
    outputs = StackOutputs(ProviderType.GCE_LINUX, "dev@example.com", (gone, here))
    assert provider_for(outputs, gone).get_status().state == "missing"
    status = provider_for(outputs, here).get_status()
    assert status.state == "unknown" and "was not found in this project" in (status.error or "")
