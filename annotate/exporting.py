"""Raw exports of a project in the three import formats (every judgment as stored).

These are the inverse of ``annotate.importing``: an exported folder imports back into the
same rows. Curated, denoised training exports are built by the curation app.
"""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path

from django.conf import settings

from annotate.importing import ARENA_WINNERS
from annotate.models import Candidate, Judgment, Project, Prompt, TaskCandidate

_WINNER_BY_OUTCOME = {v: k for k, v in ARENA_WINNERS.items()}


def competition_ranks(groups: list[list[int]], order: list[int]) -> list[int]:
    """Seed-format ranks (1 = best, ties share a rank, "1224" style) for ``order``."""
    rank_of: dict[int, int] = {}
    position = 1
    for group in groups:
        for cid in group:
            rank_of[cid] = position
        position += len(group)
    return [rank_of[c] for c in order]


def _media_name(field_file, out_dir: Path, copy: bool) -> str | None:
    if not field_file:
        return None
    rel = Path("media") / field_file.name
    if copy:
        target = out_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(settings.MEDIA_ROOT) / field_file.name, target)
    return rel.as_posix()


def _task_orders(project: Project) -> dict[int, list[int]]:
    orders: dict[int, list[int]] = defaultdict(list)
    for task_id, cand_id in (
        TaskCandidate.objects.filter(task__project=project)
        .order_by("task_id", "position")
        .values_list("task_id", "candidate_id")
    ):
        orders[task_id].append(cand_id)
    return orders


def export_project(project: Project, out_dir: str | Path, *, format: str = "quorum") -> Path:
    """Writes ``data.jsonl`` (``data.json`` for arena) and the media it names into out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prompts = {p.pk: p for p in Prompt.objects.filter(project=project)}
    candidates = {c.pk: c for c in Candidate.objects.filter(project=project)}
    by_prompt: dict[int, list[Candidate]] = defaultdict(list)
    for c in candidates.values():
        by_prompt[c.prompt_id].append(c)
    judgments = list(
        Judgment.objects.filter(project=project).select_related("annotator", "task").order_by("id")
    )
    orders = _task_orders(project)

    def evaluator(j: Judgment) -> str:
        return j.annotator.username if j.annotator_id else j.external_annotator

    if format == "arena":
        rows = []
        for j in judgments:
            if j.kind != "pair":
                continue
            a, b = (candidates[c] for c in orders[j.task_id])
            row = {
                "model_a": a.model_name,
                "model_b": b.model_name,
                "winner": _WINNER_BY_OUTCOME[j.outcome],
                "judge": evaluator(j),
            }
            row.update(
                {
                    k: v
                    for k, v in prompts[j.task.prompt_id].metadata.items()
                    if k in ("tstamp", "anony", "question_id", "language")
                }
            )
            if prompts[j.task.prompt_id].text:
                row["prompt"] = prompts[j.task.prompt_id].text
            rows.append(row)
        path = out_dir / "data.json"
        path.write_text(json.dumps(rows, indent=1))
        return path

    path = out_dir / "data.jsonl"
    with open(path, "w") as fh:
        if format == "seed":
            for j in judgments:
                if j.kind != "ranking":
                    continue
                prompt = prompts[j.task.prompt_id]
                order = orders[j.task_id]
                row = {"id": prompt.external_id, "prompt": prompt.text}
                row["responses"] = [candidates[c].text for c in order]
                row["rankings"] = competition_ranks(j.ranking, order)
                models = [candidates[c].model_name for c in order]
                if not all(m == f"response-{i}" for i, m in enumerate(models)):
                    row["models"] = models
                for key, field_file in (("image", prompt.image), ("video", prompt.video)):
                    name = _media_name(field_file, out_dir, copy=True)
                    if name:
                        row[key] = name
                fh.write(json.dumps(row) + "\n")
            return path
        if format != "quorum":
            raise ValueError(f"unknown export format {format!r} (expected quorum, seed or arena)")
        settings_row = {
            "mode": project.mode,
            "candidates_per_task": project.candidates_per_task,
            "annotators_per_task": project.annotators_per_task,
            "ties_allowed": project.ties_allowed,
            "blind": project.blind,
            "instructions": project.instructions,
            "rubric_dimensions": project.rubric_dimensions,
        }
        fh.write(json.dumps({"project": settings_row}) + "\n")
        js_by_prompt: dict[int, list[Judgment]] = defaultdict(list)
        for j in judgments:
            js_by_prompt[j.task.prompt_id].append(j)
        for prompt in prompts.values():
            row = {"id": prompt.external_id, "prompt": prompt.text}
            for key, field_file in (("image", prompt.image), ("video", prompt.video)):
                name = _media_name(field_file, out_dir, copy=True)
                if name:
                    row[key] = name
            if prompt.metadata:
                row["metadata"] = prompt.metadata
            row["candidates"] = []
            for c in sorted(by_prompt[prompt.pk], key=lambda c: c.pk):
                cand = {"id": c.external_id, "model": c.model_name, "kind": c.kind}
                if c.text:
                    cand["text"] = c.text
                if c.media:
                    cand[c.kind] = _media_name(c.media, out_dir, copy=True)
                elif c.kind != "text" and not c.text:
                    cand["placeholder"] = True
                if c.metadata:
                    cand["metadata"] = c.metadata
                row["candidates"].append(cand)
            row["judgments"] = []
            for j in js_by_prompt[prompt.pk]:
                out = {
                    "annotator": evaluator(j),
                    "source": j.source_name or "quorum",
                    "key": j.idempotency_key,
                }
                if j.kind == "ranking":
                    out["ranking"] = [[candidates[c].external_id for c in g] for g in j.ranking]
                else:
                    out["pair"] = [candidates[c].external_id for c in orders[j.task_id]]
                    out["outcome"] = j.outcome
                if j.presented_order:
                    out["presented_order"] = [candidates[c].external_id for c in j.presented_order]
                if j.rationale:
                    out["rationale"] = j.rationale
                if j.duration_ms is not None:
                    out["duration_ms"] = j.duration_ms
                row["judgments"].append(out)
            fh.write(json.dumps(row) + "\n")
    return path
