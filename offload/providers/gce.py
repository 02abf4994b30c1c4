"""`gce-linux` and `gce-cos`: private GCE VMs, woken through the Compute API and reached over SSH.

The direct internal address is tried first; an IAP tunnel is the fallback, or the choice with --iap.
Host keys come from the instance's guest attributes (an authenticated API), not from first use.
The login name is OS Login's: when a login is refused, the developer's key is registered with their OS Login
profile and the profile's POSIX name is used (and remembered, so later logins need no API call).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from offload.errors import (AuthFailed, CloudApiError, CloudNotFound, CloudPermissionDenied, ConfigError,
                            HostKeyMismatch, IapDenied, OffloadError, WorkerUnreachable)
from offload.outputs import ProviderType
from offload.paths import cache_dir
from offload.providers.base import WorkerStatus
from offload.providers.grants import GrantWait, is_grant_denial
from offload.providers.ssh import SshProvider
from offload.runtime import agent, user_ssh_config
from offload.runtime.transport import Transport

WAKE_TIMEOUT = 300.0
# A key just imported to OS Login takes a few seconds to reach the instance.
LOGIN_PROPAGATION_TIMEOUT = 30.0
IAP = "iap"
# What gcloud's IAP tunnel says when IAP refuses it: "Error while connecting [4033: 'not authorized']".
IAP_NOT_AUTHORIZED = "4033"
DIRECT_TIMEOUT = 5.0
_STOPPED = {"TERMINATED", "STOPPED", "SUSPENDED"}
_STATE = {"RUNNING": "running", "TERMINATED": "stopped", "STOPPED": "stopped", "SUSPENDED": "stopped",
          "STOPPING": "stopping", "SUSPENDING": "stopping", "PROVISIONING": "starting", "STAGING": "starting",
          "REPAIRING": "starting"}


def _login_cache() -> Path:
    return cache_dir() / "oslogin.json"


def remembered_login(email: str, project: str) -> str | None:
    """The OS Login name last read for EMAIL in PROJECT, if this machine registered a key for it."""
    try:
        data = json.loads(_login_cache().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = data.get(f"{email} {project}") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def remember_login(email: str, project: str, username: str) -> None:
    path = _login_cache()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        data = data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        data = {}
    data[f"{email} {project}"] = username
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


class GceLinuxProvider(SshProvider):
    kind = ProviderType.GCE_LINUX

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003 (the base class's signature)
        super().__init__(*args, **kwargs)
        # Whether this worker's keys were registered with OS Login during this session (once is enough).
        self._os_login_done = False
        # The instance's status as the Compute API last gave it (None: not asked yet).
        self._last_status: str | None = None
        self._warned_first_use = False
        r, developer = self.record, self.outputs.developer
        # The name the stack guessed, which its boot put in the docker group (gce-cos).
        self.guessed_user = r.user
        if developer and r.project:
            name = remembered_login(developer, r.project)
            if name and name != r.user:
                self.record = dataclasses.replace(r, user=name)

    def register_os_login(self) -> str:
        """Register the keys this machine logs in with on the developer's OS Login profile, and log in as the
        name the profile gives (the guess in the outputs may differ). Returns that name."""
        from offload.providers.oslogin_api import OsLoginApi
        from offload.runtime.identity import public_keys

        r, developer = self.record, self.outputs.developer
        if not developer or not r.project:
            raise ConfigError(f"worker {self.name} has no developer or project in its stack outputs, so its OS "
                              "Login name cannot be looked up")
        self.options.progress(f"registering your SSH key with OS Login for {developer}")
        profile = OsLoginApi(developer, r.project).import_keys(public_keys(self.options.connect.identity))
        if not profile.username:
            raise CloudApiError(self.name, f"OS Login has no POSIX account for {developer} in project {r.project}",
                                hint="ask an admin to check that OS Login is enabled for your account")
        remember_login(developer, r.project, profile.username)
        self.record = dataclasses.replace(r, user=profile.username)
        self._os_login_done = True
        return profile.username

    def _dial_login(self, keys: list[str], routes: list[str | None], *, fallback: bool = False) -> Transport:
        """_dial, and when the login is refused (an unknown key, or a name OS Login does not give), register
        with OS Login once and dial again while the key propagates."""
        try:
            return self._dial(keys, routes, fallback=fallback)
        except AuthFailed:
            if self._os_login_done or not self.outputs.developer:
                raise
        self.register_os_login()
        deadline = self.options.clock() + LOGIN_PROPAGATION_TIMEOUT
        while True:
            try:
                return self._dial(keys, routes)
            except AuthFailed:
                if self.options.clock() >= deadline:
                    raise
                self.options.sleep(1)

    def _api(self):
        from offload.providers.gce_api import ComputeApi

        r = self.record
        if not (r.instance and r.project and r.zone):
            raise ConfigError(f"worker {self.name} is {self.kind.value} but its outputs lack instance, project "
                              "or zone")
        return ComputeApi(r.project, r.zone)

    def published_host_keys(self) -> list[str]:
        """The host keys the instance publishes in its guest attributes (an authenticated API, not the network
        path being verified); a CloudApiError when they cannot be read."""
        return self._api().host_keys(self.record.instance or "")

    def _trusted_keys(self, *, refresh: bool = False) -> list[str]:
        """Keys from the managed known_hosts, else from guest attributes (then remembered). Keys pinned in
        the outputs need neither: they are the strongest trust there is, and cost no API call."""
        if self.record.host_keys:
            return []
        known = self.options.connect.known_hosts
        name = user_ssh_config.known_name(self.record, agent.host_config)  # parsed by the agent, on every dial
        remembered = known.lookup(name)
        if remembered and not refresh:
            return remembered
        try:
            keys = self.published_host_keys()
        except CloudApiError as e:
            if isinstance(e, CloudPermissionDenied) and self.grant_wait().fresh:
                raise  # a grant of the new stack on its way: waited for, not a reason to trust the network
            if not remembered and not self._strict() and not self._warned_first_use:
                # Said once, and before the key's fingerprint, which the first-use warning gives.
                self._warned_first_use = True
                self.options.connect.notice(f"warning: cannot read the host keys of worker {self.name} from its "
                                            f"guest attributes ({e.message}); falling back to trust on first use")
            else:
                self.options.progress(f"cannot read host keys of {self.name} from guest attributes: {e.message}")
            return remembered
        if keys and refresh:
            known.replace(name, keys)
        for key in keys if not refresh else ():
            known.add(name, key)
        return keys or remembered

    def _strict(self) -> bool:
        return bool(self.options.connect.strict_host_keys or self.record.strict_host_keys)

    def grant_wait(self) -> GrantWait:
        """The wait for this stack's new IAM grants (a no-op unless the stack was deployed minutes ago)."""
        return GrantWait(self.outputs.deployed_seconds_ago(), self.options.connect.notice,
                         clock=self.options.clock, sleep=self.options.sleep)

    def _grant_denial(self, e: OffloadError) -> bool:
        # A refused login is OS Login's grant only once OS Login holds the key (else the key is the problem).
        return is_grant_denial(e) and (not isinstance(e, AuthFailed) or self._os_login_done)

    def trust_host_keys(self) -> list[str]:
        """Pinned keys into the managed known_hosts; without them, the keys the instance publishes (once none
        is known). A CloudApiError when none is known and the API cannot tell."""
        known = self.options.connect.known_hosts
        name = user_ssh_config.known_name(self.record)
        if self.record.host_keys or known.lookup(name):
            return super().trust_host_keys()
        for key in self.published_host_keys():
            known.add(name, key)
        return known.lookup(name)

    def ssh_proxy_command(self) -> str | None:
        if self.options.via_iap and not self.record.proxy_command:
            return self._iap()
        return self.record.proxy_command

    def _iap(self) -> str:
        from offload.runtime.iap import iap_proxy_command

        return iap_proxy_command(self.record)

    def _routes(self) -> list[str | None]:
        """Proxy commands to try in order; None is the direct internal address, IAP the tunnel (built only
        when it is tried)."""
        if self.record.proxy_command:
            return [self.record.proxy_command]
        if self.options.via_iap:
            return [IAP]
        return [None, IAP]

    def _dial(self, keys: list[str], routes: list[str | None], *, fallback: bool = False) -> Transport:
        """The first route that answers. The direct address gets DIRECT_TIMEOUT when a tunnel follows it (in
        ROUTES, or as the FALLBACK the caller tries next); each dial gets its own timeout, since the options are
        shared by every worker of the fleet."""
        full = self.options.connect.connect_timeout
        last: WorkerUnreachable | None = None
        for i, route in enumerate(routes):
            more = i + 1 < len(routes) or fallback
            timeout = min(full, DIRECT_TIMEOUT) if route is None and more else full
            try:
                return self._dial_checked(keys, route, timeout)
            except WorkerUnreachable as e:
                last = e
                if i + 1 < len(routes):
                    self.options.progress(f"{self.name} is not reachable directly; trying an IAP tunnel")
        assert last is not None
        raise last

    def _dial_checked(self, keys: list[str], route: str | None, timeout: float) -> Transport:
        proxy = self._iap() if route == IAP else route
        try:
            return self._connect(extra_keys=keys, proxy_command=proxy, timeout=timeout)
        except WorkerUnreachable as e:
            if route == IAP and IAP_NOT_AUTHORIZED in e.message:
                raise IapDenied(self.name, e.message, hint="check that you hold roles/iap.tunnelResourceAccessor "
                                "on the instance (the stack grants it to offload:developer)") from None
            raise
        except HostKeyMismatch:
            # A rebuilt instance publishes its new keys through the API; trust those, never the wire.
            fresh = self._trusted_keys(refresh=True)
            if not fresh or set(fresh) == set(keys):
                raise
            return self._connect(extra_keys=fresh, proxy_command=proxy, timeout=timeout)

    def _open_host(self, wake: bool) -> Transport:
        return self.grant_wait().run(lambda: self._open_host_once(wake), denial=self._grant_denial)

    def _open_host_once(self, wake: bool) -> Transport:
        keys = self._trusted_keys()
        routes = self._routes()
        if self._last_status in _STOPPED:
            # get_status already asked the API: waking beats waiting for a dial that cannot answer.
            return self._wake(routes, wake)
        try:
            # Optimistic: a warm worker answers on the first route, without any API call.
            return self._dial_login(keys, routes[:1], fallback=len(routes) > 1)
        except WorkerUnreachable as first:
            status = self._instance_status()
            if status == "MISSING":
                raise WorkerUnreachable(self.name, f"instance {self.record.instance} of worker {self.name} does "
                                        "not exist", hint="run `offload fleet up`") from None
            if status == "RUNNING":
                if len(routes) == 1:
                    raise
                return self._dial_login(keys, routes[1:])
            self._last_status = status
        return self._wake(routes, wake)

    def _wake(self, routes: list[str | None], wake: bool) -> Transport:
        if not wake:
            state = _STATE.get(self._last_status or "", (self._last_status or "stopped").lower())
            hint = ("`offload run` wakes it, as does `offload fleet start`" if state == "stopped" else
                    "try again in a minute")
            raise WorkerUnreachable(self.name, f"worker {self.name} is {state}", hint=hint)
        self.start()
        return self._wait_for_ssh(routes)

    def _wait_for_ssh(self, routes: list[str | None]) -> Transport:
        deadline = self.options.clock() + WAKE_TIMEOUT
        last: WorkerUnreachable | None = None
        while self.options.clock() < deadline:
            try:
                return self._dial_login(self._trusted_keys(refresh=True), routes)
            except WorkerUnreachable as e:
                # A booting instance may refuse logins until OS Login's user lookup is up: keep trying.
                last = e
                self.options.sleep(1)
        raise WorkerUnreachable(self.name, f"worker {self.name} started but SSH did not answer within "
                                f"{WAKE_TIMEOUT:.0f}s: {last.message if last else 'no answer'}")

    def _instance_status(self) -> str:
        try:
            return self._api().get(self.record.instance or "").status
        except CloudNotFound:
            return "MISSING"

    def get_status(self) -> WorkerStatus:
        try:
            info = self._api().get(self.record.instance or "")
        except CloudNotFound:
            return WorkerStatus(self.name, self.kind.value, "missing", self.record.machine_type,
                                self.record.hourly_cost_usd)
        except CloudApiError as e:
            return WorkerStatus(self.name, self.kind.value, "unknown", self.record.machine_type,
                                self.record.hourly_cost_usd, error=e.line())
        from offload.pricing import hourly_cost

        self._last_status = info.status
        machine = info.machine_type or self.record.machine_type
        cost = hourly_cost(machine) if machine else None
        state = _STATE.get(info.status, info.status.lower())
        return WorkerStatus(self.name, self.kind.value, state, machine,
                            cost if cost is not None else self.record.hourly_cost_usd,
                            idle_stop_in_minutes=self._idle_left() if state == "running" else None)

    def _idle_left(self) -> float | None:
        """Minutes until the idle stop, as the worker's own idle timer publishes them in guest attributes."""
        try:
            value = self._api().guest_attributes(self.record.instance or "", "offload").get("minutes-until-stop")
        except CloudApiError:
            return None
        try:
            return float(value) if value is not None else None
        except ValueError:
            return None

    def start(self) -> None:
        self.options.progress(f"waking {self.name}")
        info = self._api().start(self.record.instance or "", wait=True, timeout=WAKE_TIMEOUT)
        self._last_status = info.status

    def stop(self) -> None:
        self.options.progress(f"stopping {self.name}")
        info = self._api().stop(self.record.instance or "", wait=True, timeout=WAKE_TIMEOUT)
        self._last_status = info.status


class GceCosProvider(GceLinuxProvider):
    """Container-Optimized OS: SSH to the host, jobs wrapped in `docker exec` into the worker container."""

    kind = ProviderType.GCE_COS
    # The systemd unit that owns the worker container on a COS worker (offload/infra/cloudinit.py).
    WORKER_UNIT = "offload-worker.service"

    def docker_command(self) -> list[str]:
        """The boot lists the stack's guess of the OS Login name in the docker group. A login under another name
        (OS Login chose it) is not a member, but is an OS Login admin with sudo: its docker client runs that way."""
        if self.guessed_user and self.record.user and self.record.user != self.guessed_user:
            return ["sudo", "-n", "docker"]
        return ["docker"]

    def heal_container(self) -> None:
        """Restart the worker container's unit, which pulls with root's registry credentials and runs it on the
        mounted disk; a host without that unit (older boot config) is healed as any container host."""
        from offload.runtime.container import heal_by_unit

        if not (self.record.container and self._host is not None and self._waking):
            return super().heal_container()
        done = heal_by_unit(self._host, self.record.container, self.WORKER_UNIT, docker=self.docker_command())
        if done is None:
            return super().heal_container()
        self.options.progress(f"worker container {self.record.container} was {done}")
