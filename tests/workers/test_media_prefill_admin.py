"""The project admin's "Prepare media for scoring": a real ``gpu`` worker decodes the project's
pictures and clips into the media store, and the first scoring run then decodes none."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image

from annotate.models import RewardModel
from tests.factories import make_project
from tests.media_fixtures import score_without_decoding
from workers.models import Job

pytestmark = pytest.mark.worker


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from workers.tiny import save_tiny_reward_model

    path = tmp_path_factory.mktemp("rm") / "tiny-rm"
    save_tiny_reward_model(path, seed=3)
    return path


def _media_project(settings):
    """Three prompts: two with a picture and a clip among text answers, one text only."""
    from workers.media import encode_video

    project = make_project(n_prompts=3, n_candidates=3)
    rng = np.random.default_rng()  # new files: nothing of an earlier run in the store
    prompts = list(project.prompts.order_by("id"))
    for prompt in prompts[:2]:
        image, video = list(prompt.candidates.order_by("id"))[:2]
        picture = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)).save(picture, "PNG")
        image.kind = "image"
        image.media = default_storage.save(
            f"p{project.pk}/{image.pk}.png", ContentFile(picture.getvalue())
        )
        clip = settings.DATA_DIR / f"clip-{project.pk}-{video.pk}.mp4"
        encode_video(clip, rng.integers(0, 255, (6, 48, 64, 3), dtype=np.uint8))
        video.kind = "video"
        video.media = default_storage.save(
            f"p{project.pk}/{video.pk}.mp4", ContentFile(clip.read_bytes())
        )
        image.save()
        video.save()
    return project, [p.pk for p in prompts]


def _wait_jobs(name: str, timeout: float) -> list[Job]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list(Job.objects.filter(name=name))
        if found and all(job.status not in Job.UNFINISHED for job in found):
            return found
        time.sleep(0.3)
    raise AssertionError(f"{name} jobs not finished: {[(j.pk, j.status) for j in found]}")


@pytest.mark.timeout(300)
def test_the_admin_action_has_a_worker_decode_what_the_first_scoring_then_reads(
    celery_worker_process, tiny_checkpoint, settings, admin_client, monkeypatch
):

    project, prompt_ids = _media_project(settings)
    rm = RewardModel.objects.create(
        name="tiny", version="1", backend="multi_response", path=str(tiny_checkpoint)
    )
    project.active_reward_model = rm
    project.save(update_fields=["active_reward_model"])
    celery_worker_process(queues="gpu", pool="solo")

    response = admin_client.post(
        "/admin/annotate/project/",
        {"action": "prepare_media_for_scoring", "_selected_action": [project.pk]},
        follow=True,
    )

    assert response.status_code == 200
    assert "decoding the media of 2 prompts" in response.content.decode()
    (job,) = _wait_jobs("quorum.score_media_prefill", timeout=120)
    assert (job.status, job.result) == ("done", {"prompts": 2, "files": 4, "failed": 0})

    # The scoring run (here, a fresh builder in this process) finds every file in the store.
    scored = score_without_decoding(
        monkeypatch, project=project, reward_model=rm, prompt_ids=prompt_ids
    )
    assert scored == 9


def test_the_admin_action_asks_for_an_active_model_first(db, admin_client, settings):
    project, _ = _media_project(settings)

    response = admin_client.post(
        "/admin/annotate/project/",
        {"action": "prepare_media_for_scoring", "_selected_action": [project.pk]},
        follow=True,
    )

    assert "choose an active reward model first" in response.content.decode()
    assert not Job.objects.filter(name="quorum.score_media_prefill").exists()
