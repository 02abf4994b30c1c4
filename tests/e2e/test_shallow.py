"""History depth through the real CLI over a real sshd worker: a first run gets one commit of a long history,
--depth and full deepen it, the playbook's `history:` and the stack's offload:historyDepth pick the default
(--depth wins), a bad value is a one-line usage error, and results come home from a shallow worker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import offload, spawn, stderr_line, worker_setup
from tests.workers import SshdWorker, git, make_long_history, sshd_record, write_outputs

COMMITS = 60


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_long_history(tmp_path / "long", commits=COMMITS, files=3, file_bytes=4096)


def setup(worker: SshdWorker, tmp_path: Path, **record: Any) -> dict[str, Any]:
    out = write_outputs(tmp_path / "o.json", "ssh", [sshd_record(worker, **record)])
    return {"args": ["--outputs", str(out)], "env": {"OFFLOAD_SSH_KEY": str(worker.key_path)}}


def cli(w: dict[str, Any], repo: Path, verb: str, *args: str):  # noqa: ANN201
    return offload(verb, *w["args"], *args, cwd=repo, env=w["env"])


def log_lines(w: dict[str, Any], repo: Path, *args: str) -> list[str]:
    p = cli(w, repo, "run", *args, "--wait", "--", "git log --format=%s")
    assert p.returncode == 0, p.stderr.decode()
    return p.stdout.decode().splitlines()


@pytest.mark.parametrize("kind", ["sshd", "container"])
def test_depth_one_then_three_then_full(kind: str, request: pytest.FixtureRequest, repo: Path, tmp_path: Path) -> None:
    w = worker_setup(request, kind, tmp_path)
    assert log_lines(w, repo) == [f"commit {COMMITS - 1}"]
    bare = next((Path(w["workspace"]) / "repos").iterdir())
    assert (bare / "shallow").read_text().split() == [git(repo, "rev-parse", "HEAD").strip()]
    assert log_lines(w, repo, "--depth", "3") == [f"commit {n}" for n in range(COMMITS - 1, COMMITS - 4, -1)]
    assert len(log_lines(w, repo, "--depth", "full")) == COMMITS
    assert not (bare / "shallow").exists()


def test_results_come_home_from_a_shallow_worker(sshd_worker: SshdWorker, repo: Path, tmp_path: Path) -> None:
    w = setup(sshd_worker, tmp_path)
    p = cli(w, repo, "run", "--job", "edit", "--wait", "--",
            "echo edited > file1.txt && git -c user.name=j -c user.email=j@x commit -qam 'job commit' && "
            "echo more > file2.txt")
    assert p.returncode == 0, p.stderr.decode()
    bare = next((Path(sshd_worker.workspace) / "repos").iterdir())
    assert (bare / "shallow").read_text().split() == [git(repo, "rev-parse", "HEAD").strip()]
    assert cli(w, repo, "pull", "edit").returncode == 0
    diff = cli(w, repo, "diff", "edit")
    assert diff.returncode == 0 and b"+edited" in diff.stdout and b"+more" in diff.stdout
    applied = cli(w, repo, "apply", "edit")
    assert applied.returncode == 0, applied.stderr.decode()
    assert (repo / "file1.txt").read_text() == "edited\n" and (repo / "file2.txt").read_text() == "more\n"
    got = cli(w, repo, "get", "edit", "file1.txt")
    assert got.returncode == 0 and (repo / ".offload" / "edit" / "file1.txt").read_text() == "edited\n"


def test_playbook_and_stack_pick_the_default_and_depth_wins(sshd_worker: SshdWorker, repo: Path,
                                                            tmp_path: Path) -> None:
    (repo / "offload.yaml").write_text("playbooks:\n  log:\n    history: 4\n    tasks:\n"
                                       "      main: {run: git log --format=%s}\n")
    git(repo, "add", "offload.yaml")
    git(repo, "commit", "-qm", "playbooks")
    w = setup(sshd_worker, tmp_path, history_depth=2)
    assert len(log_lines(w, repo)) == 2  # offload:historyDepth
    p = cli(w, repo, "run", "--playbook", "log", "--wait")
    assert p.returncode == 0 and len(p.stdout.decode().splitlines()) == 4, p  # the playbook's history
    p = cli(w, repo, "run", "--playbook", "log", "--depth", "6", "--wait")
    assert p.returncode == 0 and len(p.stdout.decode().splitlines()) == 6, p  # --depth wins


@pytest.mark.parametrize("value", ["0", "lots", "-3", "1.5"])
def test_a_bad_depth_is_a_usage_error(value: str, sshd_worker: SshdWorker, repo: Path, tmp_path: Path) -> None:
    w = setup(sshd_worker, tmp_path)
    p = cli(w, repo, "run", f"--depth={value}", "--", "true")
    assert p.returncode == 2 and p.stdout == b""
    assert stderr_line(p) == (f'offload: --depth takes a number of commits from 1 to 1000000, or "full"; '
                              f"got {value!r}")
    assert sshd_worker.accepted_count() == 0, "refused before any worker is dialled"


def test_ref_older_than_the_boundary_and_two_first_runs_at_once(sshd_worker: SshdWorker, repo: Path,
                                                                tmp_path: Path) -> None:
    w = setup(sshd_worker, tmp_path)
    runs = [spawn("run", *w["args"], "--wait", *ref, "--", "git log --format=%s", cwd=repo, env=w["env"])
            for ref in ([], ["--ref", "HEAD~5"])]
    outs = [p.communicate(timeout=120) for p in runs]
    assert [p.returncode for p in runs] == [0, 0], [err.decode() for _, err in outs]
    assert outs[0][0].decode().splitlines() == [f"commit {COMMITS - 1}"]
    assert outs[1][0].decode().splitlines() == [f"commit {COMMITS - 6}"]
    # Older than the boundary and deeper: the worker gets the commits below its shallow one.
    older = log_lines(w, repo, "--ref", "HEAD~10", "--depth", "2")
    assert older == [f"commit {COMMITS - 11}", f"commit {COMMITS - 12}"]
    bare = next((Path(sshd_worker.workspace) / "repos").iterdir())
    assert sorted((bare / "shallow").read_text().split()) == sorted(
        git(repo, "rev-parse", rev).strip() for rev in ("HEAD", "HEAD~5", "HEAD~11"))
