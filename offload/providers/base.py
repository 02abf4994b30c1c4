"""The WorkerProvider interface: the verbs every provider type implements, and what they share."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from offload.errors import OffloadError, UsageError, WorkerUnreachable
from offload.outputs import ProviderType, StackOutputs, WorkerRecord
from offload.runtime.connection import ConnectOptions
from offload.runtime.transport import ContainerTransport, Result, Sink, Step, Transport, check
from offload.worker.container import WorkerContainer
from offload.worker.layout import JobPaths, WorkerLayout

if TYPE_CHECKING:
    import threading

    from offload.runtime.meter import Meters
    from offload.runtime.snapshot import LargeFile, LocalRepository
    from offload.runtime.sync import Snapshot, SyncStats


@dataclass
class ProviderOptions:
    """Per-invocation choices that shape how a worker is reached."""

    connect: ConnectOptions = field(default_factory=ConnectOptions.from_env)
    via_iap: bool = False
    progress: Callable[[str], None] = lambda msg: None
    # How waits for the cloud (new grants, a waking workstation) read the time and pause; tests give their own.
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep

    @classmethod
    def from_env(cls, identity: Path | None = None, *, via_iap: bool = False,
                 progress: Callable[[str], None] | None = None, strict_host_keys: bool = False) -> "ProviderOptions":
        """IDENTITY (else OFFLOAD_SSH_KEY, ssh-agent or ~/.ssh/config) and the connect timeout from the
        environment; VIA_IAP reaches GCE workers through an IAP tunnel; STRICT_HOST_KEYS refuses unknown keys."""
        connect = ConnectOptions.from_env(identity)
        connect.strict_host_keys = strict_host_keys
        return cls(connect=connect, via_iap=via_iap, progress=progress or (lambda msg: None))


@dataclass(frozen=True)
class SshEntry:
    """How plain OpenSSH reaches a worker: what `offload ssh-config` writes for it."""

    name: str
    host: str
    port: int
    user: str | None
    known_hosts: Path
    proxy_command: str | None = None
    container: str | None = None
    identity_files: tuple[str, ...] = ()   # from ~/.ssh/config for an alias, used when no key is given


@dataclass
class WorkerStatus:
    """What `get_status` reports for one worker's machine (its jobs are the jobs layer's business)."""

    name: str
    provider: str
    state: str                      # running | stopped | missing | unreachable | unknown
    machine_type: str | None = None
    hourly_cost_usd: float | None = None
    idle_stop_in_minutes: float | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "provider": self.provider, "state": self.state,
            "machine_type": self.machine_type, "hourly_cost_usd": self.hourly_cost_usd,
            "idle_stop_in_minutes": self.idle_stop_in_minutes, "error": self.error,
        }


class WorkerProvider(ABC):
    """One worker of a stack, reached the way its provider type prescribes.

    Lifecycle per session: `ensure_ready()` once (connects and heals; `wake=True`, for a new job, also
    starts a stopped worker), then any number of steps over the same transport, then `close()`.
    """

    kind: ProviderType

    def __init__(self, record: WorkerRecord, outputs: StackOutputs, options: ProviderOptions | None = None) -> None:
        self.record = record
        self.outputs = outputs
        self.options = options or ProviderOptions()
        self._host: Transport | None = None
        self._job: Transport | None = None
        self._waking = False

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def workspace(self) -> str:
        return self.record.workspace

    @property
    def on_this_machine(self) -> bool:
        """The workspace is a directory of this machine (the local and local-docker workers)."""
        return self.kind in (ProviderType.LOCAL, ProviderType.LOCAL_DOCKER)

    @property
    def key(self) -> str:
        """Stable identity of this worker for the local snapshot cache."""
        return f"{self.kind.value}:{self.record.name}:{self.record.host}:{self.record.port}:{self.workspace}"

    def paths(self, job: str) -> JobPaths:
        return JobPaths(self.workspace, job)

    # --- verbs ---------------------------------------------------------------------------------

    def provision(self) -> None:
        """Make the worker usable for jobs: its workspace exists (and its container runs, where it has one)."""
        self.ensure_ready(wake=True)
        layout = WorkerLayout(self.workspace)
        argv = ["mkdir", "-p", layout.repos_dir, layout.trees_dir, layout.jobs_dir]
        check(self.exec(argv, timeout=60), self.name, "creating the workspace", argv)

    def ensure_ready(self, *, wake: bool = False) -> None:
        """Open the worker's transport (idempotent). Only with WAKE is a stopped worker (or worker container)
        started: reading a job's state never starts anything."""
        self._waking = self._waking or wake
        if self._job is None:
            self._host = self._open_host(wake)
            self._job = self._wrap(self._host)

    @abstractmethod
    def _open_host(self, wake: bool) -> Transport:
        """Open the transport to the worker's host, starting a stopped one when WAKE is true."""

    def _wrap(self, host: Transport) -> Transport:
        if self.record.container:
            return ContainerTransport(host, self.record.container, heal=self.heal_container,
                                      docker=self.docker_command())
        return host

    def docker_command(self) -> list[str]:
        """How this worker's login runs the host's docker client."""
        return ["docker"]

    def container_spec(self) -> WorkerContainer | None:
        """The spec to recreate the worker container from, when the outputs name its image."""
        r = self.record
        if not (r.container and r.image):
            return None
        return WorkerContainer(name=r.container, image=r.image, workspace=self.workspace,
                               owner=self.outputs.developer or None)

    def heal_container(self) -> None:
        """Start or recreate the worker container, when this session may start things; else say it is down."""
        from offload.runtime.container import heal_container

        if self.record.container and self._host is not None and not self._waking:
            raise WorkerUnreachable(self.name, f"the worker container {self.record.container} of worker "
                                    f"{self.name} is not running", hint="`offload run` starts it")
        if self.record.container and self._host is not None:
            done = heal_container(self._host, self.record.container, self.container_spec(), self.docker_command())
            if done != "running":
                self.options.progress(f"worker container {self.record.container} was {done}")

    @property
    def host(self) -> Transport:
        self.ensure_ready()
        assert self._host is not None
        return self._host

    @property
    def transport(self) -> Transport:
        """Where jobs run: the container when there is one, else the host."""
        self.ensure_ready()
        assert self._job is not None
        return self._job

    def exec(self, argv: Sequence[str], *, stdin: bytes | None = None, timeout: float | None = None) -> Result:
        return self.transport.run(argv, stdin=stdin, timeout=timeout)

    def exec_steps(self, steps: Sequence[Step]) -> list[Result]:
        """STEPS one after the other, sent together where the transport can (one round trip for all)."""
        from offload.runtime.transport import run_steps

        return run_steps(self.transport, steps)

    def stream(self, argv: Sequence[str], sink: Sink, *, stderr: Sink | None = None) -> int:
        return self.transport.stream(argv, sink, stderr=stderr)

    def sync(self, snapshot: "Snapshot", paths: JobPaths, depth: int | None = None,
             meters: "Meters | None" = None, then: Step | None = None, ahead: Sequence[str] = ()) -> "SyncStats":
        """Send the snapshot, with DEPTH commits of history where the worker lacks them (None: the worker
        record's `history_depth`, else 1), and lease the job a warm worktree of its repository
        (`SyncStats.worktree`). METERS count the bytes sent; THEN goes with it, and the blobs AHEAD (sent ahead,
        `send_ahead`) stay out of it (see `push_snapshot`)."""
        from offload.outputs import DEFAULT_HISTORY_DEPTH, parse_history_depth
        from offload.runtime.meter import unmetered
        from offload.runtime.sync import push_snapshot

        if depth is None:
            configured = self.record.history_depth
            depth = DEFAULT_HISTORY_DEPTH if configured is None else parse_history_depth(
                configured, f"workers[{self.name!r}].history_depth")
        return push_snapshot(self.transport, snapshot, paths, self.key, depth, meters or unmetered, then, ahead)

    def send_ahead(self, repo: "LocalRepository", files: "Sequence[LargeFile]", meters: "Meters | None" = None,
                   stop: "threading.Event | None" = None) -> list[str]:
        """Send FILES, large changed files of REPO's working tree, to this worker while their snapshot is taken
        (see `send_ahead`; STOP ends it); the blobs it stored. None on this machine, where nothing is faster than the
        sync."""
        from offload.runtime.meter import unmetered
        from offload.runtime.sync import send_ahead

        if self.on_this_machine:
            return []
        return send_ahead(self.transport, self.workspace, repo, self.key, files, meters or unmetered, stop)

    def launch(self, script: bytes, job: str) -> None:
        """Start a job: SCRIPT runs as `sh -s` in the job environment, so its data (secrets included) never
        appears in an argv."""
        self.check_launch(self.exec(["sh", "-s"], stdin=script, timeout=60), job)

    def launch_step(self, script: bytes, job: str) -> Step:
        """The step that starts a job in the worktree its sync leased it, to go with the sync (`sync`'s THEN):
        SCRIPT, a launch script built `leased`, runs as `sh -s WORKTREE` (its data on stdin, as `launch`'s)."""
        from offload.worker.scripts import worker_script

        return Step(["sh", "-c", worker_script("launch.sh"), "sh", self.workspace, job], script, 60)

    def check_launch(self, result: Result, job: str) -> None:
        """Raise the one-line error of a launch that failed."""
        check(result, self.name, f"starting job {job}")

    def get_status(self) -> WorkerStatus:
        """The machine's state, without a round trip where the provider can; "unknown" when only a
        connection would tell (the jobs layer then finds out)."""
        return WorkerStatus(self.name, self.kind.value, "unknown", self.record.machine_type,
                            self.record.hourly_cost_usd)

    def stop(self) -> None:
        raise UsageError(f"worker {self.name} ({self.kind.value}) cannot be stopped by offload")

    def start(self) -> None:
        raise UsageError(f"worker {self.name} ({self.kind.value}) cannot be started by offload")

    def attach(self, argv: Sequence[str]) -> int:
        return self.transport.interactive(argv)

    def ssh_entry(self) -> SshEntry | None:
        """How plain ssh reaches this worker; None for a worker reached without SSH."""
        return None

    def scan_host_key(self) -> str:
        """The host key the worker presents, read without logging in (for the user to confirm and pin)."""
        raise UsageError(f"worker {self.name} ({self.kind.value}) is not reached over SSH; it has no host key")

    def trust_host_keys(self) -> list[str]:
        """Make offload's known_hosts hold the keys this worker is trusted with, and return them ([] when
        none is known yet: the first connection will trust its key on first use)."""
        return []

    @property
    def connected(self) -> bool:
        """A transport is open (it may still have died since)."""
        return self._host is not None

    def revive(self, *, probe: bool = False) -> bool:
        """Drop the transport when it has died, so that the next step opens a new one. With PROBE, a connection
        that looks alive must also answer a round trip within the connect timeout (a network can die silently).
        Returns whether the transport was kept."""
        if self._host is None:
            return False
        ok = self._host.alive()
        if ok and probe:
            try:
                ok = self._host.run(["true"], timeout=self.options.connect.connect_timeout).ok
            except OffloadError:
                ok = False
        if not ok:
            self.close()
        return ok

    def close(self) -> None:
        host, self._host, self._job = self._host, None, None
        if host is not None:
            try:
                host.close()
            except OSError:  # closing a connection that already broke
                pass

    def __enter__(self) -> "WorkerProvider":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
