"""`local-docker`: a worker container on this machine, reached with `docker exec`, no SSH."""

from __future__ import annotations

import shutil

from offload.errors import UsageError
from offload.outputs import ProviderType
from offload.providers.base import WorkerProvider, WorkerStatus
from offload.runtime.transport import LocalTransport, Transport, check, login_environment


class LocalDockerProvider(WorkerProvider):
    kind = ProviderType.LOCAL_DOCKER

    def _open_host(self, wake: bool) -> Transport:
        if shutil.which("docker") is None:
            raise UsageError("the local-docker worker needs the docker CLI", hint="install Docker")
        if not self.record.container:
            raise UsageError(f"worker {self.name} is local-docker but names no container in the stack outputs")
        return LocalTransport(self.name, env=login_environment(docker=True))

    def get_status(self) -> WorkerStatus:
        from offload.runtime.container import container_state

        state = container_state(self.host, self.record.container or "")
        return WorkerStatus(self.name, self.kind.value, "running" if state == "running" else
                            ("missing" if state == "missing" else "stopped"), self.record.machine_type,
                            self.record.hourly_cost_usd)

    def stop(self) -> None:
        argv = ["docker", "stop", self.record.container or ""]
        check(self.host.run(argv, timeout=120), self.name, "stopping the worker container", argv)

    def start(self) -> None:
        self.ensure_ready(wake=True)
        self.heal_container()
