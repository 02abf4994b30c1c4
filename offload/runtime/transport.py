"""Running argv on a worker: locally, over one SSH connection, or inside a container.

Every remote step of offload goes through `Transport.run`/`stream`: a fixed argv plus bytes on stdin.
Commands are built as argv lists and joined with `shlex.join`, so data never becomes shell text.
"""

from __future__ import annotations

import os
import select
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol, Sequence

from offload.errors import RemoteCommandError, WorkerUnreachable, reason

if TYPE_CHECKING:
    import fabric

Sink = Callable[[bytes], None]
# What a step over SSH reads on its stdin: bytes, or chunks as they come (the connection agent relays its
# client's input this way, without holding all of it).
Input = bytes | Iterable[bytes]
# Once a step's exit status is in, its output is read on to EOF (sshd may send the status before the last of the
# output); a process the command left behind holding the output open is given up on after this many seconds of
# quiet, or this many in all.
EOF_GRACE = 2.0
EOF_LIMIT = 30.0
_CHUNK = 65536


@dataclass(frozen=True)
class Result:
    """What a command on the worker gave back."""

    exit_code: int
    stdout: bytes
    stderr: bytes

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def text(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    def error_line(self) -> str:
        """The most telling line of stderr, for one-line error messages."""
        lines = [ln.strip() for ln in self.stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
        fatal = [ln for ln in lines if ln.startswith(("fatal:", "error:", "offload:", "Error"))]
        return (fatal or lines or [f"exit code {self.exit_code}"])[-1]


class Transport(Protocol):
    """One way of running commands on one worker. A step's TIMEOUT is how long it may go without progress (input
    taken, output given) over SSH; a local step's is a limit in all."""

    worker: str

    def run(self, argv: Sequence[str], *, stdin: Input | None = None, timeout: float | None = None) -> Result: ...

    def stream(self, argv: Sequence[str], sink: Sink, *, stdin: bytes | None = None,
               stderr: Sink | None = None) -> int: ...

    def interactive(self, argv: Sequence[str]) -> int: ...

    def alive(self) -> bool: ...

    def close(self) -> None: ...


def check(result: Result, worker: str, what: str, argv: Sequence[str] = ()) -> Result:
    """Raise a one-line RemoteCommandError unless RESULT succeeded."""
    if not result.ok:
        raise RemoteCommandError(worker, f"{what} failed on worker {worker}: {result.error_line()}",
                                 command=shlex.join(argv), exit_code=result.exit_code,
                                 stderr=result.stderr.decode("utf-8", "replace"))
    return result


# What a command on this machine keeps of the caller's environment: what a login over SSH would give it, and
# the tmux socket directory. Everything else (GIT_DIR and GIT_INDEX_FILE inside a git hook, a virtualenv, a tmux
# client's TMUX) stays out; a job gets only the --env names it was given.
_LOGIN_ENV = ("HOME", "USER", "LOGNAME", "PATH", "SHELL", "LANG", "LANGUAGE", "TZ", "TERM", "TMPDIR",
              "TMUX_TMPDIR")
_DOCKER_ENV = ("DOCKER_HOST", "DOCKER_CONFIG", "DOCKER_CONTEXT", "DOCKER_CERT_PATH", "DOCKER_TLS_VERIFY")


def login_environment(*, docker: bool = False) -> dict[str, str]:
    """The environment a local worker runs its steps with; DOCKER adds what the docker client needs to find its
    engine (`docker exec` passes none of it into the container)."""
    keep = _LOGIN_ENV + (_DOCKER_ENV if docker else ())
    return {k: v for k, v in os.environ.items() if k in keep or k.startswith("LC_")}


class LocalTransport:
    """This machine: plain subprocesses with a login's environment, no SSH."""

    def __init__(self, worker: str = "local", *, env: dict[str, str] | None = None) -> None:
        self.worker = worker
        self.env = login_environment() if env is None else env

    def run(self, argv: Sequence[str], *, stdin: Input | None = None, timeout: float | None = None) -> Result:
        if stdin is not None and not isinstance(stdin, bytes):
            stdin = b"".join(stdin)
        try:
            p = subprocess.run(list(argv), input=stdin if stdin is not None else b"", capture_output=True,
                               timeout=timeout, env=self.env)
        except FileNotFoundError as e:
            return Result(127, b"", f"{argv[0]}: command not found ({e.strerror})\n".encode())
        return Result(p.returncode, p.stdout, p.stderr)

    def stream(self, argv: Sequence[str], sink: Sink, *, stdin: bytes | None = None,
               stderr: Sink | None = None) -> int:
        p = subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=self.env,
                             stderr=subprocess.PIPE if stderr else None)
        assert p.stdin is not None and p.stdout is not None
        reader = None
        if stderr is not None:
            err = p.stderr
            assert err is not None
            reader = threading.Thread(target=lambda: [stderr(chunk) for chunk in iter(lambda: err.read1(65536), b"")],
                                      daemon=True)
            reader.start()
        try:
            if stdin:
                p.stdin.write(stdin)
            p.stdin.close()
            while True:
                chunk = p.stdout.read1(65536)
                if not chunk:
                    break
                sink(chunk)
            return p.wait()
        finally:
            # The sink may have stopped us (a closed pipe, Ctrl-C): the step must not go on alone.
            if p.poll() is None:
                p.kill()
                p.wait()
            if reader is not None:
                reader.join(timeout=5)
            p.stdout.close()

    def interactive(self, argv: Sequence[str]) -> int:
        return subprocess.call(list(argv), env=self.env)

    def alive(self) -> bool:
        return True

    def close(self) -> None:
        pass


def _end_input(chan) -> None:
    """Send EOF on the channel's input, unless it is closed already. paramiko's `shutdown_write` lets go of the
    channel's lock before it sends the EOF, so the transport thread can answer the server's CLOSE first; an EOF after
    a CLOSE makes sshd drop the whole connection (and, through the connection agent, every command sharing it).
    Here the EOF goes out under the lock, the way paramiko sends data, through two private methods of paramiko's
    (tests/runtime/test_paramiko_api.py fails by name should a release change them)."""
    with chan.lock:
        if chan.closed or chan.eof_sent or chan.transport is None:
            return
        message = chan._send_eof()
        if message is not None:
            chan.transport._send_user_message(message)


class _Progress:
    """When a step last moved: input taken or output given. Its timeout counts from here, so a large transfer
    that keeps moving is never cut short, and a stuck one is."""

    def __init__(self) -> None:
        self.last = self.output = time.monotonic()

    def moved(self, *, output: bool = False) -> None:
        self.last = time.monotonic()
        if output:
            self.output = self.last


class SshTransport:
    """One SSH connection (a fabric Connection) shared by every step of a CLI invocation.

    Each step is one exec channel on the already-open transport, so a step costs a round trip,
    not a handshake.
    """

    def __init__(self, worker: str, connection: "fabric.Connection") -> None:
        self.worker = worker
        self.connection = connection

    def _channel(self, argv: Sequence[str]):
        transport = self.connection.transport
        if transport is None or not transport.is_active():
            raise WorkerUnreachable(self.worker, f"the connection to worker {self.worker} was lost")
        try:
            chan = transport.open_session(timeout=15)
            chan.exec_command(shlex.join(argv))
        except Exception as e:  # paramiko raises SSHException/EOFError/socket errors here
            raise WorkerUnreachable(self.worker, f"the connection to worker {self.worker} was lost: "
                                    f"{reason(e)}") from e
        return chan

    @staticmethod
    def _feed(chan, data: Input | None, progress: _Progress) -> threading.Thread | None:
        if data is None or (isinstance(data, bytes) and not data):
            _end_input(chan)
            return None

        def send() -> None:
            try:
                for chunk in [data] if isinstance(data, bytes) else data:
                    # paramiko's sendall copies what is left after every packet (`s = s[sent:]`): quadratic in
                    # the size of the input. A memoryview hands out the rest without a copy.
                    view = memoryview(chunk)
                    while view:
                        sent = chan.send(view)
                        if not sent:
                            return  # the channel is closing: the reader says why
                        view = view[sent:]
                        progress.moved()
                _end_input(chan)
            except Exception:
                # The channel closed under us (the reader notices), or the input failed: its source went away
                # (the agent's client was interrupted). A step must not take half its input for all of it, and
                # the command on the worker must not wait for the rest for ever: close the channel.
                chan.close()

        t = threading.Thread(target=send, daemon=True)
        t.start()
        return t

    def _pump(self, chan, on_out: Sink, on_err: Sink, timeout: float | None, progress: _Progress,
              cancel: threading.Event | None = None) -> int:
        status_at: float | None = None
        while True:
            if cancel is not None and cancel.is_set():
                chan.close()
                raise WorkerUnreachable(self.worker, f"a step on worker {self.worker} was given up")
            got = False
            while chan.recv_ready():
                on_out(chan.recv(_CHUNK))
                got = True
            while chan.recv_stderr_ready():
                on_err(chan.recv_stderr(_CHUNK))
                got = True
            if got:
                progress.moved(output=True)
                continue
            if chan.eof_received or chan.closed:
                break  # SSH sends every byte of output before EOF; a closed channel has delivered what it had
            if not self.connection.transport.is_active():
                raise WorkerUnreachable(self.worker, f"the connection to worker {self.worker} dropped")
            now = time.monotonic()
            wait = 0.5
            if chan.status_event.is_set():
                # sshd collects the command before it drains the command's pipes, so the exit status can come
                # before the last of the output: read on to EOF, though not for ever when a process the command
                # left behind holds the output open.
                status_at = status_at or now
                quiet = now - max(status_at, progress.output)
                if quiet >= EOF_GRACE or now - status_at >= EOF_LIMIT:
                    break
                wait = min(wait, EOF_GRACE - quiet)
            elif timeout and now - progress.last > timeout:
                chan.close()
                raise self._stalled(timeout)
            select.select([chan], [], [], wait)
        # The exit status normally follows EOF.
        while not chan.status_event.is_set():
            if not self.connection.transport.is_active():
                break
            if timeout and time.monotonic() - progress.last > timeout:
                chan.close()
                raise self._stalled(timeout)
            chan.status_event.wait(0.5)
        code = chan.exit_status if chan.status_event.is_set() else -1
        if code == -1:
            # The remote side ended without an exit status: killed, or its session torn down.
            raise WorkerUnreachable(self.worker, f"the connection to worker {self.worker} dropped")
        return code

    def _stalled(self, timeout: float) -> RemoteCommandError:
        return RemoteCommandError(self.worker, f"a step on worker {self.worker} made no progress for {timeout:.0f}s",
                                  hint="`offload status` shows whether the worker answers; then run the command "
                                       "again")

    def run(self, argv: Sequence[str], *, stdin: Input | None = None, timeout: float | None = None) -> Result:
        chan = self._channel(argv)
        out: list[bytes] = []
        err: list[bytes] = []
        progress = _Progress()
        feeder = self._feed(chan, stdin, progress)
        try:
            code = self._pump(chan, out.append, err.append, timeout, progress)
        finally:
            chan.close()
        if feeder:
            feeder.join(timeout=5)
        return Result(code, b"".join(out), b"".join(err))

    def stream(self, argv: Sequence[str], sink: Sink, *, stdin: Input | None = None,
               stderr: Sink | None = None, timeout: float | None = None,
               cancel: threading.Event | None = None) -> int:
        """Run ARGV with its output to SINK as it comes. CANCEL, once set, gives the step up: its channel closes,
        so the command on the worker loses its input and output."""
        chan = self._channel(argv)
        progress = _Progress()
        self._feed(chan, stdin, progress)
        try:
            return self._pump(chan, sink, stderr or (lambda b: sys.stderr.buffer.write(b)), timeout, progress,
                              cancel)
        finally:
            chan.close()

    def interactive(self, argv: Sequence[str]) -> int:
        result = self.connection.run(shlex.join(argv), pty=True, warn=True, hide=False)
        return result.exited

    def alive(self) -> bool:
        """The SSH transport is up as far as this side knows (a silently dead network needs a round trip)."""
        transport = self.connection.transport
        return transport is not None and transport.is_active()

    def close(self) -> None:
        self.connection.close()


class ContainerTransport:
    """Commands run inside a container on the base transport's host, through `docker exec`."""

    def __init__(self, base: Transport, container: str, *, heal: Callable[[], None] | None = None,
                 docker: Sequence[str] = ("docker",)) -> None:
        self.base = base
        self.worker = base.worker
        self.container = container
        self._heal = heal
        # How the host's docker client is invoked: ("sudo", "-n", "docker") for a login outside the docker group.
        self.docker = list(docker)

    def wrap(self, argv: Sequence[str], *, interactive: bool = False) -> list[str]:
        flags = ["-it"] if interactive else ["-i"]
        return [*self.docker, "exec", *flags, self.container, *argv]

    def _container_down(self, result: Result) -> bool:
        err = result.stderr.decode("utf-8", "replace")
        return result.exit_code != 0 and ("No such container" in err or "is not running" in err
                                          or "is restarting" in err or "is paused" in err)

    def run(self, argv: Sequence[str], *, stdin: Input | None = None, timeout: float | None = None) -> Result:
        result = self.base.run(self.wrap(argv), stdin=stdin, timeout=timeout)
        if self._heal and self._container_down(result):
            self._heal()
            result = self.base.run(self.wrap(argv), stdin=stdin, timeout=timeout)
        return result

    def stream(self, argv: Sequence[str], sink: Sink, *, stdin: bytes | None = None,
               stderr: Sink | None = None) -> int:
        return self.base.stream(self.wrap(argv), sink, stdin=stdin, stderr=stderr)

    def interactive(self, argv: Sequence[str]) -> int:
        return self.base.interactive(self.wrap(argv, interactive=True))

    def alive(self) -> bool:
        return self.base.alive()

    def close(self) -> None:
        self.base.close()
