"""Tiny offline reward models for tests, the demo and benchmarks.

Nothing here downloads: the tokenizer is a byte-level BPE trained in-process on a small
built-in corpus, and the Qwen2-VL / Qwen2.5-VL backbones are built from configs with random
weights. Sizes are parameters, so the same builders give the 64-wide test model, the
512-wide CPU benchmark model and multi-billion-parameter GPU benchmark models.

Typical use (the demo model and the Celery tasks' default checkpoint)::

    from workers.tiny import save_tiny_reward_model
    from workers.reward_model import load_reward_model

    save_tiny_reward_model("var/models/tiny-rm")  # seed release layout
    scorer = load_reward_model("var/models/tiny-rm")
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from workers.reward_model import (
    IM_END,
    IM_START,
    PAD_TOKEN,
    QWEN2_VL_CHAT_TEMPLATE,
    RESP_SEP_TOKEN,
    SPECIAL_TOKENS,
    MultiResponseRewardModel,
    RewardHeadConfig,
    RewardInputBuilder,
    RewardScorer,
    SequenceClassificationScorer,
    save_reward_model,
)
from workers.reward_model.molmo2 import (
    MOLMO2_IMAGE_TOKEN,
    MOLMO2_VIDEO_TOKEN,
    MOLMO2_VISUAL_TOKENS,
)

__all__ = [
    "TINY_CORPUS",
    "build_tiny_backbone",
    "build_tiny_reward_scorer",
    "build_tiny_seq_cls_scorer",
    "build_tiny_tokenizer",
    "molmo2_tiny_tokenizer",
    "mrope_section_for",
    "save_tiny_reward_model",
    "save_tiny_seq_cls_model",
    "tiny_image_processor",
    "tiny_vl_config",
]

# Enough varied English for a few hundred BPE merges; the model is random anyway, the corpus
# only keeps token counts realistic (words, not bytes).
TINY_CORPUS = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "A picture shows two cats sleeping on a red sofa in a sunny room.",
    "Describe the video: a person walks a dog through the park at dawn.",
    "Which answer is more helpful, accurate and safe for the user?",
    "The capital of France is Paris; the capital of Italy is Rome.",
    "In this image there is a mountain, a lake and three small boats.",
    "Rank the responses from best to worst and explain your choice.",
    "Water boils at 100 degrees Celsius at sea level pressure.",
    "The model answered the question correctly but missed one detail.",
    "Please summarise the main events shown in the clip in one sentence.",
    "She counted 12 apples, 7 oranges and 3 bananas on the table.",
    "The second response hallucinates an object that is not in the frame.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000; symbols: ( ) [ ] { } < > | / - _ : ;",
]


# The pre-tokenizer pattern of Qwen2's tokenizer.json.
QWEN2_PRETOKENIZE_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
    r"\s*[\r\n]+|\s+(?!\S)|\s+"
)


def mrope_section_for(head_dim: int) -> list[int]:
    """M-RoPE split of the rotary half-dimension into (temporal, height, width) sections.

    Qwen2-VL uses [16, 24, 24] for head_dim 128; this keeps the same 1/4, 3/8, 3/8 shape for
    any even head_dim, and the sections always sum to head_dim / 2 as the rotary code needs.
    """
    half = head_dim // 2
    temporal = max(1, half // 4)
    height = (half - temporal) // 2
    width = half - temporal - height
    return [temporal, height, width]


def build_tiny_tokenizer(corpus: Iterable[str] | None = None, *, vocab_size: int = 512) -> Any:
    """Train a byte-level BPE tokenizer shaped like Qwen2-VL's: its pre-tokenizer, its special
    tokens plus ``<|resp_sep|>``, and its chat template.

    Args:
        corpus (`Iterable[str]`, *optional*): Training text; [`TINY_CORPUS`] by default.
        vocab_size (`int`, *optional*, defaults to 512): Upper bound on the vocabulary.

    Returns:
        `PreTrainedTokenizerFast`: Pad token ``<|endoftext|>``, EOS ``<|im_end|>``.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [*SPECIAL_TOKENS, RESP_SEP_TOKEN]
    tokenizer = Tokenizer(models.BPE())
    # Qwen2's pre-tokenizer (its tokenizer.json): punctuation runs keep trailing newlines, so
    # BPE learns ".\n\n" as one token, the merge the paper's read-out positions depend on.
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        # The full byte alphabet, so any text (and split special tokens) stays encodable.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = list(corpus or TINY_CORPUS)
    # Paragraphs too, as chat rows have them (responses are joined by "\n\n<|resp_sep|>\n\n").
    tokenizer.train_from_iterator([*lines, "\n\n".join(lines)], trainer)
    built = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=PAD_TOKEN,
        eos_token=IM_END,
        extra_special_tokens=[t for t in specials if t != PAD_TOKEN],
    )
    built.chat_template = QWEN2_VL_CHAT_TEMPLATE
    return built


def molmo2_tiny_tokenizer(tokenizer: Any) -> Any:
    """A copy of a tiny tokenizer with Molmo2's image tokens and a chat template writing
    ``<|image|>`` / ``<|video|>`` where Qwen-VL writes its vision block (Molmo2's own
    placeholders, which its processor expands); `tokenizer` itself when it has them."""
    import copy

    if (
        tokenizer.convert_tokens_to_ids(MOLMO2_IMAGE_TOKEN) != tokenizer.unk_token_id
        and len(tokenizer(MOLMO2_IMAGE_TOKEN, add_special_tokens=False)["input_ids"]) == 1
    ):
        return tokenizer
    molmo2 = copy.deepcopy(tokenizer)
    molmo2.add_tokens(
        [MOLMO2_IMAGE_TOKEN, MOLMO2_VIDEO_TOKEN, *MOLMO2_VISUAL_TOKENS], special_tokens=True
    )
    molmo2.chat_template = QWEN2_VL_CHAT_TEMPLATE.replace(
        "<|vision_start|><|image_pad|><|vision_end|>", MOLMO2_IMAGE_TOKEN
    ).replace("<|vision_start|><|video_pad|><|vision_end|>", MOLMO2_VIDEO_TOKEN)
    return molmo2


def tiny_image_processor(
    *,
    max_pixels: int = 448 * 448,
    min_pixels: int = 56 * 56,
    patch_size: int = 14,
    family: str = "qwen2_vl",
) -> Any:
    """A Pillow-backed Qwen2-VL image processor (no torchvision needed); for Qwen3-VL
    (`family="qwen3_vl"`) the same one with its checkpoints' 16-pixel patches and 0.5 mean
    and std. For Molmo2, its own image processor with 112-pixel crops (8 x 8 patches, at
    most 4 crops, 1-patch margins); Quorum reads its settings and never runs it."""
    if family == "molmo2":
        from transformers.models.molmo2.image_processing_molmo2 import Molmo2ImageProcessor

        return Molmo2ImageProcessor(
            size={"height": 112, "width": 112}, max_crops=4, overlap_margins=[1, 1]
        )
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    qwen3 = family == "qwen3_vl"
    extra = {"image_mean": [0.5] * 3, "image_std": [0.5] * 3} if qwen3 else {}
    return Qwen2VLImageProcessorPil(
        patch_size=16 if qwen3 else patch_size,
        temporal_patch_size=2,
        merge_size=2,
        min_pixels=min_pixels,
        max_pixels=max_pixels,
        **extra,
    )


def tiny_vl_config(
    tokenizer: Any,
    *,
    family: str = "qwen2_vl",
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int | None = None,
    vision_depth: int = 1,
    vision_embed_dim: int = 32,
    vision_heads: int = 2,
    vision_mlp_ratio: int = 2,
    max_position_embeddings: int = 32_768,
) -> Any:
    """A Qwen2-VL (`family="qwen2_vl"`) or Qwen2.5-VL (`"qwen2_5_vl"`) config of any size.

    Token ids (vision start/end, image/video pad, pad, BOS/EOS) are taken from `tokenizer` so
    the model and tokenizer agree.
    """
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    head_dim = hidden_size // num_heads
    text_config = {
        "vocab_size": len(tokenizer),
        "hidden_size": hidden_size,
        "intermediate_size": intermediate_size or 4 * hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "num_key_value_heads": num_kv_heads,
        "max_position_embeddings": max_position_embeddings,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 1_000_000.0,
            "mrope_section": mrope_section_for(head_dim),
        },
        "pad_token_id": ids[PAD_TOKEN],
        "bos_token_id": ids[IM_START],
        "eos_token_id": ids[IM_END],
    }
    common = {
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
    }
    if family == "qwen2_vl":
        from transformers import Qwen2VLConfig

        vision_config = {
            "depth": vision_depth,
            "embed_dim": vision_embed_dim,
            "hidden_size": hidden_size,
            "num_heads": vision_heads,
            "mlp_ratio": vision_mlp_ratio,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        }
        return Qwen2VLConfig(text_config=text_config, vision_config=vision_config, **common)
    if family == "qwen2_5_vl":
        from transformers import Qwen2_5_VLConfig

        vision_config = {
            "depth": vision_depth,
            "hidden_size": vision_embed_dim,
            "intermediate_size": vision_mlp_ratio * vision_embed_dim,
            "num_heads": vision_heads,
            "out_hidden_size": hidden_size,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "tokens_per_second": 2,
            "window_size": 112,
            "fullatt_block_indexes": [vision_depth - 1],
        }
        return Qwen2_5_VLConfig(text_config=text_config, vision_config=vision_config, **common)
    if family == "qwen3_vl":
        from transformers import Qwen3VLConfig

        text_config["head_dim"] = head_dim
        text_config["rope_parameters"] = {
            "rope_type": "default",
            "rope_theta": 5_000_000.0,
            "mrope_section": mrope_section_for(head_dim),
            "mrope_interleaved": True,
        }
        vision_config = {
            "depth": vision_depth,
            "hidden_size": vision_embed_dim,
            "intermediate_size": vision_mlp_ratio * vision_embed_dim,
            "num_heads": vision_heads,
            "out_hidden_size": hidden_size,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "num_position_embeddings": 64,
            "deepstack_visual_indexes": [0],
        }
        return Qwen3VLConfig(text_config=text_config, vision_config=vision_config, **common)
    if family == "molmo2":
        from transformers import Molmo2Config

        molmo2 = {t: tokenizer.convert_tokens_to_ids(t) for t in MOLMO2_VISUAL_TOKENS}
        return Molmo2Config(
            text_config={
                "hidden_size": hidden_size,
                "num_attention_heads": num_heads,
                "num_key_value_heads": num_kv_heads,
                "head_dim": head_dim,
                "vocab_size": len(tokenizer),
                "additional_vocab_size": 16,
                "num_hidden_layers": num_layers,
                "intermediate_size": intermediate_size or 2 * hidden_size,
                "max_position_embeddings": max_position_embeddings,
            },
            vision_config={
                "hidden_size": vision_embed_dim,
                "intermediate_size": vision_mlp_ratio * vision_embed_dim,
                "num_hidden_layers": vision_depth,
                "num_attention_heads": vision_heads,
                "num_key_value_heads": vision_heads,
                "head_dim": vision_embed_dim // vision_heads,
                "vision_feature_layer": [-1],
                "image_size": [112, 112],  # tiny_image_processor(family="molmo2")'s crops
            },
            adapter_config={
                "hidden_size": vision_embed_dim,
                "intermediate_size": vision_mlp_ratio * vision_embed_dim,
                "text_hidden_size": hidden_size,
                "num_attention_heads": vision_heads,
                "num_key_value_heads": vision_heads,
                "head_dim": vision_embed_dim // vision_heads,
                "vit_layers": [-1],
            },
            pad_token_id=ids[PAD_TOKEN],
            image_patch_id=molmo2["<im_patch>"],
            image_start_token_id=molmo2["<im_start>"],
            low_res_image_start_token_id=molmo2["<low_res_im_start>"],
            image_end_token_id=molmo2["<im_end>"],
            frame_start_token_id=molmo2["<frame_start>"],
            frame_end_token_id=molmo2["<frame_end>"],
        )
    raise ValueError(
        f"unknown family {family!r}; expected 'qwen2_vl', 'qwen2_5_vl', 'qwen3_vl' or 'molmo2'"
    )


def build_tiny_backbone(
    config: Any,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
) -> torch.nn.Module:
    """Randomly initialised base model (``Qwen2VLModel``/``Qwen2_5_VLModel``, no LM head).

    The seed is applied inside a forked RNG, so the caller's CPU random state is untouched.
    With `device`, weights are created there directly: initialising a multi-billion-parameter
    benchmark model on the CPU first would take longer than the benchmark.
    """
    from transformers import AutoModel

    with torch.random.fork_rng(devices=[]), torch.device(device or "cpu"):
        torch.manual_seed(seed)
        model = AutoModel.from_config(config, dtype=dtype)
    return model.eval()


# Qwen2-VL-2B's widths (about 2.2 B parameters with the vision tower): keyword arguments of
# `build_tiny_reward_scorer` for a realistically sized random model (GPU benchmarks).
QWEN2_VL_2B_SHAPE: dict[str, Any] = {
    "hidden_size": 1536,
    "num_layers": 28,
    "config_overrides": {
        "num_heads": 12,
        "num_kv_heads": 2,
        "intermediate_size": 8960,
        "vision_depth": 32,
        "vision_embed_dim": 1280,
        "vision_heads": 16,
        "vision_mlp_ratio": 4,
    },
}


def build_tiny_reward_scorer(
    *,
    family: str = "qwen2_vl",
    hidden_size: int = 64,
    num_layers: int = 2,
    seed: int = 0,
    head_config: RewardHeadConfig | None = None,
    device: str | torch.device | None = "cpu",
    dtype: torch.dtype = torch.float32,
    tokenizer: Any | None = None,
    config_overrides: dict[str, Any] | None = None,
    **limits: Any,
) -> RewardScorer:
    """A ready [`RewardScorer`] around a random tiny multi-response reward model.

    Args:
        family (`str`): ``"qwen2_vl"``, ``"qwen2_5_vl"``, ``"qwen3_vl"`` or ``"molmo2"``.
        hidden_size, num_layers (`int`): Language-model size (heads scale with width).
        seed (`int`): Seeds backbone and value head.
        head_config ([`RewardHeadConfig`], *optional*): Value-head settings.
        device: Where the scorer runs (CPU by default, unlike production loading).
        dtype: Backbone dtype.
        tokenizer: Reuse a tokenizer (e.g. one trained on a custom corpus).
        config_overrides (`dict`, *optional*): Extra keyword arguments for [`tiny_vl_config`].
        **limits: Passed to [`RewardInputBuilder`] (``max_length``, pixel budgets, frames).
    """
    tokenizer = tokenizer or build_tiny_tokenizer()
    if family == "molmo2":
        tokenizer = molmo2_tiny_tokenizer(tokenizer)
        # Frames of the tiny vision tower's 112-pixel crops (8 x 8 patches), few of them.
        limits.setdefault("molmo2_video", {"crop_size": 112, "num_frames": 6})
    heads = max(2, hidden_size // 64) if hidden_size >= 128 else 4
    overrides = {"num_heads": heads, "num_kv_heads": max(1, heads // 2)}
    overrides.update(config_overrides or {})
    config = tiny_vl_config(
        tokenizer, family=family, hidden_size=hidden_size, num_layers=num_layers, **overrides
    )
    backbone = build_tiny_backbone(config, seed=seed, dtype=dtype, device=device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        model = MultiResponseRewardModel(backbone, head_config)
    processor = tiny_image_processor(family=family)
    builder = RewardInputBuilder.for_model(model, tokenizer, processor, **limits)
    return RewardScorer(model, builder, device=device)


def save_tiny_reward_model(path: str | os.PathLike[str], **kwargs: Any) -> Path:
    """Build a tiny reward model (see [`build_tiny_reward_scorer`]) and save the seed layout."""
    scorer = build_tiny_reward_scorer(**kwargs)
    return scorer.save(path)


def build_tiny_seq_cls_scorer(
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    seed: int = 0,
    tokenizer: Any | None = None,
    device: str | torch.device | None = "cpu",
) -> SequenceClassificationScorer:
    """A random text-only ``Qwen2ForSequenceClassification`` baseline (num_labels=1)."""
    from transformers import Qwen2Config, Qwen2ForSequenceClassification

    tokenizer = tokenizer or build_tiny_tokenizer()
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=4 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.convert_tokens_to_ids(IM_START),
        eos_token_id=tokenizer.convert_tokens_to_ids(IM_END),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForSequenceClassification(config).eval()
    return SequenceClassificationScorer(model, tokenizer, device=device)


def save_tiny_seq_cls_model(path: str | os.PathLike[str], **kwargs: Any) -> Path:
    """Build the tiny baseline classifier and save it in the sequence-classification layout."""
    scorer = build_tiny_seq_cls_scorer(**kwargs)
    return save_reward_model(scorer.model, path, tokenizer=scorer.tokenizer)
