"""Running argv on a worker: locally, over one SSH connection, or inside a container.

Every remote step of offload goes through `Transport.run`/`stream`: a fixed argv plus bytes on stdin.
Commands are built as argv lists and joined with `shlex.join`, so data never becomes shell text.

Over SSH a `run` step goes to the step dispatcher (offload/worker/sh/dispatch.sh) that the connection keeps on the
worker, inside the worker container when there is one: one request and its answer on a channel already open, so a
step costs one round trip and no `docker exec`. Streams (`logs -f`, results, large inputs) keep a channel each.
"""

from __future__ import annotations

import os
import select
import shlex
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol, Sequence

from offload.errors import RemoteCommandError, WorkerUnreachable, reason
from offload.worker.scripts import session_script

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
# A step whose input is larger than this (a big sync's pack) runs on a channel of its own, where its input streams;
# the dispatcher takes its whole request before the step starts.
DISPATCH_INPUT_MAX = 1 << 20
# How long a step waits for the dispatcher to finish another step before it opens a channel of its own.
DISPATCH_WAIT = 10.0


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


def dispatch_enabled() -> bool:
    """Whether steps go to the worker's dispatcher (`OFFLOAD_DISPATCH=0`: each step on an exec channel of its own,
    as a baseline to measure against)."""
    return os.environ.get("OFFLOAD_DISPATCH", "1") != "0"


def dispatchable(stdin: object) -> bool:
    """A step with this input may go to the dispatcher: none, or input of a known size of at most
    DISPATCH_INPUT_MAX (input that comes as it is made streams on a channel of its own)."""
    return stdin is None or (hasattr(stdin, "__len__") and len(stdin) <= DISPATCH_INPUT_MAX)  # type: ignore[arg-type]


def _bytes(stdin: object) -> bytes | None:
    """A step's input of a known size as bytes (input in pieces is joined; it is small)."""
    if stdin is None or isinstance(stdin, bytes):
        return stdin
    return b"".join(stdin)  # type: ignore[call-overload]


class DispatchUnavailable(Exception):
    """The dispatcher did not take the step (it could not start, or went away or said something else before the
    step began): nothing ran, and the step runs on a channel of its own."""


class _Dispatcher:
    """One dispatch.sh on the worker, on one exec channel of the held connection, running one step at a time.
    Its protocol is described in offload/worker/sh/dispatch.sh."""

    def __init__(self, chan) -> None:
        self.chan = chan
        self.lock = threading.Lock()
        self.refused = False    # it said it cannot work on this worker: steps take the exec path for good
        self._greeted = False
        self._buf = bytearray()
        chan.settimeout(0.5)

    def usable(self) -> bool:
        c = self.chan
        return not (self.refused or c.closed or c.eof_received or c.exit_status_ready())

    def close(self) -> None:
        self.chan.close()

    def _more(self, progress: _Progress, timeout: float | None, alive: Callable[[], bool]) -> bool:
        """Read what has come into the buffer; False once the channel has ended."""
        while True:
            try:
                data = self.chan.recv(_CHUNK)
            except socket.timeout:
                if not alive():
                    return False
                if timeout and time.monotonic() - progress.last > timeout:
                    raise TimeoutError from None
                continue
            if not data:
                return False
            self._buf += data
            progress.moved(output=True)
            return True

    def _line(self, progress: _Progress, timeout: float | None, alive: Callable[[], bool]) -> bytes | None:
        while True:
            end = self._buf.find(b"\n")
            if end >= 0:
                line = bytes(self._buf[:end])
                del self._buf[:end + 1]
                return line
            if len(self._buf) > 4096 or not self._more(progress, timeout, alive):
                return None

    def _exact(self, size: int, progress: _Progress, timeout: float | None, alive: Callable[[], bool]) -> bytes | None:
        while len(self._buf) < size:
            if not self._more(progress, timeout, alive):
                return None
        data = bytes(self._buf[:size])
        del self._buf[:size]
        return data

    def _send(self, data: bytes, progress: _Progress, timeout: float | None) -> None:
        view = memoryview(data)
        while view:
            try:
                sent = self.chan.send(view[:_CHUNK * 4])
            except socket.timeout:
                if timeout and time.monotonic() - progress.last > timeout:
                    raise TimeoutError from None
                continue
            if not sent:
                raise DispatchUnavailable("the dispatcher's channel closed")
            view = view[sent:]
            progress.moved()

    def send(self, command: bytes, stdin: bytes, progress: _Progress, timeout: float | None) -> None:
        """Send one request: COMMAND (shell text) with STDIN. DispatchUnavailable when it could not be sent."""
        try:
            self._send(f"{len(command)} {len(stdin)}\n".encode() + command + stdin, progress, timeout)
        except TimeoutError:
            raise  # stalled part way: the step may have begun, so it does not go again
        except (OSError, EOFError) as e:  # paramiko raises socket errors and EOFError on a closing channel
            raise DispatchUnavailable(str(e)) from None

    def answer(self, progress: _Progress, timeout: float | None, alive: Callable[[], bool],
               lost: Callable[[], Exception]) -> Result:
        """The answer to the oldest request not yet answered. DispatchUnavailable when its step did not begin;
        LOST() (raised) when the dispatcher went away after it began, TimeoutError when it made no progress for
        TIMEOUT."""
        if not self._greeted:
            hello = self._line(progress, timeout, alive)
            if hello != b"offload-dispatch 1":
                self.refused = hello == b"offload-dispatch no"
                raise DispatchUnavailable(f"the dispatcher said {hello!r}")
            self._greeted = True
        if self._line(progress, timeout, alive) != b"a":
            raise DispatchUnavailable("the dispatcher did not take the step")
        head = (self._line(progress, timeout, alive) or b"").split()
        if len(head) != 4 or head[0] != b"x" or not all(f.isdigit() for f in head[1:]):
            raise lost()
        code, out_len, err_len = (int(f) for f in head[1:])
        out = self._exact(out_len, progress, timeout, alive)
        err = self._exact(err_len, progress, timeout, alive)
        if out is None or err is None:
            raise lost()
        return Result(code, out, err)


@dataclass(frozen=True)
class Step:
    """One step of several sent together (`run_steps`): ARGV with STDIN."""

    argv: Sequence[str]
    stdin: Input | None = None
    timeout: float | None = None


def run_steps(transport: Transport, steps: Sequence[Step]) -> list[Result]:
    """Run STEPS one after the other on the worker. A transport with a dispatcher sends them all before it reads
    the first answer, so they cost one round trip together; a step that depends on an earlier one must check, on the
    worker, that the earlier one did its part."""
    many = getattr(transport, "run_steps", None)
    if many is not None:
        return many(steps)
    return [transport.run(s.argv, stdin=s.stdin, timeout=s.timeout) for s in steps]


class SshTransport:
    """One SSH connection (a fabric Connection) shared by every step of a CLI invocation.

    A `run` step is one request to the connection's dispatcher on the worker (one per WITHIN: the host, or the
    worker container), so a warm step costs one round trip. A stream, a step with a large input, or any step when
    no dispatcher can run is one exec channel on the already-open transport: a round trip or two, not a
    handshake. CHANNELS_OPENED counts the channels, for `offload agent status` and tests.
    """

    dispatches = True  # `run` and its exec fallback take WITHIN, the argv prefix that enters a container

    def __init__(self, worker: str, connection: "fabric.Connection") -> None:
        self.worker = worker
        self.connection = connection
        self.channels_opened = 0
        self.dispatched = 0
        self._dispatchers: dict[tuple[str, ...], _Dispatcher] = {}
        self._dispatch_lock = threading.Lock()

    def _channel(self, argv: Sequence[str]):
        transport = self.connection.transport
        if transport is None or not transport.is_active():
            raise WorkerUnreachable(self.worker, f"the connection to worker {self.worker} was lost")
        self.channels_opened += 1
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

    def _dispatcher(self, within: Sequence[str]) -> _Dispatcher | None:
        """The live dispatcher for WITHIN, held for the caller (release its lock), started when none runs; None
        when none can run there, or it stays busy with another step for DISPATCH_WAIT seconds. Steps wait for the
        one dispatcher rather than open channels of their own: sshd allows a connection ten (MaxSessions), and
        each `logs -f` holds one."""
        key = tuple(within)
        deadline = time.monotonic() + DISPATCH_WAIT
        while True:
            with self._dispatch_lock:
                d = self._dispatchers.get(key)
                if d is not None and d.refused:
                    return None
                if d is None or not d.usable():
                    if d is not None:
                        d.close()
                    try:
                        chan = self._channel([*within, "sh", "-c", session_script("dispatch.sh"), "sh"])
                    except WorkerUnreachable:
                        self._dispatchers.pop(key, None)
                        return None
                    d = self._dispatchers[key] = _Dispatcher(chan)
            if not d.lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                return None
            if d.usable():
                return d
            d.lock.release()
            if d.refused:
                return None
            # It went away while we waited: start another.

    def run(self, argv: Sequence[str], *, stdin: Input | None = None, timeout: float | None = None,
            within: Sequence[str] = (), dispatch: bool | None = None) -> Result:
        """ARGV's result; WITHIN (say `docker exec -i NAME`) runs it inside a container. DISPATCH (default:
        `dispatch_enabled()`) sends it to the dispatcher when its input is small enough."""
        return self.run_steps([Step(argv, stdin, timeout)], within=within, dispatch=dispatch)[0]

    def run_steps(self, steps: Sequence[Step], *, within: Sequence[str] = (),
                  dispatch: bool | None = None) -> list[Result]:
        """STEPS in order, all sent to the dispatcher before the first answer is read (see `run_steps`); on
        channels of their own when they cannot go to it."""
        if len(steps) > 1 and not all(dispatchable(s.stdin) for s in steps):
            # A large input streams on a channel of its own; the other steps still go to the dispatcher.
            return [self.run_steps([s], within=within, dispatch=dispatch)[0] for s in steps]
        results: list[Result] = []
        if (dispatch_enabled() if dispatch is None else dispatch) and all(dispatchable(s.stdin) for s in steps):
            d = self._dispatcher(within)
            if d is not None:
                try:
                    self._dispatch(d, steps, results)
                except DispatchUnavailable:
                    d.close()  # the steps not answered did not begin: they go on channels of their own
                except TimeoutError:
                    d.close()
                    raise self._stalled(max(s.timeout or 0 for s in steps)) from None
                except BaseException:
                    d.close()
                    raise
                finally:
                    d.lock.release()
        for s in steps[len(results):]:
            results.append(self._exec(list(within) + list(s.argv), stdin=s.stdin, timeout=s.timeout))
        return results

    def _dispatch(self, d: _Dispatcher, steps: Sequence[Step], results: list[Result]) -> None:
        progress = _Progress()
        timeout = max((s.timeout for s in steps if s.timeout), default=None)
        for s in steps:
            d.send(shlex.join(s.argv).encode("utf-8", "surrogateescape"), _bytes(s.stdin) or b"", progress,
                   timeout)
        for _ in steps:
            results.append(d.answer(progress, timeout, self.alive, self._lost))
            self.dispatched += 1

    def _lost(self) -> WorkerUnreachable:
        return WorkerUnreachable(self.worker, f"the connection to worker {self.worker} dropped")

    def _exec(self, argv: Sequence[str], *, stdin: Input | None = None, timeout: float | None = None) -> Result:
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
        for d in list(self._dispatchers.values()):
            d.close()
        self._dispatchers.clear()
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
        return self.run_steps([Step(argv, stdin, timeout)])[0]

    def run_steps(self, steps: Sequence[Step]) -> list[Result]:
        """STEPS in the container (see `run_steps`); a container found down is healed, and the steps go again
        (none of them ran: the first did not even start)."""
        results = self._run_steps(steps)
        if self._heal and self._container_down(results[0]):
            self._heal()
            results = self._run_steps(steps)
        return results

    def _run_steps(self, steps: Sequence[Step]) -> list[Result]:
        if getattr(self.base, "dispatches", False):
            # The base keeps a dispatcher inside the container: no `docker exec` per step.
            return self.base.run_steps(steps, within=self.wrap([]))  # type: ignore[attr-defined]
        return [self.base.run(self.wrap(s.argv), stdin=s.stdin, timeout=s.timeout) for s in steps]

    def stream(self, argv: Sequence[str], sink: Sink, *, stdin: bytes | None = None,
               stderr: Sink | None = None) -> int:
        return self.base.stream(self.wrap(argv), sink, stdin=stdin, stderr=stderr)

    def interactive(self, argv: Sequence[str]) -> int:
        return self.base.interactive(self.wrap(argv, interactive=True))

    def alive(self) -> bool:
        return self.base.alive()

    def close(self) -> None:
        self.base.close()
