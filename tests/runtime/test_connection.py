"""The one SSH connection against a real sshd: host-key trust, timeouts, and one login per invocation."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import pytest

from offload.errors import HostKeyMismatch, WorkerUnreachable
from offload.outputs import WorkerRecord
from offload.runtime.connection import DEFAULT_CONNECT_TIMEOUT, ConnectOptions, open_connection, telling_line
from offload.runtime.hostkeys import KnownHosts, host_id
from offload.runtime.transport import SshTransport
from tests.workers import SshdWorker, proxy_relay, sshd_record


def _record(worker: SshdWorker, **overrides) -> WorkerRecord:
    return WorkerRecord.from_dict(sshd_record(worker, **overrides))


def _opts(worker: SshdWorker, tmp_path: Path, notices: list[str] | None = None, **kw) -> ConnectOptions:
    sink = notices if notices is not None else []
    return ConnectOptions(identity=worker.key_path, known_hosts=KnownHosts(tmp_path / "known_hosts"),
                          notice=sink.append, **kw)


def test_pinned_key_connects_and_steps_share_one_login(sshd_worker: SshdWorker, tmp_path: Path) -> None:
    before = sshd_worker.accepted_count()
    conn = open_connection(_record(sshd_worker), _opts(sshd_worker, tmp_path))
    t = SshTransport("w", conn)
    try:
        for i in range(5):
            r = t.run(["sh", "-c", 'printf "%s" "$1"', "sh", f"step {i}; $(echo no)"])
            assert r.ok and r.stdout == f"step {i}; $(echo no)".encode()
        big = t.run(["wc", "-c"], stdin=b"x" * 3_000_000)
        assert big.text().strip() == "3000000"
        assert t.run(["sh", "-c", "exit 7"]).exit_code == 7
        sock = conn.transport.sock
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert conn.transport.packetizer._Packetizer__keepalive_interval == 15
    finally:
        t.close()
    assert sshd_worker.accepted_count() - before == 1


def test_changed_host_key_is_refused(sshd_worker: SshdWorker, tmp_path: Path) -> None:
    record = _record(sshd_worker)
    sshd_worker.rotate_host_key()
    with pytest.raises(HostKeyMismatch) as e:
        open_connection(record, _opts(sshd_worker, tmp_path))
    assert "host key" in e.value.line() and record.name in e.value.line()


def test_first_use_is_remembered_with_a_notice_then_a_change_is_refused(sshd_worker: SshdWorker,
                                                                        tmp_path: Path) -> None:
    record = _record(sshd_worker, host_keys=[])
    notices: list[str] = []
    opts = _opts(sshd_worker, tmp_path, notices)
    open_connection(record, opts).close()
    assert len(notices) == 1 and "first use" in notices[0]
    name = host_id(sshd_worker.host, sshd_worker.port)
    assert opts.known_hosts.lookup(name) == [sshd_worker.host_key.split()[0] + " " + sshd_worker.host_key.split()[1]]
    open_connection(record, opts).close()
    assert len(notices) == 1, "a remembered key is not announced again"
    sshd_worker.rotate_host_key()
    with pytest.raises(HostKeyMismatch, match="host key"):
        open_connection(record, opts)
    assert len(opts.known_hosts.lookup(name)) == 1, "a changed key is never learned"


def test_unreachable_worker_is_one_line_naming_it(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    record = WorkerRecord(name="gone-worker", host="127.0.0.1", port=port, user="nobody", workspace="/w")
    with pytest.raises(WorkerUnreachable) as e:
        open_connection(record, ConnectOptions(known_hosts=KnownHosts(tmp_path / "kh")))
    assert "gone-worker" in e.value.line() and "\n" not in e.value.line()


def test_silent_worker_times_out_within_the_connect_timeout(tmp_path: Path) -> None:
    # A listener that accepts TCP but never speaks SSH: the banner wait must honour the timeout.
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        record = WorkerRecord(name="mute", host="127.0.0.1", port=srv.getsockname()[1], user="u", workspace="/w")
        start = time.monotonic()
        with pytest.raises(WorkerUnreachable, match="mute"):
            open_connection(record, ConnectOptions(known_hosts=KnownHosts(tmp_path / "kh"), connect_timeout=2))
        assert time.monotonic() - start < 6


@pytest.mark.parametrize(("setting", "seconds"), [
    (None, DEFAULT_CONNECT_TIMEOUT), ("3", 3.0), ("2.5", 2.5), ("soon", DEFAULT_CONNECT_TIMEOUT), ("0", 1.0),
    ("-4", 1.0), ("9999", 120.0),
])
def test_the_connect_timeout_comes_from_the_environment_within_bounds(monkeypatch: pytest.MonkeyPatch,
                                                                      setting: str | None, seconds: float) -> None:
    if setting is None:
        monkeypatch.delenv("OFFLOAD_CONNECT_TIMEOUT", raising=False)
    else:
        monkeypatch.setenv("OFFLOAD_CONNECT_TIMEOUT", setting)
    assert ConnectOptions.from_env().connect_timeout == seconds


def test_wrong_identity_is_a_login_error(sshd_worker: SshdWorker, tmp_path: Path) -> None:
    import subprocess

    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    opts = _opts(sshd_worker, tmp_path)
    opts.identity = other
    with pytest.raises(WorkerUnreachable, match="refused the SSH login"):
        open_connection(_record(sshd_worker), opts)




def test_proxy_command_is_honoured(sshd_worker: SshdWorker, tmp_path: Path) -> None:
    # A ProxyCommand that relays stdin/stdout to the worker, as an IAP tunnel does; %h and %p are expanded.
    record = _record(sshd_worker, proxy_command=proxy_relay(tmp_path))
    conn = open_connection(record, _opts(sshd_worker, tmp_path))
    try:
        assert SshTransport("w", conn).run(["echo", "via proxy"]).stdout == b"via proxy\n"
        assert not isinstance(conn.transport.sock, socket.socket)
    finally:
        conn.close()


def test_a_proxy_command_that_dies_with_a_traceback_is_reported_by_its_exception(tmp_path: Path) -> None:
    dies = tmp_path / "dies.py"
    dies.write_text("import socket\n\ndef dial():\n    socket.create_connection(('127.0.0.1', 1), timeout=5)\n\n"
                    "try:\n    dial()\nexcept OSError:\n    raise RuntimeError('tunnel gave up')\n")
    record = WorkerRecord(name="w", host="10.255.0.1", port=22, user="u", workspace="/w",
                          proxy_command=f"{sys.executable} {dies} %h %p")
    with pytest.raises(WorkerUnreachable) as e:
        open_connection(record, ConnectOptions(known_hosts=KnownHosts(tmp_path / "kh"), connect_timeout=10))
    assert e.value.line().endswith(": RuntimeError: tunnel gave up"), e.value.line()
    assert "Traceback" not in e.value.line() and "\n" not in e.value.line()


@pytest.mark.parametrize(("stderr", "line"), [
    (["ERROR: (gcloud.compute.start-iap-tunnel) You do not currently have an active account selected.",
      "Please run:", "  $ gcloud auth login"],
     "(gcloud.compute.start-iap-tunnel) You do not currently have an active account selected."),
    (["Traceback (most recent call last):", '  File "x.py", line 1, in <module>', "    f()",
      "ConnectionRefusedError: [Errno 111] Connection refused"], "ConnectionRefusedError: [Errno 111] Connection refused"),
    (["channel 0: open failed: connect failed: Name or service not known", "stdio forwarding failed"],
     "channel 0: open failed: connect failed: Name or service not known"),
    ([], None),
])
def test_the_telling_line_of_a_failed_command(stderr: list[str], line: str | None) -> None:
    assert telling_line(stderr) == line
