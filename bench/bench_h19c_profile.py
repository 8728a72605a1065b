"""Where the CPU of flags + denoised export goes at MR2Bench scale, in one process: the flags
pass (`services.flags_recompute`, its phases) then the denoised export (`services.export_build`:
`_snapshot_input`, `build_snapshot`, `write_snapshot`), each timed in CPU and wall, optionally
under cProfile (the top functions by own and cumulative time printed per step).

    python bench/bench_h19c_profile.py --world var/h19c-world94k [--profile] [--top 40]

``--world``: a folder `bench/bench_curation_scale.py --repeat 0 --world ...` wrote (SQLite); it
is copied, never changed. CPU counts every thread of the process.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import time

from _harness import kept_world


class _Clock:
    """Wraps functions of a module so each call's CPU and wall are summed by name."""

    def __init__(self) -> None:
        self.spent: dict[str, list[float]] = {}

    def wrap(self, module, name: str, label: str) -> None:
        original = getattr(module, name)

        def timed(*args, **kwargs):
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                return original(*args, **kwargs)
            finally:
                cell = self.spent.setdefault(label, [0.0, 0.0])
                cell[0] += time.process_time() - c0
                cell[1] += time.perf_counter() - t0

        setattr(module, name, timed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", required=True)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--top", type=int, default=35)
    args = parser.parse_args()

    with kept_world(args.world, prefix="h19c-profile-", migrate=True) as project_id:
        run(project_id, args)


def run(project_id: int, args: argparse.Namespace) -> None:
    from annotate.models import Project
    from curation import consensus as C
    from curation import crowd_bt as CB
    from curation import exporting as E
    from curation import selectors, services

    clock = _Clock()
    clock.wrap(services, "_snapshot_input", "export: _snapshot_input")
    clock.wrap(E, "build_snapshot", "export: build_snapshot")
    clock.wrap(E, "write_snapshot", "export: write_snapshot")
    clock.wrap(C, "evaluator_quality", "flags: evaluator_quality")
    clock.wrap(CB, "fit_crowd_bt", "fit_crowd_bt (any caller)")
    clock.wrap(selectors, "project_data", "project_data (both)")
    load = os.getloadavg()[0]
    steps = {}
    profiles = {}

    def step(label, call):
        profiler = cProfile.Profile() if args.profile else None
        t0, c0 = time.perf_counter(), time.process_time()
        if profiler:
            profiler.enable()
        result = call()
        if profiler:
            profiler.disable()
            profiles[label] = profiler
        steps[label] = (time.process_time() - c0, time.perf_counter() - t0)
        return result

    flags = step("flags_recompute", lambda: services.flags_recompute(project_id=project_id))
    project = Project.objects.get(pk=project_id)
    export = services.export_create(
        project=project, options={"splits": {"train": 0.9, "test": 0.1}}, enqueue=False
    )
    step("denoised export", lambda: services.export_build(export_id=export.pk))
    print(f"load average {load:.1f} -> {os.getloadavg()[0]:.1f}")
    for label, (cpu, wall) in steps.items():
        print(f"{label}: {cpu:.2f} s CPU, {wall:.2f} s wall")
    print(f"flags phases (wall): {flags['seconds']}")
    for label, (cpu, wall) in clock.spent.items():
        print(f"  {label}: {cpu:.2f} s CPU, {wall:.2f} s wall")
    total = sum(c for c, _ in steps.values())
    print(
        f"flags + denoised export: {total:.2f} s CPU, {sum(w for _, w in steps.values()):.2f} s wall"
    )
    for label, profiler in profiles.items():
        for order in ("tottime", "cumulative"):
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats(order).print_stats(args.top)
            print(f"\n===== {label}, by {order}")
            print("\n".join(out.getvalue().splitlines()[6:]))


if __name__ == "__main__":
    main()
