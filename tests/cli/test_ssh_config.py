"""`offload ssh-config` and the IAP proxy command: exact entries, host-key trust, install, and a real ssh login."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from offload.errors import ConfigError
from offload.outputs import WorkerRecord
from offload.runtime.hostkeys import KnownHosts
from offload.runtime.iap import iap_proxy_command
from tests.cli.conftest import RunCli
from tests.e2e.helpers import offload, stderr_line
from tests.fakes.compute_api import ComputeFake
from tests.workers import SshdWorker, make_repo, sshd_record, write_outputs

KEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFh"
KEY_B = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJi"


def _gce(name: str, host: str, **extra: object) -> dict[str, object]:
    return {"name": name, "host": host, "port": 22, "user": "dev_example_com", "container": "offload-worker",
            "workspace": "/mnt/disks/data/offload", "instance": name, "project": "offload-test-1",
            "zone": "us-west1-a", "host_keys": [], "proxy_command": None, **extra}


def _known_hosts(home: Path) -> Path:
    return home / ".config" / "offload" / "known_hosts"


def test_iap_proxy_command_is_exact() -> None:
    worker = WorkerRecord(name="w", host="10.10.0.2", workspace="/w", instance="offload-dev-0",
                          project="example.com:my-proj", zone="us-west1-a")
    assert iap_proxy_command(worker) == ("gcloud compute start-iap-tunnel offload-dev-0 %p --listen-on-stdin "
                                         "--project=example.com:my-proj --zone=us-west1-a --verbosity=warning")


@pytest.mark.parametrize(("field", "value", "message"), [
    ("instance", None, "worker 'w' has no instance in the stack outputs"),
    ("zone", "us-west1-a; rm -rf ~", "worker 'w' has an invalid GCE zone 'us-west1-a; rm -rf ~'"),
    ("project", "p%h", "worker 'w' has an invalid GCE project 'p%h'"),
    ("instance", "$(reboot)", "worker 'w' has an invalid GCE instance '$(reboot)'"),
    ("zone", "us-west1-a\n", "worker 'w' has an invalid GCE zone 'us-west1-a\\n'"),
])
def test_iap_proxy_command_refuses_what_is_not_a_gce_name(field: str, value: str | None, message: str) -> None:
    fields = {"instance": "offload-dev-0", "project": "my-proj-1", "zone": "us-west1-a", field: value}
    worker = WorkerRecord(name="w", host="10.10.0.2", workspace="/w", **fields)
    with pytest.raises(ConfigError) as e:
        iap_proxy_command(worker)
    assert e.value.line().startswith(message)


def test_entries_are_exact_and_pinned_keys_are_trusted(cli: RunCli, tmp_path: Path, isolated_home: Path) -> None:
    outputs = write_outputs(tmp_path / "o.json", "gce-cos", [
        _gce("offload-dev-0", "10.10.0.2", host_keys=[KEY_A]),
        _gce("offload-dev-1", "10.10.0.3", port=2222, host_keys=[KEY_B], container=None,
             proxy_command="ssh -W %h:%p bastion"),
    ])
    key = tmp_path / "id_ed25519"
    r = cli("ssh-config", "--outputs", str(outputs), "--identity", str(key))
    assert (r.exit_code, r.stderr) == (0, "")
    kh = _known_hosts(isolated_home)
    assert r.stdout == f"""\
# offload workers (gce-cos, dev@example.com), written by `offload ssh-config`.

Host offload-dev-0
    HostName 10.10.0.2
    Port 22
    User dev_example_com
    IdentityFile {key}
    IdentitiesOnly yes
    UserKnownHostsFile {kh}
    StrictHostKeyChecking yes
    ServerAliveInterval 30
    ServerAliveCountMax 4
    # Jobs run in container offload-worker on this host.

Host offload-dev-1
    HostName 10.10.0.3
    Port 2222
    User dev_example_com
    IdentityFile {key}
    IdentitiesOnly yes
    UserKnownHostsFile {kh}
    StrictHostKeyChecking yes
    ServerAliveInterval 30
    ServerAliveCountMax 4
    ProxyCommand ssh -W %h:%p bastion
"""
    assert KnownHosts(kh).entries() == [("10.10.0.2", KEY_A), ("[10.10.0.3]:2222", KEY_B)]
    again = cli("ssh-config", "--outputs", str(outputs), "--identity", str(key))
    assert again.stdout == r.stdout
    assert len(KnownHosts(kh).entries()) == 2, "trusting the same keys again adds nothing"


def test_iap_entries_tunnel_through_gcloud(cli: RunCli, tmp_path: Path) -> None:
    outputs = write_outputs(tmp_path / "o.json", "gce-linux", [_gce("offload-dev-0", "10.10.0.2", host_keys=[KEY_A],
                                                                     container=None)])
    r = cli("ssh-config", "--outputs", str(outputs), "--iap")
    assert r.exit_code == 0, r.stderr
    assert ("    ProxyCommand gcloud compute start-iap-tunnel offload-dev-0 %p --listen-on-stdin "
            "--project=offload-test-1 --zone=us-west1-a --verbosity=warning\n") in r.stdout
    assert "IdentityFile" not in r.stdout


def test_gce_keys_are_read_from_guest_attributes_when_none_is_pinned(cli: RunCli, tmp_path: Path,
                                                                     isolated_home: Path,
                                                                     compute_fake: ComputeFake) -> None:
    compute_fake.add("offload-dev-0", project="offload-test-1", host_keys={"ssh-ed25519": KEY_A.split()[1]})
    compute_fake.add("offload-dev-1", project="offload-test-1")
    outputs = write_outputs(tmp_path / "o.json", "gce-cos", [_gce("offload-dev-0", "10.10.0.2"),
                                                            _gce("offload-dev-1", "10.10.0.3")])
    r = cli("ssh-config", "--outputs", str(outputs))
    assert r.exit_code == 0
    assert KnownHosts(_known_hosts(isolated_home)).entries() == [("10.10.0.2", KEY_A)]
    assert r.stderr == ("offload: offload-dev-1: no host key known yet and the instance has published none; ssh "
                        "will refuse it until it has\n")
    # Known now: no second lookup.
    cli("ssh-config", "--outputs", str(outputs))
    assert len(compute_fake.calls("GET", "instances/offload-dev-0/getGuestAttributes")) == 1


def test_workers_on_this_machine_get_no_entry(cli: RunCli, tmp_path: Path) -> None:
    outputs = write_outputs(tmp_path / "o.json", "local-docker", [
        {"name": "offload-local-0", "host": "localhost", "container": "offload-local-0", "workspace": "/srv/o"}])
    r = cli("ssh-config", "--outputs", str(outputs))
    assert r.exit_code == 0
    assert "Host " not in r.stdout
    assert "# offload-local-0: a local-docker worker on this machine, reached without SSH: no entry." in r.stdout
    assert "Host " not in cli("ssh-config").stdout


def test_paths_are_quoted_and_percent_escaped(cli: RunCli, tmp_path: Path) -> None:
    outputs = write_outputs(tmp_path / "o.json", "ssh", [
        {"name": "box", "host": "10.0.0.5", "user": "dev", "workspace": "/srv/o", "host_keys": [KEY_A]}])
    r = cli("ssh-config", "--outputs", str(outputs), "--identity", "/keys/my key%1")
    assert '    IdentityFile "/keys/my key%%1"\n' in r.stdout


def test_install_writes_an_include_once_and_keeps_the_rest(cli: RunCli, tmp_path: Path,
                                                            isolated_home: Path) -> None:
    ssh_dir = isolated_home / ".ssh"
    ssh_dir.mkdir(mode=0o700)
    mine = "Host github.com\n    User git\n"
    (ssh_dir / "config").write_text(mine)
    os.chmod(ssh_dir / "config", 0o644)
    outputs = write_outputs(tmp_path / "o.json", "ssh", [
        {"name": "box", "host": "10.0.0.5", "user": "dev", "workspace": "/srv/o", "host_keys": [KEY_A]}])
    printed = cli("ssh-config", "--outputs", str(outputs)).stdout
    for _ in range(2):
        r = cli("ssh-config", "--outputs", str(outputs), "--install")
        assert r.exit_code == 0, r.stderr
    included = ssh_dir / "config.d" / "offload"
    assert r.stdout == f"wrote {included}, included from ~/.ssh/config; ssh box\n"
    assert included.read_text() == printed
    assert stat.S_IMODE(included.stat().st_mode) == 0o600
    assert (ssh_dir / "config").read_text() == (
        "# >>> offload: managed by `offload ssh-config --install` >>>\n"
        "# Include must come before any Host line, or it would apply to that host only.\n"
        "Include config.d/offload\n"
        "# <<< offload <<<\n"
        "\n" + mine)
    assert stat.S_IMODE((ssh_dir / "config").stat().st_mode) == 0o644, "the user's mode is kept"


def test_install_follows_a_symlinked_config(cli: RunCli, tmp_path: Path, isolated_home: Path) -> None:
    dotfiles = tmp_path / "dotfiles"
    dotfiles.mkdir()
    (dotfiles / "ssh_config").write_text("Host *\n    ServerAliveInterval 60\n")
    ssh_dir = isolated_home / ".ssh"
    ssh_dir.mkdir()
    (ssh_dir / "config").symlink_to(dotfiles / "ssh_config")
    outputs = write_outputs(tmp_path / "o.json", "ssh", [
        {"name": "box", "host": "10.0.0.5", "user": "dev", "workspace": "/srv/o"}])
    assert cli("ssh-config", "--outputs", str(outputs), "--install").exit_code == 0
    assert (ssh_dir / "config").is_symlink()
    text = (dotfiles / "ssh_config").read_text()
    assert text.startswith("# >>> offload") and text.endswith("Host *\n    ServerAliveInterval 60\n")


def _ssh(config: Path, host: str, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ssh", "-F", str(config), "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", host,
                           *command], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
                          env={"PATH": os.environ["PATH"], "HOME": os.environ["HOME"]})


def test_the_config_logs_in_to_a_real_sshd(cli: RunCli, tmp_path: Path, sshd_worker: SshdWorker) -> None:
    outputs = write_outputs(tmp_path / "o.json", "ssh", [sshd_record(sshd_worker, name="real")])
    r = cli("ssh-config", "--outputs", str(outputs), "--identity", str(sshd_worker.key_path))
    assert r.exit_code == 0, r.stderr
    config = tmp_path / "ssh_config"
    config.write_text(r.stdout)
    login = _ssh(config, "real", "printf", "%s", "ok")
    assert (login.returncode, login.stdout) == (0, "ok"), login.stderr
    assert "StrictHostKeyChecking no" not in r.stdout


def test_strict_checking_refuses_an_unknown_or_wrong_key(cli: RunCli, tmp_path: Path, isolated_home: Path,
                                                         sshd_worker: SshdWorker) -> None:
    unknown = write_outputs(tmp_path / "u.json", "ssh", [sshd_record(sshd_worker, name="real", host_keys=[])])
    config = tmp_path / "ssh_config"
    config.write_text(cli("ssh-config", "--outputs", str(unknown), "--identity", str(sshd_worker.key_path)).stdout)
    r = _ssh(config, "real", "true")
    assert r.returncode == 255 and "Host key verification failed" in r.stderr
    assert not _known_hosts(isolated_home).exists() or "real" not in _known_hosts(isolated_home).read_text()

    wrong = write_outputs(tmp_path / "w.json", "ssh", [sshd_record(sshd_worker, name="real", host_keys=[KEY_A])])
    config.write_text(cli("ssh-config", "--outputs", str(wrong), "--identity", str(sshd_worker.key_path)).stdout)
    r = _ssh(config, "real", "true")
    assert r.returncode == 255 and "Host key verification failed" in r.stderr


def test_pinning_a_new_key_forgets_the_old_one_for_real_ssh_too(cli: RunCli, tmp_path: Path, isolated_home: Path,
                                                                 sshd_worker: SshdWorker) -> None:
    old_private, old_key = sshd_worker.host_key_path, sshd_worker.host_key
    config = tmp_path / "ssh_config"

    def pin_and_write() -> None:
        out = write_outputs(tmp_path / "o.json", "ssh", [sshd_record(sshd_worker, name="real")])
        r = cli("ssh-config", "--outputs", str(out), "--identity", str(sshd_worker.key_path))
        assert (r.exit_code, r.stderr) == (0, "")
        config.write_text(r.stdout)

    pin_and_write()
    assert _ssh(config, "real", "true").returncode == 0
    new_key = sshd_worker.rotate_host_key()
    pin_and_write()  # the outputs now pin the new key only
    assert _ssh(config, "real", "true").returncode == 0
    name = f"[{sshd_worker.host}]:{sshd_worker.port}"
    assert KnownHosts(_known_hosts(isolated_home)).entries() == [(name, new_key)], "exactly the pinned set"

    sshd_worker.use_host_key(old_private, old_key)  # the host is back on the key the outputs no longer pin
    r = _ssh(config, "real", "true")
    assert r.returncode == 255 and "Host key verification failed" in r.stderr
    repo = make_repo(tmp_path / "repo")
    refused = offload("run", "--outputs", str(tmp_path / "o.json"), "--", "true", cwd=repo,
                      key=sshd_worker.key_path)
    assert refused.returncode == 4 and "pinned for it in the stack outputs" in stderr_line(refused)


def test_pinned_keys_replace_the_lines_of_their_host_only(cli: RunCli, tmp_path: Path, isolated_home: Path) -> None:
    kh = _known_hosts(isolated_home)
    kh.parent.mkdir(parents=True)
    kh.write_text(f"10.0.0.5 {KEY_B}\n10.0.0.6 {KEY_B}\n")
    outputs = write_outputs(tmp_path / "o.json", "ssh", [
        {"name": "box", "host": "10.0.0.5", "user": "dev", "workspace": "/srv/o", "host_keys": [KEY_A]}])
    assert cli("ssh-config", "--outputs", str(outputs)).exit_code == 0
    assert KnownHosts(kh).entries() == [("10.0.0.6", KEY_B), ("10.0.0.5", KEY_A)]


def test_an_unpinned_worker_is_said_to_have_no_key_until_offload_has_met_it(cli: RunCli, tmp_path: Path,
                                                                            isolated_home: Path,
                                                                            sshd_worker: SshdWorker) -> None:
    out = write_outputs(tmp_path / "o.json", "ssh", [sshd_record(sshd_worker, name="real", host_keys=[])])
    r = cli("ssh-config", "--outputs", str(out), "--identity", str(sshd_worker.key_path))
    assert r.exit_code == 0
    assert r.stderr == ("offload: real: no host key known yet (none pinned in host_keys, and offload has not "
                        "connected to it); ssh will refuse it until you pin its key, or until offload connects once "
                        "(`offload status`) and trusts it on first use\n")
    repo = make_repo(tmp_path / "repo")
    first = offload("status", "--outputs", str(out), cwd=repo, key=sshd_worker.key_path)
    assert first.returncode == 0 and b"trusting host key" in first.stderr
    r = cli("ssh-config", "--outputs", str(out), "--identity", str(sshd_worker.key_path))
    assert (r.exit_code, r.stderr) == (0, "")
    config = tmp_path / "ssh_config"
    config.write_text(r.stdout)
    login = _ssh(config, "real", "printf", "%s", "remembered")
    assert (login.returncode, login.stdout) == (0, "remembered"), login.stderr


def test_an_ssh_config_alias_gives_its_port_user_and_key_to_offload_and_to_ssh(cli: RunCli, tmp_path: Path,
                                                                              isolated_home: Path,
                                                                              sshd_worker: SshdWorker) -> None:
    ssh_dir = isolated_home / ".ssh"
    ssh_dir.mkdir()
    (ssh_dir / "config").write_text(f"Host devbox\n    HostName {sshd_worker.host}\n    Port {sshd_worker.port}\n"
                                    f"    User {sshd_worker.user}\n    IdentityFile {sshd_worker.key_path}\n")
    out = write_outputs(tmp_path / "o.json", "ssh", [sshd_record(sshd_worker, name="dev", host="devbox", port=None,
                                                                 user=None)])
    repo = make_repo(tmp_path / "repo")
    p = offload("run", "--outputs", str(out), "--wait", "--", "id -un", cwd=repo)
    assert (p.returncode, p.stdout.decode()) == (0, f"{sshd_worker.user}\n"), p.stderr
    r = cli("ssh-config", "--outputs", str(out))
    assert (r.exit_code, r.stderr) == (0, "")
    assert (f"Host dev\n    HostName {sshd_worker.host}\n    Port {sshd_worker.port}\n    User {sshd_worker.user}\n"
            f"    IdentityFile {sshd_worker.key_path}\n") in r.stdout
    assert KnownHosts(_known_hosts(isolated_home)).entries() == [
        (f"[{sshd_worker.host}]:{sshd_worker.port}", sshd_worker.host_key)]
    config = tmp_path / "ssh_config"
    config.write_text(r.stdout)
    login = _ssh(config, "dev", "printf", "%s", "via-alias")
    assert (login.returncode, login.stdout) == (0, "via-alias"), login.stderr
