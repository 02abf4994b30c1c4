"""Opening the one SSH connection to a worker: identity, proxy command, timeouts and host-key trust."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import sys
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from offload.errors import (AUTH_HINT, STRICT_HINT, AuthFailed, HostKeyMismatch, HostKeyUnknown, UsageError,
                            WorkerUnreachable, reason)
from offload.outputs import WorkerRecord
from offload.runtime import user_ssh_config
from offload.runtime.hostkeys import KnownHosts, host_id

if TYPE_CHECKING:
    import fabric
    import paramiko

DEFAULT_CONNECT_TIMEOUT = 15.0


class Trust(str, Enum):
    """How an unknown host key is treated."""

    PINNED = "pinned"          # only the keys given (outputs, guest attributes); anything else is refused
    FIRST_USE = "first-use"    # remember the first key seen, with a warning; refuse a change later
    STRICT = "strict"          # the known keys only, and an unknown host is refused (offload:strictHostKeys)


@dataclass
class ConnectOptions:
    """Everything that decides how the runtime dials a worker."""

    identity: Path | None = None
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    proxy_command: str | None = None
    known_hosts: KnownHosts = field(default_factory=KnownHosts.default)
    notice: Callable[[str], None] = lambda msg: print(f"offload: {msg}", file=sys.stderr)
    # The ssh-agent the dial may use, and a proxy command may too: the user's SSH_AUTH_SOCK, else none. Given to
    # paramiko explicitly, never through this process's environment (the connection agent dials for many
    # commands at once, each with its own).
    ssh_agent: str | None = field(default_factory=lambda: os.environ.get("SSH_AUTH_SOCK") or None)
    # --strict-host-keys: refuse a host key nothing vouches for instead of trusting it on first use (a worker
    # record's strict_host_keys, from offload:strictHostKeys, does the same for its worker).
    strict_host_keys: bool = False

    @classmethod
    def from_env(cls, identity: Path | None = None) -> "ConnectOptions":
        key = identity or (Path(os.environ["OFFLOAD_SSH_KEY"]) if os.environ.get("OFFLOAD_SSH_KEY") else None)
        try:
            timeout = float(os.environ.get("OFFLOAD_CONNECT_TIMEOUT", DEFAULT_CONNECT_TIMEOUT))
        except ValueError:
            timeout = DEFAULT_CONNECT_TIMEOUT
        return cls(identity=key, connect_timeout=min(max(timeout, 1.0), 120.0))


def fingerprint(key_line: str) -> str:
    """OpenSSH-style SHA256 fingerprint of a 'type base64' key line."""
    blob = base64.b64decode(key_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


class KeySource(str, Enum):
    """Where the host keys a worker is checked against come from: what a refusal names and tells to fix."""

    OUTPUTS = "outputs"          # host_keys of the stack outputs
    PUBLISHED = "published"      # what the GCE instance publishes in its guest attributes
    REMEMBERED = "remembered"    # offload's known_hosts, from first use


def refusal(worker: WorkerRecord, where: str, seen: str, source: KeySource, known_hosts: Path,
            name: str) -> HostKeyMismatch:
    """The one-line error for a host key that does not match: it names where the expected key came from and how
    to change it there, if the change is wanted."""
    if source is KeySource.OUTPUTS:
        against, hint = ("the host_keys pinned for it in the stack outputs",
                         "if the worker was rebuilt on purpose, get its new key from a trusted source and put it in "
                         "host_keys of the stack outputs (offload:hosts in an ssh stack's file)")
    elif source is KeySource.PUBLISHED:
        against, hint = "the host keys its instance publishes in its guest attributes", None
    else:
        against, hint = (f"the key remembered for {name} in {known_hosts}",
                         f"if the worker was rebuilt on purpose, forget the old key with "
                         f"`ssh-keygen -R '{name}' -f {known_hosts}`")
    return HostKeyMismatch(worker.name, f"host key of {where} has changed ({fingerprint(seen)} does not match "
                           f"{against}); refusing to connect", hint=hint)


def _policy(worker: WorkerRecord, opts: ConnectOptions, trust: Trust, refuse: Callable[[str], HostKeyMismatch]):
    import paramiko

    class _Policy(paramiko.MissingHostKeyPolicy):
        def missing_host_key(self, client, hostname, key) -> None:  # noqa: ANN001
            line = f"{key.get_name()} {key.get_base64()}"
            if trust is Trust.PINNED:
                raise refuse(line)
            if trust is Trust.STRICT:
                raise HostKeyUnknown(worker.name, f"host key {fingerprint(line)} of worker {worker.name} ({hostname}) "
                                     "is not pinned, published or known, and strict host-key checking refuses to "
                                     "trust it on first use", hint=STRICT_HINT)
            opts.known_hosts.add(hostname, line)
            opts.notice(f"warning: trusting host key {fingerprint(line)} of worker {worker.name} ({hostname}) on "
                        f"first use, as nothing vouches for it; it is kept in {opts.known_hosts.path} "
                        "(offload:strictHostKeys: true refuses instead)")

    return _Policy()


_PUBLIC_KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ssh-dss", "ecdsa-sha2-", "sk-ssh-ed25519@", "sk-ecdsa-sha2-")


def check_identity(path: Path) -> None:
    """A one-line usage error for a key file that cannot be a private key: missing, a directory, unreadable, or a
    public key (paramiko would report these as a failed connection)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except FileNotFoundError:
        raise UsageError(f"SSH key {path} does not exist", hint=AUTH_HINT) from None
    except IsADirectoryError:
        raise UsageError(f"SSH key {path} is a directory, not a key file", hint=AUTH_HINT) from None
    except OSError as e:
        raise UsageError(f"cannot read SSH key {path}: {e.strerror or e}", hint=AUTH_HINT) from None
    first = head.lstrip().split(b"\n", 1)[0].decode("utf-8", "replace")
    if first.startswith(_PUBLIC_KEY_TYPES) or first.startswith("---- BEGIN SSH2 PUBLIC KEY"):
        private = str(path)[:-4] if str(path).endswith(".pub") else None
        hint = (f"offload needs the private key: {private}" if private and os.path.isfile(private) else AUTH_HINT)
        raise UsageError(f"SSH key {path} is a public key, not a private key", hint=hint)


def use_ssh_agent(conn: "fabric.Connection", path: str | None) -> None:
    """Have CONN log in with the keys of the ssh-agent at PATH, and of no other (none without PATH). paramiko's own
    Agent reads SSH_AUTH_SOCK from the environment of the process, which in the connection agent is no request's
    own; so the client gets an agent bound to PATH instead (SSHClient keeps it in `_agent`, and uses it from
    there; tests/runtime/test_paramiko_api.py pins what this relies on)."""
    if not path:
        conn.connect_kwargs["allow_agent"] = False
        return
    conn.connect_kwargs["allow_agent"] = True
    conn.client._agent = _agent_at(path)


def _agent_at(path: str) -> "paramiko.Agent":
    """The ssh-agent listening at PATH, as paramiko's Agent. It is reached when paramiko first asks for its keys;
    one that does not answer has none, as paramiko treats a dangling SSH_AUTH_SOCK."""
    import paramiko

    class AgentAt(paramiko.Agent):
        def __init__(self) -> None:
            paramiko.agent.AgentSSH.__init__(self)
            self._reached = False

        def get_keys(self):  # noqa: ANN202
            if not self._reached:
                self._reached = True
                conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    conn.connect(path)
                except OSError:
                    conn.close()
                    return ()
                self._connect(conn)
            return super().get_keys()

    return AgentAt()


def _load_keys(client: "paramiko.SSHClient", name: str, keys: list[str]) -> None:
    from paramiko import PKey

    store = client.get_host_keys()
    for line in keys:
        kind, b64 = line.split()[:2]
        try:
            store.add(name, kind, PKey.from_type_string(kind, base64.b64decode(b64)))
        except Exception:
            continue


def open_connection(worker: WorkerRecord, opts: ConnectOptions, *, extra_keys: list[str] | None = None,
                    proxy_command: str | None = None, timeout: float | None = None,
                    key_source: KeySource | None = None) -> "fabric.Connection":
    """Open and return a verified fabric Connection, or raise one of three one-line errors: WorkerUnreachable,
    HostKeyMismatch or AuthFailed (and a UsageError for a key file that cannot be used).

    Keys pinned in the outputs (and EXTRA_KEYS, e.g. from GCE guest attributes) are the only ones accepted
    when present; otherwise the managed known_hosts decides, and an unknown host is trusted on first use
    with a notice. A changed key is always refused. A null port or user comes from ~/.ssh/config. KEY_SOURCE says
    where the keys come from when the caller knows better than WORKER and EXTRA_KEYS tell (the connection agent).
    """
    timeout = opts.connect_timeout if timeout is None else timeout
    worker = user_ssh_config.resolve(worker)
    if opts.identity:
        check_identity(opts.identity)
    gateway = expand_proxy_command(proxy_command or worker.proxy_command or opts.proxy_command, worker)
    # Dial before the (slow) paramiko import: the worker's sshd starts its side of the session meanwhile,
    # and when a fleet is queried every worker is dialled at once instead of after the import lock.
    dial_host = user_ssh_config.lookup(worker.host).hostname
    early = None if gateway else _dial_early(dial_host, worker.port or user_ssh_config.DEFAULT_PORT, timeout)
    _quiet_paramiko()
    where = f"worker {worker.name} at {worker.user + '@' if worker.user else ''}{worker.host}:{worker.port}"
    conn = _connection(worker, opts, gateway, timeout, where)
    _use_early_socket(conn, early, dial_host, worker.port)
    _pass_over_missing_key_files(conn)
    refuse = _trust(conn, worker, opts, extra_keys, key_source or _key_source(worker, extra_keys), where)
    try:
        _log_in(conn, worker, opts, where, timeout, refuse)
    except BaseException:
        # A refused login leaves its TCP connection open: sshd counts each against MaxStartups until LoginGraceTime,
        # and a loop of logins while a grant propagates would be dropped before the banner.
        _discard(conn)
        raise
    _tune(conn)
    return conn


def _discard(conn: "fabric.Connection") -> None:
    """Close what a failed dial of CONN opened: paramiko's transport and the socket (or proxy pipe) under it."""
    try:
        conn.client.close()
    except Exception:
        pass
    sock = conn.connect_kwargs.get("sock")
    if sock is not None:
        try:
            sock.close()
        except Exception:
            pass


def _quiet_paramiko() -> None:
    """paramiko logs transport failures with tracebacks; ours become one-line errors instead."""
    import logging

    if os.environ.get("OFFLOAD_DEBUG") != "1":
        logging.getLogger("paramiko").setLevel(logging.CRITICAL)


def _connection(worker: WorkerRecord, opts: ConnectOptions, gateway: str | None, timeout: float,
                where: str) -> "fabric.Connection":
    """The fabric Connection to WORKER, not yet open: through our own proxy pipe (GATEWAY's, or the ProxyCommand
    of ~/.ssh/config), logging in with the identity and the ssh-agent of OPTS and no other."""
    import fabric
    from fabric.config import Config

    connect_kwargs: dict = {"banner_timeout": timeout, "auth_timeout": timeout, "channel_timeout": timeout}
    if opts.identity:
        connect_kwargs["key_filename"] = [str(opts.identity)]
        connect_kwargs["look_for_keys"] = False
    if gateway:
        connect_kwargs["sock"] = _proxy_pipe(gateway, opts, worker, where)
    conn = fabric.Connection(
        worker.host, user=worker.user, port=worker.port, connect_timeout=max(1, round(timeout)),
        # Our own proxy pipe (when there is one) replaces fabric's, and ~/.ssh/config must not add another.
        connect_kwargs=connect_kwargs, gateway=False if gateway else None,
        config=Config(overrides={"run": {"hide": True, "warn": True}}),
    )
    if isinstance(conn.gateway, str):
        # A ProxyCommand of ~/.ssh/config runs as ours do: with this dial's ssh-agent, failing with its own error.
        conn.connect_kwargs["sock"] = _proxy_pipe(conn.gateway, opts, worker, where)
        conn.gateway = None
    for hop in (conn, conn.gateway):  # a ProxyJump of ~/.ssh/config logs in to its jump host too
        if isinstance(hop, fabric.Connection):
            use_ssh_agent(hop, opts.ssh_agent)
    return conn


def _proxy_pipe(command: str, opts: ConnectOptions, worker: WorkerRecord, where: str) -> "ProxyPipe":
    from paramiko.ssh_exception import ProxyCommandFailure

    try:
        return ProxyPipe(command, ssh_agent=opts.ssh_agent)
    except ProxyCommandFailure as e:  # the command cannot even start
        raise _proxy_failed(worker, where, e) from None


def _proxy_failed(worker: WorkerRecord, where: str, e: Exception) -> WorkerUnreachable:
    command, error = getattr(e, "command", ""), getattr(e, "error", "")
    return WorkerUnreachable(worker.name, f"cannot reach {where} through `{command.split()[0]} ...`: {error}")


def _use_early_socket(conn: "fabric.Connection", early: socket.socket | None, dial_host: str,
                      port: int | None) -> None:
    """Log in over EARLY, the TCP connection made before paramiko was loaded, unless ~/.ssh/config sends this host
    elsewhere (HostName, Port, ProxyCommand, ProxyJump): then it decides."""
    if early is None:
        return
    if conn.gateway or "sock" in conn.connect_kwargs or conn.host != dial_host or conn.port != port:
        early.close()
    else:
        conn.connect_kwargs["sock"] = early


def _pass_over_missing_key_files(conn: "fabric.Connection") -> None:
    """OpenSSH passes over an IdentityFile of ~/.ssh/config that does not exist (a `Host *` default, say); paramiko
    would stop at it. An explicit identity was checked before."""
    keys = conn.connect_kwargs.get("key_filename")
    if not keys:
        return
    present = [k for k in keys if os.path.exists(os.path.expanduser(k))]
    if present:
        conn.connect_kwargs["key_filename"] = present
    else:
        del conn.connect_kwargs["key_filename"]


def _trust(conn: "fabric.Connection", worker: WorkerRecord, opts: ConnectOptions, extra_keys: list[str] | None,
           source: KeySource, where: str) -> Callable[[str], HostKeyMismatch]:
    """Give CONN the host keys it may accept (pinned, else remembered) and the policy for a key it does not know;
    the refusal for a key that does not match."""
    pinned = list(worker.host_keys) + list(extra_keys or [])
    trust = Trust.PINNED if pinned else Trust.STRICT if strict_host_keys(worker, opts) else Trust.FIRST_USE
    # paramiko looks the key up under the address it dials: an alias's HostName, not the alias.
    name = host_id(conn.host, conn.port)
    _load_keys(conn.client, name, pinned or opts.known_hosts.lookup(name))

    def refuse(seen: str) -> HostKeyMismatch:
        return refusal(worker, where, seen, source, opts.known_hosts.path, name)

    conn.client.set_missing_host_key_policy(_policy(worker, opts, trust, refuse))
    return refuse


def strict_host_keys(worker: WorkerRecord, opts: ConnectOptions) -> bool:
    """Whether an unknown host key of WORKER is refused: --strict-host-keys, or the stack's offload:strictHostKeys."""
    return bool(opts.strict_host_keys or worker.strict_host_keys)


def _log_in(conn: "fabric.Connection", worker: WorkerRecord, opts: ConnectOptions, where: str, timeout: float,
            refuse: Callable[[str], HostKeyMismatch]) -> None:
    """Open CONN, turning each way it can fail into offload's one-line error."""
    import paramiko

    unreachable_hint = "is it running? try `offload status`"
    try:
        conn.open()
    except HostKeyMismatch:
        raise
    except paramiko.BadHostKeyException as e:
        raise refuse(f"{e.key.get_name()} {e.key.get_base64()}") from None
    except paramiko.PasswordRequiredException:
        raise AuthFailed(worker.name, f"SSH key {opts.identity or 'for ' + where} is protected by a passphrase, "
                         "which offload does not ask for",
                         hint=f"add it to ssh-agent (`ssh-add {opts.identity or 'KEY'}`), or {AUTH_HINT}") from None
    except paramiko.AuthenticationException:
        with_key = f" with key {opts.identity}" if opts.identity else ""
        raise AuthFailed(worker.name, f"{where} refused the SSH login{with_key}", hint=AUTH_HINT) from None
    except (socket.timeout, TimeoutError):
        raise WorkerUnreachable(worker.name, f"cannot reach {where}: timed out after {timeout:.0f}s",
                                hint=unreachable_hint) from None
    except paramiko.ssh_exception.NoValidConnectionsError as e:
        raise WorkerUnreachable(worker.name, f"cannot reach {where}: {reason(next(iter(e.errors.values()), e))}",
                                hint=unreachable_hint) from None
    except paramiko.ssh_exception.ProxyCommandFailure as e:
        raise _proxy_failed(worker, where, e) from None
    except paramiko.SSHException as e:
        if _no_key(e):
            raise AuthFailed(worker.name, f"no SSH key to log in to {where} with: no --identity or "
                             "OFFLOAD_SSH_KEY, no ssh-agent, and no key in ~/.ssh", hint=AUTH_HINT) from None
        if _bad_key_file(e):
            raise UsageError(f"cannot use {opts.identity or 'the SSH key'} as an SSH private key: {e}",
                             hint=AUTH_HINT) from None
        raise WorkerUnreachable(worker.name, f"cannot reach {where}: {reason(e)}", hint=unreachable_hint) from None
    except (OSError, EOFError) as e:
        if isinstance(e, OSError) and e.filename is not None:  # a key file named in ~/.ssh/config
            raise UsageError(f"cannot read SSH key {e.filename}: {reason(e)}", hint=AUTH_HINT) from None
        raise WorkerUnreachable(worker.name, f"cannot reach {where}: {reason(e)}", hint=unreachable_hint) from None


def scan_host_key(worker: WorkerRecord, opts: ConnectOptions) -> str:
    """The host key WORKER presents ('type base64'), read in the key exchange without logging in: what a new
    worker's setup shows for the user to confirm before it is pinned. Nothing is trusted or remembered here."""
    import paramiko

    _quiet_paramiko()
    timeout = opts.connect_timeout
    worker = user_ssh_config.resolve(worker)  # an alias of ~/.ssh/config: its port, and below its HostName
    where = f"{worker.host}:{worker.port}"
    gateway = expand_proxy_command(worker.proxy_command or opts.proxy_command, worker)
    dial_host = user_ssh_config.lookup(worker.host).hostname
    try:
        sock = (ProxyPipe(gateway, ssh_agent=opts.ssh_agent) if gateway
                else socket.create_connection((dial_host, worker.port), timeout=timeout))
    except paramiko.ssh_exception.ProxyCommandFailure as e:
        raise _proxy_failed(worker, where, e) from None
    except OSError as e:
        raise WorkerUnreachable(worker.name, f"cannot reach {where}: {reason(e)}",
                                hint="is the host up and its sshd listening on that port?") from None
    transport = paramiko.Transport(sock)
    transport.banner_timeout = timeout
    try:
        transport.start_client(timeout=timeout)
        key = transport.get_remote_server_key()
    except (paramiko.SSHException, OSError, EOFError) as e:
        raise WorkerUnreachable(worker.name, f"cannot read the host key of {where}: {reason(e)}",
                                hint="is an SSH server listening on that port?") from None
    finally:
        transport.close()
    return f"{key.get_name()} {key.get_base64()}"


def _key_source(worker: WorkerRecord, extra_keys: list[str] | None) -> KeySource:
    if worker.host_keys:
        return KeySource.OUTPUTS
    return KeySource.PUBLISHED if extra_keys else KeySource.REMEMBERED


def _no_key(e: Exception) -> bool:
    return "No authentication methods available" in str(e)


def _bad_key_file(e: Exception) -> bool:
    text = str(e)
    return "private key file" in text or "not a valid" in text or "Unable to load" in text


class ProxyPipe:
    """A ProxyCommand as the socket paramiko reads and writes, that fails at once, with the command's own
    error, when the command exits (paramiko's own spins until its timeout and reports a banner error). The command
    gets SSH_AGENT as its SSH_AUTH_SOCK (none when None): `ssh -W` to a bastion logs in with the dial's ssh-agent."""

    def __init__(self, command: str, *, ssh_agent: str | None = None) -> None:
        import collections
        import shlex
        import subprocess
        import threading

        self.command = command
        self.timeout: float | None = None
        self._stderr: collections.deque[str] = collections.deque(maxlen=20)
        env = {k: v for k, v in os.environ.items() if k not in ("SSH_AUTH_SOCK", "SSH_AGENT_PID")}
        if ssh_agent:
            env["SSH_AUTH_SOCK"] = ssh_agent
        try:
            self.process = subprocess.Popen(shlex.split(command), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE, bufsize=0, start_new_session=True, env=env)
        except OSError as e:
            self._fail(f"cannot run it: {reason(e)}")
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            if line.strip():
                self._stderr.append(line)

    def _fail(self, default: str) -> None:
        from paramiko.ssh_exception import ProxyCommandFailure

        raise ProxyCommandFailure(self.command, default)

    def error(self) -> str:
        """What the command said last: its most telling stderr line, or its exit status."""
        import time

        deadline = time.monotonic() + 1
        while self.process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        return telling_line(list(self._stderr)) or f"it exited with status {self.process.returncode}"

    def send(self, data: bytes) -> int:
        try:
            assert self.process.stdin is not None
            self.process.stdin.write(data)
        except (OSError, ValueError):
            self._fail(self.error())
        return len(data)

    def recv(self, size: int) -> bytes:
        import select

        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], self.timeout)
        if not ready:
            raise socket.timeout()
        data = os.read(self.process.stdout.fileno(), size)
        if not data:
            self._fail(self.error())
        return data

    def settimeout(self, timeout: float | None) -> None:
        self.timeout = timeout

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()

    @property
    def closed(self) -> bool:
        return self.process.returncode is not None

    @property
    def _closed(self) -> bool:  # what paramiko's transport looks at while it stops its thread
        return self.closed


def telling_line(lines: list[str]) -> str | None:
    """The line of a failed command's stderr that says what went wrong: gcloud's `ERROR:` line, the exception at
    the end of a traceback, else the first line."""
    errors = [ln.strip().removeprefix("ERROR: ") for ln in lines if ln.startswith("ERROR:")]
    if errors:
        return errors[0]
    if any(ln.startswith("Traceback (most recent call last)") or ln[:1].isspace() for ln in lines):
        # Frames and source lines are indented; the exception is the last line that is not.
        plain = [ln for ln in lines if not ln[:1].isspace() and not ln.startswith(("Traceback", "During handling"))]
        return plain[-1].strip() if plain else None
    useful = [ln.strip() for ln in lines if not ln.startswith(("Please run", "$", "to "))]
    return useful[0] if useful else (lines[0].strip() if lines else None)


def _dial_early(host: str, port: int, timeout: float) -> socket.socket | None:
    """A TCP connection to the worker, or None when it fails (the regular path then reports why)."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError:
        return None
    return sock


def expand_proxy_command(command: str | None, worker: WorkerRecord) -> str | None:
    """Expand %h, %p, %r and %% as OpenSSH does (fabric's own expansion always says port 22)."""
    if not command:
        return None
    values = {"h": worker.host, "p": str(worker.port), "r": worker.user or "", "n": worker.host, "%": "%"}
    out, i = [], 0
    while i < len(command):
        ch = command[i]
        if ch == "%" and i + 1 < len(command) and command[i + 1] in values:
            out.append(values[command[i + 1]])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _tune(conn: "fabric.Connection") -> None:
    """Small writes must not wait for Nagle; a silent network must be noticed."""
    transport = conn.transport
    transport.set_keepalive(15)
    sock = transport.sock
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
