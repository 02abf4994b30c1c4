"""`offload init`: the stack file it writes, what it detects, and when it asks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from offload.cli import init as init_cmd
from offload.outputs import fingerprint
from offload.stackconfig import read_stack_config
from tests.cli.conftest import RunCli
from tests.conftest import StartSshd
from tests.workers import SshdWorker, WorkerUser, free_port, generate_keypair, make_traversable


REPO = Path(__file__).resolve().parents[2]
UP_NEXT = "next: install the Pulumi CLI (https://www.pulumi.com/docs/install/), then: "


@pytest.fixture(autouse=True)
def _outside_any_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `git config user.email` would read the checkout's own .git/config when run from it.
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    # tmp_path is the stack directory the tests pass as --dir: an offload Pulumi project. There is no pulumi
    # CLI on PATH here (the machine has none; a test that wants one puts one there).
    (tmp_path / "Pulumi.yaml").write_text((REPO / "Pulumi.yaml").read_text())
    monkeypatch.setenv("PATH", "/usr/bin:/bin")


@pytest.fixture
def gcloud_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A gcloud config dir whose active configuration 'work' sets project, account and zone."""
    base = tmp_path / "gcloud"
    (base / "configurations").mkdir(parents=True)
    (base / "active_config").write_text("work")
    (base / "configurations" / "config_default").write_text("[core]\nproject = not-this-one\n")
    (base / "configurations" / "config_work").write_text(
        "[core]\naccount = Me@Corp.example\nproject = detected-proj-1\n\n[compute]\nzone = europe-west1-c\n"
        "region = europe-west1\n")
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(base))
    return base


def _config(path: Path) -> dict[str, object]:
    return yaml.safe_load(path.read_text())["config"]


def test_flags_write_a_commented_stack_file(cli: RunCli, tmp_path: Path) -> None:
    r = cli("init", "--provider", "gce-cos", "--project", "my-proj-123", "--zone", "us-west1-b",
            "--developer", "Dev@Example.com", "--stack", "dev", "--dir", str(tmp_path), "--yes")
    assert (r.exit_code, r.stderr) == (0, "")
    path = tmp_path / "stacks" / "Pulumi.dev.yaml"
    assert r.stdout == (f"wrote {path} for developer dev@example.com\n"
                        f"{UP_NEXT}OFFLOAD_PROJECT_DIR={tmp_path} offload fleet up --stack dev\n")
    assert path.read_text() == """\
# The offload stack 'dev' of dev@example.com, written by `offload init`.
# Deploy it with `offload fleet up --stack dev`; then `offload run --stack dev -- COMMAND`.
config:
  # Where the workers live: gce-cos, gce-linux, workstation, local-docker or ssh.
  offload:provider: gce-cos
  # Your email: it names your workers, labels them and decides who is granted access to them.
  offload:developer: dev@example.com
  # The Google Cloud project and zone of your workers.
  gcp:project: my-proj-123
  gcp:zone: us-west1-b
  # Optional: offload:workers, offload:machineType, offload:dataDiskGb, offload:image,
  # offload:idleStopMinutes; each has a default (every key: docs/config.md in offload).
"""
    config = _config(path)
    assert config == {"offload:provider": "gce-cos", "offload:developer": "dev@example.com",
                      "gcp:project": "my-proj-123", "gcp:zone": "us-west1-b"}
    assert read_stack_config(config).zone == "us-west1-b"


def test_defaults_come_from_the_active_gcloud_configuration(cli: RunCli, tmp_path: Path,
                                                            gcloud_config: Path) -> None:
    r = cli("init", "--provider", "gce-linux", "--dir", str(tmp_path))
    assert (r.exit_code, r.stderr) == (0, "")
    assert "detected: gcloud project/zone/account" in r.stdout
    # The Google account is who gets IAM, so it names the stack and the developer.
    assert _config(tmp_path / "stacks" / "Pulumi.me.yaml") == {
        "offload:provider": "gce-linux", "offload:developer": "me@corp.example",
        "gcp:project": "detected-proj-1", "gcp:zone": "europe-west1-c"}


def test_environment_overrides_the_gcloud_files(cli: RunCli, tmp_path: Path, gcloud_config: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDSDK_CORE_PROJECT", "env-project-9")
    monkeypatch.setenv("CLOUDSDK_COMPUTE_ZONE", "asia-east1-a")
    r = cli("init", "--provider", "workstation", "--stack", "ws", "--dir", str(tmp_path))
    assert r.exit_code == 0, r.stderr
    config = _config(tmp_path / "stacks" / "Pulumi.ws.yaml")
    assert (config["gcp:project"], config["gcp:zone"]) == ("env-project-9", "asia-east1-a")


def test_google_cloud_project_and_git_email_are_the_last_resort(cli: RunCli, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                isolated_home: Path) -> None:
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "adc-project-7")
    (isolated_home / ".gitconfig").write_text("[user]\n\temail = coder@example.org\n")
    r = cli("init", "--provider", "gce-cos", "--zone", "us-east1-b", "--dir", str(tmp_path))
    assert r.exit_code == 0, r.stderr
    assert _config(tmp_path / "stacks" / "Pulumi.coder.yaml") == {
        "offload:provider": "gce-cos", "offload:developer": "coder@example.org",
        "gcp:project": "adc-project-7", "gcp:zone": "us-east1-b"}


def test_batch_mode_names_the_missing_flag(cli: RunCli, tmp_path: Path) -> None:
    r = cli("init", "--dir", str(tmp_path))
    assert (r.exit_code, r.stderr) == (2, "offload: missing --provider: one of gce-cos, gce-linux, workstation, "
                                          "local-docker, ssh, local\n")
    r = cli("init", "--provider", "gce-cos", "--developer", "d@example.com", "--dir", str(tmp_path))
    assert (r.exit_code, r.stderr) == (2, "offload: missing --project: nothing to detect it from, and init asks "
                                          "nothing without a terminal\n")
    r = cli("init", "--provider", "gce-cos", "--dir", str(tmp_path), "--project", "my-proj-123", "--zone",
            "us-west1-a")
    assert r.exit_code == 2 and r.stderr.startswith("offload: missing --developer")
    assert not (tmp_path / "stacks").exists()


def test_bad_answers_fail_with_the_key_and_what_it_accepts(cli: RunCli, tmp_path: Path) -> None:
    r = cli("init", "--provider", "gce-cos", "--developer", "d@example.com", "--project", "my-proj-123",
            "--zone", "nowhere", "--dir", str(tmp_path))
    assert r.exit_code == 2
    assert r.stderr == "offload: gcp:zone must be a Compute Engine zone such as us-west1-a; got 'nowhere'\n"
    r = cli("init", "--provider", "gce-cos", "--developer", "d@example.com", "--project", "my-proj-123",
            "--zone", "us-west1-a", "--stack", "../up", "--dir", str(tmp_path))
    assert r.exit_code == 2 and "--stack must be" in r.stderr


def test_refuses_to_overwrite_unless_forced(cli: RunCli, tmp_path: Path) -> None:
    path = tmp_path / "stacks" / "Pulumi.dev.yaml"
    path.parent.mkdir()
    path.write_text("config: {}\n")
    args = ["init", "--provider", "local-docker", "--developer", "dev@example.com", "--dir", str(tmp_path)]
    r = cli(*args)
    assert (r.exit_code, r.stderr) == (2, f"offload: {path} already exists (pass --force to overwrite it)\n")
    assert path.read_text() == "config: {}\n"
    r = cli(*args, "--force")
    assert r.exit_code == 0
    assert _config(path) == {"offload:provider": "local-docker", "offload:developer": "dev@example.com"}


def test_interactive_asks_only_where_the_workers_live(cli: RunCli, tmp_path: Path, gcloud_config: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    (gcloud_config / "configurations" / "config_work").write_text(
        "[core]\naccount = me@corp.example\nproject = detected-proj-1\n")
    monkeypatch.setattr(init_cmd, "stdin_is_tty", lambda: True)
    # Provider: gce-linux; project: the detected default; zone: typed (none was detected).
    r = cli("init", "--dir", str(tmp_path), input="gce-linux\n\nus-central1-f\n")
    assert r.exit_code == 0, r.stderr
    assert "Where should your workers live? [gce-cos]:" in r.stdout
    assert "Google Cloud project [detected-proj-1]:" in r.stdout
    assert "Zone:" in r.stdout
    assert "email" not in r.stdout.lower().split("wrote")[0], "the detected account is not asked again"
    assert _config(tmp_path / "stacks" / "Pulumi.me.yaml") == {
        "offload:provider": "gce-linux", "offload:developer": "me@corp.example",
        "gcp:project": "detected-proj-1", "gcp:zone": "us-central1-f"}


def test_ssh_hosts_unchecked(cli: RunCli, tmp_path: Path) -> None:
    r = cli("init", "--provider", "ssh", "--developer", "dev@example.com", "--host", "dev@build-box.example.com:2222",
            "--host", "ci@10.0.0.5", "--stack", "hosts", "--dir", str(tmp_path), "--no-check")
    assert r.exit_code == 0, r.stderr
    path = tmp_path / "stacks" / "Pulumi.hosts.yaml"
    assert r.stdout.splitlines()[-1] == f"next: OFFLOAD_PROJECT_DIR={tmp_path} offload run --stack hosts -- COMMAND"
    config = _config(path)
    assert config["offload:hosts"] == [
        {"name": "build-box", "host": "build-box.example.com", "port": 2222, "user": "dev",
         "workspace": "/home/dev/offload"},
        {"name": "ssh-1", "host": "10.0.0.5", "port": 22, "user": "ci", "workspace": "/home/ci/offload"},
    ]
    assert [w.name for w in read_stack_config(config).hosts] == ["build-box", "ssh-1"]
    assert "host_keys" in path.read_text(), "the file says how to pin host keys"


def test_ssh_host_must_parse(cli: RunCli, tmp_path: Path) -> None:
    r = cli("init", "--provider", "ssh", "--developer", "dev@example.com", "--host", "dev@:22",
            "--dir", str(tmp_path))
    assert (r.exit_code, r.stderr) == (2, "offload: --host must be USER@HOST[:PORT]; got 'dev@:22'\n")


def test_local_needs_no_stack_file(cli: RunCli, tmp_path: Path) -> None:
    r = cli("init", "--provider", "local", "--dir", str(tmp_path))
    assert r.exit_code == 0
    assert "needs no stack file and no `pulumi up`" in r.stdout
    assert not (tmp_path / "stacks").exists()


def test_a_stack_name_with_a_trailing_newline_is_refused(cli: RunCli, tmp_path: Path) -> None:
    r = cli("init", "--provider", "gce-cos", "--project", "my-proj-123", "--zone", "us-west1-b",
            "--developer", "dev@example.com", "--stack", "dev\n", "--dir", str(tmp_path), "--yes")
    assert (r.exit_code, r.stderr) == (2, "offload: --stack must be letters, digits, '.', '_' or '-'; got 'dev\\n'\n")
    assert not (tmp_path / "stacks").exists()


def test_values_that_need_quoting_round_trip() -> None:
    text = init_cmd.render_stack_file("s", init_cmd.ProviderType.SSH, {
        "offload:provider": "ssh", "offload:developer": "dev@example.com",
        "offload:hosts": [{"name": "yes", "host": "null", "port": 22, "user": "on", "workspace": "/a b/#c"}]})
    assert yaml.safe_load(text)["config"]["offload:hosts"] == [
        {"name": "yes", "host": "null", "port": 22, "user": "on", "workspace": "/a b/#c"}]


# --- where stack files go -----------------------------------------------------------------------------------------


def test_the_default_directory_is_offloads_config_directory(cli: RunCli, isolated_home: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # Even from offload's own checkout: its stacks/ holds examples, not the user's stacks.
    monkeypatch.chdir(REPO)
    before = sorted(p.name for p in (REPO / "stacks").iterdir())
    r = cli("init", "--provider", "local-docker", "--developer", "dev@example.com", "--stack", "mine")
    assert r.exit_code == 0, r.stderr
    config = isolated_home / ".config" / "offload"
    assert r.stdout.splitlines() == [f"wrote {config}/stacks/Pulumi.mine.yaml for developer dev@example.com",
                                     f"{UP_NEXT}offload fleet up --stack mine"]
    assert yaml.safe_load((config / "Pulumi.yaml").read_text()) == {
        "name": "offload", "runtime": "python", "stackConfigDir": "stacks",
        "description": yaml.safe_load((REPO / "Pulumi.yaml").read_text())["description"]}
    assert sorted(p.name for p in (REPO / "stacks").iterdir()) == before


def test_refuses_a_directory_that_is_not_an_offload_project(cli: RunCli, tmp_path: Path,
                                                           isolated_home: Path) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    args = ["init", "--provider", "local-docker", "--developer", "dev@example.com", "--stack", "s"]
    r = cli(*args, "--dir", str(bare))
    assert (r.exit_code, r.stdout) == (2, "")
    assert r.stderr == (f"offload: {bare} is not an offload stack directory: it has no Pulumi.yaml (use "
                        f"{isolated_home}/.config/offload, the default, or a directory whose Pulumi.yaml is the "
                        "offload project, such as a checkout of offload)\n")
    other = tmp_path / "other"
    other.mkdir()
    (other / "Pulumi.yaml").write_text("name: website\nruntime: nodejs\n")
    r = cli(*args, "--dir", str(other))
    assert r.exit_code == 2
    assert f"{other} is not an offload stack directory: its Pulumi.yaml is project 'website'" in r.stderr
    assert sorted(p.name for p in bare.iterdir()) == [] and sorted(p.name for p in other.iterdir()) == ["Pulumi.yaml"]


def test_next_is_fleet_up_when_the_pulumi_cli_is_there(cli: RunCli, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "pulumi").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "pulumi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setenv("OFFLOAD_PROJECT_DIR", str(tmp_path))
    r = cli("init", "--provider", "gce-linux", "--developer", "d@example.com", "--project", "p-123", "--zone",
            "us-west1-a", "--stack", "s")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.splitlines()[-1] == "next: offload fleet up --stack s"


# --- SSH hosts: the key, the login, the workspace -----------------------------------------------------------------


def _ssh_args(worker: SshdWorker, tmp_path: Path, *extra: str) -> list[str]:
    return ["init", "--provider", "ssh", "--host", f"{worker.user}@{worker.host}:{worker.port}", "--workspace",
            worker.workspace, "--stack", "box", "--dir", str(tmp_path), *extra]


def test_interactive_asks_the_name_and_pins_the_key_once_confirmed(
        cli: RunCli, tmp_path: Path, sshd_worker: SshdWorker, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(init_cmd, "stdin_is_tty", lambda: True)
    monkeypatch.setenv("OFFLOAD_PROJECT_DIR", str(tmp_path))
    r = cli(*_ssh_args(sshd_worker, tmp_path, "--identity", str(sshd_worker.key_path)), input="builder\ny\n")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.splitlines()[-1] == f"next: offload run --stack box --identity {sshd_worker.key_path} -- COMMAND"
    shown = f"ssh-ed25519 {fingerprint(sshd_worker.host_key)}"
    assert f"Worker name for {sshd_worker.host} [ssh-0]:" in r.stdout
    assert f"{sshd_worker.host}:{sshd_worker.port} presents host key {shown}" in r.stdout
    assert "Pin this key for worker builder? [y/N]:" in r.stdout
    assert f"pinned host key {shown} for worker builder" in r.stdout
    [entry] = _config(tmp_path / "stacks" / "Pulumi.box.yaml")["offload:hosts"]
    assert (entry["name"], entry["host_keys"]) == ("builder", [sshd_worker.host_key])
    assert sshd_worker.accepted_count() == 1, "one login: the check"


def test_declining_the_key_writes_nothing(cli: RunCli, tmp_path: Path, sshd_worker: SshdWorker,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(init_cmd, "stdin_is_tty", lambda: True)
    monkeypatch.setenv("OFFLOAD_SSH_KEY", str(sshd_worker.key_path))
    r = cli(*_ssh_args(sshd_worker, tmp_path), input="\nn\n")
    assert (r.exit_code, r.stderr) == (1, "offload: aborted\n")
    assert not (tmp_path / "stacks").exists()
    assert sshd_worker.accepted_count() == 0, "no login with a key the user did not accept"


def test_without_a_terminal_a_key_is_pinned_only_with_yes(cli: RunCli, tmp_path: Path,
                                                          sshd_worker: SshdWorker) -> None:
    r = cli(*_ssh_args(sshd_worker, tmp_path))
    assert (r.exit_code, r.stdout) == (2, "")
    assert r.stderr == (f"offload: {sshd_worker.host}:{sshd_worker.port} presents host key ssh-ed25519 "
                        f"{fingerprint(sshd_worker.host_key)}; init pins a key only once you confirm it (run init "
                        "on a terminal, or pass --yes to pin this key)\n")
    assert not (tmp_path / "stacks").exists()


def test_a_refused_login_writes_nothing(cli: RunCli, tmp_path: Path, sshd_worker: SshdWorker,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    stranger = tmp_path / "keys" / "id_ed25519"
    generate_keypair(stranger)
    r = cli(*_ssh_args(sshd_worker, tmp_path, "--yes", "--identity", str(stranger)))
    assert r.exit_code == 8
    assert "refused the SSH login" in r.stderr and len(r.stderr.splitlines()) == 1
    assert not (tmp_path / "stacks").exists()


def test_an_unreachable_host_writes_nothing(cli: RunCli, tmp_path: Path) -> None:
    port = free_port()
    r = cli("init", "--provider", "ssh", "--host", f"dev@127.0.0.1:{port}", "--stack", "box", "--dir", str(tmp_path),
            "--yes")
    assert r.exit_code == 3
    assert r.stderr.startswith(f"offload: cannot reach 127.0.0.1:{port}: Connection refused")
    assert not (tmp_path / "stacks").exists()


def test_a_workspace_the_user_cannot_make_fails(cli: RunCli, tmp_path: Path, sshd_worker: SshdWorker,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OFFLOAD_SSH_KEY", str(sshd_worker.key_path))
    r = cli("init", "--provider", "ssh", "--host", f"{sshd_worker.user}@{sshd_worker.host}:{sshd_worker.port}",
            "--workspace", "/proc/offload", "--stack", "box", "--dir", str(tmp_path), "--yes")
    assert r.exit_code == 1
    assert r.stderr.startswith("offload: creating the workspace failed on worker ssh-0: mkdir")
    assert not (tmp_path / "stacks").exists()


def test_the_default_workspace_is_in_the_logins_home(cli: RunCli, tmp_path: Path, start_sshd: StartSshd,
                                                     worker_user: WorkerUser, monkeypatch: pytest.MonkeyPatch) -> None:
    # The login's home, wherever it is: here a fresh one the worker's sshd hands its logins.
    home = tmp_path / "home-elsewhere"
    home.mkdir()
    make_traversable(tmp_path)
    os.chown(home, worker_user.uid, worker_user.gid)
    worker = start_sshd(extra_config=(f"SetEnv HOME={home}",), isolate_tmux=False)
    monkeypatch.setenv("OFFLOAD_SSH_KEY", str(worker.key_path))
    r = cli("init", "--provider", "ssh", "--host", f"{worker.user}@{worker.host}:{worker.port}", "--stack", "box",
            "--dir", str(tmp_path), "--yes")
    assert r.exit_code == 0, r.stderr
    assert f"logged in to ssh-0 as {worker.user}; workspace {home}/offload is ready" in r.stdout
    [entry] = _config(tmp_path / "stacks" / "Pulumi.box.yaml")["offload:hosts"]
    assert entry["workspace"] == f"{home}/offload"
    assert sorted(p.name for p in (home / "offload").iterdir()) == ["jobs", "repos", "trees"]


def test_an_ssh_stack_leaves_out_a_detected_address_that_is_no_email(cli: RunCli, tmp_path: Path,
                                                                     isolated_home: Path) -> None:
    (isolated_home / ".gitconfig").write_text("[user]\n\temail = me@laptop\n")
    r = cli("init", "--provider", "ssh", "--host", "dev@10.0.0.5", "--stack", "s", "--dir", str(tmp_path), "--no-check")
    assert r.exit_code == 0, r.stderr
    assert "offload:developer" not in _config(tmp_path / "stacks" / "Pulumi.s.yaml")
    r = cli("init", "--provider", "ssh", "--host", "dev@10.0.0.5", "--stack", "t", "--dir", str(tmp_path), "--no-check",
            "--developer", "me@laptop")
    assert (r.exit_code, r.stderr) == (2, "offload: offload:developer must be an email address such as "
                                          "dev@example.com; got 'me@laptop'\n")
