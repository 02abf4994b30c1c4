"""Day two over real SSH workers: playbooks through drops, logs, check, clean, picking a worker, --json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.helpers import offload, spawn, stderr_line
from tests.workers import PipeReader, SshdWorker, git, make_repo, sshd_record, wait_for, write_outputs

PLAYBOOK = """\
playbooks:
  review:
    tasks:
      build: {run: "sleep 1; echo built"}
      lint:  {run: "sleep 1; echo linted"}
      test:  {run: "for i in 1 2 3 4 5; do echo test $i; sleep 0.4; done; exit 1", needs: [build]}
      triage: {run: "echo triaging", needs: [test], when: failure}
      publish: {run: "echo never", needs: [test]}
      report: {run: "echo report", needs: [test], when: always}
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    r = make_repo(tmp_path / "repo")
    (r / "offload.yaml").write_text(PLAYBOOK)
    return r


def _key(worker: SshdWorker) -> dict[str, str]:
    return {"OFFLOAD_SSH_KEY": str(worker.key_path)}


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return None


def test_playbook_graph_survives_a_dropped_connection(sshd_worker: SshdWorker, repo: Path, tmp_path: Path) -> None:
    out = write_outputs(tmp_path / "o.json", "ssh", [sshd_record(sshd_worker)])
    proc = spawn("run", "--outputs", str(out), "--playbook", "review", "--job", "pb1", "--wait",
                 cwd=repo, env=_key(sshd_worker))
    err = PipeReader(proc.stderr)
    try:
        # The drop comes once the job runs and `run` is waiting on it: its note says so, and the first task started.
        err.wait_for(b"job pb1 runs on", timeout=60)
        build = Path(sshd_worker.workspace) / "jobs" / "pb1" / "tasks" / "build"
        wait_for(lambda: _read(build / "state") == "running", timeout=30, what="the build task to start")
        logins = sshd_worker.accepted_count()
        assert sshd_worker.kill_sessions()
        stdout, rest = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    stderr = err.data + rest
    assert proc.returncode == 1, stderr
    assert sshd_worker.accepted_count() > logins, "the rest of the job came over a new connection"
    text = stdout.decode()
    for line in ["[build] built", "[lint] linted", "[test] test 5", "[triage] triaging", "[report] report"]:
        assert line in text, text
    assert "never" not in text
    p = offload("check", "pb1", "--json", "--outputs", str(out), cwd=repo, env=_key(sshd_worker))
    assert p.returncode == 1
    states = {t["name"]: (t["state"], t["exit_code"]) for t in json.loads(p.stdout)["tasks"]}
    assert states == {"build": ("success", 0), "lint": ("success", 0), "test": ("failed", 1),
                      "triage": ("success", 0), "publish": ("skipped", None), "report": ("success", 0)}
    p = offload("logs", "pb1", "--task", "lint", "--outputs", str(out), cwd=repo, env=_key(sshd_worker))
    assert p.returncode == 0 and p.stdout == b"linted\n"


def test_logs_follow_resumes_after_a_drop(sshd_worker: SshdWorker, repo: Path, tmp_path: Path) -> None:
    out = write_outputs(tmp_path / "o.json", "ssh", [sshd_record(sshd_worker)])
    go = Path(sshd_worker.workspace) / "go"
    # The job writes two lines, then holds until the test has dropped the connection `logs -f` follows it on.
    command = f"echo n1; echo n2; until [ -e {go} ]; do sleep 0.05; done; for i in 3 4 5 6; do echo n$i; done"
    assert offload("run", "--outputs", str(out), "--job", "lf", "--", command, cwd=repo,
                   env=_key(sshd_worker)).returncode == 0
    proc = spawn("logs", "lf", "-f", "--outputs", str(out), cwd=repo, env=_key(sshd_worker))
    lines = PipeReader(proc.stdout)
    try:
        lines.wait_for(b"n2\n", timeout=60)
        logins = sshd_worker.accepted_count()
        assert sshd_worker.kill_sessions()
        go.touch()
        rest, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert proc.returncode == 0, stderr
    assert lines.data + rest == b"".join(f"n{i}\n".encode() for i in range(1, 7))
    assert b"reconnecting" in stderr, "the drop came in the middle of the stream, and logs says so"
    assert sshd_worker.accepted_count() > logins, "the rest of the log came over a new connection"


def test_clean_removes_one_job_and_nothing_else(sshd_worker: SshdWorker, repo: Path, tmp_path: Path) -> None:
    out = write_outputs(tmp_path / "o.json", "ssh", [sshd_record(sshd_worker)])
    env = _key(sshd_worker)
    for job in ("keep", "drop"):
        assert offload("run", "--outputs", str(out), "--job", job, "--wait", "--", "true", cwd=repo,
                       env=env).returncode == 0
    ws = Path(sshd_worker.workspace)
    (bare,) = list((ws / "repos").iterdir())
    p = offload("clean", "drop", "--outputs", str(out), cwd=repo, env=env)
    assert p.returncode == 0, p.stderr
    assert not (ws / "jobs" / "drop").exists() and (ws / "jobs" / "keep").exists()
    refs = git(bare, "-c", "safe.directory=*", "for-each-ref", "--format=%(refname)")
    assert refs.split() == ["refs/offload/jobs/keep", "refs/offload/results/keep"]
    # One after the other, both jobs ran in the same warm worktree; it stays in the pool, given back.
    (tree,) = [p for p in (ws / "trees" / bare.name.removesuffix(".git")).iterdir() if p.name.isdigit()]
    assert (tree / "run.sh").exists() and not tree.with_name(f"{tree.name}.lease").exists()
    assert git(bare, "-c", "safe.directory=*", "worktree", "list").count("\n") == 2, "the bare repo and the warm tree"
    p = offload("clean", "drop", "--outputs", str(out), cwd=repo, env=env)
    assert p.returncode == 5 and "drop" in stderr_line(p)


def test_clean_all_asks_unless_yes(sshd_worker: SshdWorker, repo: Path, tmp_path: Path) -> None:
    out = write_outputs(tmp_path / "o.json", "ssh", [sshd_record(sshd_worker)])
    env = _key(sshd_worker)
    for job in ("a1", "a2"):
        assert offload("run", "--outputs", str(out), "--job", job, "--", "true", cwd=repo, env=env).returncode == 0
    p = offload("clean", "--all", "--outputs", str(out), cwd=repo, env=env)
    assert p.returncode == 2 and "--yes" in stderr_line(p)
    assert sorted(p.name for p in (Path(sshd_worker.workspace) / "jobs").iterdir()) == ["a1", "a2"]
    p = offload("clean", "--all", "--yes", "--json", "--outputs", str(out), cwd=repo, env=env)
    assert p.returncode == 0, p.stderr
    assert sorted(c["id"] for c in json.loads(p.stdout)["cleaned"]) == ["a1", "a2"]
    assert list((Path(sshd_worker.workspace) / "jobs").iterdir()) == []


def test_run_picks_the_worker_with_fewest_running_jobs(start_sshd, repo: Path, tmp_path: Path) -> None:
    a, b = start_sshd(), start_sshd()
    out = write_outputs(tmp_path / "o.json", "ssh", [sshd_record(a, name="wa"), sshd_record(b, name="wb")])
    env = _key(a)
    busy = offload("run", "--outputs", str(out), "--worker", "wa", "--job", "busy", "--", "sleep 20",
                   cwd=repo, env=env)
    assert busy.returncode == 0, busy.stderr
    p = offload("run", "--outputs", str(out), "--job", "next", "--json", "--", "true", cwd=repo, env=env)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == {"id": "next", "worker": "wb"}
    p = offload("status", "--json", "--outputs", str(out), cwd=repo, env=env)
    jobs = {w["name"]: [j["id"] for j in w["jobs"]] for w in json.loads(p.stdout)["workers"]}
    assert jobs == {"wa": ["busy"], "wb": ["next"]}


def test_status_keeps_going_when_one_worker_is_down(start_sshd, repo: Path, tmp_path: Path) -> None:
    a, b = start_sshd(), start_sshd()
    out = write_outputs(tmp_path / "o.json", "ssh", [sshd_record(a, name="up"), sshd_record(b, name="down")])
    b.stop()
    p = offload("status", "--json", "--outputs", str(out), cwd=repo, env=_key(a))
    assert p.returncode == 1
    workers = {w["name"]: w for w in json.loads(p.stdout)["workers"]}
    assert workers["up"]["state"] == "running"
    assert workers["down"]["state"] == "unreachable" and "down" in workers["down"]["error"]
