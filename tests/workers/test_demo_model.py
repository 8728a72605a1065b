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
        epochs=3,
        projects=[VQA],
        prompts_per_project=60,
    )
    held_out = metrics["held_out"]
    assert held_out["prompts"] == 40
    assert held_out["top1_accuracy"] >= held_out["chance"] + 0.2, metrics
    assert held_out["kendall_tau"] > 0.2, metrics
    assert (tmp_path / "rm" / "value_head.pt").exists()
