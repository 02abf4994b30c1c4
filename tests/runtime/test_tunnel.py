"""A local-port tunnel turned into a ProxyCommand: the relay, carrying a real SSH session to a real sshd."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from offload.errors import WorkerUnreachable
from offload.outputs import WorkerRecord
from offload.runtime.connection import ConnectOptions, open_connection
from offload.runtime.hostkeys import KnownHosts
from offload.runtime.transport import SshTransport
from offload.runtime.tunnel import relay, workstation_tunnel_argv
from tests.workers import SshdWorker, sshd_record

# A TCP forwarder that, like `gcloud workstations start-tcp-tunnel`, listens on a free local port, says
# which on stderr, and carries one connection to the target port.
FORWARDER = """\
import socket, sys, threading
target = int(sys.argv[1])
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(1)
print(f"Picking local unused port [{srv.getsockname()[1]}].", file=sys.stderr, flush=True)
conn, _ = srv.accept()
up = socket.create_connection(("127.0.0.1", target))
def pipe(a, b):
    while data := a.recv(65536):
        b.sendall(data)
    b.shutdown(socket.SHUT_WR)
threading.Thread(target=pipe, args=(conn, up), daemon=True).start()
pipe(up, conn)
"""


def test_relay_carries_an_ssh_session(sshd_worker: SshdWorker, tmp_path: Path) -> None:
    forwarder = tmp_path / "forwarder.py"
    forwarder.write_text(FORWARDER)
    relay_cmd = (f"{sys.executable} -c \"import sys; from offload.runtime.tunnel import relay; "
                 f"sys.exit(relay([sys.executable, '{forwarder}', '%p']))\"")
    record = WorkerRecord.from_dict(sshd_record(sshd_worker, proxy_command=relay_cmd))
    conn = open_connection(record, ConnectOptions(identity=sshd_worker.key_path,
                                                  known_hosts=KnownHosts(tmp_path / "kh")))
    try:
        t = SshTransport(record.name, conn)
        assert t.run(["echo", "through the tunnel"]).stdout == b"through the tunnel\n"
        assert t.run(["wc", "-c"], stdin=b"z" * 1_000_000).stdout.strip() == b"1000000"
    finally:
        conn.close()


def test_a_tunnel_that_never_listens_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(WorkerUnreachable, match="did not start: no login here"):
        relay([sys.executable, "-c", "import sys; print('ERROR: no login here', file=sys.stderr)"], timeout=10)


def test_workstation_tunnel_command() -> None:
    assert workstation_tunnel_argv("ws-1", 22, project="p", region="us-central1", cluster="c", config="cfg") == [
        "gcloud", "workstations", "start-tcp-tunnel", "--project=p", "--region=us-central1", "--cluster=c",
        "--config=cfg", "ws-1", "22", "--local-host-port=localhost:0"]
