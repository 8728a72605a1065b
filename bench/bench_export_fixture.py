"""Digests of every file of a curated export, for byte-identity checks against another tree.

Imports two worlds into a fresh SQLite database under ``--data`` with ``--code``'s code (a git
worktree of another commit, or this tree), builds the curated export of each, denoised and
with denoising off, and writes ``--out`` (JSON): per export, every file's SHA-256, the files
that hold the build time (``datasheet.json``, ``datasheet.md``, ``hf/*/README.md``) with it
masked (as ``bench/bench_export_write.py`` compares them). The worlds:

- ``peer``: the peer benchmark's workload (``bench/peers/workload.py``), ``--tasks`` prompts
  of four text candidates, one ranking each by one annotator.
- ``crowd``: ``--tasks`` prompts of four candidates judged by five annotators, rankings and
  pairs mixed, ties, disagreement, an empty answer, an annotator who contradicts the others:
  overruled arcs, pairs dropped for no net preference or no content, agreement figures.

``tests/curation/test_export_reference_bytes.py`` holds the working tree's exports to the
digests this wrote with the start commit's code (``tests/curation/data/export_reference.json``):

    git worktree add --detach /tmp/h13x-base <commit>
    PYTHONHASHSEED=0 PYTHONPATH=. python bench/bench_export_fixture.py --code /tmp/h13x-base \\
        --data /tmp/h13x-fixture --out tests/curation/data/export_reference.json

``--keep`` leaves the export folders under ``--data`` (``<world>-<kind>/``).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
from pathlib import Path

from _harness import REPO, django_in, masked_digests

KINDS = {"denoised": {"denoise": True}, "raw": {"denoise": False}}


def crowd_rows(n_tasks: int, seed: int = 7) -> list[dict]:
    """``n_tasks`` prompts of four candidates, judged by five annotators (see the docstring)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n_tasks):
        pid = f"c{i}"
        ids = [f"{pid}-{c}" for c in "ABCD"]
        texts = [f'answer {c} of {i}: "quoted" \\ {rng.random():.3f}\tend' for c in "ABCD"]
        if i % 7 == 3:
            texts[2] = "   "  # no content: its pairs are dropped, its votes still count
        truth = ids[:]
        rng.shuffle(truth)
        judgments = []
        for a in range(5):
            if rng.random() < 0.3:
                continue
            noisy = a == 4 or rng.random() < 0.2
            order = truth[::-1] if noisy else truth[:]
            if rng.random() < 0.5:
                ranking = [[c] for c in order]
                if rng.random() < 0.3:
                    ranking = [ranking[0] + ranking[1], *ranking[2:]]  # a tie
                judgments.append({"annotator": f"ann{a}", "ranking": ranking})
            else:
                x, y = rng.sample(ids, 2)
                better = x if order.index(x) < order.index(y) else y
                outcome = "tie" if rng.random() < 0.1 else ("a" if better == x else "b")
                judgments.append({"annotator": f"ann{a}", "pair": [x, y], "outcome": outcome})
        rows.append(
            {
                "id": pid,
                "prompt": f"[{i}] which is better? ünïcode ✓ \u2028",
                "candidates": [
                    {"id": cid, "model": f"model-{c}", "text": text}
                    for cid, c, text in zip(ids, "ABCD", texts, strict=True)
                ],
                "judgments": judgments,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", default=str(REPO), help="the tree whose code builds")
    parser.add_argument("--data", required=True, help="a fresh data dir")
    parser.add_argument("--out", required=True, help="the digests' JSON file")
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--keep", action="store_true", help="keep the export folders")
    args = parser.parse_args()

    code, data = Path(args.code).resolve(), Path(args.data).resolve()
    data.mkdir(parents=True, exist_ok=True)
    django_in(code, data, sqlite=True, peers=True)
    from workload import write_quorum_jsonl

    from annotate.models import Project
    from annotate.services import import_file
    from curation import services

    worlds = {"peer": write_quorum_jsonl(data / "peer.jsonl", args.tasks, judged=True, k=1)}
    crowd = data / "crowd.jsonl"
    with open(crowd, "w") as fh:
        settings = {"mode": "ranking", "candidates_per_task": 4, "annotators_per_task": 5}
        fh.write(json.dumps({"project": settings}) + "\n")
        for row in crowd_rows(args.tasks):
            fh.write(json.dumps(row) + "\n")
    worlds["crowd"] = crowd
    result: dict[str, dict[str, str]] = {}
    for world, path in worlds.items():
        import_file(path=path, project_name=world)
        project = Project.objects.get(name=world)
        for kind, options in KINDS.items():
            export = services.export_create(
                project=project, options={**options, "include_media": False}, enqueue=False
            )
            export = services.export_build(export_id=export.pk)
            assert export.status == "done", export.error
            result[f"{world}-{kind}"] = masked_digests(export.path)
            if args.keep:
                shutil.copytree(export.path, data / f"{world}-{kind}", dirs_exist_ok=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
