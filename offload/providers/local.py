"""`local`: this machine, a worktree and tmux, no container and no SSH."""

from __future__ import annotations

import shutil

from offload.errors import UsageError
from offload.outputs import ProviderType
from offload.providers.base import WorkerProvider, WorkerStatus
from offload.runtime.transport import LocalTransport, Transport


class LocalProvider(WorkerProvider):
    kind = ProviderType.LOCAL

    def _open_host(self, wake: bool) -> Transport:
        missing = [tool for tool in ("tmux", "git") if shutil.which(tool) is None]
        if missing:
            raise UsageError(f"the local worker needs {' and '.join(missing)} installed",
                             hint=f"e.g. sudo apt-get install -y {' '.join(missing)}")
        return LocalTransport(self.name)

    def get_status(self) -> WorkerStatus:
        return WorkerStatus(self.name, self.kind.value, "running", self.record.machine_type,
                            self.record.hourly_cost_usd)
