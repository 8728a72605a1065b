"""Golden tests: Qwen3-VL video rows are transformers' Qwen3-VL rows, token for token.

The other side is transformers itself: `Qwen3VLProcessor` expands the chat template's video
placeholder (a timestamp and a ``<|vision_start|>...<|vision_end|>`` block per temporal
patch), `Qwen3VLVideoProcessor` samples, sizes and patchifies the frames, and the backbone's
`get_rope_index` gives the positions. The processor cannot be built as usual without
torchvision (its class check looks torchvision's video processors up), so the test skips
that check only, and runs the processors without the steps that need torchvision (resize,
RGB conversion, normalisation): frames are given at the size Qwen3-VL would pick, and the
0.5 mean/std is applied here. Runs on CPU without Django.
"""

from __future__ import annotations

import json
from unittest import mock

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import Qwen3VLProcessor
from transformers.models.qwen3_vl.video_processing_qwen3_vl import (
    Qwen3VLVideoProcessor,
    smart_resize,
)
from transformers.processing_utils import ProcessorMixin
from transformers.video_utils import VideoMetadata

from workers.media import VideoFrames, encode_video
from workers.reward_model import (
    CandidateInput,
    CheckpointError,
    RewardInputBuilder,
    ScoringItem,
    load_reward_model,
)
from workers.tiny import build_tiny_reward_scorer, build_tiny_tokenizer, tiny_image_processor

TOL = {"rtol": 1e-5, "atol": 1e-5}
# A clip budget that keeps the tiny model's rows short: 64 x 96 frames stay at their size.
LIMITS = {"video_max_pixels": 4 * 64 * 96, "video_min_pixels": 4 * 32 * 32}


@pytest.fixture(autouse=True)
def _media_root():
    """Shadow tests/conftest.py's autouse Django fixture: this file runs without Django."""


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def scorer(tokenizer):
    scorer = build_tiny_reward_scorer(tokenizer=tokenizer, family="qwen3_vl", seed=3, **LIMITS)
    with torch.no_grad():
        for parameter in scorer.model.value_head.parameters():
            parameter.normal_(0, 0.3)
    return scorer


@pytest.fixture(scope="module")
def processor(scorer, tokenizer):
    builder = scorer.builder
    video_processor = Qwen3VLVideoProcessor(
        size={"shortest_edge": builder.video_min_pixels, "longest_edge": builder.video_max_pixels},
        fps=builder.video_fps,
        min_frames=builder.min_frames,
        max_frames=builder.max_frames,
    )
    with mock.patch.object(ProcessorMixin, "check_argument_for_proper_class", lambda *a: None):
        return Qwen3VLProcessor(
            image_processor=builder.image_processor,
            tokenizer=tokenizer,
            video_processor=video_processor,
            chat_template=tokenizer.chat_template,
        )


def _clip(frames: int = 5, seed: int = 0, height: int = 64, width: int = 96) -> VideoFrames:
    """Pre-sampled frames: evenly spaced over 50 frames of a 10 fps file, at a size Qwen3-VL
    keeps."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (frames, height, width, 3), dtype=np.uint8)
    indices = [int(i) for i in np.linspace(0, 49, frames).round()]
    return VideoFrames(
        frames=pixels,
        indices=indices,
        timestamps=[i / 10 for i in indices],
        fps=1.0,
        source_fps=10.0,
    )


def _metadata(video: VideoFrames) -> VideoMetadata:
    return VideoMetadata(
        total_num_frames=50, fps=video.source_fps, frames_indices=list(video.indices)
    )


def _reference(processor, text: str, videos: list[VideoFrames]) -> dict[str, torch.Tensor]:
    """What transformers builds for `text` and `videos` (normalised here: 0.5 mean and std)."""
    out = processor(
        text=[text],
        videos=[v.frames for v in videos],
        video_metadata=[_metadata(v) for v in videos],
        do_sample_frames=False,
        do_resize=False,
        do_convert_rgb=False,
        do_normalize=False,
        cap_pixels_per_frame=False,
        return_tensors="pt",
    )
    out["pixel_values_videos"] = (out["pixel_values_videos"] - 0.5) / 0.5
    return out


def _video_prompt(video: VideoFrames) -> ScoringItem:
    return ScoringItem(
        "What happens in the clip?",
        [CandidateInput(text=t) for t in ("A cat jumps.", "A dog runs.", "Two birds.")],
        prompt_video=video,
    )


def _video_answers(videos: list[VideoFrames]) -> ScoringItem:
    return ScoringItem(
        "Make a clip of a dog.",
        [CandidateInput(kind="video", media=v, text=f"Clip {i}.") for i, v in enumerate(videos)],
    )


def _packed(scorer, item: ScoringItem):
    builder = scorer.builder
    encoded = builder.encode_item(item)
    assert encoded.error is None and not any(encoded.candidate_errors), encoded
    (row,) = builder.plan(0, encoded, "packed").rows
    return encoded, row, builder.collate([row], "packed")


def test_it_expands_a_video_prompt_as_qwen3_vls_processor_does(scorer, processor, tokenizer):
    video = _clip()
    encoded, row, batch = _packed(scorer, _video_prompt(video))
    text = scorer.builder.render(encoded, [c.body for c in encoded.candidates])

    reference = _reference(processor, text, [video])

    assert row.ids == reference["input_ids"][0].tolist()
    assert torch.equal(batch.mm_token_type_ids, reference["mm_token_type_ids"].int())
    assert batch.video_grid_thw.tolist() == reference["video_grid_thw"].tolist() == [[3, 4, 6]]
    torch.testing.assert_close(batch.pixel_values_videos, reference["pixel_values_videos"])
    # The layout, spelt out: frame times 0, 1.2 | 2.4, 3.7 | 4.9 (padded with itself).
    user = tokenizer.decode(row.ids).split("<|im_start|>user\n")[1]
    block = "<|vision_start|>" + "<|video_pad|>" * 6 + "<|vision_end|>"
    expected = (
        f"<|vision_start|><0.6 seconds>{block}<3.0 seconds>{block}<4.9 seconds>{block}"
        "<|vision_end|>What happens in the clip?"
    )
    assert user.startswith(expected)


def test_it_expands_video_answers_as_qwen3_vls_processor_does(scorer, processor):
    videos = [_clip(seed=1), _clip(frames=4, seed=2)]
    encoded, row, batch = _packed(scorer, _video_answers(videos))
    text = scorer.builder.render(encoded, [c.body for c in encoded.candidates])

    reference = _reference(processor, text, videos)

    assert row.ids == reference["input_ids"][0].tolist()
    assert batch.video_grid_thw.tolist() == reference["video_grid_thw"].tolist()
    torch.testing.assert_close(batch.pixel_values_videos, reference["pixel_values_videos"])


def _picture_and_clips() -> ScoringItem:
    """An image prompt, a video prompt and video answers in one row."""
    rng = np.random.default_rng(5)
    picture = Image.fromarray(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8))
    item = _video_answers([_clip(seed=1), _clip(frames=4, seed=2)])
    return ScoringItem(
        item.prompt_text, item.candidates, prompt_image=picture, prompt_video=_clip()
    )


@pytest.mark.parametrize("layout", ["video prompt", "video answers", "image and videos"])
def test_it_uses_qwen3_vls_own_positions_for_video(scorer, layout):
    item = {
        "video prompt": lambda: _video_prompt(_clip()),
        "video answers": lambda: _video_answers([_clip(seed=1)] * 2),
        "image and videos": _picture_and_clips,
    }[layout]()
    _, _, batch = _packed(scorer, item)

    native, _ = scorer.model.backbone.get_rope_index(
        batch.input_ids,
        batch.mm_token_type_ids,
        image_grid_thw=batch.image_grid_thw,
        video_grid_thw=batch.video_grid_thw,
    )

    assert torch.equal(batch.position_ids, native)


def _direct_scores(scorer, processor, tokenizer, item: ScoringItem, videos: list[VideoFrames]):
    """The tiny model run by hand on transformers' inputs: the backbone computes its own
    positions, and the head reads the token before each <|resp_sep|> and the last token."""
    encoded = scorer.builder.encode_item(item)
    text = scorer.builder.render(encoded, [c.body for c in encoded.candidates])
    inputs = _reference(processor, text, videos)
    with torch.no_grad():
        hidden = scorer.model.backbone(
            input_ids=inputs["input_ids"],
            mm_token_type_ids=inputs["mm_token_type_ids"],
            pixel_values_videos=inputs["pixel_values_videos"],
            video_grid_thw=inputs["video_grid_thw"],
            use_cache=False,
        ).last_hidden_state[0]
        ids = inputs["input_ids"][0].tolist()
        sep = tokenizer.convert_tokens_to_ids("<|resp_sep|>")
        reads = [i - 1 for i, token in enumerate(ids) if token == sep] + [len(ids) - 1]
        head = scorer.model.value_head
        scores = head(hidden[reads].float()).squeeze(-1) / hidden.shape[-1] ** 0.5
    return scores.tolist()


def test_it_scores_a_video_prompt_as_a_direct_forward_pass(scorer, processor, tokenizer):
    video = _clip()
    item = _video_prompt(video)

    (result,) = scorer.score([item], mode="packed")

    assert result.ok, result
    direct = _direct_scores(scorer, processor, tokenizer, item, [video])
    torch.testing.assert_close(torch.tensor(result.scores), torch.tensor(direct), **TOL)


def test_it_scores_video_answers_as_a_direct_forward_pass(scorer, processor, tokenizer):
    videos = [_clip(seed=1), _clip(frames=4, seed=2), _clip(seed=3)]
    item = _video_answers(videos)

    (result,) = scorer.score([item], mode="packed")

    assert result.ok, result
    direct = _direct_scores(scorer, processor, tokenizer, item, videos)
    torch.testing.assert_close(torch.tensor(result.scores), torch.tensor(direct), **TOL)
    assert len(set(result.scores)) == 3


def test_it_samples_and_sizes_a_video_file_as_qwen3_vl_does(scorer, processor, tmp_path):
    rng = np.random.default_rng(4)
    frames = rng.integers(0, 255, (33, 100, 150, 3), dtype=np.uint8)
    path = encode_video(tmp_path / "clip.mp4", frames, fps=10)
    builder = scorer.builder
    video_processor = processor.video_processor

    visual = builder.encode_video(path)

    metadata = VideoMetadata(total_num_frames=33, fps=10.0)
    indices = video_processor.sample_frames(metadata, fps=builder.video_fps)
    metadata.frames_indices = indices
    height, width = smart_resize(
        len(indices), 100, 150, temporal_factor=2, factor=32, **_budget(builder)
    )
    grid = torch.tensor([[(len(indices) + 1) // 2, height // 16, width // 16]])
    expansion = processor.replace_video_token(
        {"video_grid_thw": grid, "video_metadata": [metadata]}, video_idx=0
    )
    assert len(indices) == 6  # 3.3 s at 2 fps, truncated
    assert visual.grid_thw == tuple(grid[0].tolist())
    assert visual.tokens(-1) == processor.tokenizer(expansion)["input_ids"]
    assert "<0.3 seconds>" in expansion  # frames 0 and 6 of a 10 fps clip


def _budget(builder) -> dict[str, int]:
    return {"min_pixels": builder.video_min_pixels, "max_pixels": builder.video_max_pixels}


def test_it_refuses_a_one_frame_video_as_qwen3_vl_does(scorer):
    item = _video_prompt(_clip(frames=1))

    (result,) = scorer.score([item], mode="packed")

    assert result.error and "needs at least 2" in result.error


def test_it_keeps_qwen3_vl_video_budgets_through_save_and_load(scorer, tmp_path):
    item = _video_answers([_clip(seed=1), _clip(frames=4, seed=2)])
    (before,) = scorer.score([item], mode="packed")

    loaded = load_reward_model(scorer.save(tmp_path / "rm"), device="cpu")
    (after,) = loaded.score([item], mode="packed")
    (isolated,) = loaded.score([item], mode="isolated")
    (separate,) = loaded.score([item], mode="separate")

    assert loaded.builder.limits() == scorer.builder.limits()
    torch.testing.assert_close(after.scores, before.scores, **TOL)
    torch.testing.assert_close(isolated.scores, separate.scores, **TOL)


def test_it_takes_qwen3_vl_video_settings_from_the_checkpoint(scorer, tmp_path):
    folder = scorer.save(tmp_path / "rm")
    config = {
        "size": {"shortest_edge": 2 * 32 * 32, "longest_edge": 6 * 96 * 128},
        "fps": 1.5,
        "min_frames": 2,
        "max_frames": 16,
        "cap_pixels_per_frame": True,
        "max_video_tokens": 6,
        "image_mean": [0.25, 0.5, 0.75],
        "image_std": [0.5, 0.25, 0.5],
    }
    (folder / "video_preprocessor_config.json").write_text(json.dumps(config))
    video = _clip(frames=6, height=100, width=150)

    loaded = load_reward_model(folder, device="cpu")
    visual = loaded.builder.encode_video(video)

    limits = loaded.builder.limits()
    assert (limits["video_min_pixels"], limits["video_max_pixels"]) == (2048, 6 * 96 * 128)
    assert (limits["video_fps"], limits["min_frames"], limits["max_frames"]) == (1.5, 2, 16)
    assert (limits["cap_pixels_per_frame"], limits["max_video_tokens"]) == (True, 6)
    reference = Qwen3VLVideoProcessor(**config)
    t, h, w = visual.grid_thw
    assert t * h * w == reference.get_num_of_video_patches(6, 100, 150)
    assert h * w // 4 <= 6  # the per-frame cap, not the clip budget, sized the frames
    resized = np.stack(
        [
            np.asarray(Image.fromarray(f).resize((w * 16, h * 16), Image.BICUBIC))
            for f in video.frames
        ]
    )
    plain = reference.patchify(
        torch.from_numpy(resized).permute(0, 3, 1, 2)[None].float() / 255,
        patch_size=16,
        merge_size=2,
        temporal_patch_size=2,
    )[0][0]
    mean, std = torch.tensor(config["image_mean"]), torch.tensor(config["image_std"])
    normalised = (plain.view(-1, 3, 2 * 16 * 16) - mean[:, None]) / std[:, None]
    torch.testing.assert_close(visual.pixel_values, normalised.view(plain.shape), **TOL)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"cap_pixels_per_frame": "yes"}, "cap_pixels_per_frame must be true or false"),
        ({"image_mean": [0.5, 0.5]}, "image_mean must be three numbers"),
        ({"min_frames": -1}, "min_frames must be positive"),
    ],
)
def test_it_names_a_bad_video_setting_in_the_checkpoint(scorer, tmp_path, setting, message):
    folder = scorer.save(tmp_path / "rm")
    (folder / "video_preprocessor_config.json").write_text(json.dumps({"fps": 2, **setting}))

    with pytest.raises(CheckpointError, match=message) as caught:
        load_reward_model(folder, device="cpu")

    assert caught.value.path.endswith("video_preprocessor_config.json")


def test_it_normalises_video_with_qwen3_vls_own_default(scorer, processor, tokenizer):
    # An image processor with CLIP's mean/std (transformers' Qwen2-VL default) and no video
    # config: Qwen3-VL's video processor still normalises with its own 0.5.
    clip_means = tiny_image_processor(patch_size=16)
    builder = RewardInputBuilder.for_model(scorer.model, tokenizer, clip_means, **LIMITS)
    video = _clip()

    visual = builder.encode_video(video)

    reference = _reference(processor, "<|vision_start|><|video_pad|><|vision_end|>", [video])
    torch.testing.assert_close(visual.pixel_values, reference["pixel_values_videos"])
