"""Scoring stored candidates: idempotent rows, priorities, real workers, a worker killed mid-batch."""

from __future__ import annotations

import io
import signal
import time

import pytest

from annotate.models import ModelScore, Project, RewardModel, Task
from tests.factories import make_project
from tests.media_fixtures import score_without_decoding
from workers.models import Job, ScoringRun
from workers.scoring import score_prompts, scoring_run_start, uncertainty_priority


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    from workers.tiny import save_tiny_reward_model

    path = tmp_path_factory.mktemp("rm") / "tiny-rm"
    save_tiny_reward_model(path, seed=3)
    return path


def _register(project: Project, path, name: str = "tiny") -> RewardModel:
    rm = RewardModel.objects.create(
        name=name, version="1", backend="multi_response", path=str(path)
    )
    project.active_reward_model = rm
    project.save(update_fields=["active_reward_model"])
    return rm


def test_it_ranks_confident_scores_below_uncertain_ones():
    assert uncertainty_priority([5.0, 0.0, -1.0, -2.0]) < uncertainty_priority(
        [0.1, 0.0, 0.05, -0.1]
    )
    assert 0.0 <= uncertainty_priority([1.0, 1.0]) <= 1.0
    assert uncertainty_priority([1.0]) == 0.0


@pytest.mark.django_db(transaction=True)
def test_it_scores_a_prompt_with_many_candidates_in_one_comparable_layout(tiny_checkpoint):
    from annotate.models import Candidate

    project = make_project(n_prompts=2, n_candidates=4)
    for prompt in project.prompts.all():  # a prompt may hold more candidates than a task shows
        for k in range(6):
            Candidate.objects.create(
                project=project, prompt=prompt, external_id=f"{prompt.pk}-x{k}",
                model_name="extra", text=f"Extra answer number {k}.",
            )  # fmt: skip
    rm = _register(project, tiny_checkpoint)
    run = ScoringRun.objects.create(project=project, reward_model=rm, total_prompts=2)

    score_prompts(run_id=run.pk, prompt_ids=list(project.prompts.values_list("id", flat=True)))

    rows = ModelScore.objects.filter(reward_model=rm)
    assert rows.filter(score__isnull=False).count() == 20
    # More than 8 candidates are not packed into one row, nor split over incomparable rows:
    # each candidate is scored in isolation, and every row says so.
    assert set(rows.values_list("layout", flat=True)) == {"isolated"}
    assert all("10 candidates" in note for note in rows.values_list("note", flat=True))


@pytest.mark.django_db(transaction=True)
def test_it_records_the_packed_layout(tiny_checkpoint):
    project = make_project(n_prompts=1, n_candidates=4)
    rm = _register(project, tiny_checkpoint)
    run = ScoringRun.objects.create(project=project, reward_model=rm, total_prompts=1)

    score_prompts(run_id=run.pk, prompt_ids=list(project.prompts.values_list("id", flat=True)))

    assert set(ModelScore.objects.values_list("layout", "note")) == {("packed", "")}


@pytest.mark.django_db(transaction=True)
def test_it_scores_every_candidate_once_and_sets_priorities(tiny_checkpoint, settings):
    settings.CELERY_TASK_ALWAYS_EAGER = False
    project = make_project(n_prompts=3, n_candidates=4)
    rm = _register(project, tiny_checkpoint)
    run = ScoringRun.objects.create(project=project, reward_model=rm, total_prompts=3)
    prompt_ids = list(project.prompts.values_list("id", flat=True))
    first = score_prompts(run_id=run.pk, prompt_ids=prompt_ids)
    assert first == {"prompts": 3, "scores": 12, "failed": 0}
    assert ModelScore.objects.filter(reward_model=rm, score__isnull=False).count() == 12
    again = score_prompts(run_id=run.pk, prompt_ids=prompt_ids)
    assert again["prompts"] == 0 and ModelScore.objects.count() == 12
    run.refresh_from_db()
    assert run.status == "done" and run.done_prompts == 3 and run.scored_candidates == 12
    assert all(0 < t.priority <= 1 for t in Task.objects.filter(project=project))


@pytest.mark.django_db(transaction=True)
def test_it_records_an_error_for_a_candidate_it_cannot_score(tiny_checkpoint, settings):
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    project = make_project(n_prompts=1, n_candidates=3)
    rm = _register(project, tiny_checkpoint)
    broken = project.candidates.first()
    broken.kind = "video"
    broken.media = default_storage.save(
        f"p{project.pk}/bad.mp4", ContentFile(b"not a video at all")
    )
    broken.save()
    run = ScoringRun.objects.create(project=project, reward_model=rm, total_prompts=1)
    score_prompts(run_id=run.pk, prompt_ids=[broken.prompt_id])
    bad = ModelScore.objects.get(candidate=broken)
    assert bad.score is None and bad.error
    assert ModelScore.objects.filter(score__isnull=False).count() == 2


@pytest.mark.django_db(transaction=True)
def test_a_later_run_reads_decoded_pictures_from_the_data_dir(
    tiny_checkpoint, settings, tmp_path, monkeypatch
):
    import numpy as np
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage
    from PIL import Image

    import workers.reward_model.inputs as inputs

    settings.DATA_DIR = tmp_path / "data"
    project = make_project(n_prompts=1, n_candidates=3)
    rng = np.random.default_rng(4)
    for index, candidate in enumerate(project.candidates.order_by("id")):
        picture = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)).save(picture, "PNG")
        candidate.kind = "image"
        candidate.media = default_storage.save(
            f"p{project.pk}/{index}.png", ContentFile(picture.getvalue())
        )
        candidate.save()
    prompt_ids = list(project.prompts.values_list("id", flat=True))
    first = _register(project, tiny_checkpoint, name="first")
    score_prompts(
        run_id=ScoringRun.objects.create(project=project, reward_model=first, total_prompts=1).pk,
        prompt_ids=prompt_ids,
    )
    stored = [p for p in (settings.DATA_DIR / "cache" / "media").rglob("*") if p.is_file()]

    # Another version of the model: a builder of its own, whose process cache holds nothing.
    def no_decoding(path, **_):
        raise AssertionError(f"{path} decoded again")

    monkeypatch.setattr(inputs, "load_image", no_decoding)
    second = _register(project, tiny_checkpoint, name="second")
    score_prompts(
        run_id=ScoringRun.objects.create(project=project, reward_model=second, total_prompts=1).pk,
        prompt_ids=prompt_ids,
    )

    assert len(stored) == 3
    scores = {
        rm: dict(ModelScore.objects.filter(reward_model=rm).values_list("candidate_id", "score"))
        for rm in (first, second)
    }
    assert None not in scores[first].values() and len(scores[first]) == 3
    assert scores[second] == scores[first]


@pytest.mark.worker
def test_media_prefilled_by_a_gpu_worker_are_not_decoded_by_the_first_scoring(
    celery_worker_process, tiny_checkpoint, settings, monkeypatch
):
    import numpy as np
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage
    from PIL import Image

    from workers.media import encode_video
    from workers.scoring_tasks import score_media_prefill_task

    project = make_project(n_prompts=2, n_candidates=3)
    rng = np.random.default_rng()  # new files: nothing of an earlier run in the store
    for index, candidate in enumerate(project.candidates.order_by("id")):
        if index % 3 == 2:
            clip = settings.DATA_DIR / f"clip-{project.pk}-{index}.mp4"
            encode_video(clip, rng.integers(0, 255, (6, 48, 64, 3), dtype=np.uint8))
            candidate.kind, data = "video", clip.read_bytes()
        else:
            picture = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)).save(picture, "PNG")
            candidate.kind, data = "image", picture.getvalue()
        suffix = "mp4" if candidate.kind == "video" else "png"
        candidate.media = default_storage.save(f"p{project.pk}/{index}.{suffix}", ContentFile(data))
        candidate.save()
    prompt_ids = list(project.prompts.values_list("id", flat=True))
    rm = _register(project, tiny_checkpoint)
    # The worker decodes in processes of its own (a solo worker spawning its pool).
    celery_worker_process(queues="gpu", pool="solo", extra_env={"QUORUM_DECODE_PROCESSES": "2"})

    result = score_media_prefill_task.delay(reward_model_id=rm.pk, prompt_ids=prompt_ids)

    assert result.get(timeout=120) == {"prompts": 2, "files": 6, "failed": 0}

    scored = score_without_decoding(
        monkeypatch, project=project, reward_model=rm, prompt_ids=prompt_ids
    )
    assert scored == 6


@pytest.mark.worker
def test_it_scores_a_project_on_a_real_worker(celery_worker_process, tiny_checkpoint):
    project = make_project(n_prompts=5, n_candidates=4)
    _register(project, tiny_checkpoint)
    celery_worker_process(queues="gpu", pool="solo")
    run = scoring_run_start(project=project, reason="test")
    _wait_done(run, timeout=120)
    assert ModelScore.objects.filter(candidate__project=project, score__isnull=False).count() == 20


def _wait_done(run: ScoringRun, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run.refresh_from_db()
        if run.status == "done":
            return
        time.sleep(0.5)
    raise AssertionError(f"scoring run not done: {run.done_prompts}/{run.total_prompts}")


@pytest.mark.worker
def test_it_scores_exactly_once_after_a_worker_is_killed_mid_batch(
    celery_worker_process, tiny_checkpoint
):
    project = make_project(n_prompts=40, n_candidates=4)
    rm = _register(project, tiny_checkpoint)
    # Slow each batch down so the kill lands while a batch is being scored.
    first = celery_worker_process(
        queues="gpu", pool="solo", extra_env={"QUORUM_SCORING_DELAY": "1.5"}
    )
    run = scoring_run_start(project=project, reason="test")
    deadline = time.monotonic() + 60
    while "Task quorum.score_prompts" not in first.output() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    first.kill(signal.SIGKILL)
    assert "succeeded" not in first.output()  # it died holding an unfinished batch
    celery_worker_process(queues="gpu", pool="solo")
    _wait_done(run, timeout=240)
    rows = ModelScore.objects.filter(reward_model=rm)
    assert rows.count() == 160
    assert rows.values("candidate_id").distinct().count() == 160


@pytest.mark.django_db
def test_it_starts_a_scoring_run_when_an_import_adds_prompts(
    tmp_path, django_capture_on_commit_callbacks
):
    import json

    from annotate.services import import_file

    project = make_project(n_prompts=1)
    rm = _register(project, tmp_path)
    rows = [
        {
            "id": f"new{i}",
            "prompt": "q",
            "candidates": [
                {"id": f"new{i}-a", "model": "m", "text": "a"},
                {"id": f"new{i}-b", "model": "m", "text": "b"},
            ],
        }
        for i in range(3)
    ]
    path = tmp_path / "more.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    with django_capture_on_commit_callbacks() as callbacks:
        import_file(path=path, project=project)
    run = ScoringRun.objects.get(project=project)
    assert run.reward_model == rm and run.reason == "import" and run.total_prompts == 3
    assert sorted(run.prompt_ids) == sorted(
        project.prompts.filter(external_id__startswith="new").values_list("id", flat=True)
    )
    # The batches are recorded with the import and published only after it commits.
    batches = Job.objects.filter(name="quorum.score_prompts")
    assert [(j.status, j.kwargs["run_id"]) for j in batches] == [("queued", run.pk)]
    assert callbacks
    import_file(path=path, project=project)  # re-import: nothing new, no new run
    assert ScoringRun.objects.filter(project=project).count() == 1
