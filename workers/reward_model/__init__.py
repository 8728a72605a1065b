"""Multi-response reward model: score N candidate responses to one prompt in one forward pass.

The input is the prompt (optionally with an image and/or a video) followed by the N responses
joined by ``"\\n\\n<|resp_sep|>\\n\\n"``. Each response is represented by the backbone's hidden
state at its last token, and a small value head maps that to a score ("You Only Judge Once",
arXiv 2604.10966). Three attention modes are offered:

- ``"packed"``: plain causal attention over the whole sequence. Response k sees responses
  1..k-1, so training shuffles candidate order. Cheapest; the paper's setting.
- ``"isolated"``: a 4D attention mask lets each response attend only to the prompt and to
  itself, with position ids restarted after the prompt, so every score equals the score of a
  separate prompt+response pass while the prompt is still encoded once.
- ``"separate"``: one pass per candidate (the baseline the packed modes are measured against).

This module is a pure core (torch, transformers, peft, numpy, Pillow via ``workers.media``):
no Django, no Celery. Workers and the playground call :func:`load_reward_model` and
:meth:`RewardScorer.score`; tests, the demo and benchmarks build tiny models with
``workers.tiny``.
"""

from __future__ import annotations

from workers.reward_model.checkpoints import (
    load_reward_model,
    save_reward_model,
)
from workers.reward_model.inputs import (
    RewardInputBuilder,
    patchify_video_frames,
)
from workers.reward_model.model import (
    MultiResponseRewardModel,
    RewardBatch,
    RewardHeadConfig,
    TrainingBatch,
    isolated_attention_mask,
)
from workers.reward_model.records import (
    IM_END,
    IM_START,
    PAD_TOKEN,
    QWEN2_VL_CHAT_TEMPLATE,
    RESP_SEP_TOKEN,
    RESPONSE_SEPARATOR,
    REWARD_CONFIG_FILE,
    SPECIAL_TOKENS,
    VALUE_HEAD_FILE,
    CandidateInput,
    CheckpointError,
    MediaRef,
    PreferenceExample,
    Scorer,
    ScoringItem,
    ScoringResult,
    best_index_from_rankings,
    order_from_rankings,
    pick_device,
)
from workers.reward_model.scorers import (
    RewardScorer,
    SequenceClassificationScorer,
)
from workers.reward_model.training import (
    FitConfig,
    apply_lora,
    fit,
    held_out_report,
    nway_loss,
    plackett_luce_loss,
    train,
    train_step,
)

__all__ = [
    "FitConfig",
    "fit",
    "held_out_report",
    "CandidateInput",
    "CheckpointError",
    "IM_END",
    "IM_START",
    "MediaRef",
    "MultiResponseRewardModel",
    "PAD_TOKEN",
    "QWEN2_VL_CHAT_TEMPLATE",
    "PreferenceExample",
    "RESPONSE_SEPARATOR",
    "RESP_SEP_TOKEN",
    "REWARD_CONFIG_FILE",
    "RewardBatch",
    "RewardHeadConfig",
    "RewardInputBuilder",
    "RewardScorer",
    "SPECIAL_TOKENS",
    "Scorer",
    "ScoringItem",
    "ScoringResult",
    "SequenceClassificationScorer",
    "TrainingBatch",
    "VALUE_HEAD_FILE",
    "apply_lora",
    "best_index_from_rankings",
    "isolated_attention_mask",
    "load_reward_model",
    "nway_loss",
    "order_from_rankings",
    "patchify_video_frames",
    "pick_device",
    "plackett_luce_loss",
    "save_reward_model",
    "train",
    "train_step",
]
