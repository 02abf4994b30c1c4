"""The one SSH connection against a real sshd: host-key trust, timeouts, and one login per invocation."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from offload.errors import AuthFailed, HostKeyMismatch, UsageError, WorkerUnreachable
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


def test_a_worker_that_hangs_up_in_the_handshake_is_unreachable_with_a_reason(tmp_path: Path) -> None:
    """The server sends its banner and closes: paramiko raises an EOFError that says nothing of itself, and the
    error says what happened instead of ending in an empty reason."""
    import threading

    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)

        def hang_up() -> None:
            client, _ = srv.accept()
            with client:
                client.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
                client.shutdown(socket.SHUT_WR)
                while client.recv(65536):  # read what the client sends, so that it sees an end, not a reset
                    pass

        server = threading.Thread(target=hang_up, daemon=True)
        server.start()
        record = WorkerRecord(name="rude", host="127.0.0.1", port=srv.getsockname()[1], user="u", workspace="/w")
        with pytest.raises(WorkerUnreachable) as e:
            open_connection(record, ConnectOptions(known_hosts=KnownHosts(tmp_path / "kh"), connect_timeout=10))
        server.join(timeout=10)
    assert e.value.line() == (f"cannot reach worker rude at u@127.0.0.1:{record.port}: the other side closed the "
                              "connection (EOFError) (is it running? try `offload status`)")


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


AUTH_HINT = "(pass --identity or set OFFLOAD_SSH_KEY (a private key))"


def test_a_refused_key_is_an_auth_error_not_an_unreachable_worker(sshd_worker: SshdWorker, tmp_path: Path) -> None:
    import subprocess

    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    opts = _opts(sshd_worker, tmp_path)
    opts.identity = other
    record = _record(sshd_worker)
    with pytest.raises(AuthFailed) as e:
        open_connection(record, opts)
    assert not isinstance(e.value, WorkerUnreachable), "nothing reconnects on a refused login"
    assert e.value.exit_code == 8 and WorkerUnreachable.exit_code == 3 and HostKeyMismatch.exit_code == 4
    assert e.value.line() == (f"worker {record.name} at {record.user}@{record.host}:{record.port} refused the SSH "
                              f"login with key {other} {AUTH_HINT}")


def test_no_key_at_all_is_an_auth_error(sshd_worker: SshdWorker, tmp_path: Path) -> None:
    # HOME is empty and there is no ssh-agent: paramiko has no key to offer.
    opts = ConnectOptions(known_hosts=KnownHosts(tmp_path / "known_hosts"))
    with pytest.raises(AuthFailed) as e:
        open_connection(_record(sshd_worker), opts)
    assert e.value.line().endswith(f"no SSH key to log in to worker {_record(sshd_worker).name} at "
                                   f"{sshd_worker.user}@{sshd_worker.host}:{sshd_worker.port} with: no --identity "
                                   f"or OFFLOAD_SSH_KEY, no ssh-agent, and no key in ~/.ssh {AUTH_HINT}")
    assert "is it running" not in e.value.line()


def test_a_passphrase_key_is_an_auth_error_that_says_so(sshd_worker: SshdWorker, tmp_path: Path) -> None:
    import subprocess

    locked = tmp_path / "locked"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "secret words", "-f", str(locked)], check=True)
    opts = _opts(sshd_worker, tmp_path)
    opts.identity = locked
    with pytest.raises(AuthFailed, match="protected by a passphrase"):
        open_connection(_record(sshd_worker), opts)


@pytest.mark.parametrize(("make", "message"), [
    (lambda d: d / "missing", "SSH key {path} does not exist (pass --identity or set OFFLOAD_SSH_KEY (a private key))"),
    (lambda d: d, "SSH key {path} is a directory, not a key file"),
    (lambda d: _public_only(d), "SSH key {path} is a public key, not a private key"),
])
def test_a_key_file_that_cannot_be_a_private_key_is_a_usage_error(sshd_worker: SshdWorker, tmp_path: Path,
                                                                  make, message: str) -> None:
    path = make(tmp_path)
    opts = _opts(sshd_worker, tmp_path)
    opts.identity = path
    before = sshd_worker.accepted_count()
    with pytest.raises(UsageError) as e:
        open_connection(_record(sshd_worker), opts)
    assert e.value.line().startswith(message.format(path=path)), e.value.line()
    assert e.value.exit_code == 2 and "is it running" not in e.value.line()
    assert sshd_worker.accepted_count() == before


def test_the_public_half_of_a_pair_points_at_the_private_one(sshd_worker: SshdWorker, tmp_path: Path) -> None:
    opts = _opts(sshd_worker, tmp_path)
    opts.identity = Path(f"{sshd_worker.key_path}.pub")
    with pytest.raises(UsageError) as e:
        open_connection(_record(sshd_worker), opts)
    assert e.value.line() == (f"SSH key {opts.identity} is a public key, not a private key (offload needs the "
                              f"private key: {sshd_worker.key_path})")


def test_a_file_that_is_no_key_at_all_is_a_usage_error(sshd_worker: SshdWorker, tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_text("not a key\n")
    opts = _opts(sshd_worker, tmp_path)
    opts.identity = junk
    with pytest.raises(UsageError, match=f"cannot use {junk} as an SSH private key"):
        open_connection(_record(sshd_worker), opts)


def _public_only(directory: Path) -> Path:
    import subprocess

    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(directory / "pair")], check=True)
    (directory / "pair").unlink()
    return directory / "pair.pub"


def test_a_refusal_names_the_outputs_when_the_key_was_pinned_there(sshd_worker: SshdWorker, tmp_path: Path) -> None:
    record = _record(sshd_worker)
    sshd_worker.rotate_host_key()
    with pytest.raises(HostKeyMismatch) as e:
        open_connection(record, _opts(sshd_worker, tmp_path))
    line = e.value.line()
    assert "does not match the host_keys pinned for it in the stack outputs); refusing to connect" in line
    assert "known_hosts" not in line and "host_keys of the stack outputs" in line


def test_a_refusal_names_known_hosts_when_the_key_was_remembered_there(sshd_worker: SshdWorker,
                                                                       tmp_path: Path) -> None:
    record = _record(sshd_worker, host_keys=[])
    opts = _opts(sshd_worker, tmp_path)
    open_connection(record, opts).close()
    sshd_worker.rotate_host_key()
    with pytest.raises(HostKeyMismatch) as e:
        open_connection(record, opts)
    name = host_id(sshd_worker.host, sshd_worker.port)
    assert f"does not match the key remembered for {name} in {opts.known_hosts.path}" in e.value.line()
    assert e.value.hint == f"if the worker was rebuilt on purpose, forget the old key with " \
                           f"`ssh-keygen -R '{name}' -f {opts.known_hosts.path}`"
    assert "stack outputs" not in e.value.line()


def test_a_key_of_another_type_than_the_pinned_one_names_the_outputs_too(sshd_worker: SshdWorker,
                                                                        tmp_path: Path) -> None:
    rsa = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQDGv0h1dd8Ws7fRf4kbEb1rAJRY3Wm0zq5YzpwG4CjrQ1xVxJ0tW4T0aI1bV7gQ"
    with pytest.raises(HostKeyMismatch, match="pinned for it in the stack outputs"):
        open_connection(_record(sshd_worker, host_keys=[rsa]), _opts(sshd_worker, tmp_path))


def test_an_ssh_config_alias_gives_a_null_port_and_user(sshd_worker: SshdWorker, tmp_path: Path,
                                                       isolated_home: Path) -> None:
    """host names an alias of ~/.ssh/config: its HostName, Port, User and IdentityFile are used, and the pinned key
    is checked under the HostName's address, as paramiko dials it."""
    ssh_dir = isolated_home / ".ssh"
    ssh_dir.mkdir()
    (ssh_dir / "config").write_text(f"Host devbox\n    HostName {sshd_worker.host}\n    Port {sshd_worker.port}\n"
                                    f"    User {sshd_worker.user}\n    IdentityFile {sshd_worker.key_path}\n")
    record = _record(sshd_worker, host="devbox", port=None, user=None)
    assert (record.port, record.user) == (None, None)
    conn = open_connection(record, ConnectOptions(known_hosts=KnownHosts(tmp_path / "known_hosts")))
    try:
        assert SshTransport("w", conn).run(["id", "-un"]).stdout == f"{sshd_worker.user}\n".encode()
        assert (conn.host, conn.port, conn.user) == (sshd_worker.host, sshd_worker.port, sshd_worker.user)
    finally:
        conn.close()


def test_an_identity_file_of_ssh_config_that_does_not_exist_is_passed_over(sshd_worker: SshdWorker, tmp_path: Path,
                                                                            isolated_home: Path) -> None:
    """As OpenSSH does: a `Host *` default key that this machine lacks is no reason to fail."""
    ssh_dir = isolated_home / ".ssh"
    ssh_dir.mkdir()
    (ssh_dir / "config").write_text(f"Host *\n    IdentityFile ~/.ssh/id_missing\n"
                                    f"    IdentityFile {sshd_worker.key_path}\n")
    before = sshd_worker.accepted_count()
    conn = open_connection(_record(sshd_worker), ConnectOptions(known_hosts=KnownHosts(tmp_path / "known_hosts")))
    try:
        assert SshTransport("w", conn).run(["id", "-un"]).stdout == f"{sshd_worker.user}\n".encode()
    finally:
        conn.close()
    # The login was made with the key that exists, the next IdentityFile: sshd logs its fingerprint.
    fingerprint = subprocess.run(["ssh-keygen", "-lf", str(sshd_worker.key_path)], capture_output=True, text=True,
                                 check=True, timeout=30).stdout.split()[1]
    assert sshd_worker.accepted_count() - before == 1
    (login,) = [line for line in sshd_worker.log_text().splitlines() if "Accepted publickey" in line][before:]
    assert f"for {sshd_worker.user} " in login and fingerprint in login, login


def test_without_an_ssh_config_entry_a_null_port_and_user_are_22_and_the_local_user(tmp_path: Path) -> None:
    import getpass

    from offload.runtime.user_ssh_config import resolve

    record = WorkerRecord.from_dict({"name": "w", "host": "box.example", "port": None, "user": None,
                                     "workspace": "/w"})
    assert (resolve(record).port, resolve(record).user) == (22, getpass.getuser())


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
