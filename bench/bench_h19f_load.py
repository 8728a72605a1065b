"""The flags pass's loading (`selectors.project_data` as `flags_recompute` calls it, not
shared) of a kept world, in fresh processes alternating two codes (ABAB): CPU of each
load, fastest and median per code; the loaded votes' digest must be equal.

    python bench/bench_h19f_load.py --world var/h19f-world94k --before var/h19f-base \
        [--rounds 3] [--loads 4]

``--before``: a folder with another commit's code (a git worktree); the working tree is
the other code.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

from _harness import before_after_children, before_after_cpu, kept_world


def child(code: Path, world: Path, loads: int) -> None:
    with kept_world(world, prefix="h19f-load-", code=code) as project_id:
        from annotate.models import Project
        from curation import selectors

        project = Project.objects.get(pk=project_id)
        cpu = []
        for _ in range(loads):
            c0 = time.process_time()
            got = selectors.project_data(project=project, with_times=False, with_candidates=False)
            cpu.append(time.process_time() - c0)
        digest = hashlib.sha256(
            repr([sorted(v.__dict__.items()) for v in got.votes]).encode()
        ).hexdigest()[:16]
        print(json.dumps({"cpu": cpu, "digest": digest, "votes": len(got.votes)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", required=True)
    parser.add_argument("--before", required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--loads", type=int, default=4)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    world = Path(args.world).resolve()
    if args.child:
        return child(Path(args.child), world, args.loads)
    cpu: dict[str, list[float]] = {"before": [], "after": []}
    digests = set()
    print(f"load average {os.getloadavg()[0]:.1f}", flush=True)
    command = [sys.executable, __file__, "--world", str(world), "--before", args.before]
    command += ["--loads", str(args.loads)]
    for label, got in before_after_children(args.before, args.rounds, command):
        cpu[label] += got["cpu"]
        digests.add(got["digest"])
        print(label, [round(c, 3) for c in got["cpu"]], got["digest"], flush=True)
    print(f"load average {os.getloadavg()[0]:.1f}; votes digests equal: {len(digests) == 1}")
    print("project_data CPU: " + before_after_cpu(cpu["before"], cpu["after"]))


if __name__ == "__main__":
    main()
