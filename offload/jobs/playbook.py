"""Playbooks: named task graphs read from `offload.yaml` at the repository root, checked with line numbers."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import yaml

from offload.errors import ConfigError, UsageError
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
_PLAYBOOK_KEYS = ("tasks", "artifacts")
_TASK_KEYS = ("run", "needs", "when")


class When(str, Enum):
    """When a task runs, judged on the tasks it needs once they have all finished."""

    SUCCESS = "success"  # every need succeeded
    FAILURE = "failure"  # at least one need failed (never, for a task without needs)
    ALWAYS = "always"  # whatever happened


@dataclass(frozen=True)
class Task:
    name: str
    run: str
    needs: tuple[str, ...] = ()
    when: When = When.SUCCESS

    def __post_init__(self) -> None:
        validate_id(self.name, "task name")
        problem = command_problem(self.run)
        if problem:
            raise UsageError(f"task {self.name!r}: {problem}")
        for need in self.needs:
            validate_id(need, "task name")
        if len(set(self.needs)) != len(self.needs):
            raise UsageError(f"task {self.name!r} lists a need twice")
        object.__setattr__(self, "when", When(self.when))


@dataclass(frozen=True)
class Playbook:
    name: str
    tasks: tuple[Task, ...] = field(default_factory=tuple)
    artifacts: tuple[str, ...] = ()  # paths or globs in the worktree that `run --wait` brings home

    def __post_init__(self) -> None:
        validate_id(self.name, "playbook name")
        for artifact in self.artifacts:
            problem = artifact_problem(artifact)
            if problem:
                raise UsageError(f"playbook {self.name!r}: {problem}")
        if not self.tasks:
            raise UsageError(f"playbook {self.name!r} has no tasks")
        names = [t.name for t in self.tasks]
        for name in names:
            if names.count(name) > 1:
                raise UsageError(f"playbook {self.name!r} has two tasks named {name!r}")
        for t in self.tasks:
            for need in t.needs:
                if need not in names:
                    raise UsageError(f"task {t.name!r} needs unknown task {need!r}")
        cycle = find_cycle({t.name: t.needs for t in self.tasks})
        if cycle:
            raise UsageError(f"dependency cycle: {' -> '.join(cycle)}")

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
        if tasks_node is None or _is_null(tasks_node):
            raise self.error(key, f"playbook {name!r} has no tasks")
        pairs = self.mapping(tasks_node, f"the tasks of playbook {name!r}")
        if not pairs:
            raise self.error(tasks_node, f"playbook {name!r} has no tasks")
        tasks = [self.task(k, v) for k, v in pairs]
        names = {t.name for t in tasks}
        lines = {k.value: k for k, _ in pairs}
        for (task_key, task_node), t in zip(pairs, tasks, strict=True):
            needs_node = _child(task_node, "needs")
            for i, need in enumerate(t.needs):
                if need not in names:
                    raise self.error(_item(needs_node, i) or task_key,
                                     f"task {t.name!r} needs unknown task {need!r}"
                                     f"{_suggest(need, sorted(names))}")
        cycle = find_cycle({t.name: t.needs for t in tasks})
        if cycle:
            raise self.error(lines[cycle[0]], f"task {cycle[0]!r} is in a dependency cycle: {' -> '.join(cycle)}")
        artifacts = self.artifacts(name, body.get("artifacts"))
        try:
            return Playbook(name, tuple(tasks), artifacts)
        except UsageError as e:  # every rule was checked above; keep the line if one slips through
            raise self.error(key, e.message) from None

    def artifacts(self, playbook: str, node: yaml.Node | None) -> tuple[str, ...]:
        if node is None or _is_null(node):
            return ()
        items = [node] if isinstance(node, yaml.ScalarNode) else node.value if isinstance(
            node, yaml.SequenceNode) else None
        if items is None:
            raise self.error(node, f"playbook {playbook!r}: 'artifacts' must be a list of paths or globs")
        out = []
        for item in items:
            if not isinstance(item, yaml.ScalarNode) or item.tag != _STR:
                raise self.error(item, f"playbook {playbook!r}: 'artifacts' must be a list of paths or globs")
            problem = artifact_problem(item.value)
            if problem:
                raise self.error(item, f"playbook {playbook!r}: {problem}")
            out.append(item.value)
        return tuple(out)

    def task(self, key: yaml.ScalarNode, node: yaml.Node) -> Task:
        name = self.name(key, "task name")
        if _is_null(node):
            raise self.error(key, f"task {name!r} has no 'run'")
        body = self.known_keys(self.mapping(node, f"task {name!r}"), _TASK_KEYS, f"task {name!r}")
        run_node = body.get("run")
        if run_node is None:
            raise self.error(key, f"task {name!r} has no 'run'")
        if not isinstance(run_node, yaml.ScalarNode) or run_node.tag != _STR:
            raise self.error(run_node, f"task {name!r}: 'run' must be a string, not {_kind(run_node)}")
        problem = command_problem(run_node.value)
        if problem:
            raise self.error(run_node, f"task {name!r}: {problem}")
        needs = self.needs(name, body.get("needs"))
        when = When.SUCCESS
        when_node = body.get("when")
        if when_node is not None:
            accepted = ", ".join(w.value for w in When)
            if not isinstance(when_node, yaml.ScalarNode) or when_node.value not in {w.value for w in When}:
                shown = repr(when_node.value) if isinstance(when_node, yaml.ScalarNode) else _kind(when_node)
                raise self.error(when_node, f"task {name!r}: invalid 'when' {shown} (expected one of {accepted})")
            when = When(when_node.value)
        return Task(name, run_node.value, needs, when)

    def needs(self, task: str, node: yaml.Node | None) -> tuple[str, ...]:
        if node is None or _is_null(node):
            return ()
        if isinstance(node, yaml.ScalarNode):  # `needs: build` is read as `needs: [build]`
            items = [node]
        elif isinstance(node, yaml.SequenceNode):
            items = node.value
        else:
            raise self.error(node, f"task {task!r}: 'needs' must be a list of task names, not {_kind(node)}")
        out: list[str] = []
        for item in items:
            if not isinstance(item, yaml.ScalarNode):
                raise self.error(item, f"task {task!r}: 'needs' must be a list of task names")
            need = self.name(item, "task name")
            if need in out:
                raise self.error(item, f"task {task!r} needs {need!r} twice")
            out.append(need)
        return tuple(out)


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return _TYPE_NAMES.get(node.tag, "a string" if node.tag == _STR else "a value of another type")


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"


def _child(node: yaml.Node, key: str) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == key:
                return v
    return None


def _item(node: yaml.Node | None, index: int) -> yaml.Node | None:
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
