"""Import files for the end-to-end tests, written the way a user would (Quorum JSONL, zip with
a real PNG made with Pillow)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

from PIL import Image

LETTERS = "abcd"


def png_bytes(color: tuple[int, int, int], size: int = 48) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


def candidate_text(prompt_id: str, letter: str) -> str:
    """Each candidate says who it is, so a test can read the shuffled cards."""
    return f"Answer {letter} to {prompt_id}"


def prompt_row(prompt_id: str, *, image: str | None = None, judgments=None) -> dict:
    row = {
        "id": prompt_id,
        "prompt": f"Question {prompt_id}: which answer is best?",
        "candidates": [
            {"id": f"{prompt_id}-{c}", "model": f"model-{c}", "text": candidate_text(prompt_id, c)}
            for c in LETTERS
        ],
    }
    if image:
        row["image"] = image
    if judgments:
        row["judgments"] = judgments
    return row


def project_line(*, annotators_per_task: int = 3) -> dict:
    return {
        "project": {
            "mode": "ranking",
            "candidates_per_task": 4,
            "annotators_per_task": annotators_per_task,
            "ties_allowed": True,
            "blind": True,
            "instructions": "Rank by **correctness**.",
        }
    }


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def flow_zip(path: Path, *, text_prompts: int = 6) -> Path:
    """A zip above the async threshold (5 rows): ``text_prompts`` text prompts and one image
    prompt (``img``) whose PNG is in the zip; 4 text candidates each, no judgments."""
    rows = [project_line()]
    rows += [prompt_row(f"p{i}") for i in range(text_prompts)]
    rows.append(prompt_row("img", image="media/question.png"))
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("flow.jsonl", "".join(json.dumps(row) + "\n" for row in rows))
        zf.writestr("media/question.png", png_bytes((200, 40, 40)))
    return path


def ranking(prompt_id: str, order: str) -> list[list[str]]:
    """``order`` like "abcd" (best first) -> tie groups of candidate external ids."""
    return [[f"{prompt_id}-{c}"] for c in order]


def judged_rows(prefix: str, n: int, *, annotators: dict[str, str]) -> list[dict]:
    """``n`` prompts, each judged by every annotator in ``annotators`` (name -> order)."""
    return [
        prompt_row(
            f"{prefix}{i}",
            judgments=[
                {"annotator": name, "ranking": ranking(f"{prefix}{i}", order)}
                for name, order in annotators.items()
            ],
        )
        for i in range(n)
    ]
