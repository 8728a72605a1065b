"""The demo's reward model learns from demo worlds and beats chance on held-out prompts."""

from __future__ import annotations

import pytest

from annotate.demo_world import generate_world, write_world
from workers.demo_model import train_demo_model

VQA = "Demo: VQA ranking"


@pytest.mark.timeout(900)
def test_it_beats_chance_on_held_out_prompts(tmp_path):
    eval_dir = tmp_path / "eval"
    write_world(generate_world(seed=0, scale="small", prompts=40), eval_dir)
    metrics = train_demo_model(
        out_dir=tmp_path / "rm",
        work_dir=tmp_path / "train",
        eval_world_dir=eval_dir,
        train_seeds=(101, 102),
        # Six epochs (90 steps): three left this small run unconverged on some CPUs (an AVX2-only
        # EPYC: held-out top-1 0.275 at seed 0, train subset 0.5); six gave 0.625 / 0.625 / 0.675
        # at seeds 0 / 1 / 2 there.
        epochs=6,
        projects=[VQA],
        prompts_per_project=60,
    )
    held_out = metrics["held_out"]
    assert held_out["prompts"] == 40
    assert held_out["top1_accuracy"] >= held_out["chance"] + 0.2, metrics
    assert held_out["kendall_tau"] > 0.2, metrics
    assert (tmp_path / "rm" / "value_head.pt").exists()


@pytest.mark.timeout(600)
def test_it_pretrains_the_vision_tower_on_the_renderers_labels(tmp_path):
    from workers.demo_model import LIMITS, media_labels, pretrain_vision
    from workers.tiny import build_tiny_reward_scorer

    t2i = ["Demo: text-to-image ranking"]
    train_dir, eval_dir = tmp_path / "train", tmp_path / "eval"
    write_world(generate_world(seed=101, scale="small", prompts=30), train_dir)
    write_world(generate_world(seed=0, scale="small", prompts=12), eval_dir)
    train_media = media_labels(train_dir, projects=t2i)
    held_out = media_labels(eval_dir, projects=t2i)
    assert {kind for kind, _, _ in train_media} == {"image"}
    assert all({"colour", "shape", "count"} <= set(labels) for _, _, labels in train_media)
    scorer = build_tiny_reward_scorer(seed=0, **LIMITS)

    untrained = pretrain_vision(scorer, train_media, held_out, epochs=0)
    trained = pretrain_vision(scorer, train_media, held_out, epochs=8)

    colours = len({labels["colour"] for _, _, labels in train_media})
    # 120 training pictures, 8 epochs (measured 0.54 colour, 0.52 shape, 0.42 count held out,
    # untrained 0.25 / 0.27 / 0.0); the full demo training uses twice the pictures.
    assert trained["colour"] >= 0.45 > 2 / colours, (untrained, trained)
    assert trained["colour"] > untrained["colour"] + 0.2
    assert trained["count"] > untrained["count"] + 0.2
