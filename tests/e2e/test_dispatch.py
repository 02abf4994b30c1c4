"""The step dispatcher a held connection keeps on the worker (offload/worker/sh/dispatch.sh): warm commands open no
channel and no `docker exec`, a step's exit code and output come back exactly, a secret on stdin is in no argv, and
a dispatcher (or a container) that goes away is replaced without a word."""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from offload.runtime.transport import ContainerTransport, SshTransport, Step, run_steps
from tests.e2e.helpers import all_cmdlines, offload
from tests.workers import (SshdWorker, SshDockerWorker, children_map, descendants, kill_pids, make_repo,
                           make_traversable, proc_cmdline, ssh_transport, sshd_record, wait_for, write_outputs)





def _dispatchers(worker: SshdWorker) -> list[int]:
    """The dispatcher processes of WORKER's connections (their command line holds the script); those of other
    workers, other tests' or a benchmark's, are left alone."""
    return [pid for pid in descendants(worker.pid, children_map())
            if any("offload-dispatch 1" in a for a in proc_cmdline(pid))]


def test_steps_share_one_channel_and_pass_codes_and_output_exactly(transport: SshTransport) -> None:
    first = transport.run(["true"])
    assert first.exit_code == 0 and transport.channels_opened == 1 and transport.dispatched == 1
    tricky = b"line\n\x00binary\xff\n\n"
    for code in (0, 1, 3, 42, 127, 255):
        r = transport.run(["sh", "-c", 'cat; printf "err %s\\n" "$1" >&2; exit "$1"', "sh", str(code)],
                          stdin=tricky)
        assert (r.exit_code, r.stdout, r.stderr) == (code, tricky, f"err {code}\n".encode())
    missing = transport.run(["no-such-command-here"])
    assert missing.exit_code == 127 and b"not found" in missing.stderr
    # A step that leaves its input unread does not disturb the next one.
    assert transport.run(["true"], stdin=b"x" * 200_000).exit_code == 0
    assert transport.run(["cat"], stdin=b"next").stdout == b"next"
    # Trailing newlines of the command text and quoting survive.
    assert transport.run(["printf", "%s|", "a b", "'q'", "$(x)", "\n\n"]).stdout == b"a b|'q'|$(x)|\n\n|"
    assert transport.channels_opened == 1, "every step went to the one dispatcher"
    assert transport.dispatched == 11


def test_steps_sent_together_run_in_order(transport: SshTransport) -> None:
    target = f"/tmp/offload-dispatch-{secrets.token_hex(4)}"
    try:
        results = run_steps(transport, [Step(["sh", "-c", 'cat > "$1"', "sh", target], b"first"),
                                        Step(["sh", "-c", 'cat "$1"; exit 7', "sh", target])])
        assert [(r.exit_code, r.stdout) for r in results] == [(0, b""), (7, b"first")]
        assert transport.channels_opened == 1
    finally:
        subprocess.run(["rm", "-f", target])


def test_a_killed_dispatcher_is_replaced_and_the_step_still_runs(transport: SshTransport,
                                                                  sshd_worker: SshdWorker) -> None:
    assert transport.run(["true"]).exit_code == 0
    pids = wait_for(lambda: _dispatchers(sshd_worker) or None, timeout=10, what="the dispatcher process")
    kill_pids(pids, signal.SIGKILL)
    wait_for(lambda: transport.run(["echo", "after"]).stdout == b"after\n", timeout=30,
             what="a step after the dispatcher was killed")
    # The next steps go to a new dispatcher again.
    before = transport.dispatched
    assert transport.run(["echo", "again"]).stdout == b"again\n"
    assert transport.run(["echo", "again"]).stdout == b"again\n"
    assert transport.dispatched == before + 2
    assert _dispatchers(sshd_worker) and not set(_dispatchers(sshd_worker)) & set(pids)


def test_without_the_dispatcher_each_step_opens_a_channel(transport: SshTransport) -> None:
    """The baseline OFFLOAD_DISPATCH=0 measures against, and what a worker with no GNU head gets."""
    for _ in range(3):
        assert transport.run(["sh", "-c", "exit 4"], dispatch=False).exit_code == 4
    assert (transport.channels_opened, transport.dispatched) == (3, 0)


def test_a_secret_on_stdin_is_in_no_argv(transport: SshTransport) -> None:
    secret = f"s3cr3t-{secrets.token_hex(8)}".encode()
    seen: list[bool] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.append(any(secret in c for c in all_cmdlines()))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        r = transport.run(["sh", "-c", "read -r s; sleep 1; printf %s \"$s\" | wc -c"], stdin=secret + b"\n")
    finally:
        done.set()
        watcher.join()
    assert r.stdout.strip() == str(len(secret)).encode() and transport.dispatched == 1
    assert len(seen) > 10 and not any(seen)


# --- through the CLI and the agent --------------------------------------------------------------------------------


def _agent_connection(repo: Path, env: dict[str, str]) -> dict[str, Any]:
    p = offload("agent", "status", "--json", cwd=repo, env=env)
    assert p.returncode == 0, p.stderr
    (held,) = json.loads(p.stdout)["connections"]
    return held


def _warm_commands(out: Path, repo: Path, env: dict[str, str]) -> str:
    """A first run (its job waited for), then the warm commands; returns the job id."""
    p = offload("run", "--outputs", str(out), "--job", "first", "--wait", "--", "echo hello", cwd=repo, env=env)
    assert (p.returncode, p.stdout) == (0, b"hello\n"), p.stderr
    return "first"


def test_warm_commands_through_the_agent_open_no_channel(sshd_worker: SshdWorker, tmp_path: Path) -> None:
    out = write_outputs(tmp_path / "o.json", "ssh", [sshd_record(sshd_worker)])
    repo = make_repo(tmp_path / "repo")
    env = {"OFFLOAD_SSH_KEY": str(sshd_worker.key_path)}
    job = _warm_commands(out, repo, env)
    before = _agent_connection(repo, env)
    (repo / "file0.txt").write_text("a change to send\n")
    secret = f"s3cr3t-{secrets.token_hex(8)}"
    run = offload("run", "--outputs", str(out), "--env", "API_TOKEN", "--", "exit 3", cwd=repo,
                  env=dict(env, API_TOKEN=secret))
    assert run.returncode == 0, run.stderr
    new_job = run.stdout.decode().split()[-1]
    for args in (("status",), ("check", job), ("logs", job)):
        p = offload(args[0], "--outputs", str(out), *args[1:], cwd=repo, env=env)
        assert p.returncode == 0, (args, p.stderr)
        assert p.stdout
    after = _agent_connection(repo, env)
    assert after["channels"] == before["channels"], "no channel opened for a warm run, status, check or logs"
    assert after["dispatched"] - before["dispatched"] == after["steps"] - before["steps"] >= 5
    # The job the warm run launched with its sync ran, and failed with its own code.
    def tasks() -> list[tuple[str, str, int]] | None:
        status = json.loads(offload("status", "--outputs", str(out), "--json", cwd=repo, env=env).stdout)
        (job,) = [j for w in status["workers"] for j in w["jobs"] if j["id"] == new_job]
        return [(t["name"], t["state"], t["exit_code"]) for t in job["tasks"]] if job["state"] == "failed" else None

    assert wait_for(tasks, timeout=30, what="the warm run's job to end") == [("main", "failed", 3)]
    assert not subprocess.run(["grep", "-rl", secret, sshd_worker.workspace], capture_output=True).stdout


def _exec_starts(container: str, since: float, until: float) -> int:
    p = subprocess.run(["docker", "events", "--since", f"{since:.3f}", "--until", f"{until:.3f}", "--filter",
                        f"container={container}", "--filter", "event=exec_start", "--format", "{{.Action}}"],
                       capture_output=True, text=True, timeout=60, check=True)
    return len(p.stdout.splitlines())


def test_a_container_worker_runs_warm_steps_without_docker_exec(ssh_docker_worker: SshDockerWorker,
                                                                tmp_path: Path) -> None:
    name = ssh_docker_worker.container.name
    out = write_outputs(tmp_path / "o.json", "ssh", [sshd_record(ssh_docker_worker,
                                                                 image=ssh_docker_worker.container.image)])
    repo = make_repo(tmp_path / "repo")
    env = {"OFFLOAD_SSH_KEY": str(ssh_docker_worker.ssh.key_path)}
    job = _warm_commands(out, repo, env)
    since = time.time()
    (repo / "file0.txt").write_text("a change to send\n")
    for args in (("run", "--", "hostname"), ("status",), ("check", job), ("logs", job)):
        p = offload(args[0], "--outputs", str(out), *args[1:], cwd=repo, env=env)
        assert p.returncode == 0, (args, p.stderr)
    until = time.time()
    assert _exec_starts(name, since, until) == 0, "no docker exec for a warm run, status, check or logs"
    # The control: the same steps without the dispatcher start one docker exec each.
    old = dict(env, OFFLOAD_DISPATCH="0")
    since = time.time()
    assert offload("status", "--outputs", str(out), cwd=repo, env=old).returncode == 0
    assert _exec_starts(name, since, time.time() + 1) >= 1


def test_a_removed_container_is_recreated_and_its_dispatcher_with_it(ssh_docker_worker: SshDockerWorker,
                                                                     tmp_path: Path) -> None:
    ssh, name = ssh_docker_worker.ssh, ssh_docker_worker.container.name
    base = ssh_transport(ssh, tmp_path)
    healed: list[bool] = []

    def heal() -> None:
        healed.append(True)
        subprocess.run(["docker", "run", "-d", "--name", name, "-v", f"{ssh.workspace}:{ssh.workspace}",
                        ssh_docker_worker.container.image, "sleep", "infinity"], check=True, capture_output=True)

    inside = ContainerTransport(base, name, heal=heal)
    try:
        assert inside.run(["cat", "/etc/hostname"]).ok
        assert base.dispatched == 1
        subprocess.run(["docker", "rm", "-f", name], check=True, capture_output=True)
        r = inside.run(["sh", "-c", "echo in; exit 6"])
        assert (r.exit_code, r.stdout, healed) == (6, b"in\n", [True])
        dispatched = base.dispatched
        assert inside.run(["true"]).ok and base.dispatched == dispatched + 1, "a dispatcher runs in the new one"
    finally:
        base.close()


def test_a_worker_without_gnu_head_keeps_the_exec_path(transport: SshTransport,
                                                      tmp_path_factory: pytest.TempPathFactory) -> None:
    """busybox's `head -c` reads ahead: the dispatcher says so once, and every step takes a channel of its own."""
    fake = tmp_path_factory.mktemp("busybox-head")
    (fake / "head").write_text("#!/bin/sh\necho 'BusyBox v1.36.1 multi-call binary.'\n")
    (fake / "head").chmod(0o755)
    make_traversable(fake)
    within = ["env", f"PATH={fake}:/usr/bin:/bin"]
    for word in ("one", "two", "three"):
        r = transport.run(["sh", "-c", 'echo "$1"; exit 9', "sh", word], within=within)
        assert (r.exit_code, r.stdout) == (9, f"{word}\n".encode())
    assert transport.dispatched == 0
    assert transport.channels_opened == 4, "the dispatcher was tried once, then one channel a step"
