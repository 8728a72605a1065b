"""The playground's scoring function with a tiny model, in-process and through a gpu worker."""

from __future__ import annotations

import time

import pytest

from annotate.models import RewardModel
from tests.media_fixtures import png_bytes, write
from workers.management.commands.playground import _is_loopback, staff_login
from workers.playground import gpu_worker_available, playground_score


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from workers.tiny import save_tiny_reward_model

    path = tmp_path_factory.mktemp("rm") / "tiny-rm"
    save_tiny_reward_model(path, seed=5)
    return path


@pytest.fixture
def reward_model(db, tiny_checkpoint):
    return RewardModel.objects.create(
        name="tiny", version="1", backend="multi_response", path=str(tiny_checkpoint)
    )


def test_it_scores_packed_and_isolated_in_process(reward_model, tmp_path):
    image = write(tmp_path / "p.png", png_bytes())
    result = playground_score(
        reward_model_id=reward_model.pk,
        prompt_text="Which answer describes the picture?",
        prompt_image=str(image),
        candidates=[{"text": "A red square."}, {"text": "A blue circle."}, {"text": "Nothing."}],
        use_queue=False,
    )
    assert result.ran_on == "in-process"
    packed, isolated = result.scores["packed"], result.scores["isolated"]
    assert len(packed) == len(isolated) == 3 and all(s is not None for s in packed + isolated)
    # Packed rows are read out as the paper trains its head (the first response at the token
    # before the first separator), isolated rows as one-response rows: different numbers.
    assert packed[0] != pytest.approx(isolated[0], abs=1e-6)
    assert sorted(result.ranking, key=lambda i: -packed[i]) == result.ranking


def test_it_scores_image_candidates(reward_model, tmp_path):
    a = write(tmp_path / "a.png", png_bytes((255, 0, 0)))
    b = write(tmp_path / "b.png", png_bytes((0, 0, 255)))
    result = playground_score(
        reward_model_id=reward_model.pk,
        prompt_text="a red square",
        candidates=[{"kind": "image", "path": str(a)}, {"kind": "image", "path": str(b)}],
        use_queue=False,
    )
    assert all(s is not None for s in result.scores["packed"])


def test_it_refuses_fewer_than_two_candidates(reward_model):
    with pytest.raises(ValueError, match="2 to 8"):
        playground_score(
            reward_model_id=reward_model.pk,
            prompt_text="p",
            candidates=[{"text": "x"}],
            use_queue=False,
        )


@pytest.mark.worker
def test_it_scores_through_the_gpu_queue_when_a_worker_runs(celery_worker_process, tiny_checkpoint):
    rm = RewardModel.objects.create(
        name="tiny-q", version="1", backend="multi_response", path=str(tiny_checkpoint)
    )
    celery_worker_process(queues="gpu", pool="solo")
    local = playground_score(
        reward_model_id=rm.pk,
        prompt_text="q",
        candidates=[{"text": "one"}, {"text": "two"}],
        use_queue=False,
    )
    # The worker answers the broadcast that picks the queue (a 1 s inspect by default: on a
    # loaded machine one reply can come later, and the playground then scores in-process).
    deadline = time.monotonic() + 60
    while not gpu_worker_available(timeout=2.0):
        assert time.monotonic() < deadline, "the gpu worker never answered the broadcast"
    queued = playground_score(
        reward_model_id=rm.pk,
        prompt_text="q",
        candidates=[{"text": "one"}, {"text": "two"}],
        use_queue=True,
    )
    assert queued.ran_on == "gpu queue"
    assert queued.scores["packed"] == pytest.approx(local.scores["packed"], abs=1e-5)


def test_it_requires_a_staff_login_off_loopback(users):
    assert _is_loopback("127.0.0.1") and _is_loopback("::1") and not _is_loopback("0.0.0.0")
    assert staff_login("staff", "pw-quorum-1")
    assert not staff_login("ann", "pw-quorum-1")
    assert not staff_login("staff", "wrong")


def test_it_builds_the_gradio_app(reward_model):
    from workers.playground import build_app

    app = build_app(require_login=False)
    assert "Reward-model playground" in str(app.config)
