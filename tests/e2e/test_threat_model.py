"""The threat model, as tests: what a job, a worker or an agent can and cannot do to the developer's machine.

Everything a job leaves on its worker (its worktree, the refs and files of the worker's repository, its
processes) and everything an agent passes to `offload mcp` is treated as hostile. Each section below names one
attack, made for real against real workers, and what must hold:

1. A job's result cannot write inside `.git/` or any path git would refuse to check out, and cannot change
   `.gitattributes` or `.gitmodules` so that a filter or a hook runs here.
2. A job cannot write any result but its own; a result that is not its runner's record is refused.
3. An agent gets only the environment variables the user allowed.
4. An agent's `get` writes only inside the repository.
5. A job cannot plant a `.offload` symlink that makes `get` write elsewhere.
6. A job that breaks its worktree cannot make the next job run on stale files.
7. A job's leftover processes cannot write into the next job's worktree.
8. `apply` never deletes or overwrites local work that git does not track, and can always be undone.

docs/security.md states the same model for users.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import on_worker, ran, stderr_line, worker_setup
from tests.e2e.test_mcp import drive, mcp_session, ok, refused
from tests.workers import git, make_repo, tree_digest, wait_for


@pytest.fixture(params=["sshd", "container"])
def worker(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """A worker with its own account and workspace: an sshd host, or an sshd host's worker container."""
    return worker_setup(request, request.param, tmp_path)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    r = make_repo(tmp_path / "repo")
    (r / ".gitignore").write_text("build/\n")
    git(r, "add", ".gitignore")
    git(r, "commit", "-q", "-m", "ignore build outputs")
    return r


def cmd(worker: dict[str, Any], repo: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return on_worker(worker, repo, *args)


def files_of(repo: Path) -> str:
    """The working tree, byte for byte and mode for mode, without .git: what a refused command leaves as it was."""
    h = hashlib.sha256()
    for p in sorted(repo.rglob("*")):
        rel = p.relative_to(repo)
        if rel.parts[0] == ".git":
            continue
        st = p.lstat()
        h.update(f"{rel}\0{st.st_mode:o}\0".encode())
        if p.is_symlink():
            h.update(os.readlink(p).encode())
        elif p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def settled(worker: dict[str, Any], repo: Path, job: str) -> None:
    """Wait until JOB's runner has recorded its end (its result kept)."""
    def done() -> bool:
        p = cmd(worker, repo, "check", "--json", job)
        return p.returncode in (0, 1) and json.loads(p.stdout or b"{}").get("finished") is not None

    wait_for(done, timeout=120, what=f"job {job} to settle", interval=0.2)


# A job that writes, into the worker's repository, a commit of its own making: its tree holds FILE (or, with a
# path of git's plumbing, anything), on top of the job's own HEAD. It prints nothing; $c holds the commit.
WHO = "export GIT_AUTHOR_NAME=e GIT_AUTHOR_EMAIL=e@example.com GIT_COMMITTER_NAME=e GIT_COMMITTER_EMAIL=e@example.com;"
FORGE = f"{WHO} c=$(git commit-tree $(git write-tree) -p HEAD -m forged)"


# --- 1. a result cannot write inside .git or run a filter or a hook here ----------------------------------------


def test_a_path_that_is_git_on_another_system_is_refused(worker: dict[str, Any], repo: Path) -> None:
    """`.gi<U+200C>t` is `.git` on macOS (HFS+ ignores the character): git refuses to check it out there, and so
    does apply everywhere."""
    ran(worker, repo, "hfs", "d=$(printf '.gi\\342\\200\\214t')/hooks; mkdir -p \"$d\"; "
                             "printf '#!/bin/sh\\necho pwned\\n' > \"$d/pre-commit\"; chmod +x \"$d/pre-commit\"; "
                             "echo fixed >> file0.txt")
    before = files_of(repo)
    p = cmd(worker, repo, "apply", "hfs")
    assert p.returncode == 1 and "path that git refuses to check out" in stderr_line(p), p.stderr
    assert files_of(repo) == before


def test_a_forged_result_with_git_hooks_is_refused_even_unverified(worker: dict[str, Any], repo: Path) -> None:
    ran(worker, repo, "honest", "echo fixed >> file0.txt")
    # Another job writes a commit whose tree holds .git/hooks/pre-commit (plumbing checks nothing) as the
    # honest job's result.
    ran(worker, repo, "evil", f"{WHO} b=$(printf '#!/bin/sh\\necho pwned\\n' | git hash-object -w --stdin) && "
                              "h=$(printf '100755 blob %s\\tpre-commit\\n' $b | git mktree) && "
                              "g=$(printf '040000 tree %s\\thooks\\n' $h | git mktree) && "
                              "t=$( (git ls-tree HEAD; printf '040000 tree %s\\t.git\\n' $g) | git mktree) && "
                              "c=$(git commit-tree $t -p HEAD -m forged) && "
                              "git update-ref refs/offload/results/honest $c && "
                              "printf '%s -\\n' $c > \"$OFFLOAD_JOB_DIR/../honest/result\"")
    before = files_of(repo)
    p = cmd(worker, repo, "apply", "honest")
    assert p.returncode == 1 and "was not recorded by its runner" in stderr_line(p), p.stderr
    p = cmd(worker, repo, "apply", "--unverified", "honest")
    assert p.returncode == 1 and "path that git refuses to check out: '.git/hooks/pre-commit'" in stderr_line(p)
    assert not (repo / ".git" / "hooks" / "pre-commit").exists()
    assert files_of(repo) == before


def test_a_filter_the_job_adds_to_gitattributes_needs_the_users_word(worker: dict[str, Any], repo: Path) -> None:
    ran(worker, repo, "attrs", "echo '*.txt filter=lfs' >> .gitattributes; echo fixed >> file0.txt")
    before = files_of(repo)
    p = cmd(worker, repo, "apply", "attrs")
    assert p.returncode == 1 and "makes git run a filter or driver here" in stderr_line(p), p.stderr
    assert "--allow-filters" in stderr_line(p) and files_of(repo) == before
    p = cmd(worker, repo, "apply", "--allow-filters", "attrs")
    assert p.returncode == 0, p.stderr
    assert (repo / ".gitattributes").read_text() == "*.txt filter=lfs\n"


# --- 2. a job cannot forge another job's result ----------------------------------------------------------------


def test_a_job_that_moves_another_jobs_result_ref_changes_nothing(worker: dict[str, Any], repo: Path) -> None:
    ran(worker, repo, "victim", "echo honest > honest.txt")
    ran(worker, repo, "forger", f"echo forged > forged.txt && git add -A && {FORGE} && "
                                "git update-ref refs/offload/results/victim $c")
    p = cmd(worker, repo, "diff", "victim")
    assert p.returncode == 0, p.stderr
    assert b"+honest" in p.stdout and b"forged" not in p.stdout


def test_a_job_that_rewrites_another_jobs_record_is_caught(worker: dict[str, Any], repo: Path) -> None:
    ran(worker, repo, "victim", "echo honest > honest.txt")
    ran(worker, repo, "forger", f"echo forged > forged.txt && git add -A && {FORGE} && "
                                "git update-ref refs/offload/results/victim $c && "
                                "printf '%s %s\\n' $c 0123456789abcdef0123456789abcdef01234567 > "
                                "\"$OFFLOAD_JOB_DIR/../victim/result\"")
    p = cmd(worker, repo, "diff", "victim")
    assert p.returncode == 1, p.stderr
    assert stderr_line(p).startswith("offload: the result of job victim on worker ")
    assert "is not the one its runner recorded" in stderr_line(p) and "--unverified" in stderr_line(p)
    assert git(repo, "for-each-ref", "refs/offload/jobs/victim") == "", "nothing was taken"
    p = cmd(worker, repo, "diff", "--unverified", "victim")  # the user may look, knowingly
    assert p.returncode == 0 and b"+forged" in p.stdout


def test_a_result_forged_before_the_job_ends_is_replaced_by_the_runners_own(worker: dict[str, Any],
                                                                             repo: Path) -> None:
    p = cmd(worker, repo, "run", "--job", "victim", "--",
            'until [ -e "$OFFLOAD_JOB_DIR/../forger/done" ]; do sleep 0.05; done; echo honest > honest.txt')
    assert p.returncode == 0, p.stderr
    ran(worker, repo, "forger", f"echo forged > forged.txt && git add -A && {FORGE} && "
                                "git update-ref refs/offload/results/victim $c && "
                                "printf '%s -\\n' $c > \"$OFFLOAD_JOB_DIR/../victim/result\" && "
                                "touch \"$OFFLOAD_JOB_DIR/done\"")
    settled(worker, repo, "victim")
    p = cmd(worker, repo, "diff", "victim")
    assert p.returncode == 0, p.stderr
    assert b"+honest" in p.stdout and b"forged" not in p.stdout



# --- 3. an agent gets only the environment the user allowed ----------------------------------------------------


def test_an_agent_gets_only_the_variables_the_user_allowed(worker: dict[str, Any], repo: Path) -> None:
    """A prompt-injected agent asks for the user's secrets by name: refused in one line that says how the user
    allows a name, and no job starts. The names the user allowed (flag and setting) reach the job."""
    secret = f"secret-{secrets.token_hex(8)}"
    env = {**worker["env"], "AWS_SECRET_ACCESS_KEY": secret, "BUILD_FLAVOR": "debug", "BUILD_MODE": "fast"}
    leak = 'echo "[$AWS_SECRET_ACCESS_KEY]"'
    logs: list[str] = []

    async def main() -> None:
        async with mcp_session(repo, *worker["args"], env=env) as c:  # the default: no name allowed
            said = await refused(c, "run", command=leak, env=["AWS_SECRET_ACCESS_KEY"], wait_seconds=30)
            assert said.startswith("offload: env: AWS_SECRET_ACCESS_KEY is not allowed; the user allowed none ("), said
            assert "`offload mcp --allow-env AWS_SECRET_ACCESS_KEY`" in said and "OFFLOAD_MCP_ALLOW_ENV" in said
            assert secret not in said
            assert [j for w in (await ok(c, "status"))["workers"] for j in w["jobs"]] == [], "no job started"
        async with mcp_session(repo, *worker["args"], "--allow-env", "BUILD_FLAVOR",
                               env={**env, "OFFLOAD_MCP_ALLOW_ENV": "BUILD_MODE,"}) as c:
            said = await refused(c, "run", command=leak, env=["BUILD_FLAVOR", "AWS_SECRET_ACCESS_KEY"])
            assert "AWS_SECRET_ACCESS_KEY is not allowed; the user allowed BUILD_FLAVOR, BUILD_MODE (" in said, said
            done = await ok(c, "run", command='echo "[$BUILD_FLAVOR] [$BUILD_MODE] [${AWS_SECRET_ACCESS_KEY:-}]"',
                            env=["BUILD_FLAVOR", "BUILD_MODE"], wait_seconds=60)
            assert done["state"] == "success", done
            logs.append((await ok(c, "logs", job=done["id"]))["data"])
            jobs = [j for w in (await ok(c, "status"))["workers"] for j in w["jobs"]]
            assert [j["id"] for j in jobs] == [done["id"]]

    drive(main)
    assert logs == ["[debug] [fast] []\n"]


def test_a_bad_allowed_name_stops_the_server_before_it_serves(tmp_path: Path) -> None:
    from tests.e2e.helpers import offload

    repo = make_repo(tmp_path / "repo")
    p = offload("mcp", "--allow-env", "NOT A NAME", cwd=repo)
    assert p.returncode == 2 and p.stdout == b""
    assert stderr_line(p).startswith("offload: --allow-env takes environment variable names")
    p = offload("mcp", cwd=repo, env={"OFFLOAD_MCP_ALLOW_ENV": "PATH,OFFLOAD_JOB"})
    assert p.returncode == 2 and "OFFLOAD_MCP_ALLOW_ENV: environment variable OFFLOAD_JOB" in stderr_line(p)


# --- 4. an agent's get writes only inside the repository -------------------------------------------------------


def test_an_agents_get_writes_only_inside_the_repository(worker: dict[str, Any], repo: Path, tmp_path: Path) -> None:
    ran(worker, repo, "art", "mkdir -p build; echo 'job says' > build/.bashrc; echo out > build/out.txt; "
                             "echo 'job says' > file0.txt")
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text("mine\n")
    (repo / "to-home").symlink_to(home)  # inside the repository by name, outside it in fact
    outside = tree_digest(tmp_path / "home")
    got: dict[str, Any] = {}

    async def main() -> None:
        async with mcp_session(repo, *worker["args"], env=worker["env"]) as c:
            for to in (str(home), "../../..", "../home", "build/../../home", "to-home", "to-home/sub"):
                said = await refused(c, "get", job="art", paths=["build"], to=to)
                assert "to: " in said or "to-home is a symlink" in said, (to, said)
            said = await refused(c, "get", job="art", paths=["build"], to=".git/hooks")
            assert "inside .git" in said, said
            # Inside the repository, but over a file that is there: refused, nothing written.
            said = await refused(c, "get", job="art", paths=["file0.txt", "build/out.txt"], to=".")
            assert said.startswith("offload: get would replace 1 existing file in ") and "file0.txt" in said, said
            assert "choose another `to`" in said and "--force" not in said
            got["new"] = await ok(c, "get", job="art", paths=["build/out.txt"], to="fetched")
            got["default"] = await ok(c, "get", job="art", paths=["build"])
            got["again"] = await ok(c, "get", job="art", paths=["build"])  # .offload/ is offload's: replaced

    drive(main)
    assert tree_digest(tmp_path / "home") == outside
    assert (home / ".bashrc").read_text() == "mine\n"
    assert not (tmp_path / "fetched").exists() and not (repo / ".git" / "hooks" / "build").exists()
    assert (repo / "file0.txt").read_text() == "content 0\n" and not (repo / "build").exists()
    assert got["new"] == {"id": "art", "to": str(repo / "fetched"), "files": ["build/out.txt"], "replaced": []}
    assert (repo / "fetched" / "build" / "out.txt").read_text() == "out\n"
    assert got["default"]["to"] == str(repo / ".offload" / "art") and got["default"]["replaced"] == []
    assert sorted(got["again"]["replaced"]) == ["build/.bashrc", "build/out.txt"]
    assert sorted(p.name for p in repo.iterdir()) == [".git", ".gitignore", ".offload", "fetched", "file0.txt",
                                                      "file1.txt", "file2.txt", "run.sh", "src", "to-home"]


def test_the_cli_replaces_files_outside_offload_only_with_force(worker: dict[str, Any], repo: Path,
                                                               tmp_path: Path) -> None:
    ran(worker, repo, "out", "mkdir -p build; echo new > build/a; echo new > build/b")
    target = tmp_path / "target"
    (target / "build").mkdir(parents=True)
    (target / "build" / "a").write_text("mine\n")
    (tmp_path / "link").symlink_to(target)  # the user's own path, through a symlink of theirs
    p = cmd(worker, repo, "get", "out", "build", "--to", str(tmp_path / "link"))
    assert p.returncode == 2, p.stderr
    assert stderr_line(p) == (f"offload: get would replace 1 existing file in {target}: build/a; nothing was "
                              "written (pass --force to replace them, or choose another --to)")
    assert (target / "build" / "a").read_text() == "mine\n" and not (target / "build" / "b").exists()
    p = cmd(worker, repo, "get", "out", "build", "--to", str(tmp_path / "link"), "--force")
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode() == f"3 entries into {target}, replacing 1: build/a\n", "the real destination"
    assert (target / "build" / "a").read_text() == "new\n" and (target / "build" / "b").read_text() == "new\n"


# --- 5. a job-made .offload symlink leads nowhere ----------------------------------------------------------------


def test_apply_leaves_out_a_dot_offload_the_job_made(worker: dict[str, Any], repo: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    ran(worker, repo, "dotoffload", f"ln -s {victim} .offload; echo fixed >> file0.txt; echo art > art.txt")
    p = cmd(worker, repo, "apply", "dotoffload")
    assert p.returncode == 0, p.stderr
    assert not (repo / ".offload").is_symlink() and ".offload" in p.stderr.decode()
    assert cmd(worker, repo, "get", "dotoffload", "art.txt").returncode == 0
    assert (repo / ".offload" / "dotoffload" / "art.txt").read_text() == "art\n"
    assert list(victim.iterdir()) == []


def test_get_writes_through_no_symlink(worker: dict[str, Any], repo: Path, tmp_path: Path) -> None:
    """A symlink can be in the working tree where get writes, `.offload` itself included (apply leaves out a
    `.offload` a job made, but a result of an older offload, or anything else, can have put one there; here they
    are made by hand): get refuses to write through any of them, and unpacking follows none, whether it leads
    out of the destination or elsewhere inside it."""
    victim = tmp_path / "victim"
    victim.mkdir()
    ran(worker, repo, "plant", "mkdir -p build; echo job > build/a")
    (repo / ".offload").symlink_to(victim)
    p = cmd(worker, repo, "get", "plant", "build/a")
    assert p.returncode == 2, p.stderr
    assert stderr_line(p) == (f"offload: .offload is a symlink in the repository, and get writes nowhere through "
                              f"a symlink (remove {repo / '.offload'} and get again)")

    async def main() -> None:
        async with mcp_session(repo, *worker["args"], env=worker["env"]) as c:
            for to in (None, ".offload/mine"):
                said = await refused(c, "get", job="plant", paths=["build/a"], **({"to": to} if to else {}))
                assert ".offload is a symlink" in said, said

    drive(main)
    (repo / ".offload").unlink()
    dest = repo / ".offload" / "plant"
    dest.parent.mkdir()
    dest.symlink_to(victim)
    p = cmd(worker, repo, "get", "plant", "build/a")
    assert p.returncode == 2 and ".offload/plant is a symlink" in stderr_line(p)
    assert list(victim.iterdir()) == []

    # Symlinks inside the destination: a member is never unpacked through one.
    dest.unlink()
    dest.mkdir()
    (dest / "build").symlink_to(victim)
    p = cmd(worker, repo, "get", "plant", "build/a")
    assert p.returncode == 2
    assert "build/a passes through the symlink build" in stderr_line(p)
    (dest / "build").unlink()
    (dest / "other").mkdir()
    (dest / "build").symlink_to("other")  # inside the destination, and still not followed
    p = cmd(worker, repo, "get", "plant", "build/a")
    assert p.returncode == 2 and "passes through the symlink build" in stderr_line(p)
    assert list((dest / "other").iterdir()) == []
    # Getting the directory itself replaces the symlink with a real directory (in .offload/, files are replaced).
    p = cmd(worker, repo, "get", "plant", "build")
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode() == f"2 entries into {dest}, replacing 1: build\n"
    assert not (dest / "build").is_symlink() and (dest / "build" / "a").read_text() == "job\n"
    # A symlink where a file lands is replaced, not written through.
    (dest / "build" / "a").unlink()
    (dest / "build" / "a").symlink_to(victim / "a")
    p = cmd(worker, repo, "get", "plant", "build/a")
    assert p.returncode == 0, p.stderr
    assert not (dest / "build" / "a").is_symlink() and (dest / "build" / "a").read_text() == "job\n"
    assert list(victim.iterdir()) == [] and list((dest / "other").iterdir()) == []


# --- 6. a broken worktree is never reused silently ---------------------------------------------------------------

# What a job can do to the git side of its worktree. `git rev-parse --git-dir` is the worktree's admin directory in
# the worker's bare repository.
BREAKS = {
    "git-file-deleted": "rm .git",
    "admin-dir-deleted": 'rm -rf "$(git rev-parse --git-dir)"',
    "head-unreadable": 'echo garbage > "$(git rev-parse --git-dir)/HEAD"',
}


@pytest.mark.parametrize(("breakage", "fresh"), [("git-file-deleted", False), ("git-file-deleted", True),
                                                 ("admin-dir-deleted", False), ("head-unreadable", False)])
def test_a_worktree_a_job_broke_is_made_again_for_the_next_job(worker: dict[str, Any], repo: Path, breakage: str,
                                                               fresh: bool) -> None:
    first = cmd(worker, repo, "run", "--job", "breaker", "--wait", "--",
                f"echo stale > file0.txt; echo junk > junk.txt; pwd; {BREAKS[breakage]}")
    assert first.returncode == 0, first.stderr
    second = cmd(worker, repo, "run", "--job", "next", "--wait", *(["--fresh"] if fresh else []), "--",
                 "pwd; cat file0.txt; ls -A | grep -x junk.txt; git status --porcelain")
    assert second.returncode == 0, second.stderr
    assert second.stdout.decode() == f"{first.stdout.decode().strip()}\ncontent 0\n", \
        "the same slot, made again: exactly the snapshot, and a git worktree again"


# --- 7. a finished job's leftover processes end before its worktree is used again --------------------------------

# A process that leaves the task's session (setsid) and writes into the worktree once the job has ended. It records
# its pid under build/ (ignored, so the next job in the worktree finds it) when it starts.
LEFTOVER = ("mkdir -p build; setsid sh -c 'echo $$ > build/leftover.pid; sleep 4; echo poison > poison.txt; "
            "echo poisoned >> file0.txt' < /dev/null > /dev/null 2>&1 & "
            "while [ ! -s build/leftover.pid ]; do sleep 0.05; done; pwd")
# The next job waits for that process to be gone (a zombie is gone too), then looks at its worktree.
GONE = ("p=$(cat build/leftover.pid); "
        "while [ -d /proc/$p ] && ! grep -q '^State:[[:space:]]*Z' /proc/$p/status 2> /dev/null; do sleep 0.1; done; "
        "pwd; ls -A; cat file0.txt")


def test_a_finished_jobs_leftover_process_never_writes_into_the_next_job(worker: dict[str, Any], repo: Path) -> None:
    import json

    first = cmd(worker, repo, "run", "--job", "leaver", "--wait", "--", LEFTOVER)
    assert first.returncode == 0, first.stderr
    # The job's runner and tmux server linger for `offload attach`: giving the worktree back spared them.
    check = cmd(worker, repo, "check", "leaver", "--json")
    assert check.returncode == 0 and json.loads(check.stdout)["worker_alive"] is True, check.stdout
    second = cmd(worker, repo, "run", "--job", "after", "--wait", "--", GONE)
    assert second.returncode == 0, second.stderr
    where, *listing, content = second.stdout.decode().splitlines()
    assert where == first.stdout.decode().strip(), "the next job got the same warm worktree"
    assert "poison.txt" not in listing and content == "content 0", second.stdout
    diff = cmd(worker, repo, "diff", "after")
    assert diff.returncode == 0 and diff.stdout == b"", diff.stdout
    check = cmd(worker, repo, "check", "leaver", "--json")
    assert json.loads(check.stdout)["worker_alive"] is True, "leasing the worktree again spared them too"


# --- 8. apply keeps untracked work and can be undone -------------------------------------------------------------


UNRELATED_ROOT = ("git checkout -q --orphan elsewhere && git rm -rqf --cached . && find . -mindepth 1 -maxdepth 1 "
                  "! -name .git -exec rm -rf {} + && echo new > t.txt && git add t.txt && "
                  "git -c user.name=j -c user.email=j@example.com commit -qm root")


def test_a_result_on_unrelated_history_deletes_nothing(worker: dict[str, Any], repo: Path) -> None:
    (repo / "t.txt").write_text("tracked here\n")
    git(repo, "add", "t.txt")
    git(repo, "commit", "-q", "-m", "t")
    (repo / "untracked-work.txt").write_text("my only copy\n")
    ran(worker, repo, "reroot", UNRELATED_ROOT)
    before = files_of(repo)
    p = cmd(worker, repo, "apply", "reroot")
    assert p.returncode == 1 and "does not build on the snapshot it ran on" in stderr_line(p), p.stderr
    assert files_of(repo) == before
    # Asked to, it still never deletes what git does not track here.
    p = cmd(worker, repo, "apply", "--unrelated", "reroot")
    assert p.returncode == 1 and "git does not track here: untracked-work.txt" in stderr_line(p), p.stderr
    assert files_of(repo) == before
    assert (repo / "untracked-work.txt").read_text() == "my only copy\n"


def test_apply_keeps_what_it_replaces_and_undo_puts_it_back(worker: dict[str, Any], repo: Path) -> None:
    (repo / "file0.txt").write_text("content 0\nmine, uncommitted\n")
    ran(worker, repo, "edits", "echo 'by the job' >> file0.txt; rm file1.txt; chmod -x run.sh; mkdir -p n; "
                               "echo new > n/new.txt")
    before = files_of(repo)
    p = cmd(worker, repo, "apply", "edits")
    assert p.returncode == 0, p.stderr
    assert "offload apply --undo edits" in p.stderr.decode()
    assert git(repo, "show", "refs/offload/backup/edits^:file0.txt") == "content 0\nmine, uncommitted\n"
    assert files_of(repo) != before
    p = cmd(worker, repo, "apply", "--undo", "edits")
    assert p.returncode == 0, p.stderr
    assert sorted(p.stdout.decode().split()) == ["file0.txt", "file1.txt", "n/new.txt", "run.sh"]
    assert files_of(repo) == before
    p = cmd(worker, repo, "apply", "--undo", "edits")
    assert p.returncode == 1 and "nothing to undo" in stderr_line(p)
