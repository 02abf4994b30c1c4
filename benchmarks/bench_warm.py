#!/usr/bin/env python3
"""Warm jobs: how long a build takes on a worker cold, and again after a one-line change, in one run.

Generates a C project of about 120 files with a Makefile, and against a real sshd worker on loopback prints:
  - the cold job (`offload run --wait -- make -j2`, first on the worker): wall time and compiler invocations;
  - the warm job after a one-line change to one file: the same two figures, and its ratio to the cold job
    (target: exactly one compile, and <= 0.25x);
  - the same build with --fresh (no build outputs of earlier jobs);
  - local incremental `make -j2` after the same change: the floor.

Run as root on a machine with openssh-server, git, tmux, make and gcc: `python3 benchmarks/bench_warm.py`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from bench_common import Bench, stop_agent  # noqa: E402  (also puts the project on sys.path)
from tests.workers import sshd_record, start_sshd, write_outputs  # noqa: E402

FILES = int(os.environ.get("BENCH_FILES", "120"))

MAKEFILE = """\
SRCS := $(wildcard src/*.c)
OBJS := $(SRCS:src/%.c=build/%.o)
CFLAGS ?= -O2

app: $(OBJS)
\t@$(CC) -o $@ $(OBJS)

build/%.o: src/%.c | build
\t@echo "CC $<"
\t@$(CC) $(CFLAGS) -c -o $@ $<

build:
\t@mkdir -p build
"""

# Enough work per file that compiling it costs something, as in a real project.
UNIT = """\
#include <stddef.h>
static double table_{i}[64];
static double step_{i}(double x, int k) {{
    for (int j = 0; j < 64; j++) table_{i}[j] = x * j + k;
    double s = 0;
    for (int j = 0; j < 64; j++) s += table_{i}[j] / (j + 1.0);
    return s;
}}
double unit_{i}(int n) {{
    double acc = 0;
    for (int k = 0; k < n; k++) {{
        switch (k % 8) {{
        case 0: acc += step_{i}(acc, k); break;
        case 1: acc -= step_{i}(acc / 2, k); break;
        case 2: acc *= 1.0001; break;
        case 3: acc /= 1.0002; break;
        case 4: acc += k * {i}; break;
        case 5: acc -= k; break;
        case 6: acc += step_{i}(k, {i}); break;
        default: acc = acc > 1e9 ? 0 : acc;
        }}
    }}
    return acc; /* version 0 */
}}
"""


def make_project(root: Path, env: dict[str, str]) -> None:
    (root / "src").mkdir(parents=True)
    (root / "Makefile").write_text(MAKEFILE)
    (root / ".gitignore").write_text("build/\napp\n")
    calls = "".join(f"    total += unit_{i}(100);\n" for i in range(FILES - 1))
    decls = "".join(f"double unit_{i}(int n);\n" for i in range(FILES - 1))
    (root / "src" / "main.c").write_text(f"#include <stdio.h>\n{decls}int main(void) {{\n    double total = 0;\n"
                                         f"{calls}    printf(\"%f\\n\", total);\n    return 0;\n}}\n")
    for i in range(FILES - 1):
        (root / "src" / f"unit_{i}.c").write_text(UNIT.format(i=i))
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "a C project"]):
        subprocess.run(["git", *args], cwd=root, env=env, check=True)


def one_line_change(root: Path, version: int) -> None:
    unit = root / "src" / "unit_7.c"
    unit.write_text(unit.read_text().replace(f"/* version {version - 1} */", f"/* version {version} */"))


def timed_job(bench: Bench, argv: list[str], repo: Path) -> tuple[float, int]:
    start = time.perf_counter()
    p = subprocess.run(argv, cwd=repo, env=bench.env, capture_output=True)
    elapsed = time.perf_counter() - start
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {p.stderr.decode().strip()}")
    return elapsed, p.stdout.decode().count("CC src/")


def main() -> None:
    bench = Bench.create("offload-bench-warm-")
    worker = start_sshd(base=bench.base / "sshd", user=bench.user, client_key=bench.key)
    outputs = write_outputs(bench.base / "outputs.json", "ssh", [sshd_record(worker)])
    try:
        repo = bench.base / "project"
        make_project(repo, bench.env)
        run = [sys.executable, "-m", "offload", "run", "--outputs", str(outputs), "--wait"]
        build = ["--", "make -j2"]

        cold, cold_cc = timed_job(bench, run + build, repo)
        time.sleep(1.1)  # whole-second mtimes: the edit must be newer than the outputs
        one_line_change(repo, 1)
        warm, warm_cc = timed_job(bench, run + build, repo)
        time.sleep(1.1)
        one_line_change(repo, 2)
        fresh, fresh_cc = timed_job(bench, run + ["--fresh"] + build, repo)

        # The floor: the same change, built incrementally on this machine.
        subprocess.run(["make", "-j2"], cwd=repo, capture_output=True, check=True)
        time.sleep(1.1)
        one_line_change(repo, 3)
        start = time.perf_counter()
        local = subprocess.run(["make", "-j2"], cwd=repo, capture_output=True, check=True)
        floor = time.perf_counter() - start
        floor_cc = local.stdout.decode().count("CC src/")

        print(f"C project: {FILES} files, make -j2, sshd worker on loopback")
        print(f"cold job:                          {cold:6.2f} s, {cold_cc} compiler invocations")
        print(f"warm job after a one-line change:  {warm:6.2f} s, {warm_cc} compiler invocation(s); "
              f"{warm / cold:.2f}x the cold job (target: 1 invocation, <= 0.25x)")
        print(f"--fresh job:                       {fresh:6.2f} s, {fresh_cc} compiler invocations")
        print(f"local incremental make (floor):    {floor:6.2f} s, {floor_cc} compiler invocation(s); "
              f"the warm job is {warm / floor:.1f}x it")
    finally:
        subprocess.run([sys.executable, "-m", "offload", "clean", "--all", "--yes", "--outputs", str(outputs)],
                       env=bench.env, capture_output=True)
        stop_agent(bench.env)
        worker.stop()


if __name__ == "__main__":
    main()
