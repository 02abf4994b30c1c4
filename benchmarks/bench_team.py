#!/usr/bin/env python3
"""A team of N developers in one project, simulated under Pulumi mocks (tests/infra/team.py): for N = 10, 100 and
1,000 (or the N given as arguments), the resources per stack and what the project consumes against its default
quotas, with a team (one shared network and SSH rule, `offload:team`) and, as the baseline in the same run, with
every stack making its own network. Also checks that all names are unique and that no declared IAM binding gives
a developer any permission on another developer's instance.

    .venv/bin/python benchmarks/bench_team.py [N ...]
"""

from __future__ import annotations

import sys

import bench_common  # noqa: F401  (puts the project on sys.path)
from tests.infra.team import DEFAULT_QUOTAS, simulate  # noqa: E402


def main(sizes: list[int]) -> int:
    ok = True
    rows = []
    for n in sizes:
        for team in (False, True):
            sim = simulate(n, team=team)
            dupes, crossing = sim.duplicate_names(), sim.cross_grants()
            ok = ok and not dupes and not crossing and not sim.problems
            rows.append((n, team, sim, dupes, crossing))
            print(f"N={n:>5} {'team ' if team else 'alone'}: built in {sim.seconds:6.1f} s; "
                  f"{len(sim.declared)} resources; duplicate names: {sum(len(v) for v in dupes.values())}; "
                  f"cross-developer grants: {len(crossing)}; walk problems: {len(sim.problems)}", flush=True)
    quotas = list(DEFAULT_QUOTAS)
    print()
    print("| N | network | resources per stack | " + " | ".join(quotas) + " |")
    print("|---|---|---|" + "---|" * len(quotas))
    print("| default quota | | | " + " | ".join(str(DEFAULT_QUOTAS[q]) for q in quotas) + " |")
    for n, team, sim, _, _ in rows:
        used = sim.consumption()
        cells = [f"**{used[q]}**" if used[q] > DEFAULT_QUOTAS[q] else str(used[q]) for q in quotas]
        print(f"| {n} | {'team' if team else 'its own'} | {sim.per_stack:.0f} | " + " | ".join(cells) + " |")
    print()
    for n, team, sim, _, _ in rows:
        if team:
            print(f"N={n}: every developer holds on the project only: {', '.join(sorted(sim.project_wide()))}")
            break
    print("bold: over the default quota. all names unique and no cross-developer grant:", "yes" if ok else "NO")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main([int(a) for a in sys.argv[1:]] or [10, 100, 1000]))
