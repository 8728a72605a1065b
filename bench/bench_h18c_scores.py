"""Scores of the demo projects through the workers' path (prefetch threads + decoding pool,
first run, media store on), written as JSON: run it in two trees and compare them
(``--compare A B`` prints the largest absolute difference and whether they are bit-identical).

    python bench/bench_h18c_scores.py --out /tmp/now.json [--shape demo] [--limits demo]
    (cd var/h18c-base && python ../../bench/bench_h18c_scores.py --out /tmp/base.json)
    python bench/bench_h18c_scores.py --compare /tmp/base.json /tmp/now.json
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import struct
import sys
import tempfile
from pathlib import Path

# The tree whose code is measured: the working directory (run it from either tree).
sys.path.insert(0, os.getcwd())


def _score(args: argparse.Namespace) -> None:
    import torch

    from annotate.demo_world import generate_world, write_world
    from bench.bench_worker_scoring import LARGE_LIMITS
    from workers.demo_model import LIMITS, examples_from_world, train_demo_model
    from workers.media import DecodePool
    from workers.reward_model import RewardHeadConfig, RewardScorer
    from workers.reward_model.media_cache import MediaCache, MediaStore
    from workers.tiny import build_tiny_reward_scorer, build_tiny_tokenizer

    torch.set_num_threads(1)
    out: dict[str, list] = {}
    with tempfile.TemporaryDirectory() as tmp:
        world = Path(tmp) / "world"
        write_world(generate_world(seed=7, scale="small", prompts=args.prompts), world)
        head: dict = {}
        if args.shape == "demo":
            defaults = inspect.signature(train_demo_model).parameters
            shape = {
                "hidden_size": defaults["hidden_size"].default,
                "num_layers": defaults["num_layers"].default,
            }
            head["head_config"] = RewardHeadConfig(
                media_repr_mode=defaults["media_repr_mode"].default
            )
        else:
            shape = {"hidden_size": 64, "num_layers": 1}
        limits = LARGE_LIMITS if args.limits == "large" else LIMITS
        base = build_tiny_reward_scorer(
            tokenizer=build_tiny_tokenizer(), device="cpu", seed=3, **shape, **head, **limits
        )
        pool = DecodePool(2)
        base.builder.decode_pool = pool
        scorer = RewardScorer(base.model, base.builder, device="cpu", prefetch_workers=2)
        items: dict[str, list] = {}
        for name, example in examples_from_world(world):
            items.setdefault(name, []).append(example.item)
        for run in ("first", "stored"):
            if run == "first":
                base.builder.media_store = MediaStore(Path(tmp) / "store")
            base.builder.media_cache = MediaCache(base.builder.media_cache.max_bytes)
            for name, project_items in items.items():
                results = scorer.score(project_items)
                out[f"{run}: {name}"] = [
                    [None if s is None else struct.pack("<d", s).hex() for s in r.scores]
                    for r in results
                ]
        pool.shutdown()
    Path(args.out).write_text(json.dumps(out, indent=0))


def _compare(a: str, b: str) -> None:
    left, right = json.loads(Path(a).read_text()), json.loads(Path(b).read_text())
    assert left.keys() == right.keys(), "different projects"
    worst, scores, same = 0.0, 0, True
    for key in left:
        for x, y in zip(left[key], right[key], strict=True):
            for s, t in zip(x, y, strict=True):
                if s is None or t is None:
                    same &= s == t
                    continue
                u, v = (
                    struct.unpack("<d", bytes.fromhex(s))[0],
                    struct.unpack("<d", bytes.fromhex(t))[0],
                )
                worst, scores, same = max(worst, abs(u - v)), scores + 1, same and s == t
    print(f"{scores} scores, max abs difference {worst:.3g}, bit-identical: {same}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out")
    parser.add_argument("--compare", nargs=2)
    parser.add_argument("--prompts", type=int, default=6)
    parser.add_argument("--shape", choices=("small", "demo"), default="small")
    parser.add_argument("--limits", choices=("demo", "large"), default="large")
    args = parser.parse_args()
    if args.compare:
        _compare(*args.compare)
    else:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        _score(args)


if __name__ == "__main__":
    main()
