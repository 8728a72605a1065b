"""The demo projects' scoring path as ``make demo`` sets it up, against the bare forward pass.

What a ``gpu`` worker runs for a demo project's first scoring run after ``make demo``: the demo
model loaded from its checkpoint (``load_reward_model``: the demo shape, a tokenizer trained on
the demo corpus, media answers read out from their visual tokens, the demo's media budgets),
its media already in the media store (the demo model's held-out evaluation wrote them, 46d35ff),
the worker's defaults (two prefetch threads, no decoding processes, no row-building processes,
torch's own threads, ``OMP_WAIT_POLICY=PASSIVE``), one ``RewardScorer.score`` call per job of
16 prompts. Measured per demo project (VQA ranking, text-to-image ranking, text-to-video
pairwise), in the same process and alternated:

- bare: the same rows built beforehand, ``collate`` + the forward passes (what
  bench_worker_scoring.py calls the bare forward);
- stored: ``score(items)`` with the process's media cache emptied and the store filled (the
  worker's path after ``make demo``);
- warm (``--warm``): the same again, the media in the process's cache.

Each leg runs in a fresh interpreter on one tree's code (``--against TREE`` alternates this
tree and TREE, ABAB), wall and CPU (all threads) medians per leg, ratio bare / path. The world
and the checkpoint are built once, by this tree, and read by every leg. ``--scores-out DIR``
writes each leg's scores (float hex) and says whether the trees' scores are bit-identical::

    PYTHONPATH=. python bench/bench_h19d_stored.py --rounds 3
    PYTHONPATH=. python bench/bench_h19d_stored.py --against var/h19d-base --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
PROMPTS_PER_BATCH = 16  # workers/scoring.py


def _prepare(root: Path, prompts: int) -> None:
    """The demo world and a demo-shaped checkpoint (random weights, the demo's recipe for
    the tokenizer, head and budgets), saved as train_demo_model saves its model."""
    from annotate.demo_world import generate_world, write_world
    from workers.demo_model import LIMITS, examples_from_world, widen_merger
    from workers.reward_model import RewardHeadConfig
    from workers.tiny import build_tiny_reward_scorer, build_tiny_tokenizer

    world = root / "world"
    write_world(generate_world(seed=7, scale="small", prompts=prompts), world)
    corpus = []
    for _, example in examples_from_world(world):
        corpus.append(example.item.prompt_text)
        corpus += [c.text for c in example.item.candidates if c.text]
    scorer = build_tiny_reward_scorer(
        hidden_size=64,
        num_layers=2,
        seed=0,
        tokenizer=build_tiny_tokenizer(corpus, vocab_size=1024),
        head_config=RewardHeadConfig(media_repr_mode="visual_prompt"),
        **LIMITS,
    )
    widen_merger(scorer, std=0.2, seed=0)
    scorer.save(root / "model")


def _timed(run) -> tuple[float, float]:  # noqa: ANN001
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - wall, time.process_time() - cpu


def _leg(root: Path, repeats: int, warm: bool, scores_out: Path | None) -> dict:
    """One leg, in this interpreter, on the code sys.path finds first."""
    import torch

    from workers.demo_model import examples_from_world
    from workers.media import DecodePool
    from workers.reward_model import load_reward_model
    from workers.reward_model.media_cache import MediaStore

    scorer = load_reward_model(root / "model", device="cpu")
    builder = scorer.builder
    builder.decode_pool = DecodePool(0)  # QUORUM_DECODE_PROCESSES's default
    store = Path(tempfile.mkdtemp(prefix="h19d-store-", dir=root))
    builder.media_store = MediaStore(store)
    items_by_project: dict[str, list] = {}
    for name, example in examples_from_world(root / "world"):
        items_by_project.setdefault(name, []).append(example.item)
    out: dict = {"threads": torch.get_num_threads(), "projects": {}}
    scores: dict[str, list] = {}
    for name, items in items_by_project.items():
        batches = [
            items[i : i + PROMPTS_PER_BATCH] for i in range(0, len(items), PROMPTS_PER_BATCH)
        ]
        first = [r for batch in batches for r in scorer.score(batch)]  # fills the store
        rows: dict[str, list] = {}
        for index, item in enumerate(items):
            plan = builder.plan(index, builder.encode_item(item), "packed")
            key = "isolated" if plan.layout == "isolated" else "packed"
            rows.setdefault(key, []).extend(plan.rows)

        def bare() -> None:
            with torch.inference_mode():
                for mode, mode_rows in rows.items():  # noqa: B023
                    for group in scorer._batches(mode_rows, mode):
                        scorer.model(builder.collate(group, mode).to(scorer.device))

        results: list = []

        def path(results: list = results) -> None:
            results.clear()
            for batch in batches:  # noqa: B023
                results.extend(scorer.score(batch))

        bare()  # warm-up
        table: dict[str, list[tuple[float, float]]] = {"bare": [], "stored": [], "warm": []}
        for _ in range(repeats):
            table["bare"].append(_timed(bare))
            builder.media_cache.clear()
            table["stored"].append(_timed(path))
            stored_results = list(results)
            if warm:
                table["warm"].append(_timed(path))
        got = [[float(s) if s is not None else None for s in r.scores] for r in stored_results]
        assert got == [[float(s) if s is not None else None for s in r.scores] for r in first]
        scores[name] = [[s.hex() if s is not None else None for s in r] for r in got]
        out["projects"][name] = {
            mode: {
                "wall": statistics.median(v[0] for v in values) / len(items),
                "cpu": statistics.median(v[1] for v in values) / len(items),
            }
            for mode, values in table.items()
            if values
        }
        out["projects"][name]["prompts"] = len(items)
    if scores_out is not None:
        scores_out.write_text(json.dumps(scores, indent=1))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=16, help="per demo project")
    parser.add_argument("--repeats", type=int, default=5, help="per leg, medians")
    parser.add_argument("--rounds", type=int, default=3, help="legs per tree")
    parser.add_argument("--against", type=Path, help="another tree (a worktree), alternated")
    parser.add_argument("--warm", action="store_true", help="also the warm-cache path")
    parser.add_argument("--scores-out", type=Path, help="write each leg's scores here")
    parser.add_argument("--leg", type=Path, help=argparse.SUPPRESS)  # child: the prepared root
    parser.add_argument("--leg-scores", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.leg is not None:
        print(json.dumps(_leg(args.leg, args.repeats, args.warm, args.leg_scores)))
        return
    trees = [("this", HERE)] + ([("base", args.against.resolve())] if args.against else [])
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # config/celery.py's setting
    with tempfile.TemporaryDirectory(prefix="h19d-bench-") as tmp:
        root = Path(tmp)
        sys.path.insert(0, str(HERE))
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
        _prepare(root, args.prompts)
        legs: dict[str, list[dict]] = {label: [] for label, _ in trees}
        if args.scores_out:
            args.scores_out.mkdir(parents=True, exist_ok=True)
        for round_ in range(args.rounds):
            order = trees if round_ % 2 == 0 else trees[::-1]
            for label, tree in order:
                command = [
                    sys.executable,
                    str(HERE / "bench" / "bench_h19d_stored.py"),
                    f"--leg={root}",
                    f"--repeats={args.repeats}",
                ]
                if args.warm:
                    command.append("--warm")
                if args.scores_out:
                    command.append(f"--leg-scores={args.scores_out / f'{label}-{round_}.json'}")
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
                leg["load"] = load
                legs[label].append(leg)
                cells = []
                for name, figures in leg["projects"].items():
                    bare = figures["bare"]
                    for mode in ("stored", "warm"):
                        if mode in figures:
                            cells.append(
                                f"{name[:14]} {mode} wall {bare['wall'] / figures[mode]['wall']:.2f}x"
                                f" cpu {bare['cpu'] / figures[mode]['cpu']:.2f}x"
                                f" ({1e3 * figures[mode]['cpu']:.2f} / bare {1e3 * bare['cpu']:.2f} ms)"
                            )
                print(
                    f"round {round_ + 1} {label} (load {load:.1f}): " + "; ".join(cells), flush=True
                )
        print("\nmedians over legs, ratio bare / path (per prompt ms: path / bare), CPU then wall")
        for label, runs in legs.items():
            for name in runs[0]["projects"]:
                for mode in ("stored", "warm"):
                    if mode not in runs[0]["projects"][name]:
                        continue
                    line = []
                    for clock in ("cpu", "wall"):
                        ratios = [
                            r["projects"][name]["bare"][clock] / r["projects"][name][mode][clock]
                            for r in runs
                        ]
                        ms = statistics.median(1e3 * r["projects"][name][mode][clock] for r in runs)
                        bare_ms = statistics.median(
                            1e3 * r["projects"][name]["bare"][clock] for r in runs
                        )
                        line.append(
                            f"{clock} {statistics.median(ratios):.2f}x"
                            f" [{' '.join(f'{x:.2f}' for x in ratios)}] ({ms:.2f} / {bare_ms:.2f})"
                        )
                    print(f"{label:5} {name:28} {mode:6} " + "; ".join(line))
        if args.scores_out and args.against:
            first = {p.read_text() for p in args.scores_out.glob("*.json")}
            print(f"\nscores: {len(first)} distinct score files over all legs (1: bit-identical)")


if __name__ == "__main__":
    main()
