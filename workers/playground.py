"""Gradio playground: score a prompt's candidates with a registered reward model.

One packed pass (the production setting) beside the isolated-mode scores (each candidate sees
only the prompt), so a researcher sees how much candidates influence each other's scores.
Scoring goes through the ``gpu`` queue when a worker consumes it, in-process otherwise; both
paths call the same :func:`workers.scoring.score_item` as the workers: the playground is a
client of the scoring service.
"""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

from annotate.models import RewardModel
from workers import jobs
from workers.scoring import PLAYGROUND_MODES, score_item

MODES = PLAYGROUND_MODES
MAX_CANDIDATES = 8


@dataclass
class PlaygroundResult:
    """Scores per mode aligned with the candidates, the packed ranking, and where it ran."""

    scores: dict[str, list[float | None]]
    errors: list[str | None]
    ranking: list[int]  # candidate indexes, best first (packed scores)
    ran_on: str  # "gpu queue" or "in-process"


def gpu_worker_available(timeout: float = 1.0) -> bool:
    """Whether some Celery worker consumes the ``gpu`` queue right now."""
    from config.celery import app

    try:
        replies = app.control.inspect(timeout=timeout).active_queues() or {}
    except Exception:  # no broker: nobody can be listening
        return False
    return any(q.get("name") == "gpu" for queues in replies.values() for q in queues)


def _stage(path: str | None, folder: Path) -> str | None:
    """Copies an uploaded file where workers read it (shared storage); tasks get paths only."""
    if not path:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{uuid.uuid4().hex}{Path(path).suffix}"
    shutil.copyfile(path, target)
    return str(target)


def playground_score(
    *,
    reward_model_id: int,
    prompt_text: str,
    candidates: list[dict[str, Any]],
    prompt_image: str | None = None,
    prompt_video: str | None = None,
    use_queue: bool | None = None,
    timeout: float = 300.0,
) -> PlaygroundResult:
    """Scores 2-8 candidates; ``use_queue=None`` picks the queue when a gpu worker is up."""
    candidates = [c for c in candidates if c.get("text") or c.get("path")]
    if not 2 <= len(candidates) <= MAX_CANDIDATES:
        raise ValueError(f"give 2 to {MAX_CANDIDATES} candidates (got {len(candidates)})")
    folder = Path(settings.DATA_DIR) / "playground"
    item = {
        "prompt_text": prompt_text,
        "prompt_image": _stage(prompt_image, folder),
        "prompt_video": _stage(prompt_video, folder),
        "candidates": [
            {
                "kind": c.get("kind", "text"),
                "text": c.get("text", ""),
                "path": _stage(c.get("path"), folder),
            }
            for c in candidates
        ],
    }
    if use_queue is None:
        use_queue = gpu_worker_available()
    if use_queue:
        out = jobs.call(
            name=jobs.SCORE_ADHOC,
            kwargs={"reward_model_id": reward_model_id, "item": item},
            timeout=timeout,
        )
        ran_on = "gpu queue"
    else:
        out = score_item(reward_model_id=reward_model_id, item=item)
        ran_on = "in-process"
    packed = out["scores"]["packed"]
    order = sorted(range(len(packed)), key=lambda i: (packed[i] is None, -(packed[i] or 0.0)))
    return PlaygroundResult(
        scores=out["scores"], errors=out["errors"], ranking=order, ran_on=ran_on
    )


def build_app(*, require_login: bool):
    """The Gradio Blocks app (imports gradio lazily: the web process never loads it)."""
    import gradio as gr

    models = list(RewardModel.objects.order_by("name", "version"))
    choices = [(str(m), m.pk) for m in models]

    def run(model_id, prompt, image, video, *fields):
        cands = []
        for i in range(MAX_CANDIDATES):
            kind, text, media = fields[3 * i : 3 * i + 3]
            if text or media:
                cands.append({"kind": kind, "text": text or "", "path": media})
        if model_id is None:
            raise gr.Error("Register a reward model in the admin first.")
        try:
            result = playground_score(
                reward_model_id=int(model_id),
                prompt_text=prompt or "",
                candidates=cands,
                prompt_image=image,
                prompt_video=video,
            )
        except ValueError as exc:
            raise gr.Error(str(exc)) from None
        rows = []
        for rank, i in enumerate(result.ranking, start=1):
            packed, isolated = result.scores["packed"][i], result.scores["isolated"][i]
            delta = None if packed is None or isolated is None else round(packed - isolated, 4)
            rows.append(
                [
                    rank,
                    chr(ord("A") + i),
                    _fmt(packed),
                    _fmt(isolated),
                    delta,
                    result.errors[i] or "",
                ]
            )
        return rows, f"Scored {len(cands)} candidates ({result.ran_on})."

    with gr.Blocks(title="Quorum reward-model playground") as app:
        gr.Markdown(
            "## Reward-model playground\nScores from **one packed pass** beside **isolated** scores "
            "(each candidate sees only the prompt): the difference shows cross-response effects."
        )
        model = gr.Dropdown(
            choices=choices, value=choices[0][1] if choices else None, label="Reward model"
        )
        with gr.Row():
            prompt = gr.Textbox(label="Prompt", lines=3, scale=3)
            image = gr.Image(label="Prompt image (optional)", type="filepath", scale=1)
            video = gr.Video(label="Prompt video (optional)", scale=1)
        fields = []

        def candidate_row(i: int) -> None:
            with gr.Row():
                kind = gr.Radio(
                    ["text", "image", "video"],
                    value="text",
                    label=f"Candidate {chr(65 + i)}",
                    scale=1,
                )
                text = gr.Textbox(label="Text", lines=2, scale=3)
                media = gr.File(label="Image/video", type="filepath", scale=2)
            fields.extend([kind, text, media])

        for i in range(4):
            candidate_row(i)
        with gr.Accordion("Candidates E-H", open=False):
            for i in range(4, MAX_CANDIDATES):
                candidate_row(i)
        button = gr.Button("Score", variant="primary")
        table = gr.Dataframe(
            headers=["rank", "candidate", "packed", "isolated", "packed - isolated", "error"],
            label="Scores",
        )
        status = gr.Markdown()
        button.click(run, inputs=[model, prompt, image, video, *fields], outputs=[table, status])
    return app


def _fmt(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
