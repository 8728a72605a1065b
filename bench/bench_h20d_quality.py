"""The flags pass's annotator checks without the joint fit (`selectors.live_votes`,
`consensus.evaluator_quality(..., joint=False)`, then `selectors.usable_votes_by_prompt` of
every prompt, as `services.flags_recompute` calls them) on a kept world, in fresh processes
alternating two codes (ABAB): CPU per run (records, memos and groupings rebuilt each time,
the cycle collector off as in the pass), fastest and median per code; the answers' digest
must be equal.

    python bench/bench_h20d_quality.py --world var/h20d-world94k --before var/h20d-base \
        [--rounds 4] [--runs 4]

``--before``: a folder with another commit's code (a git worktree); the working tree is
the other code.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import sys
import time
from pathlib import Path

from _harness import before_after_children, before_after_cpu, kept_world


def child(code: Path, world: Path, runs: int) -> None:
    with kept_world(world, prefix="h20d-quality-", code=code) as project_id:
        from annotate.models import Project
        from curation import agreement as A
        from curation import consensus as C
        from curation import selectors

        project = Project.objects.get(pk=project_id)
        data_ = selectors.project_data(project=project, with_times=False, with_candidates=False)
        cpu = []
        gc.disable()
        for _ in range(runs):
            for vote in data_.votes:  # records built again, as a fresh pass does
                vote.__dict__.pop("_record", None)
            for memo in (A._annotator_codes, A.annotator_reliability, A._pair_relations):
                memo.forget()
            A._pair_table.forget()
            data_._by_prompt = None
            c0 = time.process_time()
            live = selectors.live_votes(data_)
            quality = C.evaluator_quality(live, gold=data_.gold, joint=False)
            by_prompt = data_.votes_by_prompt()
            usable = selectors.usable_votes_by_prompt(data_, by_prompt, list(by_prompt))
            cpu.append(time.process_time() - c0)
        gc.enable()
        digest = hashlib.sha256(
            repr(
                (
                    sorted((e, sorted(q.__dict__.items())) for e, q in quality.items()),
                    sorted((p, [v.judgment_id for v in vs]) for p, vs in usable.items()),
                )
            ).encode()
        ).hexdigest()[:16]
        print(json.dumps({"cpu": cpu, "digest": digest, "evaluators": len(quality)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", required=True)
    parser.add_argument("--before", required=True)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    world = Path(args.world).resolve()
    if args.child:
        return child(Path(args.child), world, args.runs)
    cpu: dict[str, list[float]] = {"before": [], "after": []}
    digests = set()
    print(f"load average {os.getloadavg()[0]:.1f}", flush=True)
    command = [sys.executable, __file__, "--world", str(world), "--before", args.before]
    command += ["--runs", str(args.runs)]
    for label, got in before_after_children(args.before, args.rounds, command):
        cpu[label] += got["cpu"]
        digests.add(got["digest"])
        print(label, [round(c, 3) for c in got["cpu"]], got["digest"], flush=True)
    print(f"load average {os.getloadavg()[0]:.1f}; answers' digests equal: {len(digests) == 1}")
    print("CPU: " + before_after_cpu(cpu["before"], cpu["after"]))


if __name__ == "__main__":
    main()
