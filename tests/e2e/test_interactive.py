"""attach, shell and run --attach, driven through a real terminal: an outer tmux pane that the test reads."""

from __future__ import annotations

import os
import secrets
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.helpers import offload
from tests.workers import (SshdWorker, TestbedError, descendants, make_repo, proc_comm, proc_cwd, sshd_record,
                           wait_for, write_outputs)


class Terminal:
    """A detached tmux server of the test's own, whose one pane runs a command we read as a user would."""

    def __init__(self, command: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.socket = f"offload-term-{os.getpid()}-{secrets.token_hex(3)}"
        full = dict(os.environ, **env)
        full.pop("TMUX", None)
        subprocess.run(["tmux", "-L", self.socket, "-f", "/dev/null", "new-session", "-d", "-x", "150", "-y", "40",
                        "-c", str(cwd), f'{shlex.join(command)}; echo "[exit $?]"; sleep 120'],
                       check=True, env=full, timeout=30)

    def screen(self) -> str:
        p = subprocess.run(["tmux", "-L", self.socket, "capture-pane", "-p", "-t", "0"], capture_output=True,
                           text=True, timeout=30)
        return p.stdout

    def wait_for(self, text: str, timeout: float = 30) -> str:
        def showing() -> str | None:
            screen = self.screen()
            return screen if text in screen else None

        try:
            return wait_for(showing, timeout=timeout, what=f"{text!r} on the screen", interval=0.1)
        except TestbedError as e:
            raise AssertionError(f"{e}; screen:\n{self.screen()}") from None

    def processes(self) -> list[int]:
        """The processes running in the pane: its shell and everything under it."""
        p = subprocess.run(["tmux", "-L", self.socket, "display-message", "-p", "-t", "0", "#{pane_pid}"],
                           capture_output=True, text=True, timeout=30)
        return descendants(int(p.stdout)) if p.stdout.strip().isdigit() else []

    def keys(self, *keys: str) -> None:
        subprocess.run(["tmux", "-L", self.socket, "send-keys", "-t", "0", *keys], check=True, timeout=30)

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=30)


@pytest.fixture
def terminals():
    opened: list[Terminal] = []

    def open_(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> Terminal:
        t = Terminal(command, cwd, env or {})
        opened.append(t)
        return t

    yield open_
    for t in opened:
        t.close()


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "offload", *args]


def test_attach_shows_a_running_job_and_detaching_leaves_it_running(sshd_worker: SshdWorker, tmp_path: Path,
                                                                   terminals) -> None:
    repo = make_repo(tmp_path / "repo")
    out = write_outputs(tmp_path / "o.json", "ssh", [sshd_record(sshd_worker)])
    key = {"OFFLOAD_SSH_KEY": str(sshd_worker.key_path)}
    p = offload("run", "--outputs", str(out), "--job", "att", "--", "echo attached-output; sleep 30",
                cwd=repo, env=key)
    assert p.returncode == 0, p.stderr
    notes = tmp_path / "stderr.txt"  # the job's session takes the screen: read what offload said from a file
    term = terminals(["sh", "-c", f'exec "$@" 2>{shlex.quote(str(notes))}', "sh",
                      *_cli("attach", "att", "--outputs", str(out))], repo, key)
    term.wait_for("attached-output")
    # The test's terminal is a tmux pane (TMUX is set there), so the note says C-b C-b d: typed, the outer tmux
    # turns C-b C-b into one C-b for the pane. send-keys puts keys into the pane directly, past the outer prefix.
    term.keys("C-b", "d")
    term.wait_for("[exit 0]")
    assert notes.read_text() == ("offload: attaching to job att; detach with C-b C-b d (inside your own tmux), "
                                 "and the job keeps running\n")
    check = offload("check", "att", "--outputs", str(out), cwd=repo, env=key)
    assert check.returncode == 7, "the job is still running after the detach"


def test_attach_to_a_task_of_a_playbook(tmp_path: Path, terminals) -> None:
    repo = make_repo(tmp_path / "repo")
    (repo / "offload.yaml").write_text(
        "playbooks:\n  two:\n    tasks:\n      first: {run: 'echo FIRST-TASK; sleep 30'}\n"
        "      second: {run: 'echo SECOND-TASK; sleep 30'}\n")
    assert offload("run", "--playbook", "two", "--job", "pb", cwd=repo).returncode == 0
    term = terminals(_cli("attach", "pb", "--task", "second"), repo)
    term.wait_for("SECOND-TASK")
    assert "FIRST-TASK" not in term.screen()


def test_shell_opens_in_the_job_worktree(tmp_path: Path, terminals) -> None:
    repo = make_repo(tmp_path / "repo")
    (repo / "wip.txt").write_text("work in progress\n")
    assert offload("run", "--job", "sh1", "--wait", "--", "true", cwd=repo).returncode == 0
    term = terminals(_cli("shell", "sh1"), repo)
    # Typed once the login shell runs in the worktree, as a user would type at its prompt.
    wait_for(lambda: [p for p in term.processes() if proc_comm(p) == "bash" and "/trees/" in (proc_cwd(p) or "")],
             timeout=30, what="the shell to start in the job's worktree")
    term.keys("cat wip.txt; pwd", "Enter")
    screen = term.wait_for("work in progress")
    assert "/trees/" in screen


def test_run_attach_opens_the_session(tmp_path: Path, terminals) -> None:
    repo = make_repo(tmp_path / "repo")
    term = terminals(_cli("run", "--job", "ra", "--attach", "--", "echo RUN-ATTACH; sleep 30"), repo)
    term.wait_for("RUN-ATTACH")


def test_attach_without_a_terminal_is_a_clear_error(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    p = offload("attach", "nope", cwd=repo)
    assert p.returncode == 2 and b"terminal" in p.stderr
