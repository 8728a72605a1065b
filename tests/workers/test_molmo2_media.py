"""Golden tests: Molmo2 image prompts and image answers as transformers' Molmo2 makes them.

The reference is transformers' own ``Molmo2Processor`` and ``Molmo2ImageProcessor``. The image
processor runs only on its torchvision backend, which does not import beside our torch, so
the two torchvision calls it makes (a bilinear resize without antialias and a normalisation)
are stood in for here by their definitions (``_TorchvisionStandIn``); everything else (tiling,
crops, pooling indices, token expansion, BOS, ``mm_token_type_ids``) is transformers' code.
Quorum's rows, pixels and scores are compared with it and with a direct forward of the tiny
Molmo2 backbone. Runs on CPU without Django.
"""

from __future__ import annotations

import enum
import types
from unittest import mock

import numpy as np
import pytest
import torch
from PIL import Image
from torch.nn import functional as F
from transformers import Molmo2Processor
from transformers import image_processing_backends as backends
from transformers import video_processing_utils as video_backends
from transformers.image_utils import PILImageResampling
from transformers.models.molmo2.image_processing_molmo2 import Molmo2ImageProcessor
from transformers.models.molmo2.video_processing_molmo2 import Molmo2VideoProcessor
from transformers.processing_utils import ProcessorMixin

from workers.media import encode_video, sample_video_frames
from workers.reward_model import RESPONSE_SEPARATOR, CandidateInput, ScoringItem
from workers.reward_model.molmo2 import (
    Molmo2ImageSettings,
    Molmo2VideoSettings,
    collate_molmo2_images,
    collate_molmo2_videos,
    molmo2_frame_indices,
    molmo2_image_inputs,
    molmo2_video_inputs,
)
from workers.tiny import build_tiny_reward_scorer, build_tiny_tokenizer

TOL = {"rtol": 1e-5, "atol": 1e-5}


class _Interpolation(enum.Enum):
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    LANCZOS = "lanczos"


def _resize(image, size, interpolation=_Interpolation.BILINEAR, antialias=True):
    # torchvision's tensor resize: interpolate (align_corners=False), unchanged at its own size.
    assert interpolation is _Interpolation.BILINEAR and not antialias
    assert image.is_floating_point()
    if list(image.shape[-2:]) == list(size):
        return image
    return F.interpolate(image, size=list(size), mode="bilinear", align_corners=False)


def _normalize(image, mean, std, inplace=False):
    # torchvision's normalize: (image - mean) / std per channel.
    mean = torch.as_tensor(mean, dtype=image.dtype)[:, None, None]
    std = torch.as_tensor(std, dtype=image.dtype)[:, None, None]
    image = image if inplace else image.clone()
    return image.sub_(mean).div_(std)


def _grayscale_to_rgb(image):
    return image if image.shape[-3] != 1 else image.expand(*image.shape[:-3], 3, *image.shape[-2:])


_TorchvisionStandIn = types.SimpleNamespace(
    resize=_resize,
    normalize=_normalize,
    grayscale_to_rgb=_grayscale_to_rgb,
    InterpolationMode=_Interpolation,
)


@pytest.fixture(autouse=True)
def _media_root():
    """Shadow tests/conftest.py's autouse Django fixture: this file runs without Django."""


@pytest.fixture(autouse=True)
def _torchvision_stand_in():
    mapping = {PILImageResampling.BILINEAR: _Interpolation.BILINEAR}
    with (
        mock.patch.object(backends, "tvF", _TorchvisionStandIn, create=True),
        mock.patch.object(video_backends, "tvF", _TorchvisionStandIn, create=True),
        mock.patch.object(backends, "pil_torch_interpolation_mapping", mapping),
    ):
        yield


@pytest.fixture(scope="module")
def scorer():
    scorer = build_tiny_reward_scorer(tokenizer=build_tiny_tokenizer(), family="molmo2", seed=4)
    with torch.no_grad():
        for parameter in scorer.model.value_head.parameters():
            parameter.normal_(0, 0.3)
        # Randomly initialised at std 0.02, the tiny vision tower and adapter add features
        # ~1e-7 of a score to the patch tokens; at unit gain a wrong crop or pooling index
        # moves the scores by ~0.1.
        backbone = scorer.model.backbone
        for module in (backbone.vision_tower, backbone.multi_modal_projector):
            for parameter in module.parameters():
                if parameter.ndim == 2:
                    parameter.normal_(0, parameter.shape[1] ** -0.5)
    return scorer


@pytest.fixture(scope="module")
def video_processor():
    # The tiny scorer's video settings (workers/tiny.py): 112-pixel frames, at most 6.
    return Molmo2VideoProcessor(
        size={"height": 112, "width": 112}, num_frames=6, do_rescale=True, do_normalize=True
    )


@pytest.fixture(scope="module")
def processor(scorer, video_processor):
    builder = scorer.builder
    with mock.patch.object(ProcessorMixin, "check_argument_for_proper_class", lambda *a: None):
        return Molmo2Processor(
            image_processor=builder.image_processor,
            video_processor=video_processor,
            tokenizer=builder.tokenizer,
            chat_template=builder.tokenizer.chat_template,
        )


def _picture(height: int, width: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
    return image.convert(mode)


def _reference(processor, prompt: str, bodies: list[str], images: list[Image.Image]):
    """The processor's inputs for a row written as the paper writes it: the chat template over
    a user turn (the prompt image, then the text) and the responses joined by the separator,
    ``<|image|>`` where an image answer stands."""
    user = [{"type": "image"}] * (len(images) - sum("<|image|>" in b for b in bodies))
    messages = [
        {"role": "user", "content": [*user, {"type": "text", "text": prompt}]},
        {
            "role": "assistant",
            "content": [{"type": "text", "text": RESPONSE_SEPARATOR.join(bodies)}],
        },
    ]
    text = processor.tokenizer.apply_chat_template(messages, tokenize=False)
    return processor(text=text, images=images or None, return_tensors="pt")


def _row_batch(scorer, item: ScoringItem):
    builder = scorer.builder
    (row,) = builder.plan(0, builder.encode_item(item), "packed").rows
    return row, builder.collate([row], "packed")


# -- pixels ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "sizes"),
    [
        ({}, [(56, 84), (500, 300)]),  # transformers' defaults: 378-pixel crops, up to 8
        (
            {"size": {"height": 112, "width": 112}, "max_crops": 4, "overlap_margins": [1, 1]},
            [(150, 230), (64, 64), (40, 300), (230, 150)],
        ),
    ],
)
def test_it_preprocesses_images_as_molmo2s_image_processor(settings, sizes):
    reference = Molmo2ImageProcessor(**settings)
    images = [_picture(h, w, seed=i) for i, (h, w) in enumerate(sizes)]
    images.append(_picture(90, 70, seed=9, mode="L"))  # greyscale, made RGB

    expected = reference(images=images, return_tensors="pt")
    ours = collate_molmo2_images(
        [
            molmo2_image_inputs(image, Molmo2ImageSettings.from_processor(reference))
            for image in images
        ]
    )

    assert set(ours) == set(expected)
    for name, value in expected.items():
        assert torch.equal(ours[name], value.to(ours[name].dtype)), name
    assert int(expected["image_num_crops"].max()) > 2  # some images are tiled


# -- token ids -------------------------------------------------------------------------------


def test_it_writes_an_image_prompt_as_molmo2s_processor(scorer, processor):
    image = _picture(150, 230)
    responses = ["A cat.", "A dog.", "Two birds."]
    expected = _reference(processor, "What is shown?", responses, [image])

    row, batch = _row_batch(
        scorer,
        ScoringItem(
            "What is shown?", [CandidateInput(text=r) for r in responses], prompt_image=image
        ),
    )

    assert row.ids == expected["input_ids"][0].tolist()
    assert torch.equal(batch.mm_token_type_ids[0], expected["mm_token_type_ids"][0].int())
    assert int(expected["image_num_crops"][0]) > 2  # tiled: crops after the low-res view
    for name in ("pixel_values", "image_token_pooling", "image_grids", "image_num_crops"):
        assert torch.equal(getattr(batch, name), expected[name].to(getattr(batch, name).dtype)), (
            name
        )
    tokens = scorer.builder.tokenizer.convert_ids_to_tokens(row.ids)
    assert tokens[0] == scorer.builder.tokenizer.eos_token  # the processor's BOS stand-in
    assert tokens.count("<low_res_im_start>") == 1 and tokens.count("<im_start>") == 1


def test_it_writes_image_answers_as_molmo2s_processor(scorer, processor):
    prompt_image, first, second = _picture(64, 96, 1), _picture(120, 80, 2), _picture(60, 200, 3)
    item = ScoringItem(
        "Which picture shows a cat?",
        [
            CandidateInput(kind="image", media=first, text="A cat."),
            CandidateInput(text="Neither."),
            CandidateInput(kind="image", media=second),
        ],
        prompt_image=prompt_image,
    )
    bodies = ["<|image|>A cat.", "Neither.", "<|image|>"]
    expected = _reference(processor, item.prompt_text, bodies, [prompt_image, first, second])

    row, batch = _row_batch(scorer, item)

    assert row.ids == expected["input_ids"][0].tolist()
    assert torch.equal(batch.mm_token_type_ids[0], expected["mm_token_type_ids"][0].int())
    for name in ("pixel_values", "image_token_pooling", "image_grids", "image_num_crops"):
        assert torch.equal(getattr(batch, name), expected[name].to(getattr(batch, name).dtype)), (
            name
        )
    # Read-outs: before each separator, and the row's last token.
    sep = scorer.builder.sep_id
    seps = [i for i, token in enumerate(row.ids) if token == sep]
    assert [last for _, _, last in row.slots] == [seps[0] - 1, seps[1] - 1, len(row.ids) - 1]


# -- scores ----------------------------------------------------------------------------------


IMAGE_INPUTS = ("pixel_values", "image_token_pooling", "image_grids", "image_num_crops")


def _direct_scores(scorer, inputs, media=IMAGE_INPUTS) -> list[float]:
    """The backbone run as transformers runs Molmo2 on the processor's inputs (its own
    positions and mask; the ``media`` ones), the value head read before each separator and at
    the last token."""
    model = scorer.model
    ids = inputs["input_ids"]
    with torch.no_grad():
        hidden = model.backbone(
            input_ids=ids,
            **{name: inputs[name] for name in media},
            mm_token_type_ids=inputs["mm_token_type_ids"],
            use_cache=False,
        ).last_hidden_state[0]
        seps = (ids[0] == scorer.builder.sep_id).nonzero().flatten().tolist()
        reads = [*(s - 1 for s in seps), ids.shape[1] - 1]
        return (model.value_head(hidden[reads].float()).squeeze(-1) / model.scale).tolist()


def test_it_scores_images_as_a_direct_forward_of_molmo2(scorer, processor):
    prompt_image, answer = _picture(150, 230, 4), _picture(80, 120, 5)
    item = ScoringItem(
        "Which is right?",
        [
            CandidateInput(text="A cat."),
            CandidateInput(kind="image", media=answer, text="This one."),
            CandidateInput(text="Two dogs."),
        ],
        prompt_image=prompt_image,
    )
    bodies = ["A cat.", "<|image|>This one.", "Two dogs."]
    expected = _direct_scores(
        scorer, _reference(processor, item.prompt_text, bodies, [prompt_image, answer])
    )

    (result,) = scorer.score([item], mode="packed")

    assert result.ok and result.layout == "packed", result
    torch.testing.assert_close(result.scores, expected, **TOL)
    assert max(expected) - min(expected) > 1e-3
    other = ScoringItem(
        item.prompt_text,
        [
            *item.candidates[:1],
            CandidateInput(kind="image", media=_picture(80, 120, 6), text="This one."),
            *item.candidates[2:],
        ],
        prompt_image=prompt_image,
    )
    (changed,) = scorer.score([other], mode="packed")
    assert abs(changed.scores[1] - result.scores[1]) > 1e-3  # the answer's pixels count


def test_it_scores_each_row_of_a_batch_with_its_own_images(scorer):
    # Rows of one batch share the crops tensor: each row's pooling indices must point at its
    # own image's patches.
    items = [
        ScoringItem(
            "What is shown?",
            [CandidateInput(text="A cat."), CandidateInput(text="A dog.")],
            prompt_image=_picture(150, 230, 6),
        ),
        ScoringItem(
            "Which?",
            [CandidateInput(kind="image", media=_picture(90, 60, 7)), CandidateInput(text="No.")],
            prompt_image=_picture(64, 64, 8),
        ),
    ]

    together = scorer.score(items, mode="packed")
    alone = [scorer.score([item], mode="packed")[0] for item in items]

    for batched, single in zip(together, alone, strict=True):
        assert batched.ok, batched
        torch.testing.assert_close(batched.scores, single.scores, **TOL)


def test_it_scores_isolated_as_separate_passes_with_images(scorer):
    items = [
        ScoringItem(
            "What?",
            [CandidateInput(text="A cat."), CandidateInput(text="A dog.")],
            prompt_image=_picture(64, 96, 1),
        ),
        ScoringItem(
            "Which?",
            [
                CandidateInput(text="A cat."),
                CandidateInput(kind="image", media=_picture(60, 90, 2)),
            ],
        ),
        ScoringItem(
            "Which?",
            [
                CandidateInput(text="A cat."),
                CandidateInput(kind="image", media=_picture(60, 90, 3)),
            ],
            prompt_image=_picture(64, 64, 4),
        ),
    ]

    isolated = scorer.score(items, mode="isolated")
    separate = scorer.score(items, mode="separate")

    for left, right in zip(isolated, separate, strict=True):
        assert left.ok and right.ok
        torch.testing.assert_close(left.scores, right.scores, **TOL)
    assert [r.layout for r in isolated] == ["isolated", "isolated", "separate"]
    assert "attend to each other" in isolated[2].note


# -- videos ----------------------------------------------------------------------------------


def _clip(tmp_path, name: str, count: int, seed: int, fps: int = 10):
    """An mp4 of `count` random 40 x 56 frames, and all its frames as PyAV decodes them (the
    processor's input: sampling is the video processor's job)."""
    rng = np.random.default_rng(seed)
    # Smooth frames survive H.264 well enough to differ from each other.
    base = rng.integers(0, 255, (count, 5, 7, 3), dtype=np.uint8)
    frames = np.stack([np.asarray(Image.fromarray(f).resize((56, 40))) for f in base])
    path = encode_video(tmp_path / name, frames, fps=fps)
    decoded = sample_video_frames(path, max_side=None, frame_indices=lambda t, r: range(t))
    assert len(decoded.frames) == count and decoded.source_fps == fps
    return path, decoded.frames


def _video_reference(processor, prompt, bodies, videos, *, images=()):
    """The processor's inputs for a row with one video (in the prompt unless a body holds
    ``<|video|>``), sampled by the video processor from all of its frames."""
    frames, fps = videos
    user = [] if any("<|video|>" in b for b in bodies) else [{"type": "video"}]
    messages = [
        {"role": "user", "content": [*user, {"type": "text", "text": prompt}]},
        {
            "role": "assistant",
            "content": [{"type": "text", "text": RESPONSE_SEPARATOR.join(bodies)}],
        },
    ]
    text = processor.tokenizer.apply_chat_template(messages, tokenize=False)
    metadata = {"fps": float(fps), "total_num_frames": len(frames)}
    return processor(text=text, videos=[frames], video_metadata=[metadata], return_tensors="pt")


VIDEO_INPUTS = ("pixel_values_videos", "video_token_pooling", "video_grids")


def test_it_samples_and_preprocesses_videos_as_molmo2s_video_processor(
    scorer, video_processor, tmp_path
):
    settings = scorer.builder.molmo2_video
    assert Molmo2VideoSettings.from_processor(video_processor) == settings
    clips = [_clip(tmp_path, "a.mp4", 23, 0), _clip(tmp_path, "b.mp4", 16, 1)]
    metadata = [{"fps": 10.0, "total_num_frames": len(frames)} for _, frames in clips]

    expected = video_processor(
        videos=[frames for _, frames in clips],
        video_metadata=metadata,
        return_metadata=True,
        return_tensors="pt",
    )
    visuals = [scorer.builder.encode_video(path) for path, _ in clips]
    ours = collate_molmo2_videos([v.molmo2 for v in visuals])

    # 2.3 s at max_fps 2: 4 frames, arange(0, 23, 5.75) (not evenly spaced end to end).
    sampled = [m.frames_indices.tolist() for m in expected["video_metadata"]]
    assert sampled[0] == [0, 5, 11, 17]
    assert [molmo2_frame_indices(len(f), 10.0, settings) for _, f in clips] == sampled
    assert [v.molmo2.timestamps for v in visuals] == [[i / 10 for i in s] for s in sampled]
    for name in VIDEO_INPUTS:
        assert torch.equal(ours[name], expected[name].to(ours[name].dtype)), name
    direct = molmo2_video_inputs(clips[0][1][sampled[0]], [0.0] * 4, settings)
    assert torch.equal(direct.pixel_values, visuals[0].molmo2.pixel_values)


def test_it_writes_a_video_prompt_as_molmo2s_processor(scorer, processor, tmp_path):
    path, frames = _clip(tmp_path, "prompt.mp4", 23, 2)
    responses = ["A cat runs.", "A dog sits.", "Nothing."]
    expected = _video_reference(processor, "What happens?", responses, (frames, 10))

    row, batch = _row_batch(
        scorer,
        ScoringItem(
            "What happens?", [CandidateInput(text=r) for r in responses], prompt_video=path
        ),
    )

    assert row.ids == expected["input_ids"][0].tolist()
    assert torch.equal(batch.mm_token_type_ids[0], expected["mm_token_type_ids"][0].int())
    for name in VIDEO_INPUTS:
        assert torch.equal(getattr(batch, name), expected[name].to(getattr(batch, name).dtype)), (
            name
        )
    assert batch.pixel_values is None
    text = scorer.builder.tokenizer.decode(row.ids)
    assert all(f"{t:.1f}" in text for t in (0.0, 0.5, 1.1, 1.7))  # the frames' times
    tokens = scorer.builder.tokenizer.convert_ids_to_tokens(row.ids)
    assert tokens.count("<frame_start>") == 4


def test_it_writes_a_video_answer_as_molmo2s_processor(scorer, processor, tmp_path):
    path, frames = _clip(tmp_path, "answer.mp4", 14, 3)
    item = ScoringItem(
        "Which clip shows a cat?",
        [
            CandidateInput(text="None of them."),
            CandidateInput(kind="video", path=str(path), text="This one."),
        ],
    )
    bodies = ["None of them.", "<|video|>This one."]
    expected = _video_reference(processor, item.prompt_text, bodies, (frames, 10))

    row, batch = _row_batch(scorer, item)

    assert row.ids == expected["input_ids"][0].tolist()
    assert torch.equal(batch.mm_token_type_ids[0], expected["mm_token_type_ids"][0].int())
    for name in VIDEO_INPUTS:
        assert torch.equal(getattr(batch, name), expected[name].to(getattr(batch, name).dtype)), (
            name
        )
    sep = scorer.builder.sep_id
    seps = [i for i, token in enumerate(row.ids) if token == sep]
    assert [last for _, _, last in row.slots] == [seps[0] - 1, len(row.ids) - 1]


def test_it_scores_videos_as_a_direct_forward_of_molmo2(scorer, processor, tmp_path):
    prompt_path, prompt_frames = _clip(tmp_path, "p.mp4", 23, 4)
    answer_path, answer_frames = _clip(tmp_path, "q.mp4", 14, 5)
    prompted = ScoringItem(
        "What happens?",
        [CandidateInput(text="A cat runs."), CandidateInput(text="Two dogs.")],
        prompt_video=prompt_path,
    )
    answered = ScoringItem(
        "Which clip?",
        [CandidateInput(text="Neither."), CandidateInput(kind="video", path=str(answer_path))],
    )
    expected = [
        _direct_scores(
            scorer,
            _video_reference(
                processor, prompted.prompt_text, ["A cat runs.", "Two dogs."], (prompt_frames, 10)
            ),
            VIDEO_INPUTS,
        ),
        _direct_scores(
            scorer,
            _video_reference(
                processor, answered.prompt_text, ["Neither.", "<|video|>"], (answer_frames, 10)
            ),
            VIDEO_INPUTS,
        ),
    ]

    results = scorer.score([prompted, answered], mode="packed")

    for result, scores in zip(results, expected, strict=True):
        assert result.ok and result.layout == "packed", result
        torch.testing.assert_close(result.scores, scores, **TOL)
    assert max(expected[0]) - min(expected[0]) > 1e-3
    other_path, _ = _clip(tmp_path, "r.mp4", 14, 6)
    other = ScoringItem(
        answered.prompt_text,
        [answered.candidates[0], CandidateInput(kind="video", path=str(other_path))],
    )
    (changed,) = scorer.score([other], mode="packed")
    assert abs(changed.scores[1] - results[1].scores[1]) > 1e-3  # the answer's frames count


def test_it_scores_several_video_answers_one_row_per_candidate(scorer, tmp_path):
    # transformers' Molmo2 takes one video per text and no image beside it.
    first, _ = _clip(tmp_path, "first.mp4", 14, 7)
    second, _ = _clip(tmp_path, "second.mp4", 9, 8)
    candidates = [
        CandidateInput(kind="video", path=str(first)),
        CandidateInput(text="Neither."),
        CandidateInput(kind="image", media=_picture(60, 90, 9)),
        CandidateInput(kind="video", path=str(second)),
    ]
    item = ScoringItem("Which shows a cat?", candidates)

    for mode in ("packed", "isolated"):
        (result,) = scorer.score([item], mode=mode)
        assert result.ok and result.layout == "separate", result
        assert "one video per row" in result.note
        alone = [
            scorer.score([ScoringItem(item.prompt_text, [c])], mode="packed")[0].scores[0]
            for c in candidates
        ]
        torch.testing.assert_close(result.scores, alone, **TOL)


def test_it_refuses_a_video_beside_other_media_with_a_reason(scorer, tmp_path):
    clip, _ = _clip(tmp_path, "clip.mp4", 9, 10)
    video = CandidateInput(kind="video", path=str(clip))
    image = CandidateInput(kind="image", media=_picture(60, 90, 11))
    text = CandidateInput(text="A cat.")
    items = [
        ScoringItem("Which?", [text, video], prompt_image=_picture(64, 64, 12)),
        ScoringItem("Which?", [text, video, image], prompt_video=clip),
        ScoringItem("Which?", [text], prompt_image=_picture(64, 64, 12), prompt_video=clip),
    ]

    refused_answer, refused_answers, refused_prompt = scorer.score(items, mode="packed")

    assert refused_answer.scores[0] is not None and refused_answer.scores[1] is None
    assert "no image beside a video" in refused_answer.errors[1]
    assert refused_answers.scores[0] is not None
    assert refused_answers.scores[1:] == [None, None]
    assert all("one video per row" in e for e in refused_answers.errors[1:])
    assert not refused_prompt.ok and "no image beside a video" in refused_prompt.error


def test_it_scores_a_batch_of_image_rows_and_video_rows(scorer, tmp_path):
    # transformers' Molmo2 forward takes images or videos: a mixed batch computes each kind's
    # features apart and places them in the rows' order.
    clip, _ = _clip(tmp_path, "mixed.mp4", 14, 13)
    items = [
        ScoringItem(
            "What is shown?",
            [CandidateInput(text="A cat."), CandidateInput(text="A dog.")],
            prompt_image=_picture(150, 230, 14),
        ),
        ScoringItem(
            "What happens?",
            [CandidateInput(text="A cat runs."), CandidateInput(text="Nothing.")],
            prompt_video=clip,
        ),
        ScoringItem(
            "Which?",
            [CandidateInput(kind="image", media=_picture(90, 60, 15)), CandidateInput(text="No.")],
        ),
    ]

    together = scorer.score(items, mode="packed")
    alone = [scorer.score([item], mode="packed")[0] for item in items]

    for batched, single in zip(together, alone, strict=True):
        assert batched.ok, batched
        torch.testing.assert_close(batched.scores, single.scores, **TOL)


def test_it_saves_and_loads_molmo2_video_settings(scorer, tmp_path):
    from workers.reward_model import load_reward_model

    clip, _ = _clip(tmp_path, "saved.mp4", 14, 16)
    item = ScoringItem(
        "What happens?",
        [CandidateInput(text="A cat runs."), CandidateInput(text="Nothing.")],
        prompt_video=clip,
    )
    (before,) = scorer.score([item], mode="packed")

    path = scorer.save(tmp_path / "molmo2")
    loaded = load_reward_model(path, device="cpu")
    (after,) = loaded.score([item], mode="packed")

    assert loaded.builder.molmo2_video == scorer.builder.molmo2_video
    assert after.ok, after
    torch.testing.assert_close(after.scores, before.scores, **TOL)

    # Without a video processor config, transformers has no video processor: videos are
    # refused with the reason, images still score.
    (path / "video_preprocessor_config.json").unlink()
    bare = load_reward_model(path, device="cpu")
    (refused,) = bare.score([item], mode="packed")
    assert not refused.ok and "no video_preprocessor_config.json" in refused.error
    with_image = ScoringItem(item.prompt_text, item.candidates, prompt_image=_picture(64, 64))
    assert bare.score([with_image], mode="packed")[0].ok


def test_it_scores_videos_isolated_as_separate_passes(scorer, tmp_path):
    # A row's frame tokens are one bidirectional block: the isolated mask keeps it within a
    # candidate's segment and the prompt, as a one-response row has it.
    prompt, _ = _clip(tmp_path, "iso-prompt.mp4", 14, 17)
    answer, _ = _clip(tmp_path, "iso-answer.mp4", 14, 18)
    items = [
        ScoringItem(
            "What happens?",
            [CandidateInput(text="A cat runs."), CandidateInput(text="Two dogs sit.")],
            prompt_video=prompt,
        ),
        ScoringItem(
            "Which?",
            [
                CandidateInput(text="A cat."),
                CandidateInput(kind="video", path=str(answer), text="This."),
                CandidateInput(text="No."),
            ],
        ),
    ]

    isolated = scorer.score(items, mode="isolated")
    separate = scorer.score(items, mode="separate")

    for left, right in zip(isolated, separate, strict=True):
        assert left.ok and right.ok and left.layout == "isolated", left
        torch.testing.assert_close(left.scores, right.scores, **TOL)
