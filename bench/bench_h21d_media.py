"""The stored scoring path's input side alone: media from the store and rows, per demo prompt.

What bench_h19d_stored.py's "stored" leg spends beside the bare forward pass, measured without
the forward (whose rep-to-rep spread on a loaded machine hides a tenth of a millisecond): the
demo model's builder as ``make demo`` leaves it (media in the store, the process's media cache
emptied before each pass), per demo project:

- encode: ``encode_item`` of every prompt (the store's entries read and inflated, the files
  hashed, pictures and clips rescaled, normalised and patchified);
- prepare: ``prepare_item``, what a prefetch thread runs per prompt (encode + the rows).

CPU per prompt, median over passes, each leg a fresh interpreter on one tree's code
(``--against TREE`` alternates this tree and TREE, ABAB); the world and the checkpoint are
built once, by this tree (bench_h19d_stored's recipe). Each leg checks that its rows (ids,
segments, slots) and pixel values equal the first leg's, bit for bit::

    PYTHONPATH=. python bench/bench_h21d_media.py --against var/h21d-base --rounds 6
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def _leg(root: Path, passes: int) -> dict:
    """One leg, in this interpreter, on the code sys.path finds first."""
    from workers.demo_model import examples_from_world
    from workers.media import DecodePool
    from workers.reward_model import load_reward_model
    from workers.reward_model.inputs import _cat_pixels
    from workers.reward_model.media_cache import MediaStore
    from workers.reward_model.records import ScoringResult
    from workers.reward_model.row_building import prepare_item

    scorer = load_reward_model(root / "model", device="cpu")
    builder = scorer.builder
    builder.decode_pool = DecodePool(0)  # QUORUM_DECODE_PROCESSES's default
    builder.media_store = MediaStore(Path(tempfile.mkdtemp(prefix="h21d-store-", dir=root)))
    items_by_project: dict[str, list] = {}
    for name, example in examples_from_world(root / "world"):
        items_by_project.setdefault(name, []).append(example.item)
    out: dict = {"projects": {}, "digest": hashlib.blake2b()}
    for name, items in items_by_project.items():
        scorer.score(items)  # fills the store

        def prepared(items: list = items) -> list:
            builder.media_cache.clear()
            rows = []
            for index, item in enumerate(items):
                count = len(item.candidates)
                result = ScoringResult(scores=[None] * count, errors=[None] * count)
                rows.append(prepare_item(builder, item, index, "packed", result))
            return rows

        def encoded(items: list = items) -> None:
            builder.media_cache.clear()
            for item in items:
                builder.encode_item(item)

        for item_rows in prepared():
            for mode, mode_rows in sorted(item_rows.items()):
                for row in mode_rows:
                    out["digest"].update(repr((mode, row.ids, row.segments, row.slots)).encode())
                    if row.visuals:
                        out["digest"].update(_cat_pixels(row.visuals).numpy().tobytes())
        table: dict[str, list[float]] = {"encode": [], "prepare": []}
        for _ in range(passes):
            for label, run in (("encode", encoded), ("prepare", prepared)):
                cpu = time.process_time()
                run()
                table[label].append(time.process_time() - cpu)
        out["projects"][name] = {k: statistics.median(v) / len(items) for k, v in table.items()}
    out["digest"] = out["digest"].hexdigest()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=16, help="per demo project")
    parser.add_argument("--passes", type=int, default=25, help="per leg, median")
    parser.add_argument("--rounds", type=int, default=4, help="legs per tree")
    parser.add_argument("--against", type=Path, help="another tree (a worktree), alternated")
    parser.add_argument("--leg", type=Path, help=argparse.SUPPRESS)  # child: the prepared root
    args = parser.parse_args()
    if args.leg is not None:
        print(json.dumps(_leg(args.leg, args.passes)))
        return
    trees = [("this", HERE)] + ([("base", args.against.resolve())] if args.against else [])
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # config/celery.py's setting
    with tempfile.TemporaryDirectory(prefix="h21d-bench-") as tmp:
        root = Path(tmp)
        sys.path.insert(0, str(HERE))
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
        from bench.bench_h19d_stored import _prepare

        _prepare(root, args.prompts)
        legs: dict[str, list[dict]] = {label: [] for label, _ in trees}
        for round_ in range(args.rounds):
            for label, tree in trees if round_ % 2 == 0 else trees[::-1]:
                command = [sys.executable, str(HERE / "bench" / "bench_h21d_media.py")]
                command += [f"--leg={root}", f"--passes={args.passes}"]
                load = os.getloadavg()[0]
                done = subprocess.run(
                    command,
                    env={**env, "PYTHONPATH": str(tree)},
                    cwd=tree,
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if done.returncode:
                    sys.exit(f"leg {label} failed:\n{done.stderr[-4000:]}")
                leg = json.loads(done.stdout.strip().splitlines()[-1])
                legs[label].append(leg)
                cells = [
                    f"{name[6:20]} enc {1e3 * f['encode']:.3f} prep {1e3 * f['prepare']:.3f}"
                    for name, f in leg["projects"].items()
                ]
                print(f"round {round_ + 1} {label} (load {load:.1f}): " + "; ".join(cells))
        print("\nmedians over legs, CPU ms per prompt [per leg]")
        for label, runs in legs.items():
            for name in runs[0]["projects"]:
                cells = []
                for part in ("encode", "prepare"):
                    values = [1e3 * r["projects"][name][part] for r in runs]
                    shown = " ".join(f"{v:.3f}" for v in values)
                    cells.append(f"{part} {statistics.median(values):.3f} [{shown}]")
                print(f"{label:5} {name:28} " + "; ".join(cells))
        digests = {leg["digest"] for runs in legs.values() for leg in runs}
        print(f"\nrows and pixel values: {len(digests)} distinct over all legs (1: bit-identical)")


if __name__ == "__main__":
    main()
