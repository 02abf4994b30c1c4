"""`workstation`: a Cloud Workstation, reached over SSH through its TCP tunnel as a proxy command.

gcloud's workstation tunnel only listens on a local port, so the proxy command is offload's own relay
(`python -m offload.runtime.tunnel`), which starts that tunnel and speaks SSH on stdin and stdout.

A workstation stops itself when idle; `offload run` starts it through the Cloud Workstations API and waits until it
runs, as it wakes a GCE VM, and every other command says it is stopped. A new workstation does not hold the
developer's key, and offload logs in by key only: when the workstation refuses the key, offload installs the
public key once, into the persistent home's ~/.ssh/authorized_keys, through `gcloud workstations ssh` (gcloud's own
way in, which the tunnel's IAM check guards), and logs in again.
"""

from __future__ import annotations

import subprocess

from offload.errors import AuthFailed, CloudNotFound, ConfigError, OffloadError, WorkerUnreachable
from offload.outputs import ProviderType
from offload.providers.base import WorkerStatus
from offload.providers.grants import GrantWait, is_grant_denial
from offload.providers.ssh import SshProvider
from offload.runtime.transport import Transport

WAKE_TIMEOUT = 600.0  # a workstation's start takes minutes, longer than a VM's
SSH_TIMEOUT = 300.0
KEY_INSTALL_TIMEOUT = 120.0
# Run by `gcloud workstations ssh` on the workstation; the keys arrive on stdin, one a line, and each is added once.
INSTALL_KEYS = ('umask 077 && mkdir -p ~/.ssh && touch ~/.ssh/authorized_keys && '
                'while read -r key; do grep -qxF "$key" ~/.ssh/authorized_keys || '
                'printf "%s\\n" "$key" >> ~/.ssh/authorized_keys; done')


def workstation_ssh_argv(workstation: str, *, project: str, region: str, cluster: str, config: str,
                         user: str) -> list[str]:
    """gcloud's own SSH login to a workstation, running INSTALL_KEYS."""
    return ["gcloud", "workstations", "ssh", f"--project={project}", f"--region={region}", f"--cluster={cluster}",
            f"--config={config}", f"--user={user}", f"--command={INSTALL_KEYS}", workstation]


class WorkstationProvider(SshProvider):
    kind = ProviderType.WORKSTATION

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003 (the base class's signature)
        super().__init__(*args, **kwargs)
        self._keys_installed = False
        self._last_state: str | None = None

    def _where(self) -> tuple[str, str, str, str]:
        r = self.record
        if not (r.project and r.region and r.workstation_cluster and r.workstation_config):
            raise ConfigError(f"worker {self.name} is a workstation but its outputs lack project, region, "
                              "workstation_cluster or workstation_config",
                              hint="run `offload fleet up` to refresh the stack outputs")
        return r.project, r.region, r.workstation_cluster, r.workstation_config

    @property
    def workstation(self) -> str:
        return self.record.instance or self.record.host

    def ssh_proxy_command(self) -> str:
        from offload.runtime.tunnel import workstation_proxy_command

        if self.record.proxy_command:
            return self.record.proxy_command
        return workstation_proxy_command(*self._where())

    def _api(self):
        from offload.providers.workstations_api import WorkstationsApi

        return WorkstationsApi(*self._where(), clock=self.options.clock, sleep=self.options.sleep)

    def grant_wait(self) -> GrantWait:
        return GrantWait(self.outputs.deployed_seconds_ago(), self.options.connect.notice,
                         clock=self.options.clock, sleep=self.options.sleep)

    def _open_host(self, wake: bool) -> Transport:
        proxy = self.ssh_proxy_command()  # a config error before any wait
        return self.grant_wait().run(lambda: self._open_host_once(proxy, wake),
                                     denial=lambda e: is_grant_denial(e) and not isinstance(e, AuthFailed))

    def _open_host_once(self, proxy: str, wake: bool) -> Transport:
        try:
            # Optimistic: a running workstation (or the agent's connection to it) answers without an API call.
            return self._dial(proxy)
        except WorkerUnreachable as first:
            if self.record.proxy_command:
                raise  # not a workstation offload knows how to ask about
            state = self._state()
            if state == "STATE_RUNNING":
                raise self._hinted(first) from None
        return self._wake(proxy, wake)

    def _state(self) -> str:
        try:
            self._last_state = self._api().get(self.workstation).state
        except CloudNotFound:
            raise WorkerUnreachable(self.name, f"workstation {self.workstation} of worker {self.name} does not "
                                    "exist", hint="run `offload fleet up`") from None
        return self._last_state

    def _wake(self, proxy: str, wake: bool) -> Transport:
        from offload.providers.workstations_api import STATES

        if not wake:
            state = STATES.get(self._last_state or "", "stopped")
            hint = ("`offload run` starts it, as does `offload fleet start`" if state == "stopped" else
                    "try again in a minute")
            raise WorkerUnreachable(self.name, f"worker {self.name} is {state}", hint=hint)
        self.start()
        deadline = self.options.clock() + SSH_TIMEOUT
        while True:
            try:
                return self._dial(proxy)
            except WorkerUnreachable as e:
                # A workstation that just reached RUNNING may take a moment to accept on its tunnel.
                if self.options.clock() >= deadline:
                    raise WorkerUnreachable(self.name, f"workstation {self.workstation} started but SSH did not "
                                            f"answer within {SSH_TIMEOUT:.0f}s: {e.message}") from None
                self.options.sleep(2)

    def _dial(self, proxy: str) -> Transport:
        """Log in; a refused key is installed once (see the module's docstring), then the login is tried again."""
        try:
            return self._connect(proxy_command=proxy)
        except AuthFailed:
            if self._keys_installed or self.record.proxy_command:
                raise
        self.install_key()
        return self._connect(proxy_command=proxy)

    def install_key(self) -> None:
        """Add the public keys this machine logs in with to the workstation user's ~/.ssh/authorized_keys, over
        `gcloud workstations ssh`. The keys travel on its stdin, never in an argv."""
        from offload.runtime.identity import public_keys

        project, region, cluster, config = self._where()
        keys = public_keys(self.options.connect.identity)
        self.options.connect.notice(f"installing your SSH public key on workstation {self.workstation} "
                                    "(once) with `gcloud workstations ssh`")
        argv = workstation_ssh_argv(self.workstation, project=project, region=region, cluster=cluster,
                                    config=config, user=self.record.user or "user")
        try:
            done = subprocess.run(argv, input="".join(f"{k}\n" for k in keys).encode(), capture_output=True,
                                  timeout=KEY_INSTALL_TIMEOUT, start_new_session=True)
        except FileNotFoundError:
            raise WorkerUnreachable(self.name, "cannot install your SSH key on the workstation: gcloud is not "
                                    "installed", hint="install the Google Cloud CLI, or add the key to "
                                    "~/.ssh/authorized_keys on the workstation yourself") from None
        except subprocess.TimeoutExpired:
            raise WorkerUnreachable(self.name, f"`gcloud workstations ssh` did not finish installing your SSH key "
                                    f"within {KEY_INSTALL_TIMEOUT:.0f}s") from None
        if done.returncode != 0:
            from offload.runtime.connection import telling_line

            said = telling_line(done.stderr.decode("utf-8", "replace").splitlines()) or f"exit {done.returncode}"
            raise AuthFailed(self.name, f"cannot install your SSH key on workstation {self.workstation} with "
                             f"`gcloud workstations ssh`: {said}",
                             hint="check `gcloud auth login`, or add the key to ~/.ssh/authorized_keys there")
        self._keys_installed = True

    def _hinted(self, e: WorkerUnreachable) -> WorkerUnreachable:
        if e.hint is None or "proxy" in e.message:
            e.hint = "check `gcloud auth login` and that you hold Cloud Workstations User on the workstation"
        return e

    def get_status(self) -> WorkerStatus:
        from offload.providers.workstations_api import STATES

        if self.record.proxy_command:
            return super().get_status()
        try:
            state = self._state()
        except OffloadError as e:
            return WorkerStatus(self.name, self.kind.value, "unknown", self.record.machine_type,
                                self.record.hourly_cost_usd, error=e.line())
        return WorkerStatus(self.name, self.kind.value, STATES.get(state, "unknown"), self.record.machine_type,
                            self.record.hourly_cost_usd)

    def start(self) -> None:
        self.options.progress(f"starting workstation {self.workstation}")
        self._last_state = self._api().start(self.workstation, timeout=WAKE_TIMEOUT).state

    def stop(self) -> None:
        self.options.progress(f"stopping workstation {self.workstation}")
        self._last_state = self._api().stop(self.workstation, timeout=WAKE_TIMEOUT).state
