"""Every exit code a worker-side script can end with is named in that script's table (offload/worker/exits.py), and
every name in a table is a code the script uses: the scripts are read, not run, so a code that only a rare failure
reaches is checked too."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from offload.worker.exits import SCRIPT_EXITS, LaunchExit

SH_DIR = Path(__file__).resolve().parents[2] / "offload" / "worker" / "sh"
LIB = (SH_DIR / "lib.sh").read_text()

# `exit` as a command, with its argument when it has one (a quoted one reads as "").
_EXIT = re.compile(r"(?<![\w/.$-])exit(?![\w.-])[ \t]*([^\s;&|)}]*)")
_RETURN = re.compile(r"(?<![\w/.$-])return(?![\w.-])[ \t]*([^\s;&|)}]*)")
_FUNCTION = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\(\) \{", re.M)


def code_of(text: str) -> str:
    """TEXT with its comments and the contents of its quoted strings left out, line for line; what command
    substitutions inside double quotes hold stays, since it runs."""
    out: list[str] = []
    stack = ["code"]  # code (the script, or a command substitution: its depth of parentheses) or dq
    depth = [0]
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        where = stack[-1]
        if c == "\n":
            out.append(c)
            i += 1
            continue
        if where == "dq":
            if c == "\\":
                i += 2
            elif c == '"':
                stack.pop()
                out.append('"')
                i += 1
            elif text.startswith("$(", i):
                stack.append("code")
                depth.append(0)
                i += 2
            else:
                i += 1
            continue
        if c == "\\":
            out.append(text[i:i + 2])
            i += 2
        elif c == "'":
            end = text.find("'", i + 1)
            end = n if end < 0 else end
            out.append("''" + "\n" * text.count("\n", i, end))
            i = end + 1
        elif c == '"':
            stack.append("dq")
            out.append('"')
            i += 1
        elif c == "#" and (i == 0 or text[i - 1] in " \t\n;"):
            while i < n and text[i] != "\n":
                i += 1
        elif c == "(":
            depth[-1] += 1
            out.append(c)
            i += 1
        elif c == ")" and len(stack) > 1 and depth[-1] == 0:
            stack.pop()
            depth.pop()
            out.append(c)
            i += 1
        else:
            if c == ")" and depth[-1] > 0:
                depth[-1] -= 1
            out.append(c)
            i += 1
    return "".join(out)


def functions_of(code: str) -> dict[str, str]:
    """The bodies of the functions CODE defines at the top level (each ends at a `}` in column 0)."""
    found = {}
    for m in _FUNCTION.finditer(code):
        end = code.find("\n}", m.end())
        found[m[1]] = code[m.end():end if end >= 0 else len(code)]
    return found


def _literal(arg: str) -> int | None:
    return int(arg) if arg.isdigit() else None


class Library:
    """What each function of a library returns: 0 and 1 (the status of a test or a command), every `return N` or
    `exit N` in it, and whatever the library functions it calls return."""

    def __init__(self, text: str) -> None:
        self.code = code_of(text)
        self.bodies = functions_of(self.code)

    def called(self, text: str) -> list[str]:
        return [w for w in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text) if w in self.bodies]

    def statuses(self, name: str, seen: frozenset[str] = frozenset()) -> set[int]:
        body = self.bodies[name]
        codes = {0, 1}
        for m in [*_RETURN.finditer(body), *_EXIT.finditer(body)]:
            if (code := _literal(m[1])) is not None:
                codes.add(code)
        for callee in set(self.called(body)) - seen - {name}:
            codes |= self.statuses(callee, seen | {name})
        return codes

    def exits_outside_a_subshell(self) -> list[str]:
        """The functions with an `exit` that would end the script that includes the library, not a subshell of
        it: an `exit` counts as inside one between a line `(` and a line that starts with `)`."""
        ending = []
        for name, body in self.bodies.items():
            depth = 0
            for line in body.splitlines():
                stripped = line.strip()
                if stripped == "(":
                    depth += 1
                elif stripped.startswith(")"):
                    depth -= 1
                elif _EXIT.search(line) and depth == 0:
                    ending.append(name)
        return ending


def exit_codes(text: str, library: Library) -> set[int]:
    """Every code the script TEXT can exit with by its own doing: 0 (its end), each `exit N`, and the statuses of
    the library functions whose status it passes on, with `exit` or `exit $?` after one or as its last command.
    An exit whose code the script computes some other way fails the test: it could be anything."""
    code = code_of(text)
    codes = {0}
    for line in code.splitlines():
        for m in _EXIT.finditer(line):
            value = _literal(m[1])
            if value is not None:
                codes.add(value)
                continue
            assert m[1] in ("", "$?"), f"cannot tell what `exit {m[1]}` passes on in: {line.strip()}"
            passed = library.called(line[:m.start()])
            assert passed, f"cannot tell what `exit {m[1]}` passes on in: {line.strip()}"
            for name in passed:
                codes |= library.statuses(name)
    last = [line.split() for line in code.splitlines() if line.strip()][-1]
    if last[0] in library.bodies:
        codes |= library.statuses(last[0])
    return codes


LIBRARY = Library(LIB)


def test_every_script_has_a_table() -> None:
    assert set(SCRIPT_EXITS) == {p.name for p in SH_DIR.glob("*.sh")} - {"lib.sh"}


def test_the_library_never_ends_the_script_that_includes_it() -> None:
    """So a script's codes are its own `exit`s, and the statuses it passes on (below)."""
    assert LIBRARY.exits_outside_a_subshell() == []


@pytest.mark.parametrize("name", sorted(SCRIPT_EXITS))
def test_each_code_of_a_script_is_in_its_table_and_each_entry_is_used(name: str) -> None:
    table = SCRIPT_EXITS[name]
    used = exit_codes((SH_DIR / name).read_text(), LIBRARY)
    named = {int(member) for member in table}
    assert used - named == set(), f"{name} exits with codes its table {table.__name__} does not name"
    # 0 and 1 need no `exit`: the script's end, and a failed last command or shell error.
    assert named - used - {0, 1} == set(), f"{table.__name__} names codes {name} never exits with"
    assert 0 in named


def test_a_code_means_one_thing_in_every_table() -> None:
    meaning: dict[int, tuple[str, str]] = {}
    for table in [*SCRIPT_EXITS.values(), LaunchExit]:
        for member in table:
            if member < 2:
                continue
            first = meaning.setdefault(int(member), (member.name, table.__name__))
            assert first[0] == member.name, (f"{int(member)} is {first[1]}.{first[0]} but "
                                             f"{table.__name__}.{member.name}")


def test_the_reading_finds_what_a_script_passes_on() -> None:
    """The reader itself, on a library and scripts made for it."""
    library = Library("lockup() {\n\t(\n\t\tflock 9 || exit 75\n\t) 9> f\n}\n"
                      "deep() {\n\tlockup || return 6\n}\nquiet() { # says 'exit 9' in a comment\n\t:\n}\n")
    assert library.statuses("deep") == {0, 1, 6, 75}
    assert library.statuses("quiet") == {0, 1}
    assert library.exits_outside_a_subshell() == []
    assert Library("bad() {\n\texit 3\n}\n").exits_outside_a_subshell() == ["bad"]
    assert exit_codes("echo 'exit 7' \"(exit 8)\" # exit 9\n[ -f x ] || exit 4\n", library) == {0, 4}
    assert exit_codes("deep || exit\n", library) == {0, 1, 6, 75}
    assert exit_codes("x=1\ndeep \"$x\"\n", library) == {0, 1, 6, 75}, "the last command's status is the script's"
    assert exit_codes("x=\"$(printf '%s' \")\")\"\n[ -n \"$x\" ] || exit 5\n", library) == {0, 5}
    with pytest.raises(AssertionError, match="cannot tell"):
        exit_codes('exit "$code"\n', library)
