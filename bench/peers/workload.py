"""The peer benchmark's workload, made the way Label Studio's side makes it.

``../shared/bench/label_studio_bench.sh`` builds each task from a seeded word list: a prompt of
25 words and four candidates of 45 words each (its ``task_data``). The Quorum side writes the
same shape of rows as Quorum JSONL, so both servers parse, store and serve the same amount of
text. Rankings are random permutations of the four candidates, as the peer's ``ranker_result``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

WORDS = tuple(
    [
        "the",
        "model",
        "answer",
        "response",
        "image",
        "video",
        "prompt",
        "candidate",
        "quality",
        "helpful",
        "harmless",
        "honest",
        "concise",
        "detailed",
        "accurate",
        "wrong",
        "right",
        "better",
        "worse",
        "style",
        "tone",
        "length",
        "format",
        "citation",
        "reasoning",
        "step",
        "result",
        "summary",
        "explain",
        "describe",
        "compare",
        "rank",
        "pair",
        "choose",
        "score",
    ]
)
LETTERS = "ABCD"


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def quorum_rows(n_tasks: int, *, judged: bool, seed: int = 1234) -> list[dict]:
    """``n_tasks`` prompts of 4 text candidates; with ``judged``, one ranking each."""
    rng = random.Random(seed)
    rows = []
    for i in range(n_tasks):
        pid = f"t{i}"
        row = {
            "id": pid,
            "prompt": f"[{i}] " + _words(rng, 25),
            "candidates": [
                {"id": f"{pid}-{c}", "model": f"model-{c}", "text": _words(rng, 45)}
                for c in LETTERS
            ],
        }
        if judged:
            order = list(LETTERS)
            rng.shuffle(order)
            row["judgments"] = [
                {
                    "annotator": "bench",
                    "ranking": [[f"{pid}-{c}"] for c in order],
                    "duration_ms": 4200,
                }
            ]
        rows.append(row)
    return rows


def write_quorum_jsonl(path: Path, n_tasks: int, *, judged: bool, k: int = 1) -> Path:
    """A Quorum JSONL file whose first line makes a blind ranking project (N = 4, k = ``k``)."""
    settings = {"mode": "ranking", "candidates_per_task": 4, "annotators_per_task": k}
    with open(path, "w") as fh:
        fh.write(json.dumps({"project": settings}) + "\n")
        for row in quorum_rows(n_tasks, judged=judged):
            fh.write(json.dumps(row) + "\n")
    return path
