"""Training speed of the paper's recipe on one GPU with a 2-4B-shaped random model.

Qwen2-VL-2B-shaped (hidden 1536, 28 layers, 12 heads / 2 KV heads, MLP 8960; vision tower
1280 wide, 32 blocks: about 2.2 B parameters) in bf16, random weights from the config (no
download). ``fit`` runs LoRA r=128 on the attention and MLP projections plus the value head,
gradient checkpointing, one image prompt with 4 answers per forward pass; the script reports
optimiser steps/s and examples/s for packed rows, and the scoring throughput of packed vs
separate passes on the same prompts (prompts/s, ratio). ``--tiny`` runs the same code on CPU
with a 64-wide model (a check of the script, not a measurement)::

    python bench/gpu_train_steps.py             # on the GPU machine (about 3 minutes)
    python bench/gpu_train_steps.py --tiny      # smoke test anywhere

Prints JSON; writes it to $OUT/gpu_train_steps.json when OUT is set.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workers.reward_model import (  # noqa: E402
    CandidateInput,
    FitConfig,
    PreferenceExample,
    ScoringItem,
    fit,
)
from workers.tiny import (  # noqa: E402
    QWEN2_VL_2B_SHAPE,
    build_tiny_reward_scorer,
    build_tiny_tokenizer,
)


def _examples(count: int, side: int) -> list[PreferenceExample]:
    rng = np.random.default_rng(0)
    answers = [
        "The picture shows two cats sleeping on a red sofa in a sunny room.",
        "There is a dog.",
        "A mountain, a lake and three small boats under a setting sun.",
        "I am not sure what the picture shows.",
    ]
    out = []
    for i in range(count):
        image = Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8))
        item = ScoringItem(
            f"Describe picture {i} in one sentence.",
            [CandidateInput(text=a) for a in answers],
            prompt_image=image,
        )
        out.append(PreferenceExample(item, [1, 3, 2, 4]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--side", type=int, default=448, help="image side (448: 256 tokens)")
    args = parser.parse_args()
    device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    shape = {"hidden_size": 64, "num_layers": 2} if args.tiny else QWEN2_VL_2B_SHAPE
    tokenizer = build_tiny_tokenizer()
    started = time.perf_counter()
    scorer = build_tiny_reward_scorer(
        tokenizer=tokenizer, device=device, dtype=dtype, image_max_pixels=args.side**2, **shape
    )
    params = sum(p.numel() for p in scorer.model.parameters())
    report = {"device": device, "params_b": round(params / 1e9, 3), "build_s": 0.0}
    report["build_s"] = round(time.perf_counter() - started, 1)
    examples = _examples(max(4, args.steps), args.side)

    def rate(mode: str) -> float:
        scorer.score([e.item for e in examples[:2]], mode=mode)  # warm-up
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        scorer.score([e.item for e in examples], mode=mode)
        if device == "cuda":
            torch.cuda.synchronize()
        return len(examples) / (time.perf_counter() - start)

    packed, separate = rate("packed"), rate("separate")
    report["score_prompts_per_s"] = {"packed": round(packed, 2), "separate": round(separate, 2)}
    report["score_packed_vs_separate"] = round(packed / separate, 2)
    config = FitConfig(epochs=1, grad_accum=1, lr=1e-5, checkpoint_every=0)
    fit(scorer.model, scorer.builder, examples[:2], config)  # warm-up: LoRA applied here
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    result = fit(scorer.model, scorer.builder, examples[: args.steps], config)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    report["train"] = {
        "steps": result["steps"],
        "steps_per_s": round(result["steps"] / seconds, 3),
        "examples_per_s": round(args.steps / seconds, 3),
        "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1)
        if device == "cuda"
        else None,
        "lora_r": config.lora_r,
        "gradient_checkpointing": config.gradient_checkpointing,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_train_steps.json").write_text(text)


if __name__ == "__main__":
    main()
