"""Fixtures for the whole suite: an isolated HOME for every test, and real sshd and Docker workers.

The workers are real: OpenSSH's sshd on loopback with its own host key and a dedicated login user, and
containers from `offload-worker:test` on a Docker engine this suite starts when none is running. All
temporary files live on tmpfs. Everything a fixture starts is stopped by PID at teardown.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import workers
from tests.workers import (
    CLEAN_ENV,
    SCRIPTS,
    SHM,
    SSHD,
    WORKER_IMAGE,
    WORKER_USER,
    ClientKey,
    DockerEngine,
    DockerWorker,
    SshDockerWorker,
    SshdWorker,
    TestbedError,
    WorkerUser,
    cleanup_user_processes,
    ensure_in_group,
    ensure_worker_user,
    generate_keypair,
    proc_alive,
    remove_stale_containers,
    run,
    stop_agents,
    stop_stale_sshd,
    tmux_dir_prefix,
)

BASETEMP_PREFIX = "offload-pytest-"
# Taken before any test patches the environment: infrastructure started later still sees the real one.
_ORIGINAL_ENV = dict(os.environ)
DOCKER_SETUP_TIMEOUT = 120
IMAGE_BUILD_TIMEOUT = 900

# Variables that would let the developer's own setup leak into a test.
_UNSET_EXACT = (
    "SSH_AUTH_SOCK", "SSH_AGENT_PID", "TMUX", "TMUX_PANE", "TMUX_TMPDIR",
    "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_RUNTIME_DIR",
    "GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CONFIG", "CLOUDSDK_CORE_PROJECT",
    "PULUMI_ACCESS_TOKEN", "PULUMI_BACKEND_URL", "PULUMI_CONFIG_PASSPHRASE", "PULUMI_CONFIG_PASSPHRASE_FILE",
    "PULUMI_HOME", "DOCKER_CONFIG",
)
_UNSET_PREFIXES = ("OFFLOAD_", "GIT_")


# --------------------------------------------------------------------------------------------------------------
# Session setup


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    # File creation on the root disk is ~70x slower than on tmpfs; keep every tmp_path on /dev/shm.
    if config.option.basetemp is None and SHM.is_dir():
        config.option.basetemp = str(SHM / f"{BASETEMP_PREFIX}{os.getpid()}")
    config.addinivalue_line("markers", "sshd: uses a real sshd worker (needs root and openssh-server)")
    config.addinivalue_line("markers", "docker: uses a real Docker engine and the offload-worker:test image")


_SSHD_FIXTURES = {"sshd_worker", "start_sshd", "ssh_docker_worker", "worker_user"}
_DOCKER_FIXTURES = {"docker_engine", "worker_image", "docker_worker", "start_docker_worker", "ssh_docker_worker"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests by the workers they use, so `-m "not sshd and not docker"` runs the fast ones."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & _SSHD_FIXTURES:
            item.add_marker(pytest.mark.sshd)
        if names & _DOCKER_FIXTURES:
            item.add_marker(pytest.mark.docker)


def _require(condition: bool, reason: str) -> None:
    """Skip when a worker cannot run here; under CI (CI=true) fail instead, so a broken setup is not green."""
    if condition:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"test worker unavailable in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def _owner_pid(path: str) -> int | None:
    """The pytest PID in a basetemp path such as /dev/shm/offload-pytest-1234/..., if there is one."""
    rest = path[len(str(SHM)) + 1:] if path.startswith(f"{SHM}/{BASETEMP_PREFIX}") else ""
    digits = rest[len(BASETEMP_PREFIX):].split("/", 1)[0]
    return int(digits) if digits.isdigit() else None


def _sweep_dead_sessions() -> None:
    """Stop sshd processes and remove tmpfs dirs that earlier, killed test sessions left behind."""
    stop_stale_sshd()
    me = os.getpid()
    for entry in SHM.glob(f"{BASETEMP_PREFIX}*"):
        owner = _owner_pid(str(entry))
        if owner is not None and owner != me and not proc_alive(owner):
            shutil.rmtree(entry, ignore_errors=True)
    for entry in SHM.glob("ot-*-*"):
        owner_text = entry.name.split("-")[1]
        if owner_text.isdigit() and int(owner_text) != me and not proc_alive(int(owner_text)):
            shutil.rmtree(entry, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _testbed_session(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[None]:
    """Clear what killed sessions left; at the end kill stray tmux servers and drop the tmpfs basetemp.

    Root's tmux servers started by tests (the `local` provider) carry the test's HOME, which is under the
    basetemp; the worker user's ones run with their cwd in a workspace under it.
    """
    _sweep_dead_sessions()
    basetemp = tmp_path_factory.getbasetemp()
    yield
    tmux_dirs = [str(p) for p in SHM.glob(f"{Path(tmux_dir_prefix()).name}*")]
    cleanup_user_processes(os.getuid(), homes_under=[str(basetemp)], under=[str(basetemp)], sockets_under=tmux_dirs,
                           tmux_only=True)
    try:
        user = pwd.getpwnam(WORKER_USER)
    except KeyError:
        pass
    else:
        cleanup_user_processes(user.pw_uid, under=[str(basetemp)], sockets_under=tmux_dirs)
    for d in tmux_dirs:
        shutil.rmtree(d, ignore_errors=True)
    if request.session.testsfailed == 0 and str(basetemp).startswith(f"{SHM}/{BASETEMP_PREFIX}"):
        shutil.rmtree(basetemp, ignore_errors=True)


# --------------------------------------------------------------------------------------------------------------
# Every test


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Give each test a fresh, empty HOME on tmpfs, so the developer's ~/.ssh/config, ~/.gitconfig, agent,
    offload settings and stack choice never reach it.

    Sets OFFLOAD_CONFIG_DIR and OFFLOAD_CACHE_DIR under that HOME (not created), TMPDIR to HOME/tmp, a
    private short TMUX_TMPDIR (so `tmux -L offload-<job>` never meets another test's or the developer's
    server), a git identity through GIT_AUTHOR_*/GIT_COMMITTER_* and GIT_CONFIG_NOSYSTEM=1. Removes
    SSH_AUTH_SOCK, every OFFLOAD_* and GIT_* variable, XDG dirs, TMUX and cloud credentials variables.
    The `ssh` binary reads ~/.ssh from the passwd entry, not $HOME: code under test that runs it must pass
    its own options. At teardown, tmux servers this test started (the `local` provider's) are killed.
    """
    home = tmp_path_factory.mktemp("home")
    tmux_dir = tempfile.mkdtemp(prefix=Path(tmux_dir_prefix()).name, dir=SHM)
    for key in list(os.environ):
        if key in _UNSET_EXACT or key.startswith(_UNSET_PREFIXES):
            monkeypatch.delenv(key, raising=False)
    (home / "tmp").mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("TMPDIR", str(home / "tmp"))
    monkeypatch.setenv("TMUX_TMPDIR", tmux_dir)
    monkeypatch.setenv("OFFLOAD_CONFIG_DIR", str(home / ".config" / "offload"))
    monkeypatch.setenv("OFFLOAD_CACHE_DIR", str(home / ".cache" / "offload"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_AUTHOR_NAME", "Offload Test")
    monkeypatch.setenv("GIT_AUTHOR_EMAIL", "test@example.com")
    monkeypatch.setenv("GIT_COMMITTER_NAME", "Offload Test")
    monkeypatch.setenv("GIT_COMMITTER_EMAIL", "test@example.com")
    try:
        yield home
    finally:
        stop_agents(home)
        cleanup_user_processes(os.getuid(), homes_under=[str(home)], under=[str(home)], sockets_under=[tmux_dir],
                               tmux_only=True)
        shutil.rmtree(tmux_dir, ignore_errors=True)


# --------------------------------------------------------------------------------------------------------------
# sshd workers


@pytest.fixture(scope="session")
def ssh_client_key(tmp_path_factory: pytest.TempPathFactory) -> ClientKey:
    """An ed25519 client keypair on tmpfs, without passphrase: `.private` and `.public` paths."""
    _require(shutil.which("ssh-keygen") is not None, "ssh-keygen is not installed (openssh-client)")
    private, _ = generate_keypair(tmp_path_factory.mktemp("client-key") / "id_ed25519", comment="offload-test-client")
    return ClientKey(private=private, public=private.with_name("id_ed25519.pub"))


@pytest.fixture(scope="session")
def worker_user() -> WorkerUser:
    """The dedicated login user sshd workers accept (`offloadw`): created if missing, unlocked for key
    logins, and in the `docker` group when that group exists. Returns name, uid, gid and home."""
    _require(os.geteuid() == 0, "real sshd workers need root (useradd, sshd)")
    _require(os.path.exists(SSHD), f"{SSHD} is missing (apt-get install -y openssh-server)")
    return ensure_worker_user(WORKER_USER)


StartSshd = Callable[..., SshdWorker]


@pytest.fixture
def start_sshd(worker_user: WorkerUser, ssh_client_key: ClientKey,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartSshd]:
    """A factory for sshd workers: `start_sshd(workspace=None, authorized_keys=None, extra_config=(), port=None,
    isolate_tmux=True)`.

    Each call starts `/usr/sbin/sshd -D -e -f CONFIG` on 127.0.0.1 and a free port with its own ed25519 host
    key, and waits (with a timeout) until it answers. Logins get a private TMUX_TMPDIR (`tmux_tmpdir`).
    At teardown every worker is stopped by PID, and what its logins left running (tmux servers and their
    panes, found by SSH_CONNECTION, socket dir or a cwd in the workspace) is killed.
    """
    os.makedirs("/run/sshd", exist_ok=True)
    started: list[SshdWorker] = []

    def factory(**kwargs: Any) -> SshdWorker:
        base = tmp_path_factory.mktemp("sshd")
        worker = workers.start_sshd(base=base, user=worker_user, client_key=ssh_client_key, **kwargs)
        started.append(worker)
        return worker

    try:
        yield factory
    finally:
        errors = []
        for worker in started:
            try:
                worker.stop()
            except Exception as e:  # keep stopping the others
                errors.append(e)
            cleanup_user_processes(worker_user.uid, ssh_server=(worker.host, worker.port), under=[worker.workspace],
                                   sockets_under=[worker.tmux_tmpdir] if worker.tmux_tmpdir else [])
            if worker.tmux_tmpdir:
                shutil.rmtree(worker.tmux_tmpdir, ignore_errors=True)
        if errors:
            raise errors[0]


@pytest.fixture
def sshd_worker(start_sshd: StartSshd) -> SshdWorker:
    """One real sshd worker for this test (see `start_sshd`): host, port, user, key_path, host_key,
    host_key_path, log_path, pid, workspace, tmux_tmpdir; accepted_count(), kill_sessions(), rotate_host_key(),
    restart(), stop(), known_hosts_line, write_known_hosts(path), ssh_argv(known_hosts, *command)."""
    return start_sshd()


@pytest.fixture
def transport(sshd_worker: SshdWorker, tmp_path: Path) -> Iterator[Any]:
    """An SshTransport to `sshd_worker` over a connection of its own, closed after the test."""
    t = workers.ssh_transport(sshd_worker, tmp_path)
    try:
        yield t
    finally:
        t.close()


# --------------------------------------------------------------------------------------------------------------
# Docker workers


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[DockerEngine]:
    """A running Docker engine: the one already answering `docker info`, or a dockerd this session starts
    (scripts/dockerd.sh, which sessions share and the last one out stops, by PID). Containers left by killed
    sessions are removed first."""
    _require(shutil.which("docker") is not None, "the docker client is not installed (apt-get install -y docker.io)")
    probe = run(["docker", "info"], check=False, timeout=30, env={**CLEAN_ENV, **_docker_env()})
    if probe.returncode != 0:
        _require(os.geteuid() == 0, "no Docker engine answers and starting one needs root")
        _require(shutil.which("dockerd") is not None, "dockerd is not installed (apt-get install -y docker.io)")
    owner = str(os.getpid())
    result = run([str(SCRIPTS / "dockerd.sh"), "acquire", owner], check=False, timeout=DOCKER_SETUP_TIMEOUT,
                 env={**CLEAN_ENV, **_docker_env()})
    if result.returncode != 0:
        run([str(SCRIPTS / "dockerd.sh"), "release", owner], check=False, timeout=DOCKER_SETUP_TIMEOUT)
        raise TestbedError(f"could not start a Docker engine: {result.stderr.strip()}")
    try:
        remove_stale_containers()
        yield DockerEngine(socket="/var/run/docker.sock", started=result.stdout.strip() == "started")
    finally:
        run([str(SCRIPTS / "dockerd.sh"), "release", owner], check=False, timeout=DOCKER_SETUP_TIMEOUT)


def _docker_env() -> dict[str, str]:
    """The caller's Docker client settings, which infrastructure commands keep (the rest of the env is clean)."""
    return {k: v for k, v in _ORIGINAL_ENV.items() if k in ("DOCKER_HOST", "DOCKER_CONTEXT", "HOME")}


@pytest.fixture(scope="session")
def worker_image(docker_engine: DockerEngine) -> str:
    """The `offload-worker:test` image (Debian bookworm minbase with tmux, git, ca-certificates, procps),
    built by scripts/build-worker-image.sh from a cached rootfs tarball: about 45 s the first time on a
    machine, well under a second after that."""
    _require(os.geteuid() == 0, "building the worker image needs root (debootstrap)")
    started = time.monotonic()
    result = run([str(SCRIPTS / "build-worker-image.sh"), WORKER_IMAGE], check=False, timeout=IMAGE_BUILD_TIMEOUT,
                 env={**CLEAN_ENV, **_docker_env()})
    if result.returncode != 0:
        raise TestbedError(f"building {WORKER_IMAGE} failed after {time.monotonic() - started:.0f}s:\n"
                           f"{result.stderr.strip()[-3000:]}")
    return WORKER_IMAGE


StartDockerWorker = Callable[..., DockerWorker]


@pytest.fixture
def start_docker_worker(worker_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartDockerWorker]:
    """A factory for worker containers: `start_docker_worker(workspace=None, image=..., name=None, extra_args=())`.

    Each container runs `sleep infinity` with `--restart always`, its workspace (default: a fresh dir on
    tmpfs) bind-mounted at the same path. All are removed with `docker rm -f` at teardown.
    """
    started: list[DockerWorker] = []

    def factory(workspace: Path | None = None, **kwargs: Any) -> DockerWorker:
        ws = workspace if workspace is not None else tmp_path_factory.mktemp("container-ws")
        kwargs.setdefault("image", worker_image)
        worker = workers.start_docker_worker(ws, **kwargs)
        started.append(worker)
        return worker

    try:
        yield factory
    finally:
        for worker in started:
            worker.stop()


@pytest.fixture
def docker_worker(start_docker_worker: StartDockerWorker) -> DockerWorker:
    """One fresh worker container for this test: name, workspace, image; exec(*argv), stop()."""
    return start_docker_worker()


@pytest.fixture
def ssh_docker_worker(start_sshd: StartSshd, start_docker_worker: StartDockerWorker, worker_user: WorkerUser,
                      docker_engine: DockerEngine) -> SshDockerWorker:
    """An sshd worker whose login user may run `docker`, and a container sharing its workspace: the shape
    of a `gce-cos` VM or an `ssh` host with `container` set. Fields: `.ssh`, `.container`, `.workspace`."""
    ensure_in_group(worker_user.name, "docker")
    sock = Path(docker_engine.socket)
    if sock.exists():
        st = sock.stat()
        _require(st.st_gid == grp.getgrnam("docker").gr_gid and st.st_mode & 0o060 == 0o060,
                 f"{sock} is not read-write for group docker, so the worker user cannot use it")
    ssh = start_sshd()
    container = start_docker_worker(workspace=Path(ssh.workspace))
    return SshDockerWorker(ssh=ssh, container=container)



@pytest.fixture
def small_disk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Path]]:
    """A factory for small file systems: `small_disk("2m")` mounts a tmpfs of that size and returns its path,
    so a job can fill its workspace. Each is unmounted at teardown (lazily, should a process still use it)."""
    _require(os.geteuid() == 0, "mounting a small file system needs root")
    mounted: list[Path] = []

    def factory(size: str = "2m") -> Path:
        path = tmp_path_factory.mktemp("disk")
        run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)], timeout=30)
        mounted.append(path)
        return path

    try:
        yield factory
    finally:
        for path in mounted:
            if run(["umount", str(path)], check=False, timeout=30).returncode != 0:
                run(["umount", "-l", str(path)], check=False, timeout=30)
