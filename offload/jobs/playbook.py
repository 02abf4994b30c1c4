"""Playbooks: named task graphs read from `offload.yaml` at the repository root, checked with line numbers.

The rules of a playbook live in `Task` and `Playbook`, whoever builds them (a command line, an agent, offload.yaml);
the reader of offload.yaml checks only the file's shape, and gives a rule's error the line of the part it names.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import yaml

from offload.errors import ConfigError, UsageError
from offload.outputs import parse_history_depth
from offload.worker.layout import validate_id

FILENAME = "offload.yaml"
SINGLE = "main"  # the playbook and task name of a plain `run -- COMMAND` job

_STR = "tag:yaml.org,2002:str"
_TYPE_NAMES = {
    "tag:yaml.org,2002:int": "a number",
    "tag:yaml.org,2002:float": "a number",
    "tag:yaml.org,2002:bool": "a boolean",
    "tag:yaml.org,2002:null": "empty",
    "tag:yaml.org,2002:timestamp": "a date",
}
_TOP_KEYS = ("playbooks",)
_PLAYBOOK_KEYS = ("tasks", "artifacts", "history")
_TASK_KEYS = ("run", "needs", "when")


class When(str, Enum):
    """When a task runs, judged on the tasks it needs once they have all finished."""

    SUCCESS = "success"  # every need succeeded
    FAILURE = "failure"  # at least one need failed (never, for a task without needs)
    ALWAYS = "always"  # whatever happened


class PlaybookError(UsageError):
    """A playbook or task that breaks a rule, with the part it is about: TASK (None: the playbook itself), PART
    (`name`, `run`, `needs`, `when`, `tasks` or `artifacts`) and INDEX, the item of a list."""

    def __init__(self, message: str, *, task: str | None = None, part: str = "name", index: int | None = None):
        super().__init__(message)
        self.task, self.part, self.index = task, part, index


def _valid_id(value: object, what: str, **where: object) -> str:
    try:
        return validate_id(value, what)
    except UsageError as e:
        raise PlaybookError(e.message, **where) from None  # type: ignore[arg-type]


@dataclass(frozen=True)
class Task:
    name: str
    run: str
    needs: tuple[str, ...] = ()
    when: When = When.SUCCESS

    def __post_init__(self) -> None:
        _valid_id(self.name, "task name", task=self.name)
        problem = command_problem(self.run)
        if problem:
            raise PlaybookError(f"task {self.name!r}: {problem}", task=self.name, part="run")
        for i, need in enumerate(self.needs):
            _valid_id(need, "task name", task=self.name, part="needs", index=i)
            if need in self.needs[:i]:
                raise PlaybookError(f"task {self.name!r} needs {need!r} twice", task=self.name, part="needs",
                                    index=i)
        if self.when not in {w.value for w in When}:
            raise PlaybookError(f"task {self.name!r}: invalid 'when' {self.when!r} (expected one of "
                                f"{', '.join(w.value for w in When)})", task=self.name, part="when")
        object.__setattr__(self, "when", When(self.when))


@dataclass(frozen=True)
class Playbook:
    name: str
    tasks: tuple[Task, ...] = field(default_factory=tuple)
    artifacts: tuple[str, ...] = ()  # paths or globs in the worktree that `run --wait` brings home
    history: int | None = None  # commits of history its job's sync sends (outputs.FULL_HISTORY: all); None: default

    def __post_init__(self) -> None:
        _valid_id(self.name, "playbook name")
        if not self.tasks:
            raise PlaybookError(f"playbook {self.name!r} has no tasks", part="tasks")
        names = [t.name for t in self.tasks]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise PlaybookError(f"playbook {self.name!r} has two tasks named {name!r}", task=name)
        for t in self.tasks:
            for i, need in enumerate(t.needs):
                if need not in names:
                    raise PlaybookError(f"task {t.name!r} needs unknown task {need!r}{_suggest(need, sorted(names))}",
                                        task=t.name, part="needs", index=i)
        cycle = find_cycle({t.name: t.needs for t in self.tasks})
        if cycle:
            raise PlaybookError(f"task {cycle[0]!r} is in a dependency cycle: {' -> '.join(cycle)}", task=cycle[0])
        for i, artifact in enumerate(self.artifacts):
            problem = artifact_problem(artifact)
            if problem:
                raise PlaybookError(f"playbook {self.name!r}: {problem}", part="artifacts", index=i)

    @classmethod
    def single(cls, command: str) -> Playbook:
        """The playbook of a plain `run -- COMMAND` job: one task, `main`."""
        return cls(SINGLE, (Task(SINGLE, command),))

    def task(self, name: str) -> Task:
        for t in self.tasks:
            if t.name == name:
                return t
        raise UsageError(f"playbook {self.name!r} has no task {name!r} (tasks: {', '.join(self.task_names)})")

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tasks)


def command_problem(command: object) -> str | None:
    """Why COMMAND cannot be a task's shell command, or None when it can."""
    if not isinstance(command, str):
        return "'run' must be a string"
    if not command.strip():
        return "'run' is empty"
    if "\0" in command:
        return "'run' contains a NUL character"
    try:
        command.encode("utf-8", "surrogateescape")  # bytes that are not UTF-8 (from a command line) travel as is
    except UnicodeEncodeError:
        return "'run' is not valid text"
    return None


def artifact_problem(artifact: object) -> str | None:
    """Why ARTIFACT cannot name files of the worktree, or None when it can."""
    if not isinstance(artifact, str) or not artifact.strip():
        return "an artifact must be a path or a glob"
    if artifact.startswith("/") or ".." in artifact.split("/"):
        return f"artifact {artifact!r} leaves the worktree: use a path relative to it"
    if any(ord(c) < 32 for c in artifact):
        return f"artifact {artifact!r} contains a control character"
    return None


def find_cycle(needs: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A dependency cycle as a path that ends where it starts (`a -> b -> a`), or None.

    A depth-first walk from each task in order, kept on an explicit stack: a chain of thousands of needs must
    not exhaust Python's recursion limit.
    """
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in needs:
        if root in state:
            continue
        state[root] = 1
        path = [root]
        pending = [iter(needs.get(root, ()))]
        while pending:
            for need in pending[-1]:
                if state.get(need) == 1:
                    return path[path.index(need):] + [need]
                if need in needs and need not in state:
                    state[need] = 1
                    path.append(need)
                    pending.append(iter(needs.get(need, ())))
                    break
            else:
                state[path.pop()] = 2
                pending.pop()
    return None


class _Reader:
    """Walks the composed YAML tree, so every error can name the line it comes from."""

    def __init__(self, label: str) -> None:
        self.label = label

    def error(self, node: yaml.Node | None, message: str) -> ConfigError:
        where = f"{self.label}:{node.start_mark.line + 1}" if node is not None else self.label
        return ConfigError(f"{where}: {message}")

    def mapping(self, node: yaml.Node, what: str) -> list[tuple[yaml.ScalarNode, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, f"{what} must be a mapping, not {_kind(node)}")
        seen: dict[str, int] = {}
        pairs = []
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode):
                raise self.error(key, f"{what} has a key that is not a plain name")
            if key.value in seen:
                raise self.error(key, f"duplicate key {key.value!r} in {what} (first on line {seen[key.value]})")
            seen[key.value] = key.start_mark.line + 1
            pairs.append((key, value))
        return pairs

    def known_keys(self, pairs: list[tuple[yaml.ScalarNode, yaml.Node]], allowed: tuple[str, ...],
                   what: str) -> dict[str, yaml.Node]:
        out = {}
        for key, value in pairs:
            if key.value not in allowed:
                raise self.error(key, f"{what}: unknown key {key.value!r}{_suggest(key.value, allowed)} "
                                      f"(expected {', '.join(allowed)})")
            out[key.value] = value
        return out

    def name(self, node: yaml.ScalarNode, what: str) -> str:
        try:
            return validate_id(node.value, what)
        except UsageError as e:
            raise self.error(node, e.message) from None

    def at(self, e: PlaybookError, key: yaml.ScalarNode, body: dict[str, yaml.Node],
           tasks: dict[str, tuple[yaml.ScalarNode, dict[str, yaml.Node]]]) -> ConfigError:
        """The rule E broke, at the line of the part of playbook KEY (BODY) it names; TASKS holds each task's
        key and body."""
        owner, parts = (key, body) if e.task is None else tasks[e.task]
        node = parts.get(e.part, owner) if e.part != "name" else owner
        if _is_null(node):  # an empty part is the line of what it belongs to
            node = owner
        if e.index is not None:
            node = _item(node, e.index)
        return self.error(node, e.message)

    def books(self, root: yaml.Node | None) -> list[tuple[yaml.ScalarNode, yaml.Node]]:
        """The (name, body) pairs under `playbooks`, with the names checked and the bodies not yet read."""
        if root is None:
            raise self.error(None, "no playbooks defined (expected a 'playbooks' mapping)")
        top = self.known_keys(self.mapping(root, "the file"), _TOP_KEYS, "top level")
        books = top.get("playbooks")
        if books is None:
            raise self.error(root, "no 'playbooks' mapping")
        pairs = self.mapping(books, "'playbooks'")
        if not pairs:
            raise self.error(books, "no playbooks defined")
        for key, _ in pairs:
            self.name(key, "playbook name")
        return pairs

    def playbooks(self, root: yaml.Node | None) -> dict[str, Playbook]:
        return {key.value: self.playbook(key, value) for key, value in self.books(root)}

    def playbook(self, key: yaml.ScalarNode, node: yaml.Node) -> Playbook:
        name = key.value
        body = self.known_keys(self.mapping(node, f"playbook {name!r}"), _PLAYBOOK_KEYS, f"playbook {name!r}")
        tasks_node = body.get("tasks")
        pairs = [] if tasks_node is None or _is_null(tasks_node) else self.mapping(
            tasks_node, f"the tasks of playbook {name!r}")
        nodes = {k.value: (k, {} if _is_null(v) else self.known_keys(self.mapping(v, f"task {k.value!r}"),
                                                                     _TASK_KEYS, f"task {k.value!r}"))
                 for k, v in pairs}
        try:
            tasks = tuple(self.task(task_key, nodes[task_key.value][1]) for task_key, _ in pairs)
            return Playbook(name, tasks, self.artifacts(name, body.get("artifacts")),
                            self.history(name, body.get("history")))
        except PlaybookError as e:
            raise self.at(e, key, body, nodes) from None

    def history(self, playbook: str, node: yaml.Node | None) -> int | None:
        if node is None or _is_null(node):
            return None
        if not isinstance(node, yaml.ScalarNode):
            raise self.error(node, f"playbook {playbook!r}: 'history' must be a number of commits or full, "
                                   f"not {_kind(node)}")
        try:
            return parse_history_depth(node.value, "'history'")
        except ConfigError as e:
            raise self.error(node, f"playbook {playbook!r}: {e.message}") from None

    def artifacts(self, playbook: str, node: yaml.Node | None) -> tuple[str, ...]:
        if node is None or _is_null(node):
            return ()
        items = node.value if isinstance(node, yaml.SequenceNode) else [node]
        for item in items:
            if not isinstance(item, yaml.ScalarNode) or item.tag != _STR:
                raise self.error(item, f"playbook {playbook!r}: 'artifacts' must be a list of paths or globs")
        return tuple(item.value for item in items)

    def task(self, key: yaml.ScalarNode, body: dict[str, yaml.Node]) -> Task:
        """The task KEY (its BODY's keys known) as the file gives it; Task checks its rules."""
        name = key.value
        run_node = body.get("run")
        if run_node is None:
            raise self.error(key, f"task {name!r} has no 'run'")
        if not isinstance(run_node, yaml.ScalarNode) or run_node.tag != _STR:
            raise self.error(run_node, f"task {name!r}: 'run' must be a string, not {_kind(run_node)}")
        when_node = body.get("when")
        if when_node is not None and not isinstance(when_node, yaml.ScalarNode):
            raise self.error(when_node, f"task {name!r}: invalid 'when' {_kind(when_node)} (expected one of "
                                        f"{', '.join(w.value for w in When)})")
        when = When.SUCCESS.value if when_node is None else when_node.value
        return Task(name, run_node.value, self.needs(name, body.get("needs")), when)  # type: ignore[arg-type]

    def needs(self, task: str, node: yaml.Node | None) -> tuple[str, ...]:
        if node is None or _is_null(node):
            return ()
        if isinstance(node, yaml.ScalarNode):  # `needs: build` is read as `needs: [build]`
            items = [node]
        elif isinstance(node, yaml.SequenceNode):
            items = node.value
        else:
            raise self.error(node, f"task {task!r}: 'needs' must be a list of task names, not {_kind(node)}")
        for item in items:
            if not isinstance(item, yaml.ScalarNode):
                raise self.error(item, f"task {task!r}: 'needs' must be a list of task names")
        return tuple(item.value for item in items)


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return _TYPE_NAMES.get(node.tag, "a string" if node.tag == _STR else "a value of another type")


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"


def _item(node: yaml.Node, index: int) -> yaml.Node:
    if isinstance(node, yaml.SequenceNode) and index < len(node.value):
        return node.value[index]
    return node


def _suggest(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


MAX_BYTES = 1 << 20  # an offload.yaml larger than this is refused before it is parsed


def _compose(text: str, label: str) -> yaml.Node | None:
    if len(text.encode("utf-8", "surrogateescape")) > MAX_BYTES:
        raise ConfigError(f"{label}: larger than {MAX_BYTES >> 20} MB; playbooks are a few lines each")
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{label}:{mark.line + 1}:{mark.column + 1}" if mark else label
        raise ConfigError(f"{where}: YAML syntax error: {e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{label}: YAML error: {e}") from None
    except RecursionError:
        raise ConfigError(f"{label}: nested too deeply to be a playbook file") from None


def parse_playbooks(text: str, label: str = FILENAME) -> dict[str, Playbook]:
    """Every playbook of an offload.yaml's text; errors are `LABEL:LINE: message`."""
    return _Reader(label).playbooks(_compose(text, label))


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read: {e}") from None


def load_playbooks(path: str | Path) -> dict[str, Playbook]:
    """Playbooks from an offload.yaml file, keyed by name, in file order."""
    path = Path(path)
    return parse_playbooks(_read(path), path.name)


def get_playbook(repo_root: str | Path, name: str) -> Playbook:
    """The playbook NAME from REPO_ROOT/offload.yaml. Only that playbook is read and checked: a file of many
    (or of aliases that repeat one many times) costs no more than the one that runs."""
    path = Path(repo_root) / FILENAME
    if not path.is_file():
        raise ConfigError(f"playbook {name!r} was asked for, but {path} does not exist",
                          hint="define playbooks under 'playbooks:' in offload.yaml at the repository root")
    reader = _Reader(path.name)
    books = reader.books(_compose(_read(path), path.name))
    for key, value in books:
        if key.value == name:
            return reader.playbook(key, value)
    names = [key.value for key, _ in books]
    raise ConfigError(f"{FILENAME} has no playbook {name!r}{_suggest(name, names)}; available: {', '.join(names)}")
