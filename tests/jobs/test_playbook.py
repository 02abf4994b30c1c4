"""Playbook parsing: the offload.yaml format, and one error per rule with its line number."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from offload.errors import ConfigError, UsageError
from offload.jobs.playbook import (
    FILENAME,
    SINGLE,
    Playbook,
    Task,
    When,
    find_cycle,
    get_playbook,
    load_playbooks,
    parse_playbooks,
)
from offload.outputs import FULL_HISTORY

VALID = """\
# a comment
playbooks:
  review:
    tasks:
      build:  {run: "make build"}
      lint:   {run: "make lint"}
      test:   {run: "make test", needs: [build]}
      triage: {run: "./scripts/triage.sh", needs: [test], when: failure}
  nightly:
    tasks:
      all:
        run: |
          make all
          make check
      report:
        run: ./report.sh
        needs: all
        when: always
"""

HOSTILE_NAMES = ["a;b", "$(touch x)", "a b", "-x", "_x", "a\nb", "nl1\n", "`x`", "", "é", "a/b", "..", "a" * 64, "x'y"]


def test_valid_file(tmp_path: Path) -> None:
    path = tmp_path / FILENAME
    path.write_text(VALID)
    books = load_playbooks(path)
    assert list(books) == ["review", "nightly"]
    review = books["review"]
    assert review == Playbook("review", (
        Task("build", "make build"),
        Task("lint", "make lint"),
        Task("test", "make test", ("build",)),
        Task("triage", "./scripts/triage.sh", ("test",), When.FAILURE),
    ))
    assert review.task_names == ("build", "lint", "test", "triage")
    nightly = books["nightly"]
    assert nightly.task("all").run == "make all\nmake check\n"
    assert nightly.task("report") == Task("report", "./report.sh", ("all",), When.ALWAYS)
    assert get_playbook(tmp_path, "nightly") == nightly


@pytest.mark.parametrize("value, depth", [("3", 3), ("full", FULL_HISTORY), ("Full", FULL_HISTORY), ("", None)])
def test_history(value: str, depth: int | None) -> None:
    books = parse_playbooks(f"playbooks:\n  p:\n    history: {value}\n    tasks:\n      a: {{run: x}}\n")
    assert books["p"].history == depth


def test_single() -> None:
    book = Playbook.single("make test")
    assert book.name == SINGLE == "main"
    assert book.tasks == (Task("main", "make test", (), When.SUCCESS),)
    with pytest.raises(UsageError):
        Playbook.single("  ")
    with pytest.raises(UsageError):
        Playbook.single("echo \0")


ERRORS = [
    pytest.param("playbooks:\n  p:\n    tasks:\n      test: {run: x, needs: [biuld]}\n      build: {run: y}\n",
                 "offload.yaml:4: task 'test' needs unknown task 'biuld' (did you mean 'build'?)", id="unknown-need"),
    pytest.param("playbooks:\n  p:\n    tasks:\n      a: {run: x}\n      b:\n        run: y\n        needs:\n"
                 "          - a\n          - nope\n",
                 "offload.yaml:9: task 'b' needs unknown task 'nope'", id="unknown-need-line-of-item"),
    pytest.param("playbooks:\n  p:\n    tasks:\n      a: {run: x}\n      b: {rnu: y}\n",
                 "offload.yaml:5: task 'b': unknown key 'rnu' (did you mean 'run'?) (expected run, needs, when)",
                 id="unknown-task-key"),
    pytest.param("playbooks:\n  p:\n    task:\n      a: {run: x}\n",
                 "offload.yaml:3: playbook 'p': unknown key 'task' (did you mean 'tasks'?) "
                 "(expected tasks, artifacts, history)",
                 id="unknown-playbook-key"),
    pytest.param("playbook:\n  p: {}\n",
                 "offload.yaml:1: top level: unknown key 'playbook' (did you mean 'playbooks'?) (expected playbooks)",
                 id="unknown-top-key"),
    pytest.param("playbooks:\n  p:\n    tasks:\n      a: {run: x}\n      b:\n        needs: [a]\n",
                 "offload.yaml:5: task 'b' has no 'run'", id="missing-run"),
    pytest.param("playbooks:\n  p:\n    tasks:\n      a:\n",
                 "offload.yaml:4: task 'a' has no 'run'", id="empty-task"),
    pytest.param("playbooks:\n  p:\n    tasks:\n      a:\n        run: 42\n",
                 "offload.yaml:5: task 'a': 'run' must be a string, not a number", id="run-number"),
    pytest.param("playbooks:\n  p:\n    tasks:\n      a:\n        run: [make, test]\n",
                 "offload.yaml:5: task 'a': 'run' must be a string, not a list", id="run-list"),
    pytest.param("playbooks:\n  p:\n    tasks:\n      a: {run: ''}\n",
                 "offload.yaml:4: task 'a': 'run' is empty", id="run-empty"),
    pytest.param("playbooks:\n  p:\n    tasks:\n      a: {run: x, needs: [c]}\n      b: {run: y, needs: [a]}\n"
                 "      c: {run: z, needs: [b]}\n",
                 "offload.yaml:4: task 'a' is in a dependency cycle: a -> c -> b -> a", id="cycle"),
    pytest.param("playbooks:\n  p:\n    tasks:\n      a: {run: x}\n      b: {run: y, needs: [b]}\n",
                 "offload.yaml:5: task 'b' is in a dependency cycle: b -> b", id="self-cycle"),
    pytest.param("playbooks:\n  p:\n    tasks:\n      'a;b': {run: x}\n",
                 "offload.yaml:4: invalid task name 'a;b': use 1-63 letters, digits, '_' or '-', starting with a "
                 "letter or digit", id="bad-task-name"),
    pytest.param("playbooks:\n  p:\n    tasks:\n      a: {run: x}\n      b: {run: y, needs: ['$(x)']}\n",
                 "offload.yaml:5: invalid task name '$(x)': use 1-63 letters, digits, '_' or '-', starting with a "
                 "letter or digit", id="bad-need-name"),
    pytest.param("playbooks:\n  'my book':\n    tasks:\n      a: {run: x}\n",
                 "offload.yaml:2: invalid playbook name 'my book': use 1-63 letters, digits, '_' or '-', starting "
                 "with a letter or digit", id="bad-playbook-name"),
    pytest.param("playbooks:\n  p:\n    tasks:\n      a: {run: x}\n      b: {run: y, needs: [a], when: sometimes}\n",
                 "offload.yaml:5: task 'b': invalid 'when' 'sometimes' (expected one of success, failure, always)",
                 id="bad-when"),
    pytest.param("playbooks:\n  p:\n    tasks:\n      a:\n        run: x\n        when: [always]\n",
                 "offload.yaml:6: task 'a': invalid 'when' a list (expected one of success, failure, always)",
                 id="when-list"),
    pytest.param("playbooks:\n  p:\n    tasks: {}\n", "offload.yaml:3: playbook 'p' has no tasks", id="no-tasks"),
    pytest.param("playbooks:\n  p:\n    tasks:\n", "offload.yaml:2: playbook 'p' has no tasks", id="null-tasks"),
    pytest.param("playbooks:\n  p: {}\n", "offload.yaml:2: playbook 'p' has no tasks", id="empty-playbook"),
    pytest.param("playbooks: {}\n", "offload.yaml:1: no playbooks defined", id="no-playbooks"),
    pytest.param("", "offload.yaml: no playbooks defined (expected a 'playbooks' mapping)", id="empty-file"),
    pytest.param("# only a comment\n", "offload.yaml: no playbooks defined (expected a 'playbooks' mapping)",
                 id="comment-only"),
    pytest.param("- a\n- b\n", "offload.yaml:1: the file must be a mapping, not a list", id="top-list"),
    pytest.param("playbooks:\n  p:\n    tasks:\n      a: {run: x}\n      a: {run: y}\n",
                 "offload.yaml:5: duplicate key 'a' in the tasks of playbook 'p' (first on line 4)",
                 id="duplicate-task"),
    pytest.param("playbooks:\n  p:\n    tasks:\n      a: {run: x}\n      b: {run: y, needs: [a, a]}\n",
                 "offload.yaml:5: task 'b' needs 'a' twice", id="duplicate-need"),
    pytest.param("playbooks:\n  p:\n    tasks:\n      a: {run: x, needs: {b: 1}}\n",
                 "offload.yaml:4: task 'a': 'needs' must be a list of task names, not a mapping", id="needs-mapping"),
    pytest.param("playbooks:\n  p:\n    tasks:\n      a: {run: \"x\\0y\"}\n",
                 "offload.yaml:4: task 'a': 'run' contains a NUL character", id="nul"),
    pytest.param("playbooks:\n  p:\n    tasks:\n      a: {run: x\n",
                 "offload.yaml:5:1: YAML syntax error: expected ',' or '}', but got '<stream end>'",
                 id="syntax-flow"),
    pytest.param("playbooks:\n  p:\n    tasks:\n      a: run: x\n",
                 "offload.yaml:4:13: YAML syntax error: mapping values are not allowed here", id="syntax-colon"),
    pytest.param("playbooks:\n  p:\n\ttasks:\n", "offload.yaml:3:1: YAML syntax error: found character '\\t' that "
                 "cannot start any token", id="syntax-tab"),
    pytest.param("a: 1\n---\nb: 2\n", "offload.yaml:2:1: YAML syntax error: but found another document",
                 id="two-documents"),
    pytest.param("playbooks:\n  p:\n    tasks:\n      a: {run: x}\n    artifacts:\n      - out/\n      - ../up\n",
                 "offload.yaml:7: playbook 'p': artifact '../up' leaves the worktree: use a path relative to it",
                 id="artifact-leaves"),
    pytest.param("playbooks:\n  p:\n    tasks:\n      a: {run: x}\n    artifacts: /abs\n",
                 "offload.yaml:5: playbook 'p': artifact '/abs' leaves the worktree: use a path relative to it",
                 id="artifact-absolute"),
    pytest.param("playbooks:\n  p:\n    tasks:\n      a: {run: x}\n    artifacts: {a: 1}\n",
                 "offload.yaml:5: playbook 'p': 'artifacts' must be a list of paths or globs", id="artifacts-mapping"),
    pytest.param("playbooks:\n  p:\n    tasks:\n      a: {run: x}\n    history: 0\n",
                 "offload.yaml:5: playbook 'p': 'history' takes a number of commits from 1 to 1000000, or \"full\"; "
                 "got '0'", id="history-zero"),
    pytest.param("playbooks:\n  p:\n    tasks:\n      a: {run: x}\n    history: [1]\n",
                 "offload.yaml:5: playbook 'p': 'history' must be a number of commits or full, not a list",
                 id="history-list"),
    pytest.param("playbooks:\n  p:\n    tasks:\n      a: {run: x}\n      b:\n        run: y\n        needs:\n"
                 "          - a\n          - b-c\n          - 'x y'\n",
                 "offload.yaml:10: invalid task name 'x y': use 1-63 letters, digits, '_' or '-', starting with a "
                 "letter or digit", id="bad-need-line-of-item"),
]

# Each rule is the dataclasses' own: the file's reader adds only the line. Python text of the same playbook, and
# the error it gives.
RULES = [
    ("a: {run: x, needs: [b]}\n      b: {run: y, needs: [c]}\n      c: {run: z, needs: [a]}",
     lambda: Playbook("p", (Task("a", "x", ("b",)), Task("b", "y", ("c",)), Task("c", "z", ("a",))))),
    ("a: {run: x, needs: [biuld]}\n      build: {run: y}",
     lambda: Playbook("p", (Task("a", "x", ("biuld",)), Task("build", "y")))),
    ("a: {run: x}\n      b: {run: y, needs: [a, a]}", lambda: Task("b", "y", ("a", "a"))),
    ("a: {run: x, when: sometimes}", lambda: Task("a", "x", when="sometimes")),  # type: ignore[arg-type]
    ("a: {run: ' '}", lambda: Task("a", " ")),
    ("'a;b': {run: x}", lambda: Task("a;b", "x")),
]


@pytest.mark.parametrize("tasks, build", RULES)
def test_the_reader_gives_the_rules_of_the_dataclasses(tasks: str, build: Any) -> None:
    with pytest.raises(UsageError) as built:
        build()
    with pytest.raises(ConfigError) as read:
        parse_playbooks(f"playbooks:\n  p:\n    tasks:\n      {tasks}\n")
    assert re.fullmatch(r"offload\.yaml:\d+: (.*)", read.value.message)[1] == built.value.message


@pytest.mark.parametrize("text, message", ERRORS)
def test_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / FILENAME
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_playbooks(path)
    assert info.value.message == message
    assert info.value.exit_code == 2


def test_get_playbook_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"playbook 'review' was asked for, but .*offload.yaml does not exist"):
        get_playbook(tmp_path, "review")
    (tmp_path / FILENAME).write_text(VALID)
    with pytest.raises(ConfigError) as info:
        get_playbook(tmp_path, "reviews")
    assert info.value.message == ("offload.yaml has no playbook 'reviews' (did you mean 'review'?); "
                                  "available: review, nightly")


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_task_names_rejected(name: str) -> None:
    with pytest.raises(UsageError):
        Task(name, "true")
    with pytest.raises(UsageError):
        Task("ok", "true", (name,))
    with pytest.raises(UsageError):
        Playbook(name, (Task("ok", "true"),))


def test_playbook_checks_its_graph() -> None:
    with pytest.raises(UsageError, match="needs unknown task 'b'"):
        Playbook("p", (Task("a", "x", ("b",)),))
    with pytest.raises(UsageError, match=r"dependency cycle: a -> b -> a"):
        Playbook("p", (Task("a", "x", ("b",)), Task("b", "y", ("a",))))
    with pytest.raises(UsageError, match="two tasks named 'a'"):
        Playbook("p", (Task("a", "x"), Task("a", "y")))
    with pytest.raises(UsageError, match="no tasks"):
        Playbook("p", ())
    assert Task("a", "x", when="always").when is When.ALWAYS  # type: ignore[arg-type]


def test_find_cycle() -> None:
    assert find_cycle({"a": (), "b": ("a",), "c": ("a", "b")}) is None
    assert find_cycle({"a": ("b",), "b": ("c",), "c": ("b",)}) == ["b", "c", "b"]


def test_parse_playbooks_label() -> None:
    with pytest.raises(ConfigError, match=r"^sub/offload.yaml:1: "):
        parse_playbooks("playbooks: {}\n", "sub/offload.yaml")


def test_a_long_chain_of_needs_and_a_long_cycle_are_read_without_recursion(tmp_path: Path) -> None:
    count = 1500
    chain = "".join(f"      t{i}: {{run: 'true'{f', needs: [t{i - 1}]' if i else ''}}}\n" for i in range(count))
    (tmp_path / "offload.yaml").write_text(f"playbooks:\n  long:\n    tasks:\n{chain}")
    assert len(get_playbook(tmp_path, "long").tasks) == count
    cycle = chain.replace("      t0: {run: 'true'}", f"      t0: {{run: 'true', needs: [t{count - 1}]}}")
    (tmp_path / "offload.yaml").write_text(f"playbooks:\n  long:\n    tasks:\n{cycle}")
    with pytest.raises(ConfigError, match="dependency cycle: t0 -> t1499 -> t1498"):
        get_playbook(tmp_path, "long")


def test_deeply_nested_yaml_is_one_clear_error() -> None:
    with pytest.raises(ConfigError, match="nested too deeply"):
        parse_playbooks("playbooks: " + "[" * 5000 + "]" * 5000 + "\n")


def test_only_the_playbook_that_runs_is_read(tmp_path: Path) -> None:
    """Other playbooks are not checked, so a file whose anchor is reused many times costs one playbook."""
    tasks = "".join(f"      t{i}: {{run: 'echo {i}'}}\n" for i in range(1000))
    others = "".join(f"  p{i}: *big\n" for i in range(200))
    (tmp_path / "offload.yaml").write_text(
        f"playbooks:\n  big: &big\n    tasks:\n{tasks}{others}  small:\n    tasks:\n      one: {{run: 'true'}}\n"
        "  broken:\n    tasks:\n      x: {run: 'true', needs: [nowhere]}\n")
    assert [t.name for t in get_playbook(tmp_path, "small").tasks] == ["one"]
    with pytest.raises(ConfigError, match="has no playbook 'smal'.*small"):
        get_playbook(tmp_path, "smal")
    with pytest.raises(ConfigError, match="needs unknown task 'nowhere'"):
        get_playbook(tmp_path, "broken")


def test_an_oversized_playbook_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "offload.yaml").write_text("# padding\n" * 120_000 + "playbooks:\n  a:\n    tasks:\n      t: {run: x}\n")
    with pytest.raises(ConfigError, match="larger than 1 MB"):
        get_playbook(tmp_path, "a")
