"""The job service as a plain-Python API, the way the CLI and the MCP server use it: no Typer, one connection
per worker for the whole session, and results that are the `--json` objects."""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from offload.errors import JobNotFound, UsageError
from offload.jobs.fleet import Reach
from offload.jobs.service import JobService, RunRequest
from offload.jobs.state import State
from offload.outputs import StackOutputs
from offload.worker.layout import MAX_KEEP_JOBS, MAX_WARM_WORKTREES
from tests.workers import SshdWorker, git, make_repo, sshd_record

SCRIPT = "printf 'one\\n'; sleep 0.3; printf 'two\\n'; exit 3"


def _iso(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").timestamp()


@pytest.fixture
def box(sshd_worker: SshdWorker) -> StackOutputs:
    """The outputs of one ssh worker named box."""
    return StackOutputs.from_dict({"provider": "ssh", "developer": "dev@example.com",
                                   "workers": [sshd_record(sshd_worker, name="box")]})


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo")


@pytest.fixture
def service(box: StackOutputs, sshd_worker: SshdWorker) -> Iterator[JobService]:
    with JobService(box, Reach(identity=sshd_worker.key_path)) as s:
        yield s


@pytest.fixture
def failed(service: JobService, repo: Path) -> str:
    """A job of SCRIPT that has ended (failed, exit 3); its id."""
    job = service.submit(RunRequest(cwd=repo, command=[SCRIPT])).id
    assert service.wait_for(job, 30).job.state is State.FAILED
    return job


def test_submit_gives_the_job_id_and_its_worker(service: JobService, repo: Path) -> None:
    started = service.submit(RunRequest(cwd=repo, command=["true"]))
    assert started.to_dict() == {"id": started.id, "worker": "box"}


def test_wait_for_reports_the_ended_job_its_worker_exit_code_and_tasks(service: JobService, failed: str) -> None:
    report = service.wait_for(failed, 30)
    assert report.job.state is State.FAILED and report.job.exit_code == 3
    assert report.to_dict()["worker"] == "box"
    assert report.to_dict()["tasks"] == [{"name": "main", "state": "failed", "exit_code": 3}]


def test_logs_read_the_whole_log_or_from_an_offset(service: JobService, failed: str) -> None:
    whole = service.logs(failed)
    assert (whole.data, whole.next_offset, whole.state, whole.task) == (b"one\ntwo\n", 8, State.FAILED, "main")
    rest = service.logs(failed, offset=4)
    assert (rest.data, rest.next_offset) == (b"two\n", 8)


def test_logs_at_the_end_of_an_ended_job_read_nothing_and_say_there_is_no_more(service: JobService,
                                                                               failed: str) -> None:
    assert service.logs(failed, offset=8).to_dict() == {"data": "", "next_offset": 8, "state": "failed",
                                                         "task": "main", "more": False}


def test_logs_with_a_limit_say_whether_more_follows(service: JobService, failed: str) -> None:
    cut = service.logs(failed, offset=1, limit=4)
    assert (cut.data, cut.next_offset, cut.more) == (b"ne\nt", 5, True)
    assert service.logs(failed, offset=5, limit=3).more is False


def test_a_negative_log_offset_is_refused(service: JobService, failed: str) -> None:
    with pytest.raises(UsageError):
        service.logs(failed, offset=-1)


def test_status_lists_the_jobs_oldest_first_with_command_and_times(service: JobService, repo: Path,
                                                                    failed: str) -> None:
    second = service.submit(RunRequest(cwd=repo, command=["echo", "a b"]))
    assert service.wait_for(second.id, 30).job.state is State.SUCCESS
    (worker,) = service.status().to_dict()["workers"]
    assert worker["name"] == "box" and worker["state"] == "running" and worker["error"] is None
    jobs = worker["jobs"]
    assert [j["id"] for j in jobs] == [failed, second.id]
    assert [j["command"] for j in jobs] == [SCRIPT, "echo 'a b'"]
    assert [j["playbook"] for j in jobs] == [None, None]
    for j in jobs:
        assert abs(_iso(j["started"]) - time.time()) < 120
        assert _iso(j["started"]) <= _iso(j["finished"])


def test_clean_removes_the_job_and_reports_it(service: JobService, failed: str) -> None:
    assert service.clean(failed).to_dict() == {"cleaned": [{"worker": "box", "id": failed}], "errors": [],
                                               "survivors": []}
    with pytest.raises(JobNotFound):
        service.check(failed)


def test_clean_all_cleans_every_job(service: JobService, repo: Path, failed: str) -> None:
    second = service.submit(RunRequest(cwd=repo, command=["true"])).id
    assert sorted(service.clean_all().cleaned) == sorted([("box", failed), ("box", second)])
    assert service.status().to_dict()["workers"][0]["jobs"] == []


def test_a_session_opens_one_connection_for_all_it_does(sshd_worker: SshdWorker, box: StackOutputs,
                                                        repo: Path) -> None:
    before = sshd_worker.accepted_count()
    with JobService(box, Reach(identity=sshd_worker.key_path)) as service:
        job = service.submit(RunRequest(cwd=repo, command=[SCRIPT])).id
        service.wait_for(job, 30)
        service.logs(job)
        service.status()
        service.check(job)
        service.clean(job)
    assert sshd_worker.accepted_count() - before == 1


def test_a_bad_request_fails_before_any_worker_is_dialled(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    with pytest.raises(UsageError, match="nothing to run"):
        JobService.plan(RunRequest(cwd=repo))
    with pytest.raises(UsageError, match="either a command or a playbook"):
        JobService.plan(RunRequest(cwd=repo, command=["true"], playbook="review"))
    with pytest.raises(UsageError, match="invalid playbook name"):
        JobService.plan(RunRequest(cwd=repo, playbook="../x"))
    assert (repo / "src").is_dir()
    argv = ["printf", "%s\n", "it's"]
    book, meta = JobService.plan(RunRequest(cwd=repo / "src", command=argv))
    # The command as given is kept as one line of meta; the task runs it in the same subdirectory.
    assert json.loads(meta["command"]) == shlex.join(argv) and "\n" not in meta["command"]
    assert book.tasks[0].run == f"mkdir -p -- src && cd -- src || exit 1\n{shlex.join(argv)}"


@pytest.mark.parametrize(("field", "most"), [("keep_jobs", MAX_KEEP_JOBS), ("warm_worktrees", MAX_WARM_WORKTREES)])
def test_what_a_worker_keeps_is_capped_before_any_worker_is_dialled(tmp_path: Path, field: str, most: int) -> None:
    repo = make_repo(tmp_path / "repo")
    flag = "--" + field.replace("_", "-")
    for value in (-1, most + 1):
        with pytest.raises(UsageError) as caught:
            JobService.plan(RunRequest(cwd=repo, command=["true"], **{field: value}))
        assert caught.value.message == f"{flag} takes a number from 0 to {most}; got {value}"
    for value in (0, most):
        assert JobService.plan(RunRequest(cwd=repo, command=["true"], **{field: value}))[1][field] == str(value)


def test_a_command_with_control_characters_is_kept_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OFFLOAD_LOCAL_WORKSPACE", str(tmp_path / "ws"))
    from offload.outputs import local_outputs

    repo = make_repo(tmp_path / "repo")
    command = "printf 'x\\ty\\n'\n# a \x7f comment\ntrue"
    with JobService(local_outputs()) as service:
        job = service.submit(RunRequest(cwd=repo, command=[command]))
        assert service.wait_for(job.id, 30).job.command == command
        assert service.logs(job.id).data == b"x\ty\n"
        service.clean(job.id)


def test_a_multi_megabyte_command_runs_whole_and_status_stays_small(sshd_worker: SshdWorker, tmp_path: Path) -> None:
    """The job's meta keeps the head of a long command and its size (the task's cmd file has all of it), and the
    branch's head: `status` and `check` stay a few KiB however long the command or the branch name is."""
    outputs = StackOutputs.from_dict({"provider": "ssh", "developer": "dev@example.com",
                                      "workers": [sshd_record(sshd_worker, name="box")]})
    repo = make_repo(tmp_path / "repo")
    branch = "feature/" + "/".join(c * 200 for c in "xyz")
    git(repo, "checkout", "-q", "-b", branch)
    big = "é" * (3 * 1024 * 1024 // 2)
    command = f"v='{big}'\nprintf '%s' \"$v\" | wc -c"
    size = len(command.encode())
    with JobService(outputs, Reach(identity=sshd_worker.key_path)) as service:
        job = service.submit(RunRequest(cwd=repo, command=[command]))
        report = service.wait_for(job.id, 60)
        assert report.job.state is State.SUCCESS, service.logs(job.id).data[-500:]
        assert service.logs(job.id).data.strip() == str(len(big.encode())).encode(), "the whole command ran"
        status = json.dumps(service.status().to_dict()).encode()
        check = json.dumps(report.to_dict()).encode()
    assert len(status) < 8192 and len(check) < 8192, (len(status), len(check))
    shown = report.to_dict()
    assert shown["command"].startswith("v='éé") and shown["command"].endswith(f"… ({size} bytes)")
    assert shown["meta"]["command_bytes"] == str(size)
    assert len(shown["meta"]["command"].encode()) <= 2048
    assert shown["meta"]["branch"].startswith("feature/xxx") and shown["meta"]["branch"].endswith("…")
    assert len(shown["meta"]["branch"].encode()) == 256


def test_a_limited_log_read_never_splits_a_character() -> None:
    from offload.jobs.service import utf8_prefix

    data = "aé€😀".encode()  # 1 + 2 + 3 + 4 bytes
    assert [utf8_prefix(data, n).decode() for n in range(1, 10)] == [
        "a", "a", "aé", "aé", "aé", "aé€", "aé€", "aé€", "aé€"]
    assert utf8_prefix(b"\x80\x80\x80\x80\x80", 2) == b"\x80\x80", "bytes that are no UTF-8 are cut where asked"


def test_a_chosen_job_id_new_to_this_machine_launches_with_its_sync(service: JobService, repo: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """One round trip for `run --job ID` too, while an id taken on the worker never costs this machine the record
    it keeps of that id, nor keeps one for another machine's job."""
    import offload.runtime.sync as sync_module
    from offload.errors import JobExists
    from offload.runtime import results
    from offload.runtime.snapshot import local_repository

    sent: list[int] = []
    real = sync_module.run_steps
    monkeypatch.setattr(sync_module, "run_steps", lambda t, steps: sent.append(len(steps)) or real(t, steps))
    service.submit(RunRequest(cwd=repo, command=["true"], job_id="named"))
    assert sent == [2], "the receive and the launch went together"
    state = local_repository(repo).state_dir
    kept = results.load_record(state, "named")
    assert kept is not None
    sent.clear()
    with pytest.raises(JobExists):
        service.submit(RunRequest(cwd=repo, command=["true"], job_id="named"))
    assert sent == [] and results.load_record(state, "named") == kept, "a known id: the launch waits for the sync"
    results.forget_record(state, "named")  # as on a machine that did not start it
    with pytest.raises(JobExists):
        service.submit(RunRequest(cwd=repo, command=["true"], job_id="named"))
    assert sent == [2] and results.load_record(state, "named") is None
