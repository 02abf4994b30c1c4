"""A newcomer's path with a host of their own: `init` pins the host key and tries the login, then `run --stack`
works at once, with no pulumi CLI anywhere."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from offload.outputs import fingerprint
from tests.e2e.helpers import offload, stderr_line
from tests.workers import SshdWorker, make_repo


@pytest.fixture
def no_pulumi() -> dict[str, str]:
    assert shutil.which("pulumi", path="/usr/local/bin:/usr/bin:/bin") is None
    return {"PATH": "/usr/local/bin:/usr/bin:/bin"}


def test_init_then_run_with_the_stack_and_no_pulumi(sshd_worker: SshdWorker, tmp_path: Path,
                                                    isolated_home: Path, no_pulumi: dict[str, str]) -> None:
    repo = make_repo(tmp_path / "repo")
    spec = f"{sshd_worker.user}@{sshd_worker.host}:{sshd_worker.port}"
    init = offload("init", "--provider", "ssh", "--host", spec, "--workspace", sshd_worker.workspace, "--stack", "box",
                   "--yes", cwd=repo, key=sshd_worker.key_path, env=no_pulumi)
    assert init.returncode == 0, init.stderr.decode()
    lines = init.stdout.decode().splitlines()
    shown = f"ssh-ed25519 {fingerprint(sshd_worker.host_key)}"
    stacks = isolated_home / ".config" / "offload" / "stacks"
    assert lines == [
        f"pinned host key {shown} for worker ssh-0 ({sshd_worker.host}:{sshd_worker.port})",
        f"logged in to ssh-0 as {sshd_worker.user}; workspace {sshd_worker.workspace} is ready",
        f"wrote {stacks / 'Pulumi.box.yaml'}",
        "next: offload run --stack box -- COMMAND",
    ]
    # The stack directory is offload's config directory, never the repository or offload's own tree.
    assert (stacks.parent / "Pulumi.yaml").is_file()
    assert sorted(p.name for p in repo.iterdir()) == [".git", "file0.txt", "file1.txt", "file2.txt", "run.sh", "src"]
    [host] = yaml.safe_load((stacks / "Pulumi.box.yaml").read_text())["config"]["offload:hosts"]
    assert host["host_keys"] == [sshd_worker.host_key.split()[0] + " " + sshd_worker.host_key.split()[1]]
    # The login made the workspace.
    assert all((Path(sshd_worker.workspace) / d).is_dir() for d in ("repos", "trees", "jobs"))
    assert not (isolated_home / ".config" / "offload" / "known_hosts").exists(), "nothing was trusted on first use"

    # The next line, as printed, works.
    run = offload("run", "--stack", "box", "--wait", "--", "sh", "-c", "cat file1.txt", cwd=repo,
                  key=sshd_worker.key_path, env=no_pulumi)
    assert (run.returncode, run.stdout.decode().splitlines()[-1]) == (0, "content 1"), run.stderr.decode()

    out = offload("outputs", "--stack", "box", cwd=repo, env=no_pulumi)
    assert out.returncode == 0, out.stderr.decode()
    [worker] = json.loads(out.stdout)["workers"]
    assert (worker["host"], worker["port"], worker["user"], worker["host_keys"]) == (
        sshd_worker.host, sshd_worker.port, sshd_worker.user, host["host_keys"])


def test_a_changed_key_after_init_is_refused(sshd_worker: SshdWorker, tmp_path: Path,
                                             no_pulumi: dict[str, str]) -> None:
    repo = make_repo(tmp_path / "repo")
    spec = f"{sshd_worker.user}@{sshd_worker.host}:{sshd_worker.port}"
    init = offload("init", "--provider", "ssh", "--host", spec, "--workspace", sshd_worker.workspace, "--stack", "box",
                   "--yes", cwd=repo, key=sshd_worker.key_path, env=no_pulumi)
    assert init.returncode == 0, init.stderr.decode()
    new_key = sshd_worker.rotate_host_key()
    run = offload("run", "--stack", "box", "--wait", "--", "true", cwd=repo, key=sshd_worker.key_path,
                  env={**no_pulumi, "OFFLOAD_PERSIST": "0"})
    assert run.returncode == 204, "offload's own failure under --wait: 200 + 4"
    assert fingerprint(new_key) in stderr_line(run)


def test_after_init_real_ssh_reaches_the_worker_through_ssh_config(sshd_worker: SshdWorker, tmp_path: Path,
                                                                   no_pulumi: dict[str, str]) -> None:
    repo = make_repo(tmp_path / "repo")
    spec = f"{sshd_worker.user}@{sshd_worker.host}:{sshd_worker.port}"
    init = offload("init", "--provider", "ssh", "--host", spec, "--workspace", sshd_worker.workspace, "--name",
                   "devbox", "--stack", "box", "--yes", cwd=repo, key=sshd_worker.key_path, env=no_pulumi)
    assert init.returncode == 0, init.stderr.decode()
    entries = offload("ssh-config", "--stack", "box", cwd=repo, key=sshd_worker.key_path, env=no_pulumi)
    assert entries.returncode == 0, entries.stderr.decode()
    config = tmp_path / "ssh_config"
    config.write_bytes(entries.stdout)
    ssh = subprocess.run(["ssh", "-F", str(config), "-o", "IdentityAgent=none", "-o", "BatchMode=yes", "devbox",
                          "echo", "reached"], capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    assert (ssh.returncode, ssh.stdout) == (0, b"reached\n"), ssh.stderr.decode()
