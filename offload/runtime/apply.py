"""Bringing a job's changes into the working tree: a three-way merge that goes through git's own checks, never
touches what git does not track here, keeps what it replaces, and can be undone.

A job's result comes from a worker, where any job could have shaped it, so it is hostile input:
- every path of the result passes git's own `verify_path` (no `.git` in any spelling, no `..`, nothing NTFS or
  HFS+ would read as either), because git reads the result's tree into an index before anything is planned;
- the files are written by git's own checkout machinery (`checkout-index`), into a staging directory and with
  every attribute that runs a program or converts content turned off, then renamed into place;
- nothing is written through a symbolic link or over a file git does not track here;
- a change to `.gitattributes` that names a filter, diff or merge driver, or to `.gitmodules`, is refused
  unless the user allows it, since those make git run programs here later;
- `.offload` (where `get` writes) and whatever this repository ignores are left out.

Before anything is written, the working tree's state of every path the apply changes is committed, together with
what the apply writes, under `refs/offload/backup/JOB` (the commit holds the after-state; its parent the
before-state). `undo` restores the before-state of each path that is still as the apply left it; a failure part
of the way through does the same at once. Only the local repository's objects and that ref are written besides
the files; never the index, HEAD or another ref.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from offload.errors import OffloadError
from offload.runtime.localgit import run_git

BACKUP_PREFIX = "refs/offload/backup/"
_FILE_MODES = ("100644", "100755", "120000")
_ABSENT = "0" * 40
# Attributes that make git run a program or change bytes on the way to the disk: off while offload writes.
_ATTRIBUTES_OFF = "* -text -eol -filter -ident -working-tree-encoding -diff -merge\n"
# Attributes that name a program to run here (a driver of the user's git config) once they are in the tree.
_DRIVER_ATTRIBUTES = ("filter", "diff=", "merge=")
_IDENTITY = {"GIT_AUTHOR_NAME": "offload", "GIT_AUTHOR_EMAIL": "offload@localhost",
             "GIT_COMMITTER_NAME": "offload", "GIT_COMMITTER_EMAIL": "offload@localhost"}
_STRICT = ["-c", "core.protectNTFS=true", "-c", "core.protectHFS=true"]



class ApplyConflict(OffloadError):
    """The job's changes do not apply over the local working tree; nothing was written."""

    exit_code = 1


class ApplyRefused(OffloadError):
    """The job's result asks for something apply never does on its own (a path git refuses, a filter, untracked
    work); nothing was written."""

    exit_code = 1


def backup_ref(job: str) -> str:
    return f"{BACKUP_PREFIX}{job}"


@dataclass(frozen=True)
class Side:
    """One side of a path: absent (MODE None), or a blob with its mode (`100644`, `100755`, `120000`)."""

    mode: str | None = None
    oid: str = _ABSENT
    kind: str = "blob"  # "dir" or "other" for what is on disk and is not a file or a symlink

    @property
    def present(self) -> bool:
        return self.mode is not None or self.kind != "blob"


ABSENT = Side()
BLOCKED = Side(kind="blocked")  # a directory above it is not a directory here


@dataclass
class Plan:
    """What each path becomes (ABSENT: removed), the changed paths left out, and the paths as they are now."""

    changes: dict[str, Side] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    before: dict[str, Side] = field(default_factory=dict)


# --- git, with failures said as the disk says them -------------------------------------------------------------


def _git(args: list[str], root: Path, *, env: dict[str, str] | None = None, stdin: bytes | None = None,
         what: str = "", cwd: Path | None = None) -> bytes:
    """`git ARGS` for the working tree at ROOT (run in CWD, default ROOT); a failure is one line, and a disk
    that is full or read-only is said as such."""
    p = run_git(args, cwd=cwd or root, env=env, stdin=stdin, check=False)
    if p.returncode != 0:
        err = p.stderr.decode("utf-8", "replace")
        for code in (errno.ENOSPC, errno.EROFS, errno.EDQUOT):
            if os.strerror(code) in err:
                raise disk_error(OSError(code, os.strerror(code)), root)
        lines = [ln for ln in err.strip().splitlines() if ln.strip()]
        raise OffloadError(f"{what or 'git ' + args[0]} failed: {lines[-1] if lines else p.returncode}")
    return p.stdout


def disk_error(e: OSError, root: Path, path: Path | None = None) -> OffloadError:
    """The one line for a write that the disk refused."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return OffloadError(f"no space left on {device_of(path or root)}; nothing was applied")
    if e.errno == errno.EROFS:
        return OffloadError(f"the working tree at {root} is read-only; nothing was applied")
    if e.errno == errno.EACCES:
        return OffloadError(f"permission denied writing {path or root}; nothing was applied")
    return OffloadError(f"cannot write {path or root}: {e.strerror}; nothing was applied")


def device_of(path: Path) -> str:
    """The device (and mount point) that holds PATH, as /proc/self/mountinfo names it."""
    target = os.path.realpath(path)
    best, name = "", str(path)
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                mount = fields[4].replace("\\040", " ")
                if (target == mount or target.startswith(mount.rstrip("/") + "/")) and len(mount) >= len(best):
                    source = fields[fields.index("-") + 2]
                    best, name = mount, f"{source} (mounted at {mount})"
    except (OSError, ValueError, IndexError):
        pass
    return name


# --- sides ----------------------------------------------------------------------------------------------------


def _changes(root: Path, base: str, theirs: str) -> dict[str, tuple[Side, Side]]:
    """Every path that differs between the commits BASE and THEIRS: (base side, their side)."""
    out = _git(["diff", "--raw", "-z", "--no-renames", "--no-abbrev", base, theirs], root)
    fields = out.split(b"\0")
    changes: dict[str, tuple[Side, Side]] = {}
    i = 0
    while i + 1 < len(fields) and fields[i].startswith(b":"):
        old_mode, new_mode, old_oid, new_oid, _status = fields[i][1:].decode().split()
        path = os.fsdecode(fields[i + 1])
        changes[path] = (_tree_side(old_mode, old_oid), _tree_side(new_mode, new_oid))
        i += 2
    return changes


def _tree_side(mode: str, oid: str) -> Side:
    if mode == "000000":
        return ABSENT
    return Side(mode, oid) if mode in _FILE_MODES else Side(mode, oid, kind="other")


def _leading_obstacle(root: Path, rel: str) -> str | None:
    """The first directory of REL's path that is, here, not a plain directory (a symlink, a file), or None."""
    parts = rel.split("/")[:-1]
    here = root
    for i, part in enumerate(parts):
        here = here / part
        try:
            st = os.lstat(here)
        except FileNotFoundError:
            return None
        if not stat.S_ISDIR(st.st_mode):
            return "/".join(parts[:i + 1])
    return None


def _disk_sides(root: Path, paths: list[str]) -> dict[str, Side]:
    """What each path is on disk now, as git would store it (no filters), never looking through a symlink:
    a path under a directory that is not one here is reported as what stands in the way."""
    sides: dict[str, Side] = {}
    regular: list[str] = []
    for rel in paths:
        if _leading_obstacle(root, rel) is not None:
            sides[rel] = BLOCKED
            continue
        try:
            st = os.lstat(root / rel)
        except FileNotFoundError:
            sides[rel] = ABSENT
            continue
        if stat.S_ISLNK(st.st_mode):
            oid = _git(["hash-object", "--stdin"], root, stdin=os.fsencode(os.readlink(root / rel))).decode().strip()
            sides[rel] = Side("120000", oid)
        elif stat.S_ISREG(st.st_mode):
            sides[rel] = Side("100755" if st.st_mode & stat.S_IXUSR else "100644")
            regular.append(rel)
        else:
            sides[rel] = Side(kind="dir" if stat.S_ISDIR(st.st_mode) else "other")
    if regular:
        listed = "".join(f"{p}\n" for p in regular).encode("utf-8", "surrogateescape")
        oids = _git(["hash-object", "--no-filters", "--stdin-paths"], root, stdin=listed).decode().split()
        for rel, oid in zip(regular, oids):
            sides[rel] = Side(sides[rel].mode, oid)
    return sides


def _unblocked(root: Path, disk: dict[str, Side], moves: dict[str, tuple[Side, Side]]) -> dict[str, Side]:
    """DISK, where a path under a file that MOVES (from, to) removes counts as absent: once that file is gone
    (a file that becomes a directory), nothing stands there."""
    for rel, side in disk.items():
        obstacle = _leading_obstacle(root, rel) if side == BLOCKED else None
        if obstacle in moves and disk.get(obstacle) == moves[obstacle][0] and moves[obstacle][1] == ABSENT:
            disk[rel] = ABSENT
    return disk


def _write_blobs(root: Path, paths: list[str], sides: dict[str, Side]) -> None:
    """Store the disk content of PATHS (as SIDES saw it) in the repository's object store, for the backup."""
    regular = [p for p in paths if sides[p].mode in ("100644", "100755")]
    for rel in paths:
        if sides[rel].mode == "120000":
            _git(["hash-object", "-w", "--stdin"], root, stdin=os.fsencode(os.readlink(root / rel)))
    if regular:
        listed = "".join(f"{p}\n" for p in regular).encode("utf-8", "surrogateescape")
        oids = _git(["hash-object", "-w", "--no-filters", "--stdin-paths"], root, stdin=listed).decode().split()
        changed = [p for p, oid in zip(regular, oids) if oid != sides[p].oid]
        if changed:
            raise ApplyConflict(f"{changed[0]} changed while offload was applying; nothing was applied",
                                hint="run the apply again")


def _blob(root: Path, oid: str) -> bytes:
    return _git(["cat-file", "blob", oid], root)


# --- planning ---------------------------------------------------------------------------------------------------


def plan_apply(root: Path, snapshot: str, result: str, *, allow_filters: bool = False, job: str = "JOB") -> Plan:
    """What applying RESULT (JOB's result, which builds on SNAPSHOT) does to the working tree at ROOT; an
    ApplyRefused or ApplyConflict (naming the paths) when it cannot be done safely. Nothing is written."""
    _check_paths(root, result, job)
    changes = _changes(root, snapshot, result)
    skipped = sorted(p for p in changes if p == ".offload" or p.startswith(".offload/"))
    # git cannot say whether a path beyond a symlink is ignored; such a path is planned as blocked below.
    skipped += ignored_here(root, [p for p in changes if p not in skipped and _leading_obstacle(root, p) is None])
    wanted = [p for p in changes if p not in skipped]
    for rel in wanted:
        if changes[rel][1].kind == "other":
            raise ApplyRefused(f"the job's result has a submodule at {rel}; apply takes files and symbolic links only",
                               hint=f"see it with `offload diff {job}`")
    if not allow_filters:
        _check_drivers(root, {p: changes[p] for p in wanted},
                       f"if you trust it, `offload apply --allow-filters {job}` applies it all the same")
    disk = _unblocked(root, _disk_sides(root, wanted), {p: changes[p] for p in wanted})
    plan = Plan(skipped=sorted(skipped))
    conflicts: list[str] = []
    # A directory that becomes a file: absent, once the plan removes all it holds (decided after the rest).
    later = [p for p in wanted if disk[p].kind == "dir" and changes[p][0] == ABSENT]
    for rel in [p for p in wanted if p not in later] + later:
        base, theirs = changes[rel]
        ours = disk[rel]
        if rel in later and _cleared(root, rel, plan.changes):
            ours = disk[rel] = ABSENT
        if ours == theirs:
            continue  # already so here
        if ours == base:
            plan.changes[rel] = theirs  # untouched here: take the job's version (content, mode, or its removal)
        else:
            merged = _merge(root, rel, ours, base, theirs)
            if merged is None:
                conflicts.append(rel)
            else:
                plan.changes[rel] = merged
        plan.before[rel] = ours
    # A path can only be written where every directory above it is a directory here, or a file the plan removes.
    for rel in list(plan.changes):
        obstacle = _leading_obstacle(root, rel)
        if obstacle is not None and plan.changes.get(obstacle) != ABSENT:
            conflicts.append(rel)
    if conflicts:
        raise ApplyConflict(f"the job's changes conflict with local changes in {_some(sorted(set(conflicts)))}; "
                            "nothing was applied",
                            hint="commit or stash your changes, or see them with `offload diff`")
    untracked = _untracked(root, [p for p in plan.changes if plan.before[p].present])
    if untracked:
        raise ApplyRefused(f"the job changes files that git does not track here: {_some(untracked)}; nothing was "
                           "applied", hint="`git add` them first, so git keeps what they are now")
    return plan


def _merge(root: Path, rel: str, ours: Side, base: Side, theirs: Side) -> Side | None:
    """A clean three-way merge of a text file changed both here and by the job, stored as a blob; None when it
    cannot be merged (a conflict, binary content, a symlink, a file added or removed on one side)."""
    sides = (ours, base, theirs)
    if any(s.mode not in ("100644", "100755") for s in sides):
        return None
    if ours.mode != base.mode and theirs.mode != base.mode and ours.mode != theirs.mode:
        return None
    mode = theirs.mode if ours.mode == base.mode else ours.mode
    data = [(root / rel).read_bytes(), _blob(root, base.oid), _blob(root, theirs.oid)]
    if any(b"\0" in d for d in data):
        return None
    with tempfile.TemporaryDirectory(prefix="offload-merge-") as tmp:
        files = []
        for name, content in zip(("ours", "base", "theirs"), data):
            (Path(tmp) / name).write_bytes(content)
            files.append(str(Path(tmp) / name))
        p = run_git(["merge-file", "-p", "-q", *files], cwd=Path(tmp), check=False)
        if p.returncode != 0:
            return None
    oid = _git(["hash-object", "-w", "--stdin"], root, stdin=p.stdout).decode().strip()
    return Side(mode, oid)


def _cleared(root: Path, rel: str, changes: dict[str, Side]) -> bool:
    """Every file under the directory REL is one CHANGES removes (so the directory goes with them)."""
    for dirpath, dirs, files in os.walk(root / rel):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(dirpath, d))]:
            if changes.get(str((Path(dirpath) / name).relative_to(root))) != ABSENT:
                return False
    return True


def _check_paths(root: Path, result: str, job: str) -> None:
    """ApplyRefused when the result's tree holds a path git refuses to check out, on any system (git reads the
    tree into a throwaway index: `verify_path`, with the NTFS and HFS+ rules on)."""
    with tempfile.TemporaryDirectory(prefix="offload-check-") as tmp:
        p = run_git([*_STRICT, "read-tree", result], cwd=root, env={"GIT_INDEX_FILE": str(Path(tmp) / "index")},
                    check=False)
    if p.returncode == 0:
        return
    said = p.stderr.decode("utf-8", "replace")
    bad = said.split("invalid path '", 1)[1].split("'", 1)[0] if "invalid path '" in said else None
    if bad is None:
        raise OffloadError(f"cannot read the job's result: {said.strip().splitlines()[-1] if said.strip() else ''}")
    raise ApplyRefused(f"the job's result holds a path that git refuses to check out: {bad!r}; nothing was applied",
                       hint=f"something on the worker made it: see it with `offload diff {job}`")


def _check_drivers(root: Path, changes: dict[str, tuple[Side, Side]], hint: str) -> None:
    """ApplyRefused for a change to .gitmodules, or to a .gitattributes that names a filter, diff or merge driver
    (or defines a macro): either would make git run a program on this machine later."""
    for rel, (base, theirs) in sorted(changes.items()):
        name = rel.rsplit("/", 1)[-1]
        if name.lower() == ".gitmodules":
            raise ApplyRefused(f"the job changes {rel}, which tells git what to fetch and run for submodules; "
                               "nothing was applied", hint=hint)
        if name.lower() != ".gitattributes" or theirs.mode is None:
            continue
        old = set(_blob(root, base.oid).splitlines()) if base.mode else set()
        for line in _blob(root, theirs.oid).splitlines():
            if line in old:
                continue
            words = line.decode("utf-8", "replace").split()
            if words and (words[0].startswith("[attr]")
                          or any(w.lstrip("-!").startswith(_DRIVER_ATTRIBUTES) for w in words[1:])):
                raise ApplyRefused(f"the job's change to {rel} makes git run a filter or driver here "
                                   f"({' '.join(words)!r}); nothing was applied",
                                   hint=hint)


def _untracked(root: Path, paths: list[str]) -> list[str]:
    """The PATHS that are on disk but not in the repository's index."""
    if not paths:
        return []
    listed = _git(["ls-files", "-z", "--full-name"], root).split(b"\0")
    tracked = {os.fsdecode(p) for p in listed if p}
    return sorted(p for p in paths if p not in tracked)


def ignored_here(root: Path, paths: list[str]) -> list[str]:
    """The PATHS this working tree ignores (a tracked file never is). Ignore rules of this machine only
    (.git/info/exclude, core.excludesFile) do not reach the worker, so a job may have made such a file."""
    if not paths:
        return []
    listed = b"".join(os.fsencode(p) + b"\0" for p in paths)
    p = run_git(["check-ignore", "-z", "--stdin"], cwd=root, stdin=listed, check=False)
    if p.returncode not in (0, 1):  # 1: none is ignored
        raise OffloadError(f"git check-ignore failed: {p.stderr.decode('utf-8', 'replace').strip()}")
    return [os.fsdecode(x) for x in p.stdout.split(b"\0") if x]


def _some(paths: list[str]) -> str:
    return ", ".join(paths[:8]) + (f" and {len(paths) - 8} more" if len(paths) > 8 else "")


# --- carrying a plan out ------------------------------------------------------------------------------------------


def apply(root: Path, job: str, plan: Plan, *, result: str) -> list[str]:
    """Carry PLAN out in the working tree at ROOT, after keeping the before- and after-state of its paths under
    `backup_ref(JOB)`. Returns the paths written or removed. On a failure part of the way, what was changed is put
    back before the error is raised."""
    if not plan.changes:
        return []
    _writable(root)
    _room(root, plan.changes)
    paths = sorted(plan.changes)
    _write_blobs(root, paths, plan.before)
    before = _commit(root, {p: plan.before[p] for p in paths}, f"offload: the working tree before applying job {job}",
                     [])
    after = _commit(root, plan.changes, f"offload: job {job} applied\n\nResult: {result}", [before])
    _git(["update-ref", backup_ref(job), after], root)
    try:
        return _carry_out(root, plan.changes)
    except OffloadError as e:
        _roll_back(root, job, e)
        raise


def undo(root: Path, job: str) -> list[str]:
    """Put every path the last apply of JOB changed back as it was, where it is still as the apply left it; an
    ApplyConflict naming the paths changed since (nothing is written then). Returns the paths put back."""
    after = run_git(["rev-parse", "-q", "--verify", f"{backup_ref(job)}^{{commit}}"], cwd=root,
                    check=False).stdout.decode().strip()
    if not after:
        raise OffloadError(f"nothing to undo: job {job} has not been applied here", hint="see `git status`")
    changes = _changes(root, f"{after}^", after)
    disk = _unblocked(root, _disk_sides(root, sorted(changes)), {p: (a, b) for p, (b, a) in changes.items()})
    restore: dict[str, Side] = {}
    changed: list[str] = []
    later = [p for p in changes if disk[p].kind == "dir" and changes[p][1] == ABSENT]
    for rel in [p for p in changes if p not in later] + later:
        before, applied = changes[rel]
        if rel in later and _cleared(root, rel, restore):
            disk[rel] = ABSENT  # a file the apply made a directory of: it comes back once that directory goes
        if disk[rel] == applied:
            restore[rel] = before
        elif disk[rel] != before:
            changed.append(rel)
    if changed:
        raise ApplyConflict(f"these files changed since job {job} was applied: {_some(sorted(changed))}; nothing "
                            "was put back", hint=f"their earlier content is in {backup_ref(job)}^")
    _writable(root)
    done = _carry_out(root, restore)
    _git(["update-ref", "-d", backup_ref(job)], root)
    return done


def _roll_back(root: Path, job: str, cause: OffloadError) -> None:
    try:
        undo(root, job)
    except OffloadError:
        cause.message = cause.message.replace("; nothing was applied", "")
        cause.hint = f"part of it was applied: `offload apply --undo {job}` puts back what it changed"


def _room(root: Path, changes: dict[str, Side], *, failed: OffloadError | None = None) -> None:
    """No space left (an OffloadError saying so) when the file system of ROOT cannot hold the files CHANGES
    writes, staged beside the ones they replace. With FAILED (git's own failure to write them), that failure is
    said as the disk's, when the disk is what is short."""
    oids = "".join(f"{s.oid}\n" for s in changes.values() if s.mode)
    sizes = _git(["cat-file", "--batch-check=%(objectsize)"], root, stdin=oids.encode()).split() if oids else []
    needed = sum(int(n) for n in sizes if n.isdigit()) + (64 << 10)
    try:
        st = os.statvfs(root)
    except OSError:
        return
    if st.f_bavail * st.f_frsize < needed:
        raise disk_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), root) from failed
    if failed is not None:
        raise failed


def _writable(root: Path) -> None:
    try:
        if os.statvfs(root).f_flag & os.ST_RDONLY:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
    except OSError as e:
        raise disk_error(e, root) from None


def _commit(root: Path, sides: dict[str, Side], message: str, parents: list[str]) -> str:
    """A commit (in the repository's objects) whose tree holds exactly the present SIDES."""
    with tempfile.TemporaryDirectory(prefix="offload-index-") as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        _fill_index(root, env, sides)
        tree = _git(["write-tree"], root, env=env).decode().strip()
    args = ["commit-tree", tree, *[x for p in parents for x in ("-p", p)]]
    return _git(args, root, env=_IDENTITY, stdin=message.encode("utf-8", "surrogateescape")).decode().strip()


def _fill_index(root: Path, env: dict[str, str], sides: dict[str, Side]) -> None:
    info = "".join(f"{s.mode} {s.oid}\t{p}\n" for p, s in sorted(sides.items()) if s.mode)
    _git([*_STRICT, "update-index", "--add", "--replace", "--index-info"], root, env=env,
         stdin=info.encode("utf-8", "surrogateescape"))


def _carry_out(root: Path, changes: dict[str, Side]) -> list[str]:
    """Write the present CHANGES with git's checkout machinery into a staging directory beside the repository's
    git directory, then rename each into place (after removing what is to go). Nothing is followed through a
    symbolic link. Returns the paths changed."""
    git_dir = Path(os.fsdecode(_git(["rev-parse", "--absolute-git-dir"], root).rstrip(b"\n")))
    objects = Path(os.fsdecode(_git(["rev-parse", "--path-format=absolute", "--git-path", "objects"],
                                    root).rstrip(b"\n")))
    try:
        scratch = Path(tempfile.mkdtemp(prefix="offload-apply-", dir=git_dir))
    except OSError as e:
        raise disk_error(e, root, git_dir) from None
    try:
        stage = _stage(root, scratch, objects, {p: s for p, s in changes.items() if s.mode})
        done: list[str] = []
        try:
            for rel in sorted(p for p, s in changes.items() if not s.mode):
                _remove(root, rel)
                done.append(rel)
            for rel in sorted(p for p, s in changes.items() if s.mode):
                _place(root, stage, rel)
                done.append(rel)
        except OSError as e:
            raise disk_error(e, root, Path(e.filename) if e.filename else None) from None
        return done
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _stage(root: Path, scratch: Path, objects: Path, present: dict[str, Side]) -> Path:
    """The present files, written by `git checkout-index` from a throwaway git directory (which reads the
    repository's objects) with every converting or program-running attribute off."""
    gitdir, stage = scratch / "git", scratch / "stage"
    try:
        for d in (gitdir / "objects" / "info", gitdir / "refs", gitdir / "info", stage):
            d.mkdir(parents=True)
        (gitdir / "HEAD").write_text("ref: refs/heads/offload\n")
        (gitdir / "config").write_text("[core]\n\trepositoryformatversion = 0\n\tbare = false\n\tsymlinks = true\n"
                                       "\tfsmonitor = false\n\thooksPath = /dev/null\n")
        (gitdir / "objects" / "info" / "alternates").write_text(f"{objects}\n")
        (gitdir / "info" / "attributes").write_text(_ATTRIBUTES_OFF)
    except OSError as e:
        raise disk_error(e, root, scratch) from None
    if present:
        env = {"GIT_DIR": str(gitdir), "GIT_WORK_TREE": str(stage), "GIT_INDEX_FILE": str(scratch / "index"),
               "GIT_CONFIG_NOSYSTEM": "1", "GIT_ATTR_NOSYSTEM": "1"}
        _fill_index(root, env, present)
        try:
            _git(["checkout-index", "-a", "-f"], root, env=env, cwd=stage, what="writing the job's files")
        except OffloadError as e:
            shutil.rmtree(stage, ignore_errors=True)  # what git wrote before it stopped holds space
            _room(root, present, failed=e)
    return stage


def _remove(root: Path, rel: str) -> None:
    if _leading_obstacle(root, rel) is not None:
        return  # what stands above it is removed by the plan, or was never here
    target = root / rel
    try:
        if stat.S_ISDIR(os.lstat(target).st_mode):
            return
        os.unlink(target)
    except FileNotFoundError:
        return
    directory = target.parent
    while directory != root and not any(directory.iterdir()):
        directory.rmdir()
        directory = directory.parent


def _place(root: Path, stage: Path, rel: str) -> None:
    """Rename the staged REL into the working tree, making its directories (never through a symlink)."""
    here = root
    for part in rel.split("/")[:-1]:
        here = here / part
        try:
            st = os.lstat(here)
        except FileNotFoundError:
            os.mkdir(here)
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise OffloadError(f"{here.relative_to(root)} is not a directory here; nothing more was applied")
    source, target = stage / rel, root / rel
    try:
        os.replace(source, target)
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
        # Another file system than the git directory's: copy beside the target, then rename.
        tmp = target.with_name(f".{target.name}.offload-apply")
        try:
            if os.path.islink(source):
                os.symlink(os.readlink(source), tmp)
            else:
                shutil.copy2(source, tmp)
            os.replace(tmp, target)
        finally:
            if os.path.lexists(tmp):
                os.unlink(tmp)


__all__ = ["ABSENT", "BLOCKED", "ApplyConflict", "ApplyRefused", "Plan", "Side", "apply", "backup_ref", "ignored_here",
           "plan_apply", "undo"]
