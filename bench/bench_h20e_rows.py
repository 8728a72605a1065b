"""Building the demo projects' rows: the chat template rendered per row, or joined from its skeleton.

The demo world and checkpoint of ``bench_h19d_stored.py`` (built once), the media encoded
beforehand; per demo project, CPU per prompt of what a prefetch thread runs after the media:
``builder.plan`` (two renders, two tokenisations, expansion), and of the two renders alone,
with ``chat_skeletons`` on and off alternated in one process (ABAB, medians of rounds). The
rows of both are compared (ids, segments, read-out slots) and must be equal::

    PYTHONPATH=. python bench/bench_h20e_rows.py --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=16, help="per demo project")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--loops", type=int, default=20, help="passes over a project per timing")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(HERE.parent))
    from bench_h19d_stored import _prepare

    from workers.demo_model import examples_from_world
    from workers.reward_model import load_reward_model

    with tempfile.TemporaryDirectory(prefix="h20e-rows-") as tmp:
        root = Path(tmp)
        _prepare(root, args.prompts)
        builder = load_reward_model(root / "model", device="cpu").builder
        projects: dict[str, list] = {}
        for name, example in examples_from_world(root / "world"):
            projects.setdefault(name, []).append(builder.encode_item(example.item))

    def plan(items: list) -> list:
        return [builder.plan(i, item, "packed").rows for i, item in enumerate(items)]

    def render(items: list) -> None:
        for item in items:
            builder.render(item, None)
            builder.render(item, [c.body for c in item.candidates])

    def timed(run, items: list, skeletons: bool) -> float:  # noqa: ANN001
        builder.chat_skeletons = skeletons
        builder._skeletons.clear()
        run(items)  # the skeletons derived, outside the timing
        start = time.process_time()
        for _ in range(args.loops):
            run(items)
        return (time.process_time() - start) / args.loops / len(items) * 1e6

    for name, items in projects.items():
        rows = {}
        for skeletons in (True, False):
            builder.chat_skeletons = skeletons
            builder._skeletons.clear()
            rows[skeletons] = [
                [(r.ids, r.segments, r.slots) for r in item_rows] for item_rows in plan(items)
            ]
        assert rows[True] == rows[False], f"{name}: rows differ"
        figures: dict[tuple[str, bool], list[float]] = {}
        for round_ in range(args.rounds):
            for skeletons in (True, False) if round_ % 2 == 0 else (False, True):
                for label, run in (("plan", plan), ("render x2", render)):
                    figures.setdefault((label, skeletons), []).append(timed(run, items, skeletons))
        cells = []
        for label in ("plan", "render x2"):
            before = statistics.median(figures[(label, False)])
            after = statistics.median(figures[(label, True)])
            cells.append(f"{label} {before:.0f} -> {after:.0f} us ({after / before:.2f}x)")
        print(f"{name:30} rows equal; CPU per prompt, template -> skeleton: " + "; ".join(cells))


if __name__ == "__main__":
    main()
