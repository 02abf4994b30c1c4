"""A large pack goes to the worker as pack-objects makes it (offload/runtime/sync.py, PackStream): it arrives whole
and exact, its meter learns its size once it is made, and a pack cut short by a local failure is that failure, with
the worker's repository left as it was. Over a real sshd worker."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from offload.errors import SyncError
from offload.runtime.meter import Direction
from offload.runtime.sync import INDEX_FROM_BYTES, push_snapshot, take_snapshot
from offload.runtime.transport import SshTransport
from offload.worker.layout import JobPaths
from tests.e2e.helpers import offload
from tests.workers import RecordedMeters, SshDockerWorker, SshdWorker, make_repo, sshd_record, write_outputs


def _cutting_git(bin_dir: Path) -> str:
    """A PATH entry whose git is git itself, but whose pack-objects stops after 2 MB and fails."""
    real = os.popen("command -v git").read().strip()
    bin_dir.mkdir()
    (bin_dir / "git").write_text(
        "#!/bin/sh\n"
        'if [ "$1" = pack-objects ]; then\n'
        f'  "{real}" "$@" | head -c 2000000\n'
        '  echo "fatal: cut short" >&2\n'
        "  exit 1\n"
        "fi\n"
        f'exec "{real}" "$@"\n')
    (bin_dir / "git").chmod(0o755)
    return f"{bin_dir}:{os.environ['PATH']}"


def _on_worker(t: SshTransport, *argv: str) -> bytes:
    r = t.run(list(argv), timeout=60)
    assert r.ok, r.stderr.decode()
    return r.stdout


def _repository_state(t: SshTransport, repo: str) -> tuple[bytes, bytes]:
    """The repository's refs and its packs (their names: a pack's name is its checksum)."""
    refs = _on_worker(t, "git", "-C", repo, "for-each-ref")
    packs = _on_worker(t, "sh", "-c", 'cd "$1/objects/pack" && ls -1 -- *.pack *.idx 2>/dev/null; true', "sh", repo)
    return refs, packs


def test_a_large_pack_streams_whole_and_exact(transport: SshTransport, sshd_worker: SshdWorker,
                                              tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", files=5)
    data = os.urandom(3 << 20)  # incompressible: the pack is over INDEX_FROM_BYTES
    (repo / "big.bin").write_bytes(data)
    snap = take_snapshot(repo)
    meters = RecordedMeters()
    stats = push_snapshot(transport, snap, JobPaths(sshd_worker.workspace, "streamed"), "w", meters=meters)
    assert stats.pack_bytes >= INDEX_FROM_BYTES
    assert meters.opened == [(Direction.SENT, None)], "a streamed pack's size is not known when it starts"
    assert meters.totals == [stats.pack_bytes] and meters.moved == stats.pack_bytes and meters.finished == 1
    got = _on_worker(transport, "git", "-C", stats.worktree, "cat-file", "blob", f"{snap.commit}:big.bin")
    assert got == data
    _on_worker(transport, "git", "-C", stats.worktree, "fsck", "--no-dangling", "--connectivity-only")


def test_a_pack_cut_short_leaves_the_worker_repository_as_it_was(transport: SshTransport, sshd_worker: SshdWorker,
                                                                 tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    repo = make_repo(tmp_path / "repo", files=5)
    first = push_snapshot(transport, take_snapshot(repo), JobPaths(sshd_worker.workspace, "first"), "w")
    bare = _on_worker(transport, "git", "-C", first.worktree, "rev-parse", "--path-format=absolute",
                      "--git-common-dir").decode().strip()
    before = _repository_state(transport, bare)
    (repo / "big.bin").write_bytes(os.urandom(3 << 20))
    snap = take_snapshot(repo)
    monkeypatch.setenv("PATH", _cutting_git(tmp_path / "bin"))
    meters = RecordedMeters()
    with pytest.raises(SyncError, match="git pack-objects failed: fatal: cut short"):
        push_snapshot(transport, snap, JobPaths(sshd_worker.workspace, "cut"), "w", meters=meters)
    assert meters.moved >= 1 << 20, "part of the pack went before it failed"
    assert _repository_state(transport, bare) == before
    left = _on_worker(transport, "sh", "-c", 'cd "$1/objects" && ls -d -- incoming-* pack/tmp_* 2>/dev/null; true',
                      "sh", bare)
    assert left == b"", "nothing half made is left behind"
    missing = transport.run(["git", "-C", bare, "cat-file", "-e", f"{snap.commit}^{{commit}}"], timeout=60)
    assert missing.exit_code != 0, "the snapshot is not in the worker's repository"
    assert transport.run(["test", "-e", f"{sshd_worker.workspace}/jobs/cut"], timeout=60).exit_code != 0


def _warm(tmp_path: Path, record: dict, key: Path, persist: str) -> tuple[Path, Path, dict[str, str]]:
    """A repository that a first run (waited for) has put on the worker of RECORD: the repository, the outputs
    file and the environment of the runs."""
    repo = make_repo(tmp_path / "repo", files=5)
    out = write_outputs(tmp_path / "outputs.json", "ssh", [record])
    env = {"OFFLOAD_SSH_KEY": str(key), "OFFLOAD_PERSIST": persist}
    assert offload("run", "--outputs", str(out), "--wait", "--", "true", cwd=repo, env=env).returncode == 0
    return repo, out, env


@pytest.mark.parametrize("persist", ["30", "0"], ids=["agent", "no-agent"])
def test_a_run_whose_pack_is_cut_short_says_so_and_the_next_one_syncs(sshd_worker: SshdWorker, tmp_path: Path,
                                                                      persist: str) -> None:
    """With the connection agent the input goes through it: the step still ends, at once, with the local failure."""
    repo, out, env = _warm(tmp_path, sshd_record(sshd_worker), sshd_worker.key_path, persist)
    data = os.urandom(3 << 20)
    (repo / "big.bin").write_bytes(data)
    cut = offload("run", "--outputs", str(out), "--job", "cut", "--", "true", cwd=repo,
                  env=dict(env, PATH=_cutting_git(tmp_path / "bin")))
    assert cut.returncode != 0
    *_, last = cut.stderr.decode().splitlines()  # after the meter's summary line of what went
    assert last == "offload: git pack-objects failed: fatal: cut short", cut.stderr.decode()
    again = offload("run", "--outputs", str(out), "--wait", "--", "cat big.bin", cwd=repo, env=env)
    assert again.returncode == 0, again.stderr.decode()
    assert again.stdout == data


def _goes_ahead(repo: Path, out: Path, env: dict[str, str], workspace: str) -> None:
    """A run with a large new file: the blob is stored as it came, loose, where a pack would have been indexed,
    and the job reads it whole."""
    data = os.urandom(5 << 20)
    (repo / "big.bin").write_bytes(data)
    blob = subprocess.run(["git", "hash-object", "big.bin"], cwd=repo, capture_output=True, text=True,
                          check=True).stdout.strip()
    run = offload("run", "--outputs", str(out), "--wait", "--", "cat big.bin", cwd=repo, env=env)
    assert run.returncode == 0, run.stderr.decode()
    assert run.stdout == data
    loose = list(Path(workspace).glob(f"repos/*.git/objects/{blob[:2]}/{blob[2:]}"))
    assert len(loose) == 1, "the file went ahead, as a blob of its own"
    assert b"offload: sent 5.2 MB" in run.stderr, run.stderr.decode()


@pytest.mark.parametrize("persist", ["30", "0"], ids=["agent", "no-agent"])
def test_a_large_new_file_goes_ahead_of_the_pack(sshd_worker: SshdWorker, tmp_path: Path, persist: str) -> None:
    """A run sends a large new file to a worker that holds the repository while it snapshots it (send_ahead)."""
    repo, out, env = _warm(tmp_path, sshd_record(sshd_worker), sshd_worker.key_path, persist)
    _goes_ahead(repo, out, env, sshd_worker.workspace)


def test_a_large_new_file_goes_ahead_into_a_worker_container(ssh_docker_worker: SshDockerWorker,
                                                              tmp_path: Path) -> None:
    record = sshd_record(ssh_docker_worker, image=ssh_docker_worker.container.image)
    repo, out, env = _warm(tmp_path, record, ssh_docker_worker.ssh.key_path, "30")
    _goes_ahead(repo, out, env, ssh_docker_worker.workspace)
