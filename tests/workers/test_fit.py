"""The paper's training recipe (`fit`): modality-homogeneous batches, learning, exact resume."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from workers.reward_model import (
    CandidateInput,
    FitConfig,
    PreferenceExample,
    ScoringItem,
    fit,
    held_out_report,
)
from workers.reward_model.training import example_modality, modality_batches
from workers.tiny import build_tiny_reward_scorer, build_tiny_tokenizer


@pytest.fixture(autouse=True)
def _media_root():
    """Shadow tests/conftest.py's autouse Django fixture: this file runs without Django."""


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


def _item(prompt: str, *responses: str, image=None) -> ScoringItem:
    return ScoringItem(prompt, [CandidateInput(text=r) for r in responses], prompt_image=image)


PROMPTS = ["Is the sky blue?", "Name a fruit.", "Count to three.", "Say hello.", "Name a city."]
ANSWERS = ("I am not sure.", "Here is a careful answer.", "Maybe.")


def _examples() -> list[PreferenceExample]:
    return [PreferenceExample(_item(p, *ANSWERS), [3, 1, 2]) for p in PROMPTS]


def test_it_batches_one_modality_at_a_time():
    picture = Image.fromarray(np.zeros((28, 28, 3), dtype=np.uint8))
    examples = _examples()
    examples += [PreferenceExample(_item(p, *ANSWERS, image=picture), [1, 2, 3]) for p in PROMPTS]
    examples.append(
        PreferenceExample(
            ScoringItem("Which clip?", [CandidateInput(kind="video", path="a.mp4")] * 2), [1, 2]
        )
    )

    batches = modality_batches(examples, 3, random.Random(0))

    assert sorted(i for batch in batches for i in batch) == list(range(len(examples)))
    assert all(len({example_modality(examples[i]) for i in batch}) == 1 for batch in batches)
    assert {example_modality(examples[b[0]]) for b in batches} == {"text", "image", "video"}


def test_it_learns_a_preference_and_reports_held_out_accuracy(tokenizer):
    scorer = build_tiny_reward_scorer(tokenizer=tokenizer, seed=11)
    held_out = [PreferenceExample(_item("Name a colour.", *ANSWERS), [3, 1, 2])]
    config = FitConfig(epochs=12, lr=3e-3, grad_accum=1, lora_r=0, gradient_checkpointing=False)

    result = fit(scorer.model, scorer.builder, _examples(), config)
    report = held_out_report(scorer, held_out)

    assert np.mean(result["losses"][-5:]) < 0.5 * np.mean(result["losses"][:5])
    assert report["text"] == {
        "prompts": 1,
        "top1_accuracy": 1.0,
        "chance": 0.3333,
        "kendall_tau": 1.0,
    }


class _Interrupted(Exception):
    pass


def test_it_resumes_from_its_checkpoint_to_the_same_weights(tokenizer, tmp_path):
    config = FitConfig(epochs=4, lr=4e-3, grad_accum=2, lora_r=8, checkpoint_every=1)
    whole = build_tiny_reward_scorer(tokenizer=tokenizer, seed=5)
    uninterrupted = fit(whole.model, whole.builder, _examples(), config)

    def crash(step: int, total: int, loss: float) -> None:
        if step == 5:
            raise _Interrupted

    first = build_tiny_reward_scorer(tokenizer=tokenizer, seed=5)
    with pytest.raises(_Interrupted):
        fit(first.model, first.builder, _examples(), config, checkpoint_dir=tmp_path, on_step=crash)
    second = build_tiny_reward_scorer(tokenizer=tokenizer, seed=5)
    resumed = fit(second.model, second.builder, _examples(), config, checkpoint_dir=tmp_path)

    assert resumed["resumed_from"] == 4 and resumed["steps"] == uninterrupted["steps"] == 12
    assert resumed["losses"] == pytest.approx(uninterrupted["losses"], abs=1e-6)
    expected = dict(whole.model.named_parameters())
    for name, parameter in second.model.named_parameters():
        if parameter.requires_grad:
            torch.testing.assert_close(parameter, expected[name], rtol=0, atol=1e-6)


def test_it_rejects_bad_settings(tokenizer):
    scorer = build_tiny_reward_scorer(tokenizer=tokenizer, seed=5)

    with pytest.raises(ValueError, match="grad_accum must be at least 1; unknown loss 'hinge'"):
        fit(scorer.model, scorer.builder, _examples(), FitConfig(grad_accum=0, loss="hinge"))
