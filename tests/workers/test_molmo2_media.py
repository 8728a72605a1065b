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
from transformers.image_utils import PILImageResampling
from transformers.models.molmo2.image_processing_molmo2 import Molmo2ImageProcessor
from transformers.processing_utils import ProcessorMixin

from workers.reward_model import RESPONSE_SEPARATOR, CandidateInput, ScoringItem
from workers.reward_model.molmo2 import (
    Molmo2ImageSettings,
    collate_molmo2_images,
    molmo2_image_inputs,
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
def processor(scorer):
    builder = scorer.builder
    with mock.patch.object(ProcessorMixin, "check_argument_for_proper_class", lambda *a: None):
        return Molmo2Processor(
            image_processor=builder.image_processor,
            video_processor=None,
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


def _direct_scores(scorer, inputs) -> list[float]:
    """The backbone run as transformers runs Molmo2 on the processor's inputs (its own
    positions and mask), the value head read before each separator and at the last token."""
    model = scorer.model
    ids = inputs["input_ids"]
    with torch.no_grad():
        hidden = model.backbone(
            input_ids=ids,
            pixel_values=inputs["pixel_values"],
            image_token_pooling=inputs["image_token_pooling"],
            image_grids=inputs["image_grids"],
            image_num_crops=inputs["image_num_crops"],
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


def test_it_refuses_molmo2_videos_with_a_reason(scorer):
    from workers.media import VideoFrames

    frames = np.zeros((4, 32, 32, 3), dtype=np.uint8)
    clip = VideoFrames(frames=frames, indices=[0, 1, 2, 3], timestamps=[0, 1, 2, 3], fps=1.0)
    item = ScoringItem(
        "Which?", [CandidateInput(text="A cat."), CandidateInput(kind="video", media=clip)]
    )

    (result,) = scorer.score([item], mode="packed")

    assert result.scores[0] is not None and result.scores[1] is None
    assert "not videos yet" in result.errors[1]
