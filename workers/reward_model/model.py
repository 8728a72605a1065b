"""The value head, the multi-response reward model and its batch records."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from workers.reward_model.records import (
    _PAD_SEGMENT,
    _PROMPT_SEGMENT,
    ACTIVATIONS,
    MEDIA_REPR_MODES,
    MOLMO2_BACKBONES,
    RESP_REPR_MODES,
    VALUE_HEAD_TYPES,
)

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# Value head and model
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RewardHeadConfig:
    """Value-head settings, stored as ``reward_model_config.json`` in the seed release layout.

    Attributes:
        value_head_type (`str`): ``"mlp"`` (Linear -> act -> Linear) or ``"linear"``.
        value_head_hidden_dim (`int`, *optional*): Width of the MLP's hidden layer (defaults to
            the input size when `None`).
        value_head_activation (`str`): One of ``silu``, ``gelu``, ``relu``, ``selu``, ``tanh``.
        resp_repr_mode (`str`): How a response is summarised: ``last`` token (default),
            ``first``, ``first_last_concat``/``add``/``sub``, or ``response_mean``.
        media_repr_mode (`str`): How image/video responses are summarised (a Quorum extension;
            the paper's responses are text): ``readout`` (as text), ``visual_mean`` (the mean
            of their visual tokens) or ``visual_prompt`` (that mean times 1 + the prompt's
            state before the first response; the demo model's).
    """

    value_head_type: str = "mlp"
    value_head_hidden_dim: int | None = 1024
    value_head_activation: str = "silu"
    resp_repr_mode: str = "last"
    media_repr_mode: str = "readout"

    def problems(self) -> list[str]:
        """Every invalid field, described; empty when the config is valid."""
        found = []
        if self.value_head_type not in VALUE_HEAD_TYPES:
            found.append(
                f"unknown value_head_type {self.value_head_type!r} (expected one of "
                f"{', '.join(VALUE_HEAD_TYPES)})"
            )
        if self.value_head_type == "mlp" and self.value_head_activation.lower() not in ACTIVATIONS:
            found.append(
                f"unknown value_head_activation {self.value_head_activation!r} (expected one "
                f"of {', '.join(ACTIVATIONS)})"
            )
        if self.resp_repr_mode not in RESP_REPR_MODES:
            found.append(
                f"unknown resp_repr_mode {self.resp_repr_mode!r} (expected one of "
                f"{', '.join(RESP_REPR_MODES)})"
            )
        if self.media_repr_mode not in MEDIA_REPR_MODES:
            found.append(
                f"unknown media_repr_mode {self.media_repr_mode!r} (expected one of "
                f"{', '.join(MEDIA_REPR_MODES)})"
            )
        hidden = self.value_head_hidden_dim
        if hidden is not None and (not isinstance(hidden, int) or hidden < 1):
            found.append(f"value_head_hidden_dim must be a positive integer, got {hidden!r}")
        return found

    def head_input_dim(self, hidden_size: int) -> int:
        """Input width of the head for a backbone of `hidden_size`."""
        return 2 * hidden_size if self.resp_repr_mode == "first_last_concat" else hidden_size

    def to_dict(self) -> dict[str, Any]:
        """The JSON form written to ``reward_model_config.json``."""
        return {
            "value_head_type": self.value_head_type,
            "value_head_hidden_dim": self.value_head_hidden_dim,
            "value_head_activation": self.value_head_activation,
            "resp_repr_mode": self.resp_repr_mode,
            "media_repr_mode": self.media_repr_mode,
        }


def build_value_head(input_dim: int, config: RewardHeadConfig) -> nn.Module:
    """Build the value head, initialised N(0, 0.01) with zero biases.

    The module layout matches the released checkpoints: an `nn.Sequential` (keys ``0.*`` and
    ``2.*``) for ``mlp``, a bare `nn.Linear` for ``linear``.
    """
    problems = config.problems()
    if problems:
        raise ValueError("; ".join(problems))
    if config.value_head_type == "linear":
        head: nn.Module = nn.Linear(input_dim, 1)
    else:
        hidden = config.value_head_hidden_dim or input_dim
        activation = ACTIVATIONS[config.value_head_activation.lower()]
        head = nn.Sequential(nn.Linear(input_dim, hidden), activation(), nn.Linear(hidden, 1))
    for module in head.modules():
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.01)
            nn.init.zeros_(module.bias)
    return head


def _text_config(config: Any) -> Any:
    return getattr(config, "text_config", None) or config


def backbone_hidden_size(backbone: nn.Module) -> int:
    """Hidden size of the language model inside a (possibly LoRA-wrapped) VL backbone."""
    return int(_text_config(backbone.config).hidden_size)


@dataclass
class RewardBatch:
    """Model inputs for a batch of rows (a row = a prompt followed by 1..N candidates).

    Attributes:
        input_ids (`torch.LongTensor` of shape `(B, L)`): Right-padded token ids.
        segment_ids (`torch.LongTensor` of shape `(B, L)`): -1 prompt, -2 padding, k for the
            tokens of candidate slot k (including the separator that follows it).
        position_ids (`torch.LongTensor` of shape `(3, B, L)`): M-RoPE positions (temporal,
            height, width); in isolated mode every slot restarts right after the prompt.
        mm_token_type_ids (`torch.IntTensor` of shape `(B, L)`): 0 text, 1 image, 2 video.
        response_starts / response_ends (`torch.LongTensor` of shape `(B, N)`): index of the
            first / last token of each slot's response, -1 for empty slots.
        mode (`str`): The attention mode the rows were laid out for.
        pixel_values, image_grid_thw, pixel_values_videos, video_grid_thw: Visual inputs in
            order of appearance (row-major), `None` when absent.
        image_token_pooling, image_grids, image_num_crops: Molmo2's image inputs (with its
            crops in `pixel_values`), named as its processor names them; `None` otherwise.
        video_token_pooling, video_grids: Molmo2's video inputs (with its frames in
            `pixel_values_videos`), likewise.
        visual_kinds (`tuple[str, ...]`, *optional*): Molmo2 only, when a batch holds rows of
            images and rows of a video: the kind of each visual in row order (their features
            are computed apart, then placed in that order).
    """

    input_ids: torch.Tensor
    segment_ids: torch.Tensor
    position_ids: torch.Tensor
    mm_token_type_ids: torch.Tensor
    response_starts: torch.Tensor
    response_ends: torch.Tensor
    mode: str
    pixel_values: torch.Tensor | None = None
    image_grid_thw: torch.Tensor | None = None
    pixel_values_videos: torch.Tensor | None = None
    video_grid_thw: torch.Tensor | None = None
    image_token_pooling: torch.Tensor | None = None
    image_grids: torch.Tensor | None = None
    image_num_crops: torch.Tensor | None = None
    video_token_pooling: torch.Tensor | None = None
    video_grids: torch.Tensor | None = None
    visual_kinds: tuple[str, ...] | None = None

    def to(self, device: torch.device | str) -> RewardBatch:
        """A copy with every tensor on `device`."""
        moved = {
            name: (value.to(device) if isinstance(value, torch.Tensor) else value)
            for name, value in self.__dict__.items()
        }
        return RewardBatch(**moved)

    @property
    def num_tokens(self) -> int:
        """Non-padding tokens in the batch."""
        return int((self.segment_ids != _PAD_SEGMENT).sum())


def isolated_attention_mask(
    segment_ids: torch.Tensor, dtype: torch.dtype, image_block: torch.Tensor | None = None
) -> torch.Tensor:
    """Additive 4D mask for isolated mode: causal, and a candidate sees only prompt + itself.

    Args:
        segment_ids (`torch.LongTensor` of shape `(B, L)`): See [`RewardBatch`].
        dtype (`torch.dtype`): The backbone's compute dtype.
        image_block (`torch.BoolTensor` of shape `(B, L)`, *optional*): Molmo2's image tokens,
            which also see the image tokens after them (its bidirectional image block) in
            their own segment and the prompt. The input builder puts images in both the
            prompt and a candidate only of one-candidate rows: a shared prompt cannot see
            each candidate's images as its separate pass does.

    Returns:
        `torch.Tensor` of shape `(B, 1, L, L)`: 0 where attention is allowed, the dtype's
        minimum elsewhere (works for both the eager and the SDPA attention paths).
    """
    length = segment_ids.shape[1]
    device = segment_ids.device
    query = segment_ids[:, :, None]
    key = segment_ids[:, None, :]
    causal = torch.ones(length, length, dtype=torch.bool, device=device).tril()
    allowed = causal & ((key == _PROMPT_SEGMENT) | (key == query)) & (key != _PAD_SEGMENT)
    if image_block is not None:
        prompt = (key == _PROMPT_SEGMENT) | (query == _PROMPT_SEGMENT)
        allowed |= image_block[:, :, None] & image_block[:, None, :] & ((key == query) | prompt)
    # Padding queries see nothing else; letting them see themselves keeps softmax finite.
    allowed |= torch.eye(length, dtype=torch.bool, device=device)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


class MultiResponseRewardModel(nn.Module):
    """A vision-language backbone plus a value head scoring every response of a row.

    Args:
        backbone (`PreTrainedModel`): A Qwen-VL-family or Molmo2 base model (``Qwen2VLModel``,
            ``Qwen2_5_VLModel``, ``Qwen3VLModel``, ``Molmo2Model``, optionally wrapped by peft)
            returning `last_hidden_state`.
        head_config ([`RewardHeadConfig`], *optional*): Value-head settings.

    The head runs in float32 whatever the backbone dtype: it is tiny, and the score
    differences that rank candidates are small.
    """

    def __init__(self, backbone: nn.Module, head_config: RewardHeadConfig | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.head_config = head_config or RewardHeadConfig()
        self.hidden_size = backbone_hidden_size(backbone)
        self.value_head = build_value_head(
            self.head_config.head_input_dim(self.hidden_size), self.head_config
        )
        self.scale = math.sqrt(self.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.backbone.parameters()).dtype

    @property
    def model_type(self) -> str:
        return str(self.backbone.config.model_type)

    def _molmo2_features(self, batch: RewardBatch) -> dict[str, Any]:
        """Features of a batch with rows of images and rows of a video (transformers' Molmo2
        forward takes one kind a call; no row holds both): each kind through the vision tower
        and adapter as that forward runs it, then in the rows' order."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        images = iter(
            self.backbone.get_image_features(
                batch.pixel_values, batch.image_token_pooling, batch.image_grids
            ).pooler_output
        )
        videos = iter(
            self.backbone.get_video_features(
                batch.pixel_values_videos, batch.video_token_pooling, batch.video_grids
            ).pooler_output
        )
        kinds = batch.visual_kinds or ()
        ordered = tuple(next(images if kind == "image" else videos) for kind in kinds)
        return {"image": BaseModelOutputWithPooling(pooler_output=ordered)}

    def forward(self, batch: RewardBatch) -> torch.Tensor:
        """Score every candidate slot of `batch`.

        Returns:
            `torch.FloatTensor` of shape `(B, N)`: float32 scores, `-inf` for empty slots.
        """
        molmo2 = self.model_type in MOLMO2_BACKBONES
        if batch.mode == "isolated":
            attention_mask = isolated_attention_mask(
                batch.segment_ids,
                self.dtype,
                image_block=batch.mm_token_type_ids == 1 if molmo2 else None,
            )
        elif bool((batch.segment_ids == _PAD_SEGMENT).any()):
            attention_mask = (batch.segment_ids != _PAD_SEGMENT).long()
        else:
            # No padding: let the backbone take its plain causal path (SDPA is_causal).
            attention_mask = None
        visual_inputs = {
            name: value
            for name in ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw")
            if (value := getattr(batch, name)) is not None
        }
        if molmo2:
            # One position axis (plain RoPE). mm_token_type_ids makes the image tokens one
            # bidirectional block (an isolated mask, being 4D, already holds it).
            molmo2_inputs = {
                name: value
                for name in (
                    "pixel_values",
                    "image_token_pooling",
                    "image_grids",
                    "image_num_crops",
                    "pixel_values_videos",
                    "video_token_pooling",
                    "video_grids",
                )
                if (value := getattr(batch, name)) is not None
            }
            if batch.pixel_values is not None and batch.pixel_values_videos is not None:
                molmo2_inputs = {"mm_encoder_outputs": self._molmo2_features(batch)}
            outputs = self.backbone(
                input_ids=batch.input_ids,
                attention_mask=attention_mask,
                position_ids=batch.position_ids[0],
                mm_token_type_ids=batch.mm_token_type_ids,
                use_cache=False,
                **molmo2_inputs,
            )
        else:
            outputs = self.backbone(
                input_ids=batch.input_ids,
                attention_mask=attention_mask,
                position_ids=batch.position_ids,
                mm_token_type_ids=batch.mm_token_type_ids,
                use_cache=False,
                **visual_inputs,
            )
        return self.score_hidden_states(
            outputs.last_hidden_state,
            batch.response_starts,
            batch.response_ends,
            visual=batch.mm_token_type_ids != 0,
        )

    @staticmethod
    def _prompt_state(
        hidden: torch.Tensor, starts: torch.Tensor, valid: torch.Tensor
    ) -> torch.Tensor:
        """(B, 1, H): each row's hidden state at the token just before its first response (the
        end of the prompt and of the assistant header), which has attended to the whole prompt."""
        first = starts.masked_fill(~valid, hidden.shape[1]).min(-1).values.clamp(min=1) - 1
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), first][:, None]

    def score_hidden_states(
        self,
        hidden: torch.Tensor,
        starts: torch.Tensor,
        ends: torch.Tensor,
        visual: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Apply the response representation and value head to backbone hidden states.

        Args:
            hidden (`torch.Tensor` of shape `(B, L, H)`): Last hidden states.
            starts, ends (`torch.LongTensor` of shape `(B, N)`): Response token spans, -1 = empty.

        Returns:
            `torch.FloatTensor` of shape `(B, N)`: Scores divided by sqrt(hidden_size), `-inf`
            for empty slots.
        """
        valid = ends >= 0
        hidden = hidden.float()
        size = hidden.shape[-1]

        def gather(index: torch.Tensor) -> torch.Tensor:
            index = index.clamp(min=0)[..., None].expand(-1, -1, size)
            return torch.gather(hidden, 1, index)

        mode = self.head_config.resp_repr_mode
        if mode == "last":
            representation = gather(ends)
        elif mode == "first":
            representation = gather(starts)
        elif mode == "first_last_concat":
            representation = torch.cat([gather(starts), gather(ends)], dim=-1)
        elif mode == "first_last_add":
            representation = gather(starts) + gather(ends)
        elif mode == "first_last_sub":
            representation = gather(ends) - gather(starts)
        else:  # response_mean: a (B, N, L) averaging matrix keeps it one batched matmul
            positions = torch.arange(hidden.shape[1], device=hidden.device)
            inside = (positions >= starts[..., None]) & (positions <= ends[..., None])
            weights = inside.float() / inside.sum(-1, keepdim=True).clamp(min=1)
            representation = weights @ hidden
        if self.head_config.media_repr_mode != "readout" and visual is not None:
            # Image/video responses (a Quorum extension; the paper's responses are text): the
            # mean over the response's own visual tokens, which carry its content, instead of
            # the token after its <|vision_end|>.
            positions = torch.arange(hidden.shape[1], device=hidden.device)
            inside = (positions >= starts[..., None]) & (positions <= ends[..., None])
            inside &= visual[:, None, :]
            counts = inside.sum(-1, keepdim=True)
            if bool((counts > 0).any()):
                means = (inside.float() / counts.clamp(min=1)) @ hidden
                media = (counts > 0).expand_as(representation[..., :1])
                if self.head_config.media_repr_mode == "visual_prompt":
                    # Compared with the prompt: the mean scaled per dimension by the prompt's
                    # state, so the head sees where picture and request agree.
                    means = means * (1.0 + self._prompt_state(hidden, starts, valid))
                width = representation.shape[-1]
                if width != means.shape[-1]:  # first_last_concat: the mean in both halves
                    means = means.repeat(1, 1, width // means.shape[-1])
                representation = torch.where(media, means, representation)
        scores = self.value_head(representation).squeeze(-1) / self.scale
        return scores.masked_fill(~valid, float("-inf"))


@dataclass
class TrainingBatch:
    """Inputs plus targets: `best_index` (B,) for the N-way loss, `order` (B, N) for PL."""

    inputs: RewardBatch
    best_index: torch.Tensor
    order: torch.Tensor

    def to(self, device: torch.device | str) -> TrainingBatch:
        return TrainingBatch(
            self.inputs.to(device), self.best_index.to(device), self.order.to(device)
        )
