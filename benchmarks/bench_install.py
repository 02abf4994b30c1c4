#!/usr/bin/env python3
"""What `pip install offload` costs: the core next to `offload[all]`, each into a fresh virtualenv, in one run.

Both install the same wheel, built once from the working tree. Two ways, each with the same pip cache state for
both targets:
- from the index: a new, empty pip cache for every install (what a fresh machine pays, downloads included);
- from local wheels: every wheel `[all]` needs downloaded once beforehand, then `pip install --no-index` (the
  install alone, without the network).
Prints, per target, the install time each way (median of --rounds), the installed size (the virtualenv's
site-packages less an empty one's) and the number of distributions, then the ratios core / all.

Target: the core installs in <= 30% of the time `[all]` takes, and holds no pulumi or google-cloud package.

Run: `.venv/bin/python benchmarks/bench_install.py [--rounds N] [--skip-index]` (needs PyPI).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS = ("core", "all")
HEAVY = ("pulumi", "google-cloud", "google-api", "grpcio")


def sources_copy(dest: Path) -> Path:
    """A copy of what goes into the package (tracked and untracked-but-not-ignored files), so the build leaves
    nothing in the working tree."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--",
                             "pyproject.toml", "README.md", "offload"], cwd=ROOT, capture_output=True, check=True
                            ).stdout.decode().split("\0")
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


def pip_env(cache: Path) -> dict[str, str]:
    return {**os.environ, "PIP_CACHE_DIR": str(cache), "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}


def run(argv: list[str], env: dict[str, str]) -> None:
    p = subprocess.run(argv, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {p.stderr.strip()[-2000:]}")


def site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python3*/site-packages"))


def size_of(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def new_venv(where: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True)
    return where


def install(base: Path, requirement: str, extra_args: list[str], cache: Path) -> tuple[float, Path]:
    """Seconds to pip-install REQUIREMENT into a fresh virtualenv (its creation not counted), and the venv."""
    venv = new_venv(Path(tempfile.mkdtemp(prefix="venv-", dir=base)))
    start = time.perf_counter()
    run([str(venv / "bin" / "pip"), "install", "-q", *extra_args, requirement], pip_env(cache))
    return time.perf_counter() - start, venv


def distributions(venv: Path, cache: Path) -> list[str]:
    p = subprocess.run([str(venv / "bin" / "pip"), "list", "--format", "json"], capture_output=True, text=True,
                       check=True, env=pip_env(cache))
    return sorted(d["name"].lower().replace("_", "-") for d in json.loads(p.stdout))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1, help="installs per target and way (median reported)")
    parser.add_argument("--skip-index", action="store_true", help="only the install from local wheels")
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="offload-bench-install-"))
    try:
        wheels = base / "wheels"
        run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels),
             str(sources_copy(base / "src"))], pip_env(base / "build-cache"))
        wheel = next(wheels.glob("offload-*.whl"))
        requirement = {"core": str(wheel), "all": f"{wheel}[all]"}
        empty = size_of(site_packages(new_venv(base / "empty")))

        times: dict[tuple[str, str], list[float]] = {}
        venvs: dict[str, Path] = {}
        if not args.skip_index:
            for round_ in range(args.rounds):
                for target in TARGETS if round_ % 2 == 0 else reversed(TARGETS):
                    cache = Path(tempfile.mkdtemp(prefix="pip-cache-", dir=base))  # empty for every install
                    seconds, venv = install(base, requirement[target], [], cache)
                    times.setdefault(("index", target), []).append(seconds)
                    venvs[target] = venv
                    print(f"  from the index, {target}: {seconds:.1f} s", file=sys.stderr)

        # Every wheel [all] needs, once; then installs that touch no network.
        run([sys.executable, "-m", "pip", "download", "-q", "-d", str(wheels), requirement["all"]],
            pip_env(base / "download-cache"))
        for round_ in range(args.rounds):
            for target in TARGETS if round_ % 2 == 0 else reversed(TARGETS):
                seconds, venv = install(base, requirement[target], ["--no-index", "--find-links", str(wheels)],
                                        base / "no-cache")
                times.setdefault(("wheels", target), []).append(seconds)
                venvs[target] = venv
                print(f"  from local wheels, {target}: {seconds:.1f} s", file=sys.stderr)

        rows = {}
        for target in TARGETS:
            mb = (size_of(site_packages(venvs[target])) - empty) / 1e6
            names = distributions(venvs[target], base / "no-cache")
            rows[target] = {
                "index": statistics.median(times[("index", target)]) if ("index", target) in times else None,
                "wheels": statistics.median(times[("wheels", target)]),
                "mb": mb,
                "count": len(names),
                "heavy": [n for n in names if n.startswith(HEAVY)],
            }

        def seconds(value: float | None) -> str:
            return "-" if value is None else f"{value:.1f}"

        print(f"offload {wheel.name.split('-')[1]}, Python {sys.version.split()[0]}, median of {args.rounds} "
              f"round{'s' if args.rounds != 1 else ''}")
        print(f"{'install':<10}{'from index, empty cache (s)':>30}{'from local wheels (s)':>24}"
              f"{'installed (MB)':>17}{'packages':>10}")
        for target in TARGETS:
            r = rows[target]
            label = "core" if target == "core" else "[all]"
            print(f"{label:<10}{seconds(r['index']):>30}{seconds(r['wheels']):>24}{r['mb']:>17.0f}{r['count']:>10}")
        core, full = rows["core"], rows["all"]
        ratios = [f"size {core['mb'] / full['mb']:.0%}", f"local wheels {core['wheels'] / full['wheels']:.0%}"]
        if core["index"] is not None:
            ratios.insert(0, f"from the index {core['index'] / full['index']:.0%}")
        print("core / [all]: " + ", ".join(ratios) + " (target: time <= 30%)")
        print(f"pulumi or google-cloud packages in the core: {', '.join(core['heavy']) or 'none'}; "
              f"in [all]: {len(full['heavy'])}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
