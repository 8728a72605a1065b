"""Wall and CPU of the flags pass (`curation.services.flags_recompute`) with the joint fit's
batches worked whole on one core and split in halves on two (`crowd_bt._by_halves`),
alternated in one process on one copy of a `bench_curation_scale` world; each pass's stored
annotator quality and flags compared row for row (every field) with the first pass's.

    python bench/bench_h18e_flags_wall.py --world /tmp/h18e-data/world94k [--repeat 3]

``--world``: a folder `bench/bench_curation_scale.py --repeat 0 --world ...` wrote (SQLite).
The fit kept by a pass is removed before the next, so every pass fits; the votes loaded by the
first pass are reused by the next ones (`selectors.project_data(shared=True)`), so the
``load`` phase is the first pass's only. CPU counts every thread of the process.
"""

from __future__ import annotations

import argparse
import os
import time

from _harness import kept_world


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", required=True)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    with kept_world(args.world, prefix="h18e-flags-", migrate=True) as project_id:
        run(project_id, args.repeat)


def _stored(project_id: int) -> tuple[list, list]:
    from curation.models import AnnotatorQuality, Flag

    quality = list(
        AnnotatorQuality.objects.filter(project_id=project_id)
        .order_by("evaluator")
        .values_list(
            "evaluator",
            "n_judgments",
            "agreement",
            "loo_agreement",
            "gold_accuracy",
            "weight",
            "eta",
            "shown_first",
            "n_separable",
            "bias_p",
            "favoured_slot",
            "anomalous",
        )
    )
    flags = list(
        Flag.objects.filter(project_id=project_id)
        .order_by("kind", "key")
        .values_list("kind", "key", "status", "severity", "evidence", "details")
    )
    return quality, flags


def run(project_id: int, repeat: int) -> None:
    from curation import crowd_bt as CB
    from curation import selectors, services

    available = CB.available_cores
    modes = {"one core": lambda: 1, "halves": available}
    cache = selectors.joint_fit_cache(project_id)
    walls: dict[str, list[tuple[float, float, float]]] = {mode: [] for mode in modes}
    reference = None
    for rep in range(repeat):
        order = list(modes) if rep % 2 == 0 else list(modes)[::-1]
        for mode in order:
            CB.available_cores = modes[mode]
            cache.unlink(missing_ok=True)
            load = os.getloadavg()[0]
            t0, c0 = time.perf_counter(), time.process_time()
            result = services.flags_recompute(project_id=project_id)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            annotators = result["seconds"]["annotators"]
            walls[mode].append((wall, cpu, annotators))
            stored = _stored(project_id)
            if reference is None:
                reference = stored
            same = stored == reference
            print(
                f"{mode}: pass {wall:.2f} s wall, {cpu:.2f} s CPU; annotators phase"
                f" {annotators:.2f} s wall; load average {load:.1f} -> {os.getloadavg()[0]:.1f};"
                f" quality and flags as the first pass's: {same}",
                flush=True,
            )
            assert same, f"{mode}: stored quality or flags differ"
    CB.available_cores = available
    base = min(w[2] for w in walls["one core"])
    for mode, values in walls.items():
        best = min(w[2] for w in values)
        print(
            f"{mode}: fastest of {repeat}: annotators phase {best:.2f} s wall"
            f" ({best / base:.2f}x one core), pass {min(w[0] for w in values):.2f} s wall,"
            f" {min(w[1] for w in values):.2f} s CPU"
        )


if __name__ == "__main__":
    main()
