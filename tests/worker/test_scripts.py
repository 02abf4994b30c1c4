"""The worker-side shell: every script parses in the shells worker images have and passes shellcheck, and the
layout, the id rule and the liveness rule are each written once (lib.sh in shell, layout.py in Python) and
agree with each other."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from offload.worker.layout import ID_RULE, JobPaths, WorkerLayout, job_ref, tmux_socket
from offload.worker.scripts import (BOOT_SCRIPTS, JOB_SCRIPTS, SESSION_SCRIPTS, boot_script, session_script,
                                    worker_script)

REPO = Path(__file__).resolve().parents[2]
SH_DIR = REPO / "offload" / "worker" / "sh"
LIB = (SH_DIR / "lib.sh").read_text()
SHELLS = {"dash": ["dash"], "bash --posix": ["bash", "--posix"], "busybox sh": ["busybox", "sh"]}


def _shell(name: str) -> list[str]:
    argv = SHELLS[name]
    if not shutil.which(argv[0]):
        pytest.skip(f"{argv[0]} is not installed")
    return argv


def test_every_script_file_is_known() -> None:
    on_disk = {p.name for p in SH_DIR.glob("*.sh")}
    assert on_disk == {"lib.sh", *JOB_SCRIPTS, *BOOT_SCRIPTS, *SESSION_SCRIPTS}


@pytest.mark.parametrize("shell", sorted(SHELLS))
@pytest.mark.parametrize("name", JOB_SCRIPTS + SESSION_SCRIPTS)
def test_job_and_session_scripts_parse(shell: str, name: str) -> None:
    text = worker_script(name) if name in JOB_SCRIPTS else session_script(name)
    result = subprocess.run([*_shell(shell), "-n"], input=text, capture_output=True, text=True, timeout=10)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", JOB_SCRIPTS + BOOT_SCRIPTS + SESSION_SCRIPTS)
def test_scripts_pass_shellcheck(name: str) -> None:
    checker = shutil.which("shellcheck")
    if not checker:
        pytest.skip("shellcheck is not installed")
    text, dialect = ((worker_script(name), "sh") if name in JOB_SCRIPTS else
                     (session_script(name), "sh") if name in SESSION_SCRIPTS else (boot_script(name), "bash"))
    result = subprocess.run([checker, "-s", dialect, "-"], input=text, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout


def test_a_job_script_is_the_library_then_the_script() -> None:
    text = worker_script("status.sh")
    assert text.startswith("#!/bin/sh\n" + LIB)
    assert text.endswith((SH_DIR / "status.sh").read_text())
    with pytest.raises(ValueError):
        worker_script("../lib.sh")


# --- one definition ----------------------------------------------------------------------------------------------

_LIB_FUNCTIONS = re.findall(r"^([a-z_]+)\(\) \{", LIB, re.M)


def test_the_library_defines_the_shared_rules() -> None:
    assert {"get", "put", "is_id", "is_number", "job_paths", "repo_path", "alive", "pidfile", "job_begin",
            "task_state", "job_state"} <= set(_LIB_FUNCTIONS)


@pytest.mark.parametrize("name", JOB_SCRIPTS)
def test_no_script_defines_a_rule_of_its_own(name: str) -> None:
    own = (SH_DIR / name).read_text()
    redefined = [f for f in re.findall(r"^([a-z_]+)\(\) \{", own, re.M) if f in _LIB_FUNCTIONS]
    assert not redefined, f"{name} defines {redefined} again"
    # The layout and the liveness check are spelled only in the library.
    for spelled in ("refs/offload/jobs", "/jobs/$", "/trees/", ".lease", "offload-$", "kill -0", "/proc/$"):
        assert spelled not in own, f"{name} spells {spelled!r} itself"


def test_python_spells_the_layout_only_in_the_layout_module() -> None:
    spelled = []
    for path in (REPO / "offload").rglob("*.py"):
        if path.name == "layout.py" and path.parent.name == "worker":
            continue
        text = path.read_text()
        for needle in ("refs/offload/jobs", "/trees", "[A-Za-z0-9][A-Za-z0-9_-]{0,62}", "offload-{job", ".lease"):
            if needle in text:
                spelled.append(f"{path.relative_to(REPO)}: {needle}")
    assert not spelled, "\n".join(spelled)


def _lib(body: str, *args: str, shell: str = "dash") -> str:
    result = subprocess.run([*_shell(shell), "-c", LIB + "\n" + body, "sh", *args], capture_output=True, text=True,
                            timeout=10)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_the_shell_layout_is_the_python_layout(shell: str) -> None:
    workspace, job, repo = "/srv/a b/ws", "job-1", "proj-0123abcd"
    printed = _lib('job_paths "$1" "$2"; repo_path "$1" "$3"; tree_pool "$1" "$3"; jobs_dir "$1"\n'
                   'printf "%s\\n" "$_p_dir" "$_p_ref" "$_p_socket" "$_p_repo" "$_p_pool" "$_p_jobs"',
                   workspace, job, repo, shell=shell).splitlines()
    paths = JobPaths(workspace, job)
    layout = WorkerLayout(workspace)
    assert printed == [paths.job_dir, job_ref(job), tmux_socket(job), layout.repo(repo), layout.pool(repo),
                       layout.jobs_dir]
    assert paths.ref == job_ref(job) and paths.tmux_socket == tmux_socket(job)


IDS = ["a", "A9", "9", "job-1", "a_b", "x" * 63, "x" * 64, "", "-a", "_a", "a b", "a;b", "a/b", "..", "a.b",
       "é", "a\nb", "a\n", "\na", "$(x)", "a-", "a_", "20261202-091433-abc123"]


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_the_shell_id_rule_is_the_python_id_rule(shell: str) -> None:
    body = 'for id in "$@"; do if is_id "$id"; then echo 1; else echo 0; fi; done'
    verdicts = _lib(body, *IDS, shell=shell).split()
    expected = ["1" if ID_RULE.fullmatch(i) else "0" for i in IDS]
    assert verdicts == expected
    assert expected.count("1") == 9  # the corpus holds both kinds


# --- a task that ends while it is being read ----------------------------------------------------------------------

# A task writes its exit code, then its final state, then exits. The `get` below makes that happen right after the
# AFTER-th read of a task file, which is what a loaded worker does at random.


@pytest.mark.parametrize("shell", sorted(SHELLS))
@pytest.mark.parametrize("after", [1, 2])
def test_a_task_that_ends_between_two_reads_keeps_its_exit_code(shell: str, after: int, tmp_path: Path) -> None:
    body = r'''
jd=$1 after=$2
mkdir -p "$jd/tasks/main"
sh -c 'exit 0' & dead=$!
wait "$dead"
printf 'running\n' > "$jd/tasks/main/state"
printf '%s\n' "$dead" > "$jd/tasks/main/pid"
reads=0
get() {
	_got=
	if [ -f "$1" ]; then
		{ IFS= read -r _got < "$1"; } 2> /dev/null || :
	fi
	case $1 in "$jd/tasks/main/"state | "$jd/tasks/main/"exit)
		reads=$((reads + 1))
		# the task ends here: exit code, final state, gone
		[ "$reads" = "$after" ] && printf '5\n' > "$jd/tasks/main/exit" && printf 'failed\n' > "$jd/tasks/main/state"
		;;
	esac
	return 0
}
job_begin "$jd"
task_state main
printf '%s %s\n' "$_state" "$_exit"
'''
    assert _lib(body, str(tmp_path / "job"), str(after), shell=shell).split() == ["failed", "5"]


# --- leasing a warm worktree ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_a_lease_stops_what_works_in_a_worktree_and_never_shares_or_trusts_a_broken_one(shell: str,
                                                                                        tmp_path: Path) -> None:
    """A lease takes the free worktree given back last, once nothing works in it any more. One where a process
    outlives SIGKILL (a process of another user, or in uninterruptible sleep: here one whose kill the test makes
    fail) is not leased, since it would be shared; one that is no longer a worktree of the repository is made again."""
    from tests.workers import git, make_repo

    source = make_repo(tmp_path / "src")
    ws = tmp_path / "ws"
    (ws / "repos").mkdir(parents=True)
    bare = ws / "repos" / "r.git"
    git(tmp_path, "clone", "-q", "--bare", str(source), str(bare))
    head = git(bare, "rev-parse", "HEAD").strip()
    lease = 'lease_tree "$1" r "$2" "$3" && printf %s "$_p_tree"'
    one = _lib(lease, str(ws), "a", head, shell=shell)
    two = _lib(lease, str(ws), "b", head, shell=shell)
    _lib('release_tree "$1" a && release_tree "$2" b', one, two, shell=shell)
    Path(f"{one}.used").write_text("200\n")  # given back last, so leased first
    Path(f"{two}.used").write_text("100\n")
    Path(two, ".git").unlink()
    stuck = subprocess.Popen(["sleep", "60"], cwd=one, start_new_session=True)
    try:
        unkillable = ('stuck=$4\nkill() { for a in "$@"; do [ "$a" = "$stuck" ] && [ "$1" != -0 ] && return 0; done; '
                      'command kill "$@"; }\n')
        assert _lib(unkillable + lease, str(ws), "c", head, str(stuck.pid), shell=shell) == two
        assert stuck.poll() is None and not os.path.exists(f"{one}.lease")
        assert git(Path(two), "rev-parse", "HEAD").strip() == head, "made again, a worktree of the repository"
        assert _lib(lease, str(ws), "d", head, shell=shell) == one, "once what works there can be stopped, it is"
        assert stuck.wait(timeout=10) == -signal.SIGTERM
    finally:
        stuck.kill()
        stuck.wait()
