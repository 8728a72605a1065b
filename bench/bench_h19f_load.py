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
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def child(code: Path, world: Path, loads: int) -> None:
    sys.path.insert(0, str(code))
    os.chdir(code)
    data = Path(tempfile.mkdtemp(prefix="h19f-load-"))
    try:
        shutil.copytree(world, data, dirs_exist_ok=True)
        project_id = json.loads((data / "setup.json").read_text())["project"]
        os.environ["QUORUM_DATA_DIR"] = str(data)
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
        import django

        django.setup()
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
    finally:
        shutil.rmtree(data, ignore_errors=True)


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
    codes = [("before", Path(args.before).resolve()), ("after", REPO)]
    cpu: dict[str, list[float]] = {"before": [], "after": []}
    digests = set()
    print(f"load average {os.getloadavg()[0]:.1f}", flush=True)
    for r in range(args.rounds):
        for label, code in codes if r % 2 == 0 else codes[::-1]:
            out = (
                subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--world",
                        str(world),
                        "--before",
                        args.before,
                        "--loads",
                        str(args.loads),
                        "--child",
                        str(code),
                    ],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                .stdout.strip()
                .splitlines()[-1]
            )
            got = json.loads(out)
            cpu[label] += got["cpu"]
            digests.add(got["digest"])
            print(label, [round(c, 3) for c in got["cpu"]], got["digest"], flush=True)
    print(f"load average {os.getloadavg()[0]:.1f}; votes digests equal: {len(digests) == 1}")
    b, a = cpu["before"], cpu["after"]
    print(
        f"project_data CPU: before {min(b):.3f} s fastest / {statistics.median(b):.3f} median, "
        f"after {min(a):.3f} / {statistics.median(a):.3f}; after/before "
        f"{min(a) / min(b):.2f}x fastest, {statistics.median(a) / statistics.median(b):.2f}x median"
    )


if __name__ == "__main__":
    main()
