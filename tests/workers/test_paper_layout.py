"""Golden tests: Quorum's reward-model rows are the paper's rows, token for token.

The paper's recipe is re-implemented from its description in ``tests/workers/paper_recipe.py``
(chat template, whole-string tokenisation, separator search, ``hidden_states[-1]``, head /
sqrt(H)); a tiny checkpoint is trained with it and saved in the paper's merged layout, then
loaded by Quorum's loader and scored by Quorum's scorer. Runs on CPU without Django.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from tests.workers import paper_recipe as recipe
from workers.media import VideoFrames
from workers.reward_model import (
    CandidateInput,
    CheckpointError,
    RewardInputBuilder,
    ScoringItem,
    load_reward_model,
)
from workers.tiny import (
    build_tiny_reward_scorer,
    build_tiny_tokenizer,
    tiny_image_processor,
    tiny_vl_config,
)

TOL = {"rtol": 1e-5, "atol": 1e-5}


@pytest.fixture(autouse=True)
def _media_root():
    """Shadow tests/conftest.py's autouse Django fixture: this file runs without Django."""


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def builder(tokenizer) -> RewardInputBuilder:
    return RewardInputBuilder(tokenizer, tiny_image_processor())


def _picture(height: int = 56, width: int = 84, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))


def _item(prompt: str, responses: list[str], image=None) -> ScoringItem:
    return ScoringItem(prompt, [CandidateInput(text=r) for r in responses], prompt_image=image)


GOLDEN_RESPONSES = ["A cat.", "A dog.", "Two birds.", "A fish."]
GOLDEN_TEXT = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\n<|vision_start|>" + "<|image_pad|>" * 6 + "<|vision_end|>"
    "What is shown?<|im_end|>\n"
    "<|im_start|>assistant\n"
    "A cat.\n\n<|resp_sep|>\n\nA dog.\n\n<|resp_sep|>\n\nTwo birds.\n\n<|resp_sep|>\n\nA fish."
    "<|im_end|>\n"
)
# The assistant turn as the tokenizer splits the whole string: ".\n\n" is one token (BPE merges
# the response's last character with the separator's newlines).
GOLDEN_ASSISTANT_TOKENS = [
    "A", " c", "at", ".\n\n", "<|resp_sep|>", "\n\n",
    "A", " dog", ".\n\n", "<|resp_sep|>", "\n\n",
    "T", "wo", " b", "i", "r", "d", "s", ".\n\n", "<|resp_sep|>", "\n\n",
    "A", " f", "is", "h", ".", "<|im_end|>", "\n",
]  # fmt: skip


def test_it_lays_out_a_row_exactly_as_the_chat_template_renders_it(builder, tokenizer):
    item = _item("What is shown?", GOLDEN_RESPONSES, _picture())

    (row,) = builder.plan(0, builder.encode_item(item), "packed").rows

    assert tokenizer.decode(row.ids) == GOLDEN_TEXT
    first = row.slots[0][1]
    assert [tokenizer.decode([t]) for t in row.ids[first:]] == GOLDEN_ASSISTANT_TOKENS
    assert tokenizer.decode(row.ids[:first]).endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert set(row.segments[:first]) == {-1}


def test_it_reads_each_response_where_the_paper_does(builder, tokenizer):
    item = _item("What is shown?", GOLDEN_RESPONSES, _picture())

    (row,) = builder.plan(0, builder.encode_item(item), "packed").rows

    ends = [last for _, _, last in row.slots]
    assert [tokenizer.decode([row.ids[e]]) for e in ends] == [".\n\n", ".\n\n", ".\n\n", "\n"]
    sep = tokenizer.convert_tokens_to_ids("<|resp_sep|>")
    seps = [i for i, t in enumerate(row.ids) if t == sep]
    assert ends == [seps[0] - 1, seps[1] - 1, seps[2] - 1, len(row.ids) - 1]
    assert [first for _, first, _ in row.slots][1:] == [s + 1 for s in seps]


@pytest.mark.parametrize(
    "responses",
    [
        ["Yes", "No!"],
        ["It is red, maybe?", "Blue.\nDefinitely blue.", "Green"],
        ["The quick brown fox.", "A lazy dog.", "Rome; the capital of Italy.", "12 apples"],
    ],
)
@pytest.mark.parametrize("with_image", [False, True])
def test_it_builds_the_same_tokens_and_read_outs_as_the_recipe(
    builder, tokenizer, responses, with_image
):
    image = _picture(seed=3) if with_image else None
    item = _item("Rank these answers.", responses, image)

    (row,) = builder.plan(0, builder.encode_item(item), "packed").rows
    expected = recipe.collate(
        tokenizer,
        builder.image_processor,
        recipe.Sample("Rank these answers.", responses, None, image),
    )

    assert row.ids == expected["input_ids"][0].tolist()
    assert [last for _, _, last in row.slots] == expected["ends"]


# ---- a checkpoint trained by the recipe ------------------------------------------------------

GOOD = recipe.GOOD
BAD = recipe.BAD


@pytest.fixture(scope="module")
def paper_checkpoint(tokenizer, tmp_path_factory):
    """A tiny Qwen2-VL trained by the recipe and saved in the paper's merged layout."""
    path = tmp_path_factory.mktemp("paper") / "rm"
    return recipe.train_tiny_checkpoint(path, tokenizer, _picture)


HELD_OUT = [
    ("Name a colour.", ["I am not sure.", "Here is a careful answer.", "Maybe."], None),
    ("What is in the picture?", ["Maybe.", "No idea at all.", GOOD, BAD], 7),
    ("Say goodbye.", [GOOD, "No idea at all."], None),
]


def test_it_scores_a_recipe_checkpoint_like_the_recipes_forward_pass(paper_checkpoint, tokenizer):
    path, model, head, image_processor = paper_checkpoint
    scorer = load_reward_model(path, device="cpu")
    items, expected = [], []
    for prompt, responses, seed in HELD_OUT:
        image = None if seed is None else _picture(seed=seed)
        items.append(_item(prompt, responses, image))
        batch = recipe.collate(
            tokenizer, image_processor, recipe.Sample(prompt, responses, None, image)
        )
        with torch.no_grad():
            expected.append(recipe.scores(model, head, batch).tolist())

    results = scorer.score(items, mode="packed")

    for result, reference in zip(results, expected, strict=True):
        assert result.ok and result.layout == "packed", result
        torch.testing.assert_close(result.scores, reference, **TOL)
    # The recipe-trained head prefers the careful answer through Quorum as through the recipe.
    assert all(r.scores.index(max(r.scores)) == 2 for r in results[1:2])


def test_it_takes_image_limits_from_the_checkpoints_processor_config(paper_checkpoint, tmp_path):
    path = paper_checkpoint[0]
    config = json.loads((path / "preprocessor_config.json").read_text())

    scorer = load_reward_model(path, device="cpu")

    size = config.get("size") or {}
    assert scorer.builder.image_max_pixels == size.get("longest_edge", config.get("max_pixels"))
    assert scorer.builder.min_pixels == size.get("shortest_edge", config.get("min_pixels"))


def test_it_takes_video_sampling_from_the_checkpoints_video_config(paper_checkpoint, tmp_path):
    import shutil

    path = tmp_path / "rm"
    shutil.copytree(paper_checkpoint[0], path)
    (path / "video_preprocessor_config.json").write_text(
        json.dumps({"fps": 1.0, "max_frames": 6, "size": {"longest_edge": 112 * 112}})
    )

    builder = load_reward_model(path, device="cpu").builder

    assert (builder.video_fps, builder.max_frames, builder.video_max_pixels) == (1.0, 6, 112 * 112)


# ---- overflow ------------------------------------------------------------------------------


def test_it_scores_an_overflowing_item_in_isolation_and_says_so(tokenizer):
    scorer = build_tiny_reward_scorer(tokenizer=tokenizer, seed=4)
    item = _item("Rate these.", ["Short one.", " ".join(["word"] * 30), "Another short."])
    (packed,) = scorer.score([item], mode="packed")
    (row,) = scorer.builder.plan(0, scorer.builder.encode_item(item), "packed").rows
    tight = build_tiny_reward_scorer(tokenizer=tokenizer, seed=4, max_length=row.length - 1)

    (result,) = tight.score([item], mode="packed")
    (isolated,) = scorer.score([item], mode="isolated")

    assert packed.layout == "packed" and packed.note == ""
    assert result.layout == "isolated" and "over max_length" in result.note
    torch.testing.assert_close(result.scores, isolated.scores, **TOL)


def test_it_drops_the_tail_that_does_not_fit_under_the_papers_rule(tokenizer):
    scorer = build_tiny_reward_scorer(tokenizer=tokenizer, seed=4)
    item = _item("Rate these.", ["Short one.", "Another short.", " ".join(["word"] * 30)])
    two = _item("Rate these.", ["Short one.", "Another short."])
    (row,) = scorer.builder.plan(0, scorer.builder.encode_item(item), "packed").rows
    tight = build_tiny_reward_scorer(
        tokenizer=tokenizer, seed=4, max_length=row.length - 1, overflow="drop"
    )

    (result,) = tight.score([item], mode="packed")
    (kept,) = scorer.score([two], mode="packed")

    assert result.layout == "packed" and "1 trailing candidates dropped" in result.note
    assert result.scores[2] is None and result.errors[2].startswith("dropped:")
    torch.testing.assert_close(result.scores[:2], kept.scores, **TOL)


def test_it_never_packs_more_candidates_than_the_limit(tokenizer):
    scorer = build_tiny_reward_scorer(tokenizer=tokenizer, seed=4, max_packed_candidates=3)
    item = _item("Rate these.", ["One.", "Two.", "Three.", "Four."])

    (result,) = scorer.score([item], mode="packed")
    (isolated,) = scorer.score([item], mode="isolated")

    assert result.layout == "isolated" and "4 candidates" in result.note
    torch.testing.assert_close(result.scores, isolated.scores, **TOL)


# ---- the paper's adapter-only layout and bad checkpoints --------------------------------------


@pytest.fixture(scope="module")
def adapter_checkpoint(tokenizer, tmp_path_factory):
    """What the paper's training writes: LoRA (task_type CAUSAL_LM) on the conditional-
    generation model, adapter files, head and processor at the output folder's root."""
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2VLForConditionalGeneration

    root = tmp_path_factory.mktemp("adapter")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        base = Qwen2VLForConditionalGeneration(tiny_vl_config(tokenizer))
        base.save_pretrained(root / "base")
        lora = LoraConfig(
            task_type="CAUSAL_LM",
            r=8,
            lora_alpha=16,
            lora_dropout=0.05,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj"],
        )
        model = get_peft_model(base, lora)
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if "lora_B" in name:
                    parameter.normal_(0, 0.3)
        head = recipe.value_head(64)
        with torch.no_grad():
            for parameter in head.parameters():
                parameter.normal_(0, 0.3)
    out = root / "out"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    tiny_image_processor().save_pretrained(out)
    (out / "reward_model_config.json").write_text(
        json.dumps({"value_head_type": "mlp", "value_head_hidden_dim": 1024})
    )
    torch.save(head.state_dict(), out / "value_head.pt")
    adapter_config = json.loads((out / "adapter_config.json").read_text())
    assert adapter_config["task_type"] == "CAUSAL_LM" and not (out / "config.json").exists()
    adapter_config["base_model_name_or_path"] = "../base"
    (out / "adapter_config.json").write_text(json.dumps(adapter_config))
    return out, model.eval(), head


def test_it_loads_the_papers_adapter_only_layout(adapter_checkpoint, tokenizer):
    path, model, head = adapter_checkpoint
    sample = recipe.Sample("What is in the picture?", ["Maybe.", GOOD, BAD], None, _picture())
    batch = recipe.collate(tokenizer, tiny_image_processor(), sample)
    with torch.no_grad():
        expected = recipe.scores(model, head, batch).tolist()

    scorer = load_reward_model(path, device="cpu")
    (result,) = scorer.score([_item(sample.prompt, sample.responses, sample.image)])

    torch.testing.assert_close(result.scores, expected, **TOL)
    assert max(expected) - min(expected) > 1e-2  # the adapter and head change the scores


def test_it_names_the_adapter_config_when_the_base_model_is_not_local(adapter_checkpoint, tmp_path):
    import shutil

    path = tmp_path / "out"
    shutil.copytree(adapter_checkpoint[0], path)
    config = json.loads((path / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "allenai/Molmo2-4B"
    (path / "adapter_config.json").write_text(json.dumps(config))

    with pytest.raises(CheckpointError, match="adapter_config.json: adapter-only checkpoint"):
        load_reward_model(path, device="cpu")
    scorer = load_reward_model(path, device="cpu", base_model=adapter_checkpoint[0].parent / "base")
    assert scorer.kind == "multi_response"


def test_it_explains_a_folder_with_a_head_but_no_model(adapter_checkpoint, tmp_path):
    path = tmp_path / "head-only"
    path.mkdir()
    for name in ("reward_model_config.json", "value_head.pt"):
        (path / name).write_bytes((adapter_checkpoint[0] / name).read_bytes())

    with pytest.raises(CheckpointError, match=r"config.json: file not found: .*adapter"):
        load_reward_model(path, device="cpu")


def test_it_explains_a_folder_that_is_no_checkpoint(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")

    with pytest.raises(CheckpointError, match=r"config.json: file not found: expected .*notes.txt"):
        load_reward_model(tmp_path, device="cpu")


# ---- backbones: Qwen3-VL and Molmo2 ----------------------------------------------------------


@pytest.mark.parametrize("family", ["qwen3_vl", "molmo2"])
def test_it_saves_loads_and_scores_newer_backbones(tokenizer, family, tmp_path):
    scorer = build_tiny_reward_scorer(tokenizer=tokenizer, family=family, seed=2)
    with torch.no_grad():
        for parameter in scorer.model.value_head.parameters():
            parameter.normal_(0, 0.3)
    item = _item("What is shown?", GOLDEN_RESPONSES, _picture())
    (before,) = scorer.score([item], mode="packed")

    loaded = load_reward_model(scorer.save(tmp_path / family), device="cpu")
    (packed,) = loaded.score([item], mode="packed")
    (isolated,) = loaded.score([item], mode="isolated")
    (separate,) = loaded.score([item], mode="separate")

    assert loaded.model.model_type == family and packed.ok, packed
    assert loaded.builder.molmo2 == scorer.builder.molmo2  # Molmo2's crops and tokens
    torch.testing.assert_close(packed.scores, before.scores, **TOL)
    torch.testing.assert_close(isolated.scores, separate.scores, **TOL)
    (row,) = loaded.builder.plan(0, loaded.builder.encode_item(item), "packed").rows
    ends = [last for _, _, last in row.slots]
    assert [tokenizer.decode([row.ids[e]]) for e in ends] == [".\n\n", ".\n\n", ".\n\n", "\n"]


def test_it_uses_qwen3_vls_own_positions_for_images(tokenizer):
    scorer = build_tiny_reward_scorer(tokenizer=tokenizer, family="qwen3_vl", seed=2)
    builder = scorer.builder
    item = _item("What is shown?", ["A cat.", "A dog."], _picture(64, 96))
    (row,) = builder.plan(0, builder.encode_item(item), "packed").rows
    batch = builder.collate([row], "packed")

    native, _ = scorer.model.backbone.get_rope_index(
        batch.input_ids, batch.mm_token_type_ids, image_grid_thw=batch.image_grid_thw
    )

    assert torch.equal(batch.position_ids, native)


def test_it_scores_molmo2_images_and_videos(tokenizer):
    # Image and video prompts and answers are golden-tested in tests/workers/test_molmo2_media.py.
    scorer = build_tiny_reward_scorer(tokenizer=tokenizer, family="molmo2", seed=2)
    clip = VideoFrames(np.zeros((2, 28, 28, 3), np.uint8), [0, 1], [0.0, 0.5], 2.0)
    items = [
        _item("What is shown?", ["A cat.", "A dog."], _picture()),
        ScoringItem(
            "Which?",
            [CandidateInput(text="A cat."), CandidateInput(kind="image", media=_picture())],
        ),
        ScoringItem("Which?", [CandidateInput(text="A cat."), CandidateInput("video", media=clip)]),
    ]

    with_image, with_image_answer, with_video_answer = scorer.score(items, mode="packed")

    assert with_image.ok and with_image_answer.ok, (with_image, with_image_answer)
    assert with_video_answer.ok and with_video_answer.layout == "packed", with_video_answer


def test_it_saves_the_budgets_it_was_built_with(tokenizer, tmp_path):
    limits = {
        "image_max_pixels": 112 * 112,
        "video_max_pixels": 56 * 56,
        "max_frames": 4,
        "max_length": 2048,
        "video_fps": 1.5,
    }
    scorer = build_tiny_reward_scorer(tokenizer=tokenizer, **limits)

    loaded = load_reward_model(scorer.save(tmp_path / "rm"), device="cpu")

    assert loaded.builder.limits() == scorer.builder.limits()
    assert {k: loaded.builder.limits()[k] for k in limits} == limits
