"""Checkpoint layouts: save and load reward models from local folders."""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from workers.reward_model.inputs import (
    RewardInputBuilder,
)
from workers.reward_model.model import (
    MultiResponseRewardModel,
    RewardHeadConfig,
    _text_config,
    backbone_hidden_size,
)
from workers.reward_model.records import (
    DEFAULT_MAX_LENGTH,
    LORA_ADAPTER_DIR,
    MOLMO2_BACKBONES,
    REWARD_CONFIG_FILE,
    SUPPORTED_BACKBONES,
    VALUE_HEAD_FILE,
    CheckpointError,
    pick_device,
)
from workers.reward_model.scorers import (
    RewardScorer,
    SequenceClassificationScorer,
)

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports and progress bars; we report problems ourselves."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _is_peft(module: nn.Module) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a pinned dependency
        return False
    return isinstance(module, PeftModel)


def save_reward_model(
    model: MultiResponseRewardModel | nn.Module,
    path: str | os.PathLike[str],
    *,
    tokenizer: Any,
    image_processor: Any | None = None,
    merge_lora: bool = False,
    limits: dict[str, Any] | None = None,
) -> Path:
    """Save a reward model so :func:`load_reward_model` can read it back.

    `limits` (a builder's `limits()`) are written where a checkpoint keeps them, so the model
    is scored as it was trained: the image budget in ``preprocessor_config.json``, video
    sampling in ``video_preprocessor_config.json``, ``max_length`` in
    ``reward_model_config.json``.

    A [`MultiResponseRewardModel`] is written in the seed release layout: the base model
    (``config.json`` + safetensors), tokenizer and image processor, ``reward_model_config.json``
    and ``value_head.pt``; a LoRA-wrapped backbone is either merged into the base weights
    (`merge_lora=True`) or saved beside them as ``lora_adapter/``. A sequence-classification
    model is written with `save_pretrained` (the baseline layout).

    Returns:
        `Path`: The checkpoint directory.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    with _quiet_transformers():
        if not isinstance(model, MultiResponseRewardModel):
            model.save_pretrained(path)
            tokenizer.save_pretrained(path)
        else:
            _save_seed_layout(model, path, tokenizer, image_processor, merge_lora, limits or {})
    return path


def _save_seed_layout(
    model: MultiResponseRewardModel,
    path: Path,
    tokenizer: Any,
    image_processor: Any | None,
    merge_lora: bool,
    limits: dict[str, Any],
) -> None:
    backbone = model.backbone
    config_data = model.head_config.to_dict()
    config_data["value_head_input_dim"] = model.head_config.head_input_dim(model.hidden_size)
    if _is_peft(backbone):
        if merge_lora:
            # A copy, so the caller's model keeps training with its adapter unmerged.
            copy.deepcopy(backbone).merge_and_unload().save_pretrained(path)
        else:
            backbone.save_pretrained(path / LORA_ADAPTER_DIR)
            base = backbone.get_base_model()
            # Injected LoRA layers wrap the original Linear as `base_layer`; store the original
            # names and drop the adapter weights, so the base loads without peft.
            state = {
                key.replace(".base_layer", ""): value
                for key, value in base.state_dict().items()
                if "lora_" not in key
            }
            base.save_pretrained(path, state_dict=state)
            config_data["lora_adapter"] = LORA_ADAPTER_DIR
    else:
        backbone.save_pretrained(path)
    tokenizer.save_pretrained(path)
    if image_processor is not None:
        if "image_max_pixels" in limits:
            image_processor = copy.deepcopy(image_processor)
            image_processor.size = {
                "shortest_edge": limits["min_pixels"],
                "longest_edge": limits["image_max_pixels"],
            }
        image_processor.save_pretrained(path)
    if "video_max_pixels" in limits:
        video = {
            "fps": limits["video_fps"],
            "min_frames": limits.get("min_frames"),
            "max_frames": limits["max_frames"],
            "size": {
                "shortest_edge": limits.get("video_min_pixels", limits["min_pixels"]),
                "longest_edge": limits["video_max_pixels"],
            },
        }
        if video["min_frames"] is None:
            del video["min_frames"]
        if limits.get("cap_pixels_per_frame"):
            video["cap_pixels_per_frame"] = True
            video["max_video_tokens"] = limits["max_video_tokens"]
        (path / "video_preprocessor_config.json").write_text(json.dumps(video, indent=2) + "\n")
    if "molmo2_video" in limits and not limits["molmo2_video"].get("unsupported"):
        video = dict(limits["molmo2_video"])
        video.pop("unsupported", None)
        crop = video.pop("crop_size")
        video = {
            "video_processor_type": "Molmo2VideoProcessor",
            "size": {"height": crop, "width": crop},
            "do_rescale": True,
            "do_normalize": True,
            "do_sample_frames": True,
            "resample": 2,  # bilinear
            **video,
        }
        (path / "video_preprocessor_config.json").write_text(json.dumps(video, indent=2) + "\n")
    if "molmo2_tokens" in limits:
        processor_config = {"processor_class": "Molmo2Processor", **limits["molmo2_tokens"]}
        (path / "processor_config.json").write_text(json.dumps(processor_config, indent=2) + "\n")
    if "max_length" in limits:
        config_data["max_length"] = limits["max_length"]
    (path / REWARD_CONFIG_FILE).write_text(json.dumps(config_data, indent=2) + "\n")
    head_state = {k: v.detach().float().cpu() for k, v in model.value_head.state_dict().items()}
    torch.save(head_state, path / VALUE_HEAD_FILE)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(path, "file not found")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(path, f"not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise CheckpointError(path, "expected a JSON object")
    return data


def _load_tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        with _quiet_transformers():
            return AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, TypeError) as exc:
        raise CheckpointError(path / "tokenizer.json", f"cannot load tokenizer ({exc})") from exc


def _load_backbone(path: Path, dtype: torch.dtype | None) -> nn.Module:
    from transformers import AutoModel

    config_file = path / "config.json"
    model_type = _read_json(config_file).get("model_type")
    if model_type not in SUPPORTED_BACKBONES:
        raise CheckpointError(
            config_file,
            f"unsupported backbone model_type {model_type!r} (supported: "
            f"{', '.join(SUPPORTED_BACKBONES)})",
        )
    try:
        with _quiet_transformers():
            backbone, info = AutoModel.from_pretrained(
                path, local_files_only=True, dtype=dtype, output_loading_info=True
            )
    # Config validation, safetensors and torch raise many unrelated types for a bad file.
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(
            path, f"cannot load the base model ({exc.__class__.__name__}: {exc})"
        ) from exc
    weights = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
    weights_name = path / weights[0].name if len(weights) == 1 else path
    missing = list(info.get("missing_keys", []))
    if missing:
        shown = ", ".join(sorted(missing)[:5])
        raise CheckpointError(
            weights_name,
            f"base model weights lack {len(missing)} tensors that config.json needs ({shown})",
        )
    mismatched = list(info.get("mismatched_keys", []))
    if mismatched:
        raise CheckpointError(
            weights_name, f"base model weights have wrong shapes: {mismatched[:5]}"
        )
    return backbone


def _merge_lora(backbone: nn.Module, adapter_dir: Path) -> nn.Module:
    from peft import LoraConfig, get_peft_model, load_peft_weights, set_peft_model_state_dict

    config_file = adapter_dir / "adapter_config.json"
    if not config_file.is_file():
        raise CheckpointError(config_file, "file not found")
    try:
        config = LoraConfig.from_pretrained(adapter_dir)
        weights = load_peft_weights(str(adapter_dir), device="cpu")
    except (OSError, ValueError, TypeError) as exc:
        raise CheckpointError(adapter_dir, f"cannot read the LoRA adapter ({exc})") from exc
    config.inference_mode = True
    # Only merged here: a task type (the paper's CAUSAL_LM) would wrap the bare base model in a
    # generation class it does not fit.
    config.task_type = None
    peft_model = get_peft_model(backbone, config)
    result = set_peft_model_state_dict(peft_model, weights)
    unexpected = [k for k in result.unexpected_keys if "lora_" in k]
    if unexpected:
        # Adapters trained on *ForConditionalGeneration carry one more "model." level.
        remapped = {
            key.replace("base_model.model.model.", "base_model.model.", 1): value
            for key, value in weights.items()
            if "lm_head" not in key
        }
        result = set_peft_model_state_dict(peft_model, remapped)
        unexpected = [k for k in result.unexpected_keys if "lora_" in k]
    missing = [k for k in result.missing_keys if "lora_" in k]
    if unexpected or missing:
        detail = unexpected[:3] or missing[:3]
        raise CheckpointError(
            adapter_dir,
            f"LoRA adapter does not fit the base model ({len(unexpected)} unexpected, "
            f"{len(missing)} missing tensors, e.g. {detail})",
        )
    return peft_model.merge_and_unload()


def _load_value_head(
    path: Path, head: nn.Module, hidden_size: int, config: RewardHeadConfig
) -> None:
    head_file = path / VALUE_HEAD_FILE
    if not head_file.is_file():
        raise CheckpointError(head_file, "file not found (the seed layout needs the value head)")
    try:
        state = torch.load(head_file, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad pickle
        raise CheckpointError(head_file, f"cannot read the state dict ({exc})") from exc
    if not isinstance(state, dict):
        raise CheckpointError(head_file, f"expected a state dict, got {type(state).__name__}")
    expected = head.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            head_file,
            f"keys do not match a {config.value_head_type!r} head (missing {missing}, "
            f"unexpected {unexpected})",
        )
    for key, tensor in expected.items():
        found = tuple(state[key].shape)
        if found != tuple(tensor.shape):
            first = next(iter(expected))
            if key == first and len(found) == 2:
                raise CheckpointError(
                    head_file,
                    f"head takes {found[1]} inputs but the backbone hidden size is {hidden_size} "
                    f"(resp_repr_mode {config.resp_repr_mode!r} needs "
                    f"{config.head_input_dim(hidden_size)})",
                )
            raise CheckpointError(
                head_file, f"{key} has shape {list(found)}, expected {list(tensor.shape)}"
            )
    head.load_state_dict({k: v.float() for k, v in state.items()})


def load_reward_model(
    path: str | os.PathLike[str],
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    base_model: str | os.PathLike[str] | None = None,
    **limits: Any,
) -> RewardScorer | SequenceClassificationScorer:
    """Load a reward model from a local directory and return a ready scorer.

    Layouts recognised (``reward_model_config.json`` + ``value_head.pt`` mark a multi-response
    reward model, giving a [`RewardScorer`]):

    - **merged** (the paper's release, and Quorum's own): base model weights and
      ``config.json`` in the folder, LoRA merged or kept beside them in ``lora_adapter/``;
    - **adapter-only** (what the paper's training writes): ``adapter_config.json`` and the
      adapter weights at the folder's root, no ``config.json``; the base model is loaded from
      `base_model`, else from the adapter config's ``base_model_name_or_path`` (a local folder,
      absolute or relative to the adapter folder);
    - a plain ``*ForSequenceClassification`` checkpoint, giving a
      [`SequenceClassificationScorer`] (the single-response baseline).

    Nothing is downloaded (`local_files_only=True`).

    Args:
        path (`str` or `os.PathLike`): Checkpoint directory.
        base_model (`str` or `os.PathLike`, *optional*): Base model folder of an adapter-only
            checkpoint.
        device (`str` or `torch.device`, *optional*): Defaults to CUDA when available.
        dtype (`torch.dtype`, *optional*): Backbone dtype; bf16 on CUDA, float32 on CPU.
        **limits: Passed to [`RewardInputBuilder`] (``max_length``, ``image_max_pixels``...).

    Raises:
        CheckpointError: A file is missing or malformed, or parts do not fit together; the
            message names the file and the mismatch.
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(path, "checkpoint directory not found")
    resolved = pick_device(device)
    if dtype is None:
        dtype = torch.bfloat16 if resolved.type == "cuda" else torch.float32
    if (path / REWARD_CONFIG_FILE).exists():
        return _load_seed_layout(path, resolved, dtype, limits, base_model)
    config_file = path / "config.json"
    if not config_file.is_file():
        found = sorted(p.name for p in path.iterdir())[:8]
        raise CheckpointError(
            config_file,
            "file not found: expected a reward model folder (reward_model_config.json + "
            "value_head.pt beside a base model's config.json, or beside an adapter's "
            "adapter_config.json) or a sequence-classification model (config.json); the "
            f"folder holds {found or 'nothing'}",
        )
    architectures = _read_json(config_file).get("architectures") or []
    if not any(str(a).endswith("ForSequenceClassification") for a in architectures):
        raise CheckpointError(
            config_file,
            f"no {REWARD_CONFIG_FILE} beside it and architectures {architectures} is not a "
            "sequence-classification model",
        )
    from transformers import AutoModelForSequenceClassification

    try:
        with _quiet_transformers():
            model, info = AutoModelForSequenceClassification.from_pretrained(
                path, local_files_only=True, dtype=dtype, output_loading_info=True
            )
    except Exception as exc:  # noqa: BLE001 - see _load_backbone
        raise CheckpointError(
            path, f"cannot load the classifier ({exc.__class__.__name__}: {exc})"
        ) from exc
    if info.get("missing_keys"):
        raise CheckpointError(path, f"classifier weights lack {sorted(info['missing_keys'])[:5]}")
    if model.config.num_labels != 1:
        raise CheckpointError(
            config_file, f"a reward classifier has num_labels 1, found {model.config.num_labels}"
        )
    tokenizer = _load_tokenizer(path)
    max_length = limits.get("max_length", DEFAULT_MAX_LENGTH)
    return SequenceClassificationScorer(model, tokenizer, device=resolved, max_length=max_length)


def _adapter_base(path: Path, base_model: str | os.PathLike[str] | None) -> Path:
    """The base model folder of an adapter-only checkpoint."""
    config_file = path / "adapter_config.json"
    if base_model is not None:
        base = Path(base_model)
        source = "base_model"
    else:
        named = _read_json(config_file).get("base_model_name_or_path")
        if not named:
            raise CheckpointError(
                config_file,
                "adapter-only checkpoint without base_model_name_or_path: pass the base "
                "model folder (load_reward_model(..., base_model=...))",
            )
        base = Path(named) if Path(named).is_absolute() else path / named
        source = f"base_model_name_or_path {named!r}"
    if not (base / "config.json").is_file():
        raise CheckpointError(
            config_file,
            f"adapter-only checkpoint: its base model ({source}) is not a local folder with a "
            f"config.json ({base}); point base_model_name_or_path in adapter_config.json at "
            "the base model's local folder, or pass base_model=",
        )
    return base


def _load_seed_layout(
    path: Path,
    device: torch.device,
    dtype: torch.dtype,
    limits: dict[str, Any],
    base_model: str | os.PathLike[str] | None = None,
) -> RewardScorer:
    config_file = path / REWARD_CONFIG_FILE
    data = _read_json(config_file)
    head_config = RewardHeadConfig(
        value_head_type=data.get("value_head_type", "mlp"),
        value_head_hidden_dim=data.get("value_head_hidden_dim", 1024),
        value_head_activation=str(data.get("value_head_activation", "silu")),
        resp_repr_mode=data.get("resp_repr_mode", "last"),
        media_repr_mode=data.get("media_repr_mode", "readout"),
    )
    problems = head_config.problems()
    if problems:
        raise CheckpointError(config_file, "; ".join(problems))
    adapter_only = (path / "adapter_config.json").is_file() and not (path / "config.json").exists()
    if adapter_only:
        backbone = _load_backbone(_adapter_base(path, base_model), dtype)
        tokenizer = _load_tokenizer(path)
        # The paper's training adds <|resp_sep|> and resizes the embeddings before LoRA.
        if len(tokenizer) > _text_config(backbone.config).vocab_size:
            backbone.resize_token_embeddings(len(tokenizer))
        backbone = _merge_lora(backbone, path)
    else:
        if not (path / "config.json").is_file():
            raise CheckpointError(
                path / "config.json",
                f"file not found: {REWARD_CONFIG_FILE} needs a base model beside it "
                "(config.json + weights, the merged layout) or an adapter (adapter_config.json"
                " + adapter weights, the adapter-only layout)",
            )
        backbone = _load_backbone(path, dtype)
        tokenizer = None
        adapter_dir = path / str(data.get("lora_adapter", LORA_ADAPTER_DIR))
        if adapter_dir.is_dir():
            backbone = _merge_lora(backbone, adapter_dir)
    hidden = backbone_hidden_size(backbone)
    declared = data.get("value_head_input_dim")
    if declared is not None and declared != head_config.head_input_dim(hidden):
        raise CheckpointError(
            config_file,
            f"value_head_input_dim is {declared} but the backbone hidden size {hidden} with "
            f"resp_repr_mode {head_config.resp_repr_mode!r} gives "
            f"{head_config.head_input_dim(hidden)}",
        )
    model = MultiResponseRewardModel(backbone, head_config)
    _load_value_head(path, model.value_head, hidden, head_config)
    tokenizer = tokenizer or _load_tokenizer(path)
    image_processor = None
    if (path / "preprocessor_config.json").is_file():
        if model.model_type in MOLMO2_BACKBONES:
            # Only its settings are read (molmo2.py preprocesses): it cannot run without
            # torchvision, but it loads.
            from transformers.models.molmo2.image_processing_molmo2 import (
                Molmo2ImageProcessor as processor_class,
            )
        else:
            from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
                Qwen2VLImageProcessorPil as processor_class,
            )

        try:
            image_processor = processor_class.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError, TypeError) as exc:
            raise CheckpointError(
                path / "preprocessor_config.json", f"cannot load the image processor ({exc})"
            ) from exc
    if model.model_type in MOLMO2_BACKBONES:
        limits.setdefault("molmo2_tokens", _molmo2_token_options(path))
        limits.setdefault("molmo2_video", _molmo2_video_settings(path))
    else:
        limits = {**_video_limits(path), **limits}
    if isinstance(data.get("max_length"), int) and data["max_length"] > 0:
        limits.setdefault("max_length", data["max_length"])
    if not getattr(tokenizer, "chat_template", None):
        template = _processor_chat_template(path)
        if template:
            limits.setdefault("chat_template", template)
    try:
        builder = RewardInputBuilder.for_model(model, tokenizer, image_processor, **limits)
    except ValueError as exc:
        raise CheckpointError(path / "tokenizer.json", str(exc)) from exc
    return RewardScorer(model, builder, device=device)


def _video_limits(path: Path) -> dict[str, Any]:
    """Video sampling from ``video_preprocessor_config.json`` (fps, min/max frames, size,
    normalisation)."""
    config_file = path / "video_preprocessor_config.json"
    if not config_file.is_file():
        return {}
    data = _read_json(config_file)
    limits: dict[str, Any] = {}
    size = data.get("size") if isinstance(data.get("size"), dict) else {}
    pixels = size.get("longest_edge") or data.get("max_pixels")
    if pixels:
        limits["video_max_pixels"] = int(pixels)
    pixels = size.get("shortest_edge") or data.get("min_pixels")
    if pixels:
        limits["video_min_pixels"] = int(pixels)
    if data.get("fps"):
        limits["video_fps"] = float(data["fps"])
    for name in ("min_frames", "max_frames", "max_video_tokens"):
        if data.get(name):
            limits[name] = int(data[name])
    for name, value in limits.items():
        if value <= 0:
            raise CheckpointError(config_file, f"{name} must be positive, got {value}")
    if data.get("cap_pixels_per_frame") is not None:
        if not isinstance(data["cap_pixels_per_frame"], bool):
            raise CheckpointError(
                config_file,
                f"cap_pixels_per_frame must be true or false, got {data['cap_pixels_per_frame']!r}",
            )
        limits["cap_pixels_per_frame"] = data["cap_pixels_per_frame"]
    for key, name in (("image_mean", "video_mean"), ("image_std", "video_std")):
        values = data.get(key)
        if values is None:
            continue
        if not (
            isinstance(values, list)
            and len(values) == 3
            and all(isinstance(v, (int, float)) for v in values)
        ):
            raise CheckpointError(config_file, f"{key} must be three numbers, got {values!r}")
        limits[name] = [float(v) for v in values]
    return limits


MOLMO2_TOKEN_OPTIONS = (
    "image_use_col_tokens",
    "use_single_crop_col_tokens",
    "use_single_crop_start_token",
)


def _molmo2_token_options(path: Path) -> dict[str, Any]:
    """How ``Molmo2Processor`` writes an image's tokens (its ``processor_config.json``)."""
    config_file = path / "processor_config.json"
    if not config_file.is_file():
        return {}
    data = _read_json(config_file)
    options = {key: data[key] for key in MOLMO2_TOKEN_OPTIONS if key in data}
    for key, value in options.items():
        if not (value is None or isinstance(value, bool)):
            raise CheckpointError(config_file, f"{key} must be true, false or null, got {value!r}")
    return options


def _molmo2_video_settings(path: Path) -> dict[str, Any]:
    """Molmo2VideoProcessor's settings (its ``video_preprocessor_config.json``) as
    ``Molmo2VideoSettings`` fields; one it would run differently from Quorum, or none at all,
    gives the reason its videos are refused (images still score)."""
    import dataclasses

    from workers.reward_model.molmo2 import MOLMO2_VIDEO_TOKEN_OPTIONS, Molmo2VideoSettings

    config_file = path / "video_preprocessor_config.json"
    if not config_file.is_file():
        return {"unsupported": "the checkpoint has no video_preprocessor_config.json"}
    from transformers.models.molmo2.video_processing_molmo2 import Molmo2VideoProcessor

    try:
        with _quiet_transformers():
            processor = Molmo2VideoProcessor.from_pretrained(path, local_files_only=True)
        settings = dataclasses.asdict(Molmo2VideoSettings.from_processor(processor))
    except (OSError, TypeError) as exc:
        raise CheckpointError(config_file, f"cannot load the video processor ({exc})") from exc
    except ValueError as exc:
        return {"unsupported": f"{config_file.name}: {exc}"}
    for key in MOLMO2_VIDEO_TOKEN_OPTIONS:
        settings.pop(key)
    return settings


def _processor_chat_template(path: Path) -> str | None:
    """A processor-level chat template (``chat_template.json`` or ``.jinja``), if any."""
    jinja = path / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    json_file = path / "chat_template.json"
    if json_file.is_file():
        template = _read_json(json_file).get("chat_template")
        if not isinstance(template, str):
            raise CheckpointError(json_file, "expected a string under 'chat_template'")
        return template
    return None
