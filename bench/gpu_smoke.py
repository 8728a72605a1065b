"""GPU check of the workers' production path: load a checkpoint on CUDA and score it.

What a ``gpu`` worker does, without Django: save a tiny multi-response reward model in the
seed release layout, ``load_reward_model(path)`` (CUDA + bf16 chosen automatically), score a
batch of text and image prompts in packed and isolated mode, and compare with the same
checkpoint on the CPU in float32 (bf16 tolerance). Also one training step on the GPU.
Prints a short report; exits non-zero when a check fails.

    python bench/gpu_smoke.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> int:
    import numpy as np
    import torch
    from PIL import Image

    from workers.reward_model import (
        CandidateInput,
        PreferenceExample,
        ScoringItem,
        load_reward_model,
        train,
    )
    from workers.tiny import save_tiny_reward_model

    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 1
    print("device:", torch.cuda.get_device_name(0), "torch", torch.__version__)
    tmp = Path(tempfile.mkdtemp())
    path = save_tiny_reward_model(tmp / "rm", hidden_size=128, num_layers=2, seed=1)
    image = tmp / "p.png"
    Image.new("RGB", (112, 112), (200, 30, 30)).save(image)
    items = [
        ScoringItem(
            prompt_text=f"Question {i}: what colour is the square?",
            prompt_image=str(image) if i % 2 else None,
            candidates=[
                CandidateInput(text=f"It is colour number {j}. " * (j + 1))
                for j in range(4 - i % 2)
            ],
        )
        for i in range(6)
    ]
    failures = []
    started = time.perf_counter()
    gpu = load_reward_model(path)
    print(
        "loaded on",
        gpu.device,
        "dtype",
        next(gpu.model.parameters()).dtype,
        f"{time.perf_counter() - started:.1f} s",
    )
    if gpu.device.type != "cuda":
        failures.append("load_reward_model did not pick CUDA")
    cpu = load_reward_model(path, device="cpu")
    for mode in ("packed", "isolated"):
        g = gpu.score(items, mode=mode)
        c = cpu.score(items, mode=mode)
        diffs = [
            abs(a - b)
            for rg, rc in zip(g, c, strict=True)
            for a, b in zip(rg.scores, rc.scores, strict=True)
        ]
        scale = max(abs(s) for rc in c for s in rc.scores)
        ok = all(r.ok for r in g) and max(diffs) <= 0.1 * scale
        print(
            f"{mode}: max |gpu bf16 - cpu fp32| = {max(diffs):.2e} (max |score| {scale:.2e}) -> {'ok' if ok else 'FAIL'}"
        )
        if not ok:
            failures.append(f"{mode} scores differ")
    separate = gpu.score(items, mode="separate")
    isolated = gpu.score(items, mode="isolated")
    d = max(
        abs(a - b)
        for rs, ri in zip(separate, isolated, strict=True)
        for a, b in zip(rs.scores, ri.scores, strict=True)
    )
    print(f"isolated vs separate on GPU: max diff {d:.2e}")
    examples = [
        PreferenceExample(item=it, rankings=list(range(1, len(it.candidates) + 1))) for it in items
    ]
    before = [p.detach().clone() for p in gpu.model.parameters() if p.requires_grad]
    losses = train(gpu.model, gpu.builder, examples, epochs=1, batch_size=3, lr=1e-3)
    after = [p for p in gpu.model.parameters() if p.requires_grad]
    changed = any(not torch.equal(a, b) for a, b in zip(after, before, strict=True))
    print(
        f"training on GPU: {len(losses)} steps, losses {np.round(losses, 4).tolist()}, parameters changed: {changed}"
    )
    if not changed or not all(np.isfinite(losses)):
        failures.append("training step")
    print("RESULT:", "ok" if not failures else f"FAILED {failures}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
