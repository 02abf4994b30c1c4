"""`gce-linux` and `gce-cos`: private GCE VMs, woken through the Compute API and reached over SSH.

The direct internal address is tried first; an IAP tunnel is the fallback, or the choice with --iap.
Host keys come from the instance's guest attributes (an authenticated API), not from first use.
"""

from __future__ import annotations

import time

from offload.errors import CloudApiError, ConfigError, HostKeyMismatch, WorkerUnreachable
from offload.outputs import ProviderType
from offload.providers.base import WorkerStatus
from offload.providers.ssh import SshProvider
from offload.runtime.hostkeys import host_id
from offload.runtime.transport import Transport

WAKE_TIMEOUT = 300.0
DIRECT_TIMEOUT = 5.0
_STOPPED = {"TERMINATED", "STOPPED", "SUSPENDED"}
_STATE = {"RUNNING": "running", "TERMINATED": "stopped", "STOPPED": "stopped", "SUSPENDED": "stopped",
          "STOPPING": "stopping", "SUSPENDING": "stopping", "PROVISIONING": "starting", "STAGING": "starting",
          "REPAIRING": "starting"}


class GceLinuxProvider(SshProvider):
    kind = ProviderType.GCE_LINUX

    def _api(self):
        from offload.providers.gce_api import ComputeApi

        r = self.record
        if not (r.instance and r.project and r.zone):
            raise ConfigError(f"worker {self.name} is {self.kind.value} but its outputs lack instance, project "
                              "or zone")
        return ComputeApi(r.project, r.zone)

    def _trusted_keys(self, *, refresh: bool = False) -> list[str]:
        """Keys from the managed known_hosts, else from guest attributes (then remembered)."""
        known = self.options.connect.known_hosts
        name = host_id(self.record.host, self.record.port)
        remembered = known.lookup(name)
        if remembered and not refresh:
            return remembered
        try:
            keys = self._api().host_keys(self.record.instance or "")
        except CloudApiError as e:
            self.options.progress(f"cannot read host keys of {self.name} from guest attributes: {e.message}")
            return remembered
        if keys:
            known.replace(name, keys) if refresh else [known.add(name, k) for k in keys]
        return keys or remembered

    def _iap(self) -> str:
        from offload.runtime.iap import iap_proxy_command

        return iap_proxy_command(self.record)

    def _dial(self, keys: list[str]) -> Transport:
        if self.record.proxy_command:
            return self._connect(extra_keys=keys)
        if self.options.via_iap:
            return self._connect(extra_keys=keys, proxy_command=self._iap())
        opts = self.options.connect
        full = opts.connect_timeout
        opts.connect_timeout = min(full, DIRECT_TIMEOUT)
        try:
            return self._connect(extra_keys=keys)
        except WorkerUnreachable as direct:
            if "refused the SSH login" in direct.message:
                raise
            self.options.progress(f"{self.name} is not reachable directly; trying an IAP tunnel")
        finally:
            opts.connect_timeout = full
        return self._connect(extra_keys=keys, proxy_command=self._iap())

    def _open_host(self) -> Transport:
        keys = self._trusted_keys()
        try:
            return self._dial_checked(keys)
        except WorkerUnreachable as first:
            state = self._instance_status()
            if state == "RUNNING":
                raise first
            self.start()
            return self._wait_for_ssh()

    def _dial_checked(self, keys: list[str]) -> Transport:
        try:
            return self._dial(keys)
        except HostKeyMismatch:
            # A rebuilt instance publishes its new keys through the API; trust those, never the wire.
            fresh = self._trusted_keys(refresh=True)
            if not fresh or set(fresh) == set(keys):
                raise
            return self._dial(fresh)

    def _wait_for_ssh(self) -> Transport:
        deadline = time.monotonic() + WAKE_TIMEOUT
        last: WorkerUnreachable | None = None
        while time.monotonic() < deadline:
            try:
                return self._dial_checked(self._trusted_keys(refresh=True))
            except WorkerUnreachable as e:
                last = e
                time.sleep(2)
        raise WorkerUnreachable(self.name, f"worker {self.name} started but SSH did not answer within "
                                f"{WAKE_TIMEOUT:.0f}s: {last.message if last else 'no answer'}")

    def _instance_status(self) -> str:
        try:
            return self._api().get(self.record.instance or "").status
        except CloudApiError as e:
            if "not found" in e.message.lower():
                return "MISSING"
            raise

    def get_status(self) -> WorkerStatus:
        try:
            info = self._api().get(self.record.instance or "")
        except CloudApiError as e:
            if "not found" in e.message.lower():
                return WorkerStatus(self.name, self.kind.value, "missing", self.record.machine_type,
                                    self.record.hourly_cost_usd)
            return WorkerStatus(self.name, self.kind.value, "unknown", self.record.machine_type,
                                self.record.hourly_cost_usd, error=e.line())
        from offload.pricing import hourly_cost

        machine = info.machine_type or self.record.machine_type
        cost = hourly_cost(machine) if machine else None
        return WorkerStatus(self.name, self.kind.value, _STATE.get(info.status, info.status.lower()), machine,
                            cost if cost is not None else self.record.hourly_cost_usd,
                            idle_stop_in_minutes=None)

    def start(self) -> None:
        self.options.progress(f"waking {self.name}")
        self._api().start(self.record.instance or "", wait=True, timeout=WAKE_TIMEOUT)

    def stop(self) -> None:
        self.options.progress(f"stopping {self.name}")
        self._api().stop(self.record.instance or "", wait=True, timeout=WAKE_TIMEOUT)


class GceCosProvider(GceLinuxProvider):
    """Container-Optimized OS: SSH to the host, jobs wrapped in `docker exec` into the worker container."""

    kind = ProviderType.GCE_COS
