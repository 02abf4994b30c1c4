"""Host-key trust stays visible: first use names the worker and the fingerprint, and strict checking refuses it."""

from __future__ import annotations

from pathlib import Path

import pytest

from offload.runtime.connection import fingerprint
from offload.runtime.hostkeys import KnownHosts, host_id
from tests.e2e.helpers import offload, stderr_line
from tests.workers import SshdWorker, make_repo, sshd_record, write_outputs


@pytest.fixture
def unpinned(sshd_worker: SshdWorker, tmp_path: Path) -> tuple[Path, Path]:
    record = sshd_record(sshd_worker, name="box", host_keys=[])
    return write_outputs(tmp_path / "o.json", "ssh", [record]), make_repo(tmp_path / "repo")


def test_first_use_prints_the_worker_and_the_fingerprint(unpinned: tuple[Path, Path], sshd_worker: SshdWorker) -> None:
    out, repo = unpinned
    p = offload("run", "--outputs", str(out), "--wait", "--", "echo", "ran", cwd=repo, key=sshd_worker.key_path)
    assert (p.returncode, p.stdout) == (0, b"ran\n"), p.stderr
    assert (f"offload: warning: trusting host key {fingerprint(sshd_worker.host_key)} of worker box "
            f"({host_id(sshd_worker.host, sshd_worker.port)}) on first use").encode() in p.stderr


def test_strict_host_keys_refuses_with_one_line_and_trusts_nothing(unpinned: tuple[Path, Path],
                                                                   sshd_worker: SshdWorker) -> None:
    out, repo = unpinned
    p = offload("run", "--strict-host-keys", "--outputs", str(out), "--", "true", cwd=repo, key=sshd_worker.key_path)
    assert p.returncode == 4, p.stderr
    line = stderr_line(p)
    assert line.startswith(f"offload: host key {fingerprint(sshd_worker.host_key)} of worker box ")
    assert "strict host-key checking refuses to trust it on first use" in line
    assert KnownHosts.default().lookup(host_id(sshd_worker.host, sshd_worker.port)) == []
    # The stack's offload:strictHostKeys reaches the record; the status command refuses the same way.
    strict = write_outputs(out.parent / "strict.json", "ssh",
                           [sshd_record(sshd_worker, name="box", host_keys=[], strict_host_keys=True)])
    p = offload("status", "--json", "--outputs", str(strict), cwd=repo, key=sshd_worker.key_path)
    assert b"strict host-key checking refuses" in p.stdout + p.stderr
    assert KnownHosts.default().lookup(host_id(sshd_worker.host, sshd_worker.port)) == []
    # A key already known is used as before.
    KnownHosts.default().add(host_id(sshd_worker.host, sshd_worker.port), sshd_worker.host_key)
    p = offload("run", "--strict-host-keys", "--outputs", str(strict), "--wait", "--", "echo", "known", cwd=repo,
                key=sshd_worker.key_path)
    assert (p.returncode, p.stdout) == (0, b"known\n"), p.stderr
