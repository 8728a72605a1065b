"""tests/media_fixtures.py's mp4_bytes() repeated: how many different byte strings N encodes
give, and CPU / wall time per encode, for this tree and another tree's worktree, legs
alternated (ABAB) in fresh interpreters.

    PYTHONPATH=. .venv/bin/python bench/bench_h19e_mp4_repeat.py --against var/h19e-base \\
        --encodes 2000 --rounds 2

Each leg encodes the shapes the tests use (the default clip, 16 px x 4 frames, 64 px x 48
frames) ``--encodes`` times each (the encode itself: a tree's ``_encode_mp4`` where mp4_bytes
keeps its clips) and prints, per shape, the distinct SHA-256 digests (the encodes that gave a
minority digest), CPU ms and wall ms per encode, and the CPU per mp4_bytes() call over
``--calls`` calls (a fixture naming a clip again); then per-round base/this ratios and the
load average. ``--save DIR`` writes each distinct clip.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

SHAPES = {
    "default": {},
    "16px-4f": {"frames": 4, "size": 16},
    "64px-48f": {"frames": 48, "size": 64},
}

LEG = r"""
import hashlib, json, sys, time
sys.path.insert(0, sys.argv[1])
from tests import media_fixtures as mf
shapes, n, save, calls = json.loads(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
# The encode itself: this tree's _encode_mp4 (mp4_bytes keeps its clips), or mp4_bytes.
if hasattr(mf, "_encode_mp4"):
    def encode(frames=12, size=32, color=(30, 30, 200)):
        return mf._encode_mp4(frames, size, color)
else:
    encode = mf.mp4_bytes
out = {}
for name, kwargs in shapes.items():
    digests = {}
    cpu, wall = time.process_time(), time.perf_counter()
    for i in range(n):
        data = encode(**kwargs)
        digest = hashlib.sha256(data).hexdigest()
        if save and digest not in digests:
            with open(f"{save}/{name}-{digest[:16]}.mp4", "wb") as fh:
                fh.write(data)
        digests.setdefault(digest, []).append(i)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    # What a test pays per mp4_bytes() call of a clip it names more than once.
    fixture = time.process_time()
    for _ in range(calls):
        mf.mp4_bytes(**kwargs)
    fixture = time.process_time() - fixture
    out[name] = {
        "distinct": len(digests),
        "odd": {d[:16]: at[:5] for d, at in digests.items() if len(at) < n / 2},
        "cpu_ms": cpu / n * 1000,
        "wall_ms": wall / n * 1000,
        "call_ms": fixture / calls * 1000,
        "digest": max(digests, key=lambda d: len(digests[d]))[:16],
    }
print(json.dumps(out))
"""


def leg(tree: Path, encodes: int, calls: int, save: Path | None = None) -> dict:
    args = [str(tree), json.dumps(SHAPES), str(encodes), str(save or ""), str(calls)]
    done = subprocess.run(
        [sys.executable, "-c", LEG, *args],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", type=Path, required=True, help="the base tree")
    parser.add_argument("--encodes", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--calls", type=int, default=200, help="mp4_bytes() calls per shape")
    parser.add_argument("--save", type=Path, help="write each distinct clip here, per leg")
    args = parser.parse_args()
    here = Path(__file__).resolve().parent.parent
    trees = {"base": args.against.resolve(), "this": here}
    for round_no in range(1, args.rounds + 1):
        results = {}
        for name in ("base", "this") if round_no % 2 else ("this", "base"):
            save = None
            if args.save:
                save = args.save.resolve() / f"round{round_no}-{name}"
                save.mkdir(parents=True, exist_ok=True)
            results[name] = leg(trees[name], args.encodes, args.calls, save)
            for shape, r in results[name].items():
                print(
                    f"round {round_no} {name:4} {shape:9} distinct {r['distinct']} "
                    f"encode cpu {r['cpu_ms']:.2f} ms wall {r['wall_ms']:.2f} ms, "
                    f"mp4_bytes() call cpu {r['call_ms']:.3f} ms, digest {r['digest']}"
                    + (f" odd (digest: encodes) {r['odd']}" if r["odd"] else "")
                )
        for shape in SHAPES:
            base, this = results["base"][shape], results["this"][shape]
            print(
                f"round {round_no} {shape:9} base/this encode cpu {base['cpu_ms'] / this['cpu_ms']:.2f}x "
                f"wall {base['wall_ms'] / this['wall_ms']:.2f}x, call cpu "
                f"{base['call_ms'] / this['call_ms']:.0f}x, same bytes "
                f"{base['digest'] == this['digest']}"
            )
        print(f"round {round_no} load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
