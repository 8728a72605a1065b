"""Multi-response reward model: equivalence of attention modes, media, checkpoints, training.

Runs on CPU with tiny random models built in fixtures (no download, no Django).
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.workers.pure_core import packed_forward
from workers.media import VideoFrames, encode_video
from workers.reward_model import (
    IM_END,
    VALUE_HEAD_FILE,
    CandidateInput,
    CheckpointError,
    MultiResponseRewardModel,
    PreferenceExample,
    RewardHeadConfig,
    RewardInputBuilder,
    RewardScorer,
    ScoringItem,
    SequenceClassificationScorer,
    apply_lora,
    best_index_from_rankings,
    load_reward_model,
    nway_loss,
    plackett_luce_loss,
    save_reward_model,
    train,
    train_step,
)
from workers.tiny import (
    build_tiny_reward_scorer,
    build_tiny_seq_cls_scorer,
    build_tiny_tokenizer,
    save_tiny_seq_cls_model,
)


@pytest.fixture(autouse=True)
def _media_root():
    """Shadow tests/conftest.py's autouse Django MEDIA_ROOT fixture: this pure-core file runs
    with ``-p no:django`` and touches no Django settings."""


# Scores must agree with separate passes to this tolerance (float32 on CPU).
TOL = {"rtol": 1e-5, "atol": 1e-5}


def _sharpen_head(model: MultiResponseRewardModel, seed: int = 1) -> None:
    # The release init (std 0.01, then / sqrt(hidden)) gives scores ~1e-3, where an absolute
    # tolerance of 1e-5 could hide real differences; O(1) scores make the checks strict.
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.value_head.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)


def _rescored(scorer: RewardScorer, **limits) -> RewardScorer:
    builder = RewardInputBuilder.for_model(
        scorer.model, scorer.builder.tokenizer, scorer.builder.image_processor, **limits
    )
    return RewardScorer(scorer.model, builder, device="cpu")


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def scorer(tokenizer) -> RewardScorer:
    built = build_tiny_reward_scorer(tokenizer=tokenizer, seed=0)
    _sharpen_head(built.model)
    return built


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("media")
    rng = np.random.default_rng(0)
    image = root / "prompt.png"
    Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)).save(image)
    other = root / "candidate.jpg"
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(other)
    video = encode_video(
        root / "clip.mp4", rng.integers(0, 255, (12, 48, 64, 3), dtype=np.uint8), fps=6
    )
    corrupt = root / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + rng.bytes(3000))
    return {"image": image, "image2": other, "video": video, "corrupt": corrupt, "root": root}


def _text_item(prompt: str, *responses: str, **media) -> ScoringItem:
    return ScoringItem(prompt, [CandidateInput(text=r) for r in responses], **media)


def _separate_scores(scorer: RewardScorer, item: ScoringItem) -> list[float]:
    """Score each candidate alone, in its own prompt+response item."""
    scores = []
    for candidate in item.candidates:
        single = ScoringItem(item.prompt_text, [candidate], item.prompt_image, item.prompt_video)
        (result,) = scorer.score([single], mode="packed")
        assert result.ok, result
        scores.append(result.scores[0])
    return scores


RESPONSES = (
    "A cat sleeps on a red sofa.",
    "Two boats on a lake under a mountain, and the sun is setting.",
    "There is a dog.",
    "I am not sure what the picture shows.",
)


# ---- attention modes -----------------------------------------------------------------------


def test_it_lets_later_packed_candidates_see_earlier_ones(scorer):
    item = _text_item("Which animal is shown?", *RESPONSES)

    (packed,) = scorer.score([item], mode="packed")

    alone = _separate_scores(scorer, item)
    assert all(abs(p - a) > 1e-4 for p, a in zip(packed.scores[1:], alone[1:], strict=True))


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_it_isolates_every_candidate_like_separate_passes(tokenizer, media, family):
    scorer = build_tiny_reward_scorer(tokenizer=tokenizer, family=family, seed=3)
    _sharpen_head(scorer.model)
    item = _text_item(
        "Describe the picture and the clip.",
        *RESPONSES,
        prompt_image=media["image"],
        prompt_video=media["video"],
    )

    (isolated,) = scorer.score([item], mode="isolated")
    (separate,) = scorer.score([item], mode="separate")

    torch.testing.assert_close(isolated.scores, _separate_scores(scorer, item), **TOL)
    torch.testing.assert_close(separate.scores, isolated.scores, **TOL)


def test_it_uses_the_same_positions_as_the_backbone(scorer, media):
    # Our M-RoPE positions must equal what the backbone computes itself from
    # mm_token_type_ids, or a separate pass would not be a faithful baseline.
    item = _text_item(
        "What happens?", "A walk.", prompt_image=media["image"], prompt_video=media["video"]
    )
    builder = scorer.builder
    rows = builder.plan(0, builder.encode_item(item), "separate").rows
    batch = builder.collate(rows[:1], "separate")
    backbone = scorer.model.backbone

    native, _ = backbone.get_rope_index(
        batch.input_ids,
        batch.mm_token_type_ids,
        image_grid_thw=batch.image_grid_thw,
        video_grid_thw=batch.video_grid_thw,
    )

    assert torch.equal(batch.position_ids, native)
    with torch.no_grad():
        ours = scorer.model(batch)
        backbone.rope_deltas = None
        hidden = backbone(
            input_ids=batch.input_ids,
            mm_token_type_ids=batch.mm_token_type_ids,
            pixel_values=batch.pixel_values,
            image_grid_thw=batch.image_grid_thw,
            pixel_values_videos=batch.pixel_values_videos,
            video_grid_thw=batch.video_grid_thw,
        ).last_hidden_state
        theirs = scorer.model.score_hidden_states(
            hidden, batch.response_starts, batch.response_ends
        )
    torch.testing.assert_close(ours, theirs, **TOL)


@pytest.mark.parametrize("mode", ["packed", "isolated"])
def test_it_scores_a_padded_batch_like_each_item_alone(scorer, media, mode):
    items = [
        _text_item("Short prompt?", "Yes.", "No, definitely not, and here is why."),
        _text_item(
            "A much longer prompt about the picture, asking for detail?",
            *RESPONSES,
            prompt_image=media["image"],
        ),
        _text_item("One answer only?", "Only this one."),
    ]

    batched = scorer.score(items, mode=mode)

    for item, result in zip(items, batched, strict=True):
        (alone,) = scorer.score([item], mode=mode)
        torch.testing.assert_close(result.scores, alone.scores, **TOL)


def test_it_masks_empty_slots_with_minus_infinity(scorer):
    builder = scorer.builder
    rows = []
    for index, item in enumerate([_text_item("a?", "x", "y", "z"), _text_item("b?", "w")]):
        rows += builder.plan(index, builder.encode_item(item), "packed").rows

    with torch.no_grad():
        scores = scorer.model(builder.collate(rows, "packed"))

    assert scores.shape == (2, 3)
    assert torch.isfinite(scores[0]).all()
    assert torch.isfinite(scores[1, 0]) and torch.isneginf(scores[1, 1:]).all()


def test_it_keeps_control_tokens_in_responses_as_plain_text(scorer):
    builder = scorer.builder
    item = _text_item(f"Is {IM_END} a token?", f"done {IM_END} <|resp_sep|>", "Fine.")

    (row,) = builder.plan(0, builder.encode_item(item), "packed").rows

    # Only the template's own: system, user and assistant turns end with <|im_end|>, and one
    # separator joins the two responses.
    assert row.ids.count(builder.token_ids[IM_END]) == 3
    assert row.ids.count(builder.token_ids["<|resp_sep|>"]) == 1
    assert "done <\u200b|im_end|> <\u200b|resp_sep|>" in builder.tokenizer.decode(row.ids)


# ---- media ---------------------------------------------------------------------------------


def test_it_scores_image_and_video_prompts_from_files(scorer, media):
    items = [
        _text_item("What is in the image?", "A cat.", "A boat.", prompt_image=media["image"]),
        _text_item(
            "What happens in the clip?", "People walk.", "Rain.", prompt_video=media["video"]
        ),
    ]

    results = scorer.score(items)

    assert all(r.ok for r in results), results
    assert results[0].scores != results[1].scores


def test_it_scores_image_and_video_candidates(scorer, media):
    item = ScoringItem(
        "Generate a picture of a cat.",
        [
            CandidateInput(kind="image", path=media["image"]),
            CandidateInput(kind="video", path=media["video"], text="a short clip"),
            CandidateInput(kind="image", path=media["image2"], text="a cat"),
        ],
    )

    (isolated,) = scorer.score([item], mode="isolated")

    assert isolated.ok, isolated
    torch.testing.assert_close(isolated.scores, _separate_scores(scorer, item), **TOL)


def test_it_accepts_decoded_media_in_memory(scorer, media):
    frames = np.random.default_rng(1).integers(0, 255, (4, 56, 56, 3), dtype=np.uint8)
    video = VideoFrames(frames=frames, indices=[0, 1, 2, 3], timestamps=[0, 1, 2, 3], fps=1.0)
    image = Image.open(media["image"]).convert("RGB")
    item = ScoringItem("Same?", [CandidateInput(kind="video", media=video)], prompt_image=image)

    (result,) = scorer.score([item])

    assert result.ok, result


# ---- per-item errors -----------------------------------------------------------------------


def test_it_reports_a_corrupt_video_candidate_and_scores_the_others(scorer, media):
    items = [
        ScoringItem(
            "Make a video of rain.",
            [
                CandidateInput(kind="video", path=media["corrupt"]),
                CandidateInput(kind="video", path=media["video"]),
                CandidateInput(text="I cannot make videos."),
            ],
        ),
        _text_item("Unrelated?", "Fine."),
    ]

    results = scorer.score(items, mode="packed")

    assert results[0].scores[0] is None
    assert str(media["corrupt"]) in results[0].errors[0]
    assert results[0].scores[1] is not None and results[0].scores[2] is not None
    assert results[1].ok


def test_it_reports_a_missing_prompt_image_for_its_item_only(scorer, media):
    missing = media["root"] / "gone.png"
    items = [
        _text_item("What is this?", "A cat.", "A dog.", prompt_image=missing),
        _text_item("And this?", "A boat.", prompt_image=media["image"]),
    ]

    results = scorer.score(items)

    assert results[0].scores == [None, None]
    assert str(missing) in results[0].error and "not found" in results[0].error
    assert results[1].ok


def test_it_reports_over_long_candidates_and_scores_the_rest(scorer):
    short = _rescored(scorer, max_length=60)
    item = _text_item("Rate these.", "Short one.", " ".join(["word"] * 200), "Another short.")

    (result,) = short.score([item], mode="packed")

    assert result.scores[1] is None and "over max_length 60" in result.errors[1]
    assert result.scores[0] is not None and result.scores[2] is not None


def test_it_splits_rows_that_do_not_fit_without_changing_isolated_scores(scorer):
    item = _text_item("Rate these answers.", *RESPONSES)
    builder = scorer.builder
    (whole_row,) = builder.plan(0, builder.encode_item(item), "isolated").rows
    prompt_len = whole_row.slots[0][1]
    longest = max(last - first + 1 for _, first, last in whole_row.slots)
    tight = _rescored(scorer, max_length=prompt_len + 2 * longest)

    rows = tight.builder.plan(0, tight.builder.encode_item(item), "isolated").rows
    (split,) = tight.score([item], mode="isolated")

    assert len(rows) > 1
    (whole,) = scorer.score([item], mode="isolated")
    torch.testing.assert_close(split.scores, whole.scores, **TOL)


def test_it_reports_an_item_without_candidates(scorer):
    (result,) = scorer.score([ScoringItem("Anything?", [])])

    assert result.error == "item has no candidates"


# ---- checkpoints ---------------------------------------------------------------------------


@pytest.fixture()
def saved(scorer, tmp_path) -> Path:
    return scorer.save(tmp_path / "rm")


def test_it_round_trips_the_seed_layout(scorer, saved, media):
    items = [_text_item("Which?", *RESPONSES, prompt_image=media["image"])]

    loaded = load_reward_model(saved, device="cpu")

    assert isinstance(loaded, RewardScorer)
    assert json.loads((saved / "reward_model_config.json").read_text())["value_head_type"] == "mlp"
    for mode in ("packed", "isolated"):
        torch.testing.assert_close(
            loaded.score(items, mode)[0].scores, scorer.score(items, mode)[0].scores, **TOL
        )


@pytest.mark.parametrize("merge", [False, True])
def test_it_round_trips_a_lora_adapter(tokenizer, tmp_path, merge):
    scorer = build_tiny_reward_scorer(tokenizer=tokenizer, seed=5)
    apply_lora(scorer.model, r=4, alpha=8)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # lora_B starts at zero: make the adapter change the scores
        for name, parameter in scorer.model.backbone.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    _sharpen_head(scorer.model)
    items = [_text_item("Which?", *RESPONSES)]
    path = scorer.save(tmp_path / "rm", merge_lora=merge)

    loaded = load_reward_model(path, device="cpu")

    assert (path / "lora_adapter").is_dir() != merge
    torch.testing.assert_close(loaded.score(items)[0].scores, scorer.score(items)[0].scores, **TOL)


def test_it_loads_an_adapter_saved_from_a_conditional_generation_model(tokenizer, tmp_path):
    from safetensors.torch import load_file, save_file

    scorer = build_tiny_reward_scorer(tokenizer=tokenizer, seed=5)
    apply_lora(scorer.model, r=4, alpha=8)
    with torch.no_grad():
        for name, parameter in scorer.model.backbone.named_parameters():
            if "lora_B" in name:
                parameter.fill_(0.05)
    items = [_text_item("Which?", *RESPONSES)]
    path = scorer.save(tmp_path / "rm")
    adapter = path / "lora_adapter" / "adapter_model.safetensors"
    # Released adapters wrap *ForConditionalGeneration, whose base sits one "model." deeper.
    weights = load_file(adapter)
    save_file(
        {
            k.replace("base_model.model.", "base_model.model.model.", 1): v
            for k, v in weights.items()
        },
        adapter,
    )
    without = _copy_without_adapter(path, tmp_path / "plain")

    loaded = load_reward_model(path, device="cpu")

    expected = scorer.score(items)[0].scores
    torch.testing.assert_close(loaded.score(items)[0].scores, expected, **TOL)
    assert load_reward_model(without, device="cpu").score(items)[0].scores != expected


def _copy_without_adapter(path: Path, target: Path) -> Path:
    shutil.copytree(path, target)
    shutil.rmtree(target / "lora_adapter")
    config = json.loads((target / "reward_model_config.json").read_text())
    config.pop("lora_adapter", None)
    (target / "reward_model_config.json").write_text(json.dumps(config))
    return target


def test_it_round_trips_the_sequence_classification_layout(tokenizer, tmp_path):
    baseline = build_tiny_seq_cls_scorer(tokenizer=tokenizer, seed=2)
    items = [_text_item("Which?", *RESPONSES), _text_item("Other?", "One.")]
    path = save_reward_model(baseline.model, tmp_path / "cls", tokenizer=tokenizer)

    loaded = load_reward_model(path, device="cpu")

    assert isinstance(loaded, SequenceClassificationScorer)
    torch.testing.assert_close(
        [s for r in loaded.score(items) for s in r.scores],
        [s for r in baseline.score(items) for s in r.scores],
        **TOL,
    )


def test_it_scores_one_candidate_per_pass_with_the_classifier(tokenizer, media):
    baseline = build_tiny_seq_cls_scorer(tokenizer=tokenizer, seed=2)
    item = _text_item("Which?", *RESPONSES)

    (batched,) = baseline.score([item])

    for index, response in enumerate(RESPONSES):
        (alone,) = baseline.score([_text_item("Which?", response)])
        torch.testing.assert_close(batched.scores[index], alone.scores[0], **TOL)
    (with_image,) = baseline.score([_text_item("Which?", "A.", prompt_image=media["image"])])
    assert with_image.scores == [None] and "image/video prompt" in with_image.error


def test_it_rejects_a_checkpoint_without_value_head(saved):
    (saved / VALUE_HEAD_FILE).unlink()

    with pytest.raises(CheckpointError, match=r"value_head\.pt: file not found"):
        load_reward_model(saved, device="cpu")


def test_it_rejects_a_value_head_of_the_wrong_hidden_size(saved):
    wrong = torch.nn.Sequential(
        torch.nn.Linear(128, 1024), torch.nn.SiLU(), torch.nn.Linear(1024, 1)
    )
    torch.save(wrong.state_dict(), saved / VALUE_HEAD_FILE)

    with pytest.raises(CheckpointError) as caught:
        load_reward_model(saved, device="cpu")

    message = str(caught.value)
    assert "value_head.pt" in message
    assert "takes 128 inputs but the backbone hidden size is 64" in message


def test_it_rejects_an_unknown_value_head_type(saved):
    config_file = saved / "reward_model_config.json"
    config = json.loads(config_file.read_text())
    config["value_head_type"] = "transformer"
    config_file.write_text(json.dumps(config))

    with pytest.raises(
        CheckpointError,
        match=r"reward_model_config\.json: unknown "
        r"value_head_type 'transformer'",
    ):
        load_reward_model(saved, device="cpu")


def test_it_rejects_a_head_config_that_disagrees_with_the_weights(saved):
    config_file = saved / "reward_model_config.json"
    config = json.loads(config_file.read_text())
    config["value_head_type"] = "linear"
    config_file.write_text(json.dumps(config))

    with pytest.raises(CheckpointError, match=r"value_head\.pt: keys do not match a 'linear'"):
        load_reward_model(saved, device="cpu")


def test_it_rejects_malformed_or_missing_checkpoint_files(saved, tmp_path):
    (saved / "reward_model_config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"reward_model_config\.json: not valid JSON"):
        load_reward_model(saved, device="cpu")

    with pytest.raises(CheckpointError, match="checkpoint directory not found"):
        load_reward_model(tmp_path / "nowhere", device="cpu")

    (tmp_path / "empty").mkdir()
    with pytest.raises(
        CheckpointError, match="config.json: file not found: expected a reward model folder"
    ):
        load_reward_model(tmp_path / "empty", device="cpu")


def test_it_rejects_base_weights_that_do_not_fit_the_config(saved):
    config_file = saved / "config.json"
    config = json.loads(config_file.read_text())
    config["text_config"]["num_hidden_layers"] = 3
    config["text_config"].pop("layer_types", None)
    config_file.write_text(json.dumps(config))

    with pytest.raises(
        CheckpointError, match=r"model\.safetensors: base model weights lack 12 tensors"
    ):
        load_reward_model(saved, device="cpu")


def test_it_rejects_an_invalid_base_config(saved):
    config_file = saved / "config.json"
    config = json.loads(config_file.read_text())
    config["text_config"]["num_hidden_layers"] = 3  # now disagrees with layer_types
    config_file.write_text(json.dumps(config))

    with pytest.raises(CheckpointError, match="cannot load the base model"):
        load_reward_model(saved, device="cpu")


def test_it_rejects_a_checkpoint_that_is_neither_layout(tokenizer, tmp_path):
    path = save_tiny_seq_cls_model(tmp_path / "cls", tokenizer=tokenizer)
    config = json.loads((path / "config.json").read_text())
    config["architectures"] = ["Qwen2ForCausalLM"]
    (path / "config.json").write_text(json.dumps(config))

    with pytest.raises(CheckpointError, match=r"config\.json: no reward_model_config\.json"):
        load_reward_model(path, device="cpu")


# ---- training ------------------------------------------------------------------------------


def test_it_computes_the_nway_loss_as_plain_cross_entropy():
    scores = torch.tensor([[0.5, -1.0, 2.0, float("-inf")], [0.1, 0.2, 0.3, 0.4]])
    best = torch.tensor([2, 0])

    loss = nway_loss(scores, best)

    by_hand = -(torch.log_softmax(scores, -1)[torch.arange(2), best]).mean()
    torch.testing.assert_close(loss, by_hand)


def test_it_computes_the_plackett_luce_likelihood():
    scores = torch.tensor([[1.0, 0.0, -1.0, float("-inf")]], requires_grad=True)
    order = torch.tensor([[2, 0, 1, -1]])

    loss = plackett_luce_loss(scores, order)
    loss.backward()

    s = scores.detach()[0]
    by_hand = -((s[2] - torch.logsumexp(s[[2, 0, 1]], 0)) + (s[0] - torch.logsumexp(s[[0, 1]], 0)))
    torch.testing.assert_close(loss, by_hand)
    assert torch.isfinite(scores.grad).all()


def test_it_breaks_rank_one_ties_at_random():
    rng = random.Random(0)

    picks = {best_index_from_rankings([2, 1, 3, 1], rng) for _ in range(50)}

    assert picks == {1, 3}
    assert best_index_from_rankings([3, 2, 1, 4], rng) == 2


def test_it_changes_parameters_after_one_training_step(tokenizer, media):
    scorer = build_tiny_reward_scorer(tokenizer=tokenizer, seed=7)
    model = scorer.model
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    examples = [
        PreferenceExample(_text_item("Which?", *RESPONSES), [2, 1, 4, 3]),
        PreferenceExample(
            _text_item("Describe.", "A cat.", "A dog.", prompt_image=media["image"]), [1, 2]
        ),
    ]
    batch, skipped = scorer.builder.training_batch(examples, rng=random.Random(0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    loss = train_step(model, batch, optimizer)

    assert skipped == [] and np.isfinite(loss)
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert "value_head.0.weight" in changed
    assert any(name.startswith("backbone.language_model.layers.0") for name in changed)


def test_it_shuffles_candidates_and_keeps_targets_aligned(scorer):
    example = PreferenceExample(_text_item("Which?", *RESPONSES), [3, 4, 1, 2])
    seen_slots = set()

    for seed in range(8):
        batch, _ = scorer.builder.training_batch([example], rng=random.Random(seed))
        inputs = batch.inputs
        slot = int(batch.best_index[0])
        start, end = int(inputs.response_starts[0, slot]), int(inputs.response_ends[0, slot])
        span = scorer.builder.tokenizer.decode(inputs.input_ids[0, start : end + 1])
        # The last response's span runs to the row's end: its read-out is the final "\n".
        assert span.replace(IM_END, "").strip() == RESPONSES[2], span
        seen_slots.add(slot)

    assert len(seen_slots) > 1


def test_it_learns_a_consistent_preference(tokenizer):
    scorer = build_tiny_reward_scorer(tokenizer=tokenizer, seed=11)
    prompts = ["Is the sky blue?", "Name a fruit.", "Count to three.", "Say hello."]
    examples = [
        PreferenceExample(_text_item(p, "I am not sure.", "Here is a careful answer."), [2, 1])
        for p in prompts
    ]

    losses = train(scorer.model, scorer.builder, examples, epochs=20, batch_size=4, lr=3e-3)

    assert losses[-1] < 0.5 * losses[0]
    held_out = _text_item("Name a colour.", "I am not sure.", "Here is a careful answer.")
    (result,) = scorer.score([held_out])
    assert result.scores[1] > result.scores[0]


def test_it_rejects_unknown_head_settings():
    assert RewardHeadConfig(resp_repr_mode="middle").problems() == [
        "unknown resp_repr_mode 'middle' (expected one of last, first, first_last_concat, "
        "first_last_add, first_last_sub, response_mean)"
    ]


@pytest.mark.parametrize("repr_mode", ["first_last_concat", "response_mean"])
def test_it_isolates_candidates_with_other_response_representations(tokenizer, repr_mode):
    scorer = build_tiny_reward_scorer(
        tokenizer=tokenizer, seed=4, head_config=RewardHeadConfig(resp_repr_mode=repr_mode)
    )
    _sharpen_head(scorer.model)
    item = _text_item("Which?", *RESPONSES)

    (isolated,) = scorer.score([item], mode="isolated")

    torch.testing.assert_close(isolated.scores, _separate_scores(scorer, item), **TOL)


def test_it_scores_the_same_with_media_prefetched_in_threads(tokenizer, media):
    items = [
        _text_item(
            f"Prompt {i}: what is shown?",
            *RESPONSES[: 2 + i % 3],
            prompt_image=media["image"] if i % 2 else None,
            prompt_video=media["video"] if i % 3 == 0 else None,
        )
        for i in range(14)
    ]
    built = build_tiny_reward_scorer(tokenizer=tokenizer, seed=6)
    serial = RewardScorer(built.model, built.builder, device="cpu", prefetch_workers=0)
    threaded = RewardScorer(built.model, built.builder, device="cpu", prefetch_items=3)

    expected = serial.score(items, mode="packed")
    got = threaded.score(items, mode="packed")

    assert threaded.prefetch_workers == 2
    for a, b in zip(expected, got, strict=True):
        assert a.ok and b.ok and (a.layout, a.note) == (b.layout, b.note)
        # Batches are formed per chunk, so padding differs: equal to float tolerance.
        torch.testing.assert_close(a.scores, b.scores, **TOL)


def test_it_reads_image_answers_from_their_visual_tokens_when_asked(tokenizer, media):
    config = RewardHeadConfig(media_repr_mode="visual_mean")
    scorer = build_tiny_reward_scorer(tokenizer=tokenizer, seed=8, head_config=config)
    _sharpen_head(scorer.model)
    item = ScoringItem(
        "Which picture matches?",
        [
            CandidateInput(text="A cat."),
            CandidateInput(kind="image", path=media["image"], text="mine"),
            CandidateInput(kind="image", path=media["image2"]),
        ],
    )
    row, batch, scores, hidden = packed_forward(scorer, item)
    with torch.no_grad():
        head, scale = scorer.model.value_head, scorer.model.scale
        image_id = scorer.builder.token_ids["<|image_pad|>"]
        expected = []
        for _, first, last in row.slots:
            span = torch.arange(first, last + 1)
            visual = span[batch.input_ids[0, span] == image_id]
            representation = hidden[visual].mean(0) if len(visual) else hidden[last]
            expected.append(float(head(representation)) / scale)

    torch.testing.assert_close(scores.tolist(), expected, **TOL)
    assert len({round(v, 4) for v in expected}) == 3


# ---- image preprocessing -------------------------------------------------------------------


@pytest.mark.parametrize("size", [(700, 430), (20, 12), (112, 56)])
def test_an_image_file_gets_the_pixels_the_processor_gives_the_decoded_image(
    scorer, tmp_path, size
):
    """A file is resized once, straight to the processor's size: the same patches as handing
    the processor the decoded picture (the paper's recipe), whether it shrinks, grows or keeps
    it. A cap before the processor's own resize would resample twice and differ."""
    rng = np.random.default_rng(sum(size))
    path = tmp_path / "picture.png"
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    builder = _rescored(scorer, image_max_pixels=28 * 28 * 16).builder
    visual = builder.encode_image(path)
    expected = builder.image_processor(
        images=[Image.open(path).convert("RGB")],
        size={"shortest_edge": builder.min_pixels, "longest_edge": builder.image_max_pixels},
        return_tensors="pt",
    )
    assert visual.grid_thw == tuple(int(v) for v in expected["image_grid_thw"][0])
    assert torch.equal(visual.pixel_values, expected["pixel_values"])
