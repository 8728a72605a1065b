"""The demo model's held-out evaluation decodes the demo world's pictures and clips into the
media store, under the media settings of the checkpoint it saves: the demo projects (the same
files) are then scored the first time without decoding any of them."""

from __future__ import annotations

import math

import pytest

from annotate.demo_world import generate_world, write_world
from workers.demo_model import examples_from_world, train_demo_model
from workers.reward_model import load_reward_model
from workers.reward_model.media_cache import MediaStore


@pytest.mark.timeout(600)
def test_a_model_loaded_from_the_saved_demo_checkpoint_decodes_none_of_the_held_out_media(
    tmp_path, monkeypatch
):
    import workers.reward_model.inputs as inputs

    eval_dir = tmp_path / "small"
    write_world(generate_world(seed=0, scale="small", prompts=2), eval_dir)
    store = MediaStore(tmp_path / "store")
    train_demo_model(
        out_dir=tmp_path / "rm",
        work_dir=tmp_path / "training",
        eval_world_dir=eval_dir,
        train_seeds=(101,),
        epochs=1,
        prompts_per_project=2,
        vision_epochs=1,
        matching_epochs=1,
        media_store=store,
    )
    items = [example.item for _, example in examples_from_world(eval_dir)]
    media = {c.path for item in items for c in item.candidates if c.path}
    media |= {path for item in items for path in (item.prompt_image, item.prompt_video) if path}
    assert store.writes == len(media) > 0  # the held-out files only, not the training world's

    # The workers' path: the checkpoint loaded from disk, the store shared, nothing in memory.
    scorer = load_reward_model(tmp_path / "rm")
    scorer.builder.media_store = store

    def no_decoding(*args, **_):
        raise AssertionError(f"{args[0]} decoded again")

    monkeypatch.setattr(inputs, "load_image", no_decoding)
    monkeypatch.setattr(inputs, "sample_video_frames", no_decoding)
    results = scorer.score(items)
    scores = [s for result in results for s in result.scores]
    assert len(scores) == sum(len(item.candidates) for item in items)
    assert all(s is not None and math.isfinite(s) for s in scores), results
