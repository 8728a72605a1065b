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
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def child(code: Path, world: Path, runs: int) -> None:
    sys.path.insert(0, str(code))
    os.chdir(code)
    data = Path(tempfile.mkdtemp(prefix="h20d-quality-"))
    try:
        shutil.copytree(world, data, dirs_exist_ok=True)
        project_id = json.loads((data / "setup.json").read_text())["project"]
        os.environ["QUORUM_DATA_DIR"] = str(data)
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
        import django

        django.setup()
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
    finally:
        shutil.rmtree(data, ignore_errors=True)


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
    codes = [("before", Path(args.before).resolve()), ("after", REPO)]
    cpu: dict[str, list[float]] = {"before": [], "after": []}
    digests = set()
    print(f"load average {os.getloadavg()[0]:.1f}", flush=True)
    for r in range(args.rounds):
        for label, code in codes if r % 2 == 0 else codes[::-1]:
            command = [sys.executable, __file__, "--world", str(world), "--before", args.before]
            command += ["--runs", str(args.runs), "--child", str(code)]
            out = subprocess.run(command, check=True, capture_output=True, text=True)
            got = json.loads(out.stdout.strip().splitlines()[-1])
            cpu[label] += got["cpu"]
            digests.add(got["digest"])
            print(label, [round(c, 3) for c in got["cpu"]], got["digest"], flush=True)
    print(f"load average {os.getloadavg()[0]:.1f}; answers' digests equal: {len(digests) == 1}")
    b, a = cpu["before"], cpu["after"]
    print(
        f"CPU: before {min(b):.3f} s fastest / {statistics.median(b):.3f} median, "
        f"after {min(a):.3f} / {statistics.median(a):.3f}; after/before "
        f"{min(a) / min(b):.2f}x fastest, {statistics.median(a) / statistics.median(b):.2f}x median"
    )


if __name__ == "__main__":
    main()
