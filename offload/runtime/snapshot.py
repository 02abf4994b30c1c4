"""Freezing the local working tree as a git commit that lives outside the repository: what is on disk, exactly.

The commit is built with a private index (a copy of the repository's) and a private object directory that
reads the repository's own objects through alternates, so the local repository's files, index, stash, refs and
object store are never written. What the job sees is what is on disk:
- committed, staged, unstaged and untracked files, minus what git ignores;
- files marked assume-unchanged or skip-worktree as they are on disk, not as committed;
- files under a clean filter (Git LFS) with their content on disk, not the filter's output, and without running
  the filter (which would write into the repository);
- submodules and nested repositories with their working trees, folded in as plain directories.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Sequence

from offload.errors import SyncError, UsageError
from offload.paths import cache_dir
from offload.runtime.localgit import run_git

SNAPSHOT_IDENTITY = {
    "GIT_AUTHOR_NAME": "offload", "GIT_AUTHOR_EMAIL": "offload@localhost",
    "GIT_COMMITTER_NAME": "offload", "GIT_COMMITTER_EMAIL": "offload@localhost",
}
REMEMBERED_HAVES = 16
MAX_NESTING = 8  # submodules of submodules ...
DEFAULT_CACHE_MB = 256
# A file of this many bytes or more is large: stored whole and undeflated, and a sync may send it ahead.
LARGE_FILE = 4 << 20
# Settings of the user's repository that would make `git add` skip or change what is on disk, or write into it.
# And a large file goes straight into a pack, read through rather than held in memory; pack-objects then sends
# its compressed data as it is, where a loose object would be inflated and compressed again. That data is stored,
# not deflated (pack.compression=0): files this large are mostly archives, media and models that do not compress,
# and deflating 30 MB of them cost 2 s here, three times what sending it over ssh costs (benchmarks/bench_link.py).
_ADD_CONFIG = ("-c", "core.sparseCheckout=false", "-c", "core.splitIndex=false", "-c", "core.fsmonitor=false",
               "-c", "core.untrackedCache=false", "-c", "advice.addEmbeddedRepo=false",
               "-c", f"core.bigFileThreshold={LARGE_FILE}", "-c", "pack.compression=0")
# Attributes under which git stores a file other than as it is on disk (the filter drivers are turned off).
_CONVERTING = ("text", "eol", "crlf", "ident", "working-tree-encoding")


@dataclass
class Snapshot:
    """The local working tree, frozen as a commit that lives outside the repository."""

    root: Path
    repo_id: str
    commit: str
    head: str | None
    branch: str | None
    object_env: dict[str, str] = field(repr=False, default_factory=dict)
    state_dir: Path = field(repr=False, default=Path("."))

    def remembered_haves(self, worker_key: str) -> list[str]:
        return self.remembered(worker_key).haves

    def remembered(self, worker_key: str) -> "WorkerHistory":
        """What this machine last learnt the worker holds of the repository (empty: nothing known)."""
        return remembered(self.state_dir, worker_key)

    def remember(self, worker_key: str, commit: str, shallow: Sequence[str] | None = None) -> None:
        """The worker now holds COMMIT, and its repository's shallow commits are SHALLOW (None: as before)."""
        path = self.state_dir / "workers.json"
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            data = {}
        known = self.remembered(worker_key)
        haves = [commit] + [h for h in known.haves if h != commit]
        data[worker_key] = {"haves": haves[:REMEMBERED_HAVES],
                            "shallow": list(known.shallow if shallow is None else shallow)}
        tmp = path.with_name(f"workers.json.{os.getpid()}")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)


def remembered(state_dir: Path, worker_key: str) -> "WorkerHistory":
    """What this machine last learnt the worker WORKER_KEY holds of the repository whose offload state is in
    STATE_DIR (empty: nothing known)."""
    try:
        data = json.loads((state_dir / "workers.json").read_text())
    except (OSError, ValueError):
        return WorkerHistory()
    entry = data.get(worker_key, []) if isinstance(data, dict) else []
    # A list is what an earlier offload kept: haves only, of a worker that was sent whole histories.
    haves, shallow = (entry, []) if isinstance(entry, list) else (
        (entry.get("haves", []), entry.get("shallow", [])) if isinstance(entry, dict) else ([], []))
    return WorkerHistory(_oids(haves), _oids(shallow))


@dataclass(frozen=True)
class WorkerHistory:
    """What a worker's repository holds: commits it has (HAVES) and its shallow commits, whose parents it lacks
    (git's own `shallow` file). Haves and no shallow commits: it holds whole histories."""

    haves: list[str] = field(default_factory=list)
    shallow: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> "WorkerHistory":
        """haves.sh's answer: a commit per line, and `shallow COMMIT` lines."""
        haves: list[str] = []
        shallow: list[str] = []
        for line in text.splitlines():
            words = line.split()
            if len(words) == 1:
                haves.append(words[0])
            elif len(words) == 2 and words[0] == "shallow":
                shallow.append(words[1])
        return cls(_oids(haves), _oids(shallow))


def _oids(values: object) -> list[str]:
    if not isinstance(values, list):
        return []
    return [h for h in values if isinstance(h, str) and re.fullmatch(r"[0-9a-f]{40,64}", h)]


@dataclass(frozen=True)
class _Repo:
    """Where a repository's working tree, git dir and shared git dir are."""

    root: Path
    git_dir: Path
    common_dir: Path


def _text(out: bytes) -> str:
    """One line of git output as a path: bytes that are not UTF-8 kept, only the final newline dropped."""
    return os.fsdecode(out[:-1] if out.endswith(b"\n") else out)


def _locate(cwd: Path) -> _Repo | None:
    """The repository whose working tree holds CWD, or None outside one."""
    flags = ["--show-toplevel", "--absolute-git-dir", "--git-common-dir"]
    p = run_git(["rev-parse", *flags], cwd=cwd, check=False)
    if p.returncode != 0:
        return None
    lines = p.stdout.split(b"\n")[:-1]
    if len(lines) != 3:  # a path with a newline in it: ask for each on its own
        lines = [run_git(["rev-parse", flag], cwd=cwd).stdout[:-1] for flag in flags]
    top, git_dir, common = (os.fsdecode(line) for line in lines)
    common_p = Path(common) if os.path.isabs(common) else Path(git_dir if common == "." else cwd / common)
    return _Repo(Path(top), Path(git_dir), common_p.resolve())


def _repo_id(root: Path, common_dir: Path) -> str:
    base = re.sub(r"[^A-Za-z0-9_-]", "_", root.name)[:40] or "repo"
    digest = hashlib.sha256(os.fsencode(common_dir.resolve())).hexdigest()[:12]
    return f"{base}-{digest}"


def take_snapshot(cwd: Path, *, exclude: Sequence[Path] = ()) -> Snapshot:
    """Freeze the working tree at CWD as it is on disk (see the module's docstring). Paths in EXCLUDE (a local
    worker's workspace inside the repository) are left out."""
    repo = _locate(cwd)
    if repo is None:
        raise UsageError(f"{cwd} is not inside a git repository; offload runs the working tree of a git repository")
    repo_id = _repo_id(repo.root, repo.common_dir)
    state = cache_dir() / "snapshots" / repo_id
    objects = state / "objects"
    _bound(state)
    if not (objects / "pack").is_dir():
        (objects / "pack").mkdir(parents=True, exist_ok=True)
        (objects / "info").mkdir(parents=True, exist_ok=True)
    alternates = [str(repo.common_dir / "objects")]
    env = {"GIT_OBJECT_DIRECTORY": str(objects), "GIT_ALTERNATE_OBJECT_DIRECTORIES": ":".join(alternates)}
    head = _text(run_git(["rev-parse", "-q", "--verify", "HEAD^{commit}"], cwd=repo.root, check=False).stdout) or None
    branch = _text(run_git(["symbolic-ref", "-q", "--short", "HEAD"], cwd=repo.root, check=False).stdout) or None
    skip = [p.resolve() for p in exclude]
    tree = _freeze(repo, objects, alternates, skip, depth=0)
    env["GIT_ALTERNATE_OBJECT_DIRECTORIES"] = ":".join(alternates)  # submodules added theirs
    if head:
        head_tree = _text(run_git(["rev-parse", f"{head}^{{tree}}"], cwd=repo.root, env=env).stdout)
        if head_tree == tree:
            return Snapshot(repo.root, repo_id, head, head, branch, env, state)
        date = _text(run_git(["log", "-1", "--format=@%ct +0000", head], cwd=repo.root, env=env).stdout)
        parents = ["-p", head]
    else:
        date, parents = "@0 +0000", []
    commit_env = dict(env, **SNAPSHOT_IDENTITY, GIT_AUTHOR_DATE=date, GIT_COMMITTER_DATE=date)
    msg = f"offload snapshot of {branch or head or 'an empty repository'}\n".encode("utf-8", "surrogateescape")
    commit = _text(run_git(["commit-tree", tree, *parents], cwd=repo.root, env=commit_env, stdin=msg).stdout)
    return Snapshot(repo.root, repo_id, commit, head, branch, env, state)


def cache_limit() -> int:
    """Bytes the snapshot objects of one repository may take on this machine: OFFLOAD_SNAPSHOT_CACHE_MB (256)."""
    try:
        return max(1, int(os.environ.get("OFFLOAD_SNAPSHOT_CACHE_MB", DEFAULT_CACHE_MB))) << 20
    except ValueError:
        return DEFAULT_CACHE_MB << 20


def _bound(state: Path) -> None:
    """Keep the repository's snapshot objects under the cache limit. Past it they all go, with what we remember
    workers to have: the next sync asks the worker instead, and builds on the local repository's commits."""
    objects = state / "objects"
    size = 0
    try:
        for sub in os.scandir(objects):
            if sub.is_dir():
                size += sum(f.stat().st_size for f in os.scandir(sub.path) if f.is_file())
    except FileNotFoundError:
        return
    if size > cache_limit():
        shutil.rmtree(objects, ignore_errors=True)
        (state / "workers.json").unlink(missing_ok=True)


@dataclass(frozen=True)
class LocalRepository:
    """The local repository a job's snapshot came from: its top, its id on workers, and the environment that
    reads its snapshot cache (whose objects a job's result builds on)."""

    root: Path
    repo_id: str
    store_env: dict[str, str]
    state_dir: Path  # offload's state for this repository on this machine (snapshot objects, jobs started)


def local_repository(cwd: Path) -> LocalRepository:
    repo = _locate(cwd)
    if repo is None:
        raise UsageError(f"{cwd} is not inside a git repository")
    repo_id = _repo_id(repo.root, repo.common_dir)
    state = cache_dir() / "snapshots" / repo_id
    return LocalRepository(repo.root, repo_id, {"GIT_OBJECT_DIRECTORY": str(state / "objects"),
                                                "GIT_ALTERNATE_OBJECT_DIRECTORIES": str(repo.common_dir / "objects")},
                           state)


def snapshot_of_ref(cwd: Path, rev: str) -> Snapshot:
    """A commit of the repository at CWD (a branch, a tag, a fetched pull-request head, FETCH_HEAD) as the
    snapshot, instead of the working tree; nothing of the repository is read but its objects."""
    repo = _locate(cwd)
    if repo is None:
        raise UsageError(f"{cwd} is not inside a git repository; offload runs commits of a git repository")
    if not rev or rev.startswith("-") or any(ord(c) < 32 for c in rev):
        raise UsageError(f"--ref takes a revision such as a branch, a tag or a commit; got {rev!r}")
    p = run_git(["rev-parse", "-q", "--verify", "--end-of-options", f"{rev}^{{commit}}"], cwd=repo.root, check=False)
    commit = _text(p.stdout)
    if p.returncode != 0 or not commit:
        raise UsageError(f"--ref {rev}: no such commit in {repo.root}", hint="fetch it first, e.g. `git fetch`")
    repo_id = _repo_id(repo.root, repo.common_dir)
    state = cache_dir() / "snapshots" / repo_id
    (state / "objects" / "pack").mkdir(parents=True, exist_ok=True)
    (state / "objects" / "info").mkdir(parents=True, exist_ok=True)
    env = {"GIT_OBJECT_DIRECTORY": str(state / "objects"),
           "GIT_ALTERNATE_OBJECT_DIRECTORIES": str(repo.common_dir / "objects")}
    return Snapshot(repo.root, repo_id, commit, commit, rev, env, state)


def _freeze(repo: _Repo, objects: Path, alternates: list[str], exclude: Sequence[Path], depth: int) -> str:
    """The tree of REPO's working tree as on disk, its new objects written to OBJECTS. ALTERNATES (which every
    repository folded in adds its object store to) must be readable for the tree to be."""
    env = {"GIT_OBJECT_DIRECTORY": str(objects), "GIT_ALTERNATE_OBJECT_DIRECTORIES": ":".join(alternates)}
    with tempfile.TemporaryDirectory(prefix="offload-index-") as tmp:
        index = Path(tmp) / "index"
        real_index = repo.git_dir / "index"
        if real_index.exists():
            shutil.copyfile(real_index, index)
        idx = dict(env, GIT_INDEX_FILE=str(index))
        root = repo.root

        added = False

        def git(*args: str, stdin: bytes | None = None) -> bytes:
            if added and index.exists():
                # Once every file is added, nothing compares the index with the working tree again, but any git
                # that writes the index would hash each file written in the same second as the index again
                # ("racily clean": 85 ms for 30 MB), only to mark it for a later look that never comes: this
                # index is thrown away. An index dated 0 has no racily clean entries. Never before the adds: they
                # need that check to see a change made in the same second.
                os.utime(index, (0, 0))
            return run_git([*_ADD_CONFIG, *filters, *args], cwd=root, env=idx, stdin=stdin).stdout

        filters = _filters_off(root)
        # Files git was told to stop looking at (assume-unchanged, skip-worktree) are looked at.
        tagged = _entries(git("ls-files", "-v", "-s", "-z"), field=0)
        # One flag per call: given both, update-index applies only the last.
        for flag, paths in (("--no-assume-unchanged", [p for tag, p in tagged if tag.islower()]),
                            ("--no-skip-worktree", [p for tag, p in tagged if tag.upper() == "S"])):
            if paths:
                git("update-index", flag, "-z", "--stdin", stdin=b"\0".join(paths) + b"\0")
        pathspec = [":/", *(f":(exclude,top){os.fsdecode(p.relative_to(root))}" for p in exclude
                            if p != root and p.is_relative_to(root))]
        git("add", "-A", "--", *pathspec)
        listed = _entries(git("ls-files", "-v", "-s", "-z"))
        if filters and _names_filters(root, repo.git_dir, [p for _, p in listed if p.endswith(b".gitattributes")]):
            # An unchanged file keeps the blob in the index, which a clean filter made (an LFS pointer): read
            # the files under a filter again, with the filters off.
            filtered = _under_filter(root, idx, [p for _, p in listed])
            if filtered:
                git("add", "--renormalize", "--pathspec-from-file=-", "--pathspec-file-nul",
                    stdin=b"\0".join(filtered) + b"\0")
        added = True
        gitlinks = [path for mode, path in listed if mode == "160000"]
        for path in gitlinks:
            inner = root / os.fsdecode(path)
            nested = _locate(inner) if (inner / ".git").exists() else None
            if nested is None or nested.root.resolve() != inner.resolve():
                continue  # not checked out: the job sees the empty directory that is on disk
            if depth >= MAX_NESTING:
                raise SyncError("local", f"{inner}: repositories nested more than {MAX_NESTING} deep")
            alternates.append(str(nested.common_dir / "objects"))
            subtree = _freeze(nested, objects, alternates, exclude, depth + 1)
            idx["GIT_ALTERNATE_OBJECT_DIRECTORIES"] = ":".join(alternates)
            git("update-index", "--force-remove", "-z", "--stdin", stdin=path + b"\0")
            git("read-tree", f"--prefix={os.fsdecode(path)}/", subtree)
        return _text(git("write-tree"))


def _entries(listing: bytes, field: int = 1) -> list[tuple[str, bytes]]:
    """(FIELD, path) of each entry of `ls-files -v -s -z` output: field 0 is the tag, 1 the mode."""
    out = []
    for record in listing.split(b"\0"):
        meta, _, path = record.partition(b"\t")
        fields = meta.split()
        if len(fields) == 4:
            out.append((fields[field].decode(), path))
    return out


def _filters_off(root: Path) -> list[str]:
    """`-c` options that turn off every filter driver configured for ROOT (clean, smudge and process), so
    `git add` stores files as they are and runs nothing, like git-lfs, that writes into the repository."""
    p = run_git(["config", "-z", "--get-regexp", r"^filter\..*\.(clean|smudge|process|required)$"], cwd=root,
                check=False)
    names = set()
    for record in p.stdout.split(b"\0"):
        key = record.split(b"\n", 1)[0].decode("utf-8", "replace")
        if key.startswith("filter.") and key.count(".") >= 2:
            names.add(key[len("filter."):key.rindex(".")])
    out: list[str] = []
    for name in sorted(names):
        out += ["-c", f"filter.{name}.clean=", "-c", f"filter.{name}.smudge=", "-c", f"filter.{name}.process=",
                "-c", f"filter.{name}.required=false"]
    return out


def _names_filters(root: Path, git_dir: Path, attribute_files: list[bytes]) -> bool:
    """Whether any attributes file (in the tree, the repository's info/attributes, core.attributesFile) sets a
    filter: only then is it worth asking git which files are under one."""
    candidates = [root / os.fsdecode(p) for p in attribute_files] + [git_dir / "info" / "attributes"]
    configured = run_git(["config", "--path", "core.attributesFile"], cwd=root, check=False).stdout.strip()
    candidates.append(Path(os.fsdecode(configured)) if configured else
                      Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "git" / "attributes")
    for path in candidates:
        try:
            if b"filter" in path.read_bytes():
                return True
        except OSError:
            continue
    return False


def _under_filter(root: Path, env: dict[str, str], paths: list[bytes]) -> list[bytes]:
    """Those of PATHS that have a `filter` attribute."""
    if not paths:
        return []
    stdin = b"\0".join(paths) + b"\0"
    attrs = run_git(["check-attr", "-z", "--stdin", "filter"], cwd=root, env=env, stdin=stdin).stdout.split(b"\0")
    return [attrs[i] for i in range(0, len(attrs) - 2, 3) if attrs[i + 2] not in (b"unspecified", b"unset")]


@dataclass(frozen=True)
class LargeFile:
    """A large file of the working tree that git sees changed or new: what a sync may send ahead."""

    path: Path  # on disk
    size: int


def large_changes(cwd: Path, *, least: int = LARGE_FILE) -> list[LargeFile]:
    """The regular files of LEAST bytes or more in the working tree at CWD that are untracked (and not ignored) or
    differ from the repository's index: what the next snapshot has to hash, and a sync may have to send. Only
    files git stores as they are on disk (no eol, ident or encoding conversion), since their object ids are known
    without git. Reads only; [] outside a repository."""
    repo = _locate(cwd)
    if repo is None:
        return []
    root = repo.root
    config = [*_ADD_CONFIG, *_filters_off(root)]
    p = run_git([*config, "ls-files", "-z", "-m", "-o", "--exclude-standard"], cwd=root, check=False)
    if p.returncode != 0:
        return []
    found: dict[bytes, LargeFile] = {}
    for name in p.stdout.split(b"\0"):
        if not name or name in found:
            continue
        path = root / os.fsdecode(name)
        try:
            st = path.lstat()
        except OSError:
            continue  # deleted
        if stat.S_ISREG(st.st_mode) and st.st_size >= least:
            found[name] = LargeFile(path, st.st_size)
    if not found:
        return []
    autocrlf = run_git(["config", "core.autocrlf"], cwd=root, check=False)
    if autocrlf.returncode == 0 and autocrlf.stdout.strip().lower() in (b"", b"true", b"yes", b"on", b"1", b"input"):
        return []  # line endings of text files converted
    attrs = run_git([*config, "check-attr", "-z", "--stdin", *_CONVERTING], cwd=root,
                    stdin=b"\0".join(found) + b"\0", check=False)
    if attrs.returncode != 0:
        return []
    fields = attrs.stdout.split(b"\0")
    for i in range(0, len(fields) - 2, 3):
        if fields[i + 2] not in (b"unspecified", b"unset"):
            found.pop(fields[i], None)
    return list(found.values())


def open_large(large: LargeFile) -> BinaryIO:
    """LARGE, open for reading: the regular file itself, never what a symlink put in its place meanwhile points
    to (OSError then)."""
    fd = os.open(large.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{large.path} is no longer a regular file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def blob_id(large: LargeFile, *, sha256: bool = False) -> str | None:
    """The object id git gives LARGE's content as a blob; None when it is no longer the size it was (it is being
    written), or no longer a regular file."""
    h = hashlib.sha256() if sha256 else hashlib.sha1()
    h.update(b"blob %d\0" % large.size)
    left = large.size
    try:
        with open_large(large) as f:
            while left > 0:
                piece = f.read(min(left, 1 << 20))
                if not piece:
                    return None
                h.update(piece)
                left -= len(piece)
            if f.read(1):
                return None
    except OSError:
        return None
    return h.hexdigest()
