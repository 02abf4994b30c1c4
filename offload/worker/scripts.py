"""The worker-side shell, kept in this package's `sh/` files.

A job script (`worker_script`) is `sh/lib.sh`, the one definition of the workspace layout, the id rule and task
liveness, followed by the script's own text. It runs as `sh -c SCRIPT sh ARGS...`, or as a file (graph.sh). The
boot scripts (`boot_script`) are bash files that cloud-init and the startup script write to a VM; they run as
root at boot and by timer. The session script (`session_script`), dispatch.sh, is the step dispatcher a held
connection keeps running on the worker (see offload/runtime/transport.py).
"""

from __future__ import annotations

from functools import cache
from importlib import resources

JOB_SCRIPTS = ("graph.sh", "status.sh", "log.sh", "read-logs.sh", "attach-probe.sh", "clean.sh", "receive.sh",
               "haves.sh", "tasks-running.sh", "result.sh", "get.sh", "launch.sh", "put-blob.sh")
BOOT_SCRIPTS = ("mount-data.sh", "start-worker.sh", "idle-stop.sh", "watch-image.sh", "host-keys.sh")
# Scripts that a held connection keeps running on the worker (whole, without the library).
SESSION_SCRIPTS = ("dispatch.sh",)


def _read(name: str) -> str:
    return resources.files("offload.worker").joinpath("sh", name).read_text(encoding="utf-8")


@cache
def library() -> str:
    """The text of the worker library, sh/lib.sh (what every job script starts with)."""
    return _read("lib.sh")


@cache
def worker_script(name: str) -> str:
    """The whole text of job script NAME: a POSIX sh shebang, lib.sh, then the script."""
    if name not in JOB_SCRIPTS:
        raise ValueError(f"no worker script {name!r}")
    return f"#!/bin/sh\n{_read('lib.sh')}\n# ---- {name}\n\n{_read(name)}"


@cache
def session_script(name: str) -> str:
    """The text of session script NAME: the step dispatcher a held connection keeps on the worker."""
    if name not in SESSION_SCRIPTS:
        raise ValueError(f"no session script {name!r}")
    return _read(name)


@cache
def boot_script(name: str) -> str:
    """The text of boot script NAME, as written to the VM."""
    if name not in BOOT_SCRIPTS:
        raise ValueError(f"no boot script {name!r}")
    return _read(name)
