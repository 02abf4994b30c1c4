"""The house rules that a scan of the source can check: imports run one way, nothing reaches into another
module's private names or attributes, and nothing points at a file that is not in the repository."""

from __future__ import annotations

import ast
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "offload"

# What each part of the package may import from the rest of it (every import counts, including those inside
# functions and under TYPE_CHECKING). The arrows run cli -> jobs -> providers -> runtime -> outputs, with the
# worker package (layout, container spec, worker shell), the socket frames, the socket listener, the table of what a
# deploy needs and the extras check (what an optional part needs, and the line naming it) leaves anyone may use.
LEAVES = {"offload.deploy", "offload.errors", "offload.extras", "offload.frames", "offload.listener", "offload.paths",
          "offload.pricing", "offload.worker"}
ALLOWED = {
    "offload.extras": {"offload.errors"},
    "offload.frames": set(),
    "offload.listener": set(),
    "offload.worker": {"offload.errors", "offload.worker"},
    "offload.outputs": {"offload.errors", "offload.paths"},
    "offload.stackconfig": LEAVES | {"offload.outputs", "offload.stackconfig"},
    # The Automation API runs the packaged program inline, and ssh and local stacks need only their config.
    "offload.stack": LEAVES | {"offload.outputs", "offload.stackconfig", "offload.infra", "offload.stack"},
    "offload.runtime": LEAVES | {"offload.outputs", "offload.runtime"},
    "offload.providers": LEAVES | {"offload.outputs", "offload.runtime", "offload.providers"},
    "offload.jobs": LEAVES | {"offload.outputs", "offload.providers", "offload.jobs"},
    "offload.cli": LEAVES | {"offload.outputs", "offload.stack", "offload.stackconfig", "offload.jobs",
                             "offload.cli"},
    "offload.infra": LEAVES | {"offload.outputs", "offload.stackconfig", "offload.infra"},
}


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the imported module
    names: tuple[str, ...]
    line: int


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports() -> list[Import]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found += [Import(module, a.name, (), node.lineno) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.append(Import(module, node.module, tuple(a.name for a in node.names), node.lineno))
    return found


IMPORTS = _imports()


def _part(name: str) -> str | None:
    """The part of ALLOWED that NAME belongs to (the longest prefix), if any."""
    best = None
    for part in ALLOWED:
        if (name == part or name.startswith(part + ".")) and (best is None or len(part) > len(best)):
            best = part
    return best


def _within(target: str, allowed: set[str]) -> bool:
    return any(target == a or target.startswith(a + ".") for a in allowed)


def test_the_scan_sees_the_package() -> None:
    assert len(IMPORTS) > 100
    assert {_part(i.module) for i in IMPORTS} >= set(ALLOWED) - {"offload.stack"}


@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_imports_run_one_way(part: str) -> None:
    wrong = [f"{i.module}:{i.line} imports {i.target}" for i in IMPORTS
             if _part(i.module) == part and i.target.startswith("offload") and not _within(i.target, ALLOWED[part])]
    assert not wrong, "\n".join(wrong)


def test_the_runtime_never_imports_pulumi() -> None:
    """Only the Pulumi program, offload/infra, and the Automation API and config readers (offload.stack,
    offload.stackconfig, lazily) load pulumi; the runtime never does, so `offload --help` stays fast."""
    runtime = ("offload.worker", "offload.outputs", "offload.runtime", "offload.providers", "offload.jobs",
               "offload.cli")
    wrong = [f"{i.module}:{i.line} imports {i.target}" for i in IMPORTS
             if i.target.split(".")[0] in ("pulumi", "pulumi_gcp", "pulumi_docker") and _part(i.module) in runtime]
    assert not wrong, "\n".join(wrong)


def test_no_module_takes_another_modules_private_names() -> None:
    wrong = [f"{i.module}:{i.line} takes {', '.join(i.names)} from {i.target}" for i in IMPORTS
             if i.target.startswith("offload") and i.target != i.module
             and any(n.startswith("_") and not n.startswith("__") for n in i.names)]
    assert not wrong, "\n".join(wrong)


# Private attributes of other libraries that a module of offload uses on purpose, each with why. Anything else
# written `x._name`, where x is neither self nor cls and the module does not define _name itself, reaches into
# another module's internals.
FOREIGN_PRIVATE = {
    # paramiko: a channel's EOF sent under the channel's lock, the way paramiko sends data (`_end_input`); its
    # public `shutdown_write` lets go of the lock first, and an EOF after the server's CLOSE drops the connection.
    # Being private, these may change with a paramiko release.
    "offload.runtime.transport": {"_send_eof", "_send_user_message"},
    # paramiko: SSHClient keeps the ssh-agent it logs in with in `_agent`; each login is given an agent bound to
    # its own request's socket there, since paramiko's own reads SSH_AUTH_SOCK from the process's environment
    # (`use_ssh_agent`). tests/runtime/test_paramiko_api.py pins it.
    "offload.runtime.connection": {"_agent"},
}
# Names public despite their underscore, by the name they are reached through: `os._exit` is the documented way for
# a forked child to end without running its parent's cleanup.
PUBLIC_UNDERSCORED = {("os", "_exit")}


def _defined_names(tree: ast.Module) -> set[str]:
    """The names a module defines itself: its functions and classes, the names its module and class bodies
    assign, and the attributes it sets on self or cls."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and isinstance(node.value, ast.Name)
              and node.value.id in ("self", "cls")):
            names.add(node.attr)
    for scope in [tree, *(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef))]:
        for statement in scope.body:
            targets = statement.targets if isinstance(statement, ast.Assign) else (
                [statement.target] if isinstance(statement, ast.AnnAssign) else [])
            names |= {t.id for target in targets for t in ast.walk(target) if isinstance(t, ast.Name)}
    return names


def _private_reaches(module: str, tree: ast.Module) -> list[str]:
    """`x._name` in MODULE where x is not self or cls, _name is not MODULE's own and not allowed above."""
    own = _defined_names(tree) | FOREIGN_PRIVATE.get(module, set())
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")):
            continue
        receiver = node.value.id if isinstance(node.value, ast.Name) else None
        if receiver in ("self", "cls") or node.attr in own or (receiver, node.attr) in PUBLIC_UNDERSCORED:
            continue
        found.append(f"{module}:{node.lineno} reaches {ast.unparse(node)}")
    return found


def test_no_module_reaches_into_another_modules_private_attributes() -> None:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        wrong += _private_reaches(_module_name(path), ast.parse(path.read_text(), str(path)))
    assert not wrong, "\n".join(wrong)


def test_the_private_attribute_check_sees_a_reach() -> None:
    source = ("import os\n_CACHE = {}\n\n"
              "class Pool:\n    _size = 1\n\n    def grow(self, other):\n        self._extra = other._size\n\n"
              "def pick(fleet, pool, chan):\n"
              "    fleet._subset([])\n    chan._send_eof()\n    pool._extra, pool._size, _CACHE.clear()\n"
              "    os._exit(0)\n")
    found = _private_reaches("offload.example", ast.parse(source))
    assert [line.split(" reaches ")[1] for line in found] == ["fleet._subset", "chan._send_eof"]
    assert _private_reaches("offload.runtime.transport", ast.parse("def f(chan):\n    chan._send_eof()\n")) == []


def test_the_checks_catch_a_wrong_arrow(tmp_path: Path) -> None:
    """The scan itself works: a CLI module importing the runtime is found."""
    source = "def f():\n    from offload.runtime.sync import take_snapshot\n"
    node = ast.parse(source)
    targets = [n.module for n in ast.walk(node) if isinstance(n, ast.ImportFrom)]
    assert targets == ["offload.runtime.sync"]
    assert not _within("offload.runtime.sync", ALLOWED["offload.cli"])
    assert _part("offload.cli.run") == "offload.cli" and _part("offload.worker.layout") == "offload.worker"


# --- pointers ---------------------------------------------------------------------------------------------------

_MD = re.compile(r"(?<![\w/.-])((?:\.\./|\./)?[\w./-]*[\w-]\.md)\b")
_UP = re.compile(r"(?<![\w.])((?:\.\./)+[\w./-]+)")


def _tracked_text_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    texts = []
    for p in (REPO / name for name in out.decode().split("\0") if name):
        try:
            p.read_text()
        except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
            continue
        texts.append(p)
    return texts


def test_nothing_points_at_a_file_outside_the_repository() -> None:
    """Every Markdown file a tracked file names is in the repository, and no relative path in the product (the
    package, docs, scripts; tests use such paths as hostile data) climbs out of it."""
    files = _tracked_text_files()
    assert REPO / "README.md" in files and REPO / "docs" / "cli.md" in files
    present = {p.relative_to(REPO).as_posix() for p in files}
    names = {Path(p).name for p in present}
    wrong = []
    for path in files:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for ref in _UP.findall(line) if path.relative_to(REPO).parts[0] != "tests" else ():
                if not (path.parent / ref).resolve().is_relative_to(REPO):
                    wrong.append(f"{path.relative_to(REPO)}:{number}: {ref}")
            for ref in _MD.findall(line):
                resolved = (path.parent / ref).resolve()
                inside = resolved.is_relative_to(REPO) and resolved.relative_to(REPO).as_posix() in present
                if not inside and Path(ref).name not in names:
                    wrong.append(f"{path.relative_to(REPO)}:{number}: {ref}")
    assert not wrong, "\n".join(wrong)


def test_the_pointer_check_sees_a_pointer_outside() -> None:
    outside = "../" * 3 + "elsewhere/NOTES" + ".md"
    line = f"see {outside} and docs/cli" + ".md"
    assert _UP.findall(line) == [outside]
    assert not (REPO / "docs" / outside).resolve().is_relative_to(REPO)
    assert _MD.findall(line) == [outside, "docs/cli" + ".md"]
