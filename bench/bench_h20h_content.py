"""`selectors.content_rows` (one ``fetchall`` per table) against the same rows read through
Django's queryset iteration (``fetchmany(100)``), in one process on a copy of a world
`bench/bench_curation_scale.py --world` wrote, alternated, CPU and wall per round; the
answers compared.

    python bench/bench_h20h_content.py --world var/s9-world940k --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import fields

from _harness import kept_world


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", required=True)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with kept_world(args.world, prefix="h20h-content-", migrate=True) as project_id:
        run(project_id, args.rounds)


def run(project_id: int, rounds: int) -> None:
    from annotate.models import Candidate, Project, Prompt
    from curation import exporting as E
    from curation import selectors

    project = Project.objects.get(pk=project_id)
    ctype, ptype = E.SnapshotCandidate, E.SnapshotPrompt

    def iterated():
        cf = [f.name for f in fields(ctype)]
        pf = [f.name for f in fields(ptype)]
        make = selectors.frozen_instance
        return (
            {
                r[0]: make(ctype, zip(cf, r, strict=True))
                for r in Candidate.objects.filter(project=project).order_by("id").values_list(*cf)
            },
            {
                r[0]: make(ptype, zip(pf, r, strict=True))
                for r in Prompt.objects.filter(project=project).values_list(*pf)
            },
        )

    def fetched():
        return selectors.content_rows(project=project, candidate_type=ctype, prompt_type=ptype)

    ways = {"fetchmany (queryset)": iterated, "fetchall (content_rows)": fetched}
    spent: dict[str, list[tuple[float, float]]] = {k: [] for k in ways}
    answers = {}
    for r in range(rounds):
        for name in ways if r % 2 == 0 else list(ways)[::-1]:
            t0, c0 = time.perf_counter(), time.process_time()
            got = ways[name]()
            spent[name].append((time.process_time() - c0, time.perf_counter() - t0))
            answers.setdefault(name, got)
            del got
    first, second = answers.values()
    same = all(
        list(a) == list(b) and all(a[k].__dict__ == b[k].__dict__ for k in a)
        for a, b in zip(first, second, strict=True)
    )
    print(f"{len(first[0]):,} candidates, {len(first[1]):,} prompts; load {os.getloadavg()[0]:.1f}")
    for name, runs in spent.items():
        print(
            f"{name}: median {statistics.median(c for c, _ in runs):.2f} s CPU, "
            f"{statistics.median(w for _, w in runs):.2f} s wall (rounds {len(runs)})"
        )
    print(f"same rows, same order, same fields: {same}")


if __name__ == "__main__":
    main()
