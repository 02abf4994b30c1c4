"""Unpacking what `get` brings (runtime/results.extract) from tar streams a hostile worker could send: no member
is written through a symlink, leaves the destination, lands in a .git directory, or becomes a second name for a
file that was there; a refusal writes nothing."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from offload.errors import UsageError
from offload.runtime.results import WouldReplace, extract


def _tar(*members: tuple[str, str, str]) -> io.BytesIO:
    """A tar stream of MEMBERS: (kind, name, data), kind one of file, dir, symlink, hardlink (data: the link's
    target), fifo."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for kind, name, data in members:
            info = tarfile.TarInfo(name)
            info.mode = 0o755 if kind == "dir" else 0o644
            if kind == "file":
                info.size = len(data.encode())
                tar.addfile(info, io.BytesIO(data.encode()))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
                         "fifo": tarfile.FIFOTYPE}[kind]
            info.linkname = data
            tar.addfile(info)
    out.seek(0)
    return out


def _listing(root: Path) -> dict[str, str]:
    """Every entry under ROOT: a file's content, a symlink's target, or 'dir'."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = f"-> {os.readlink(p)}" if p.is_symlink() else "dir" if p.is_dir() else p.read_text()
    return out


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    d = tmp_path / "dest"
    d.mkdir()
    (d / "kept.txt").write_text("mine\n")
    return d


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    o = tmp_path / "outside"
    o.mkdir()
    (o / "target.txt").write_text("not yours\n")
    return o


@pytest.mark.parametrize("members, why", [
    ([("symlink", "l", "sub"), ("dir", "sub", ""), ("file", "l/x", "through")],
     "l/x passes through the symlink l"),
    ([("dir", "a", ""), ("symlink", "a/up", ".."), ("file", "a/up/kept.txt", "over")],
     "a/up/kept.txt passes through the symlink a/up"),
    ([("file", "ok", "ok"), ("symlink", "out", "../outside")], "out is a symlink that leads out of the destination"),
    ([("symlink", "abs", "/etc")], "abs is a symlink to an absolute path"),
    ([("hardlink", "h", "kept.txt")], "h is a hard link to a file this copy does not bring"),
    ([("file", "sub/.git/config", "[core]\n\tfsmonitor = evil\n")], "is inside a .git directory"),
    ([("file", ".GIT/hooks/x", "")], "is inside a .git directory"),
    ([("file", "../escape", "")], "../escape leaves the destination"),
    ([("file", "/abs", "")], "/abs leaves the destination"),
    ([("fifo", "pipe", "")], "pipe is a special file"),
    ([("file", "kept.txt/x", "")], "kept.txt/x passes through kept.txt, which is not a directory"),
])
def test_a_hostile_member_is_refused_and_nothing_is_written(dest: Path, outside: Path, members: list,
                                                             why: str) -> None:
    before, theirs = _listing(dest), _listing(outside)
    with pytest.raises(UsageError) as e:
        extract(_tar(*members), dest)
    assert why in e.value.line() and e.value.line().endswith("(nothing was written)"), e.value.line()
    assert _listing(dest) == before and _listing(outside) == theirs


def test_a_symlink_already_in_the_destination_redirects_nothing(dest: Path, outside: Path) -> None:
    (dest / "build").symlink_to(outside)
    (dest / "inner").mkdir()
    (dest / "also").symlink_to("inner")
    for name in ("build/target.txt", "also/x"):
        with pytest.raises(UsageError, match="passes through the symlink"):
            extract(_tar(("file", name, "job")), dest)
    assert (outside / "target.txt").read_text() == "not yours\n" and list((dest / "inner").iterdir()) == []
    # A symlink where a file or a directory lands is replaced, never written through.
    (dest / "last").symlink_to(outside / "target.txt")
    got = extract(_tar(("file", "last", "job"), ("dir", "build", ""), ("file", "build/target.txt", "job")), dest)
    assert sorted(got.replaced) == ["build", "last"]
    assert (dest / "last").read_text() == "job" and not (dest / "last").is_symlink()
    assert (dest / "build").is_dir() and not (dest / "build").is_symlink()
    assert (outside / "target.txt").read_text() == "not yours\n"


def test_nothing_is_replaced_unless_allowed(dest: Path) -> None:
    (dest / "d").mkdir()
    with pytest.raises(WouldReplace) as e:
        extract(_tar(("file", "new.txt", "new"), ("file", "kept.txt", "theirs")), dest, replace=False)
    assert e.value.paths == ["kept.txt"]
    assert e.value.line() == f"get would replace 1 existing file in {dest}: kept.txt; nothing was written"
    assert not (dest / "new.txt").exists() and (dest / "kept.txt").read_text() == "mine\n"
    with pytest.raises(UsageError, match="d would replace a directory"):
        extract(_tar(("file", "d", "theirs")), dest)
    got = extract(_tar(("file", "new.txt", "new"), ("file", "kept.txt", "theirs")), dest, replace=True)
    assert (got.names, got.replaced) == (["new.txt", "kept.txt"], ["kept.txt"])
    assert (dest / "kept.txt").read_text() == "theirs"


def test_a_hard_link_is_a_fresh_name_and_writing_it_again_touches_only_it(dest: Path) -> None:
    (dest / "d").mkdir(mode=0o700)
    got = extract(_tar(("file", "a", "one"), ("hardlink", "b", "a"), ("file", "b", "two"), ("dir", "d", ""),
                       ("file", "./d/x", "x")), dest, replace=False)
    assert got.names == ["a", "b", "b", "d", "d/x"] and got.replaced == []
    assert (dest / "a").read_text() == "one" and (dest / "b").read_text() == "two"
    assert (dest / "d").stat().st_mode & 0o777 == 0o700, "a directory that was there keeps its mode"
