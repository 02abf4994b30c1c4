"""A tunnel that listens on a local port, turned into a ProxyCommand that speaks on stdin and stdout.

`gcloud workstations start-tcp-tunnel` only listens on a local port; ssh, paramiko and rsync want a command
that relays stdin/stdout. `relay` starts the tunnel, reads the port it announces, connects, and relays.

Run as a ProxyCommand: `python -m offload.runtime.tunnel workstation --project P --region R --cluster C
--config F WORKSTATION PORT` (what `workstation_proxy_command` writes, with %h and %p for ssh to expand).
"""

from __future__ import annotations

import os
import re
import select
import shlex
import socket
import subprocess
import sys
import time
from typing import BinaryIO, Sequence

from offload.errors import ConfigError, OffloadError, WorkerUnreachable

_ANNOUNCED = re.compile(rb"port \[(\d+)\]")
# GCP resource ids; never '%', which ssh would expand in a ProxyCommand.
_RESOURCE = re.compile(r"[a-z][-a-z0-9.:]{0,99}")
START_TIMEOUT = 60.0


def workstation_tunnel_argv(workstation: str, port: int, *, project: str, region: str, cluster: str,
                            config: str) -> list[str]:
    """The gcloud command for a workstation's TCP tunnel on a free local port."""
    return ["gcloud", "workstations", "start-tcp-tunnel", f"--project={project}", f"--region={region}",
            f"--cluster={cluster}", f"--config={config}", workstation, str(port),
            "--local-host-port=localhost:0"]


def workstation_proxy_command(project: str, region: str, cluster: str, config: str) -> str:
    """The ProxyCommand that reaches port %p of workstation %h through its tunnel: this Python, this module."""
    for key, value in (("project", project), ("region", region), ("cluster", cluster), ("config", config)):
        if not _RESOURCE.fullmatch(value):
            raise ConfigError(f"invalid workstation {key} {value!r} in the stack outputs")
    argv = [sys.executable, "-m", "offload.runtime.tunnel", "workstation", f"--project={project}",
            f"--region={region}", f"--cluster={cluster}", f"--config={config}"]
    return f"{shlex.join(argv)} %h %p"


def _announced_port(proc: subprocess.Popen[bytes], timeout: float) -> int:
    assert proc.stderr is not None
    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stderr], [], [], 0.2)
        if ready:
            chunk = os.read(proc.stderr.fileno(), 4096)
            if not chunk:
                break
            seen += chunk
            match = _ANNOUNCED.search(seen)
            if match:
                return int(match.group(1))
        elif proc.poll() is not None:
            break
    said = seen.decode("utf-8", "replace").strip().splitlines()
    last = said[-1].removeprefix("ERROR: ") if said else "no output"
    raise WorkerUnreachable("tunnel", f"the tunnel did not start: {last}")


def relay(argv: Sequence[str], *, stdin: BinaryIO | None = None, stdout: BinaryIO | None = None,
          timeout: float = START_TIMEOUT) -> int:
    """Run the tunnel ARGV, connect to the port it announces, and relay STDIN/STDOUT until either side ends."""
    stdin = stdin or sys.stdin.buffer
    stdout = stdout or sys.stdout.buffer
    proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        port = _announced_port(proc, timeout)
        deadline = time.monotonic() + timeout
        while True:
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise WorkerUnreachable("tunnel", f"the tunnel announced port {port} but does not accept") \
                        from None
                time.sleep(0.1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(None)
        in_fd = stdin.fileno()
        open_in = True
        while True:
            watch = [sock] + ([in_fd] if open_in else [])
            ready, _, _ = select.select(watch, [], [])
            if in_fd in ready:
                data = os.read(in_fd, 65536)
                if data:
                    sock.sendall(data)
                else:
                    open_in = False
                    sock.shutdown(socket.SHUT_WR)
            if sock in ready:
                data = sock.recv(65536)
                if not data:
                    return 0
                stdout.write(data)
                stdout.flush()
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m offload.runtime.tunnel workstation ...`: the relay as a ProxyCommand; errors are one line."""
    import argparse

    parser = argparse.ArgumentParser(prog="offload-tunnel", description="Relay stdin/stdout to a port of a Cloud "
                                     "Workstation through `gcloud workstations start-tcp-tunnel`.")
    sub = parser.add_subparsers(dest="kind", required=True)
    ws = sub.add_parser("workstation")
    for option in ("project", "region", "cluster", "config"):
        ws.add_argument(f"--{option}", required=True)
    ws.add_argument("workstation")
    ws.add_argument("port", type=int)
    args = parser.parse_args(argv)
    try:
        return relay(workstation_tunnel_argv(args.workstation, args.port, project=args.project,
                                             region=args.region, cluster=args.cluster, config=args.config))
    except OffloadError as e:
        print(f"offload: {e.line()}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
