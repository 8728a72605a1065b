"""Packed vs separate-pass scoring of N candidates with the multi-response reward model.

For a one-line text prompt, a paragraph-long text prompt, an image prompt (>= 256 visual
tokens) and a video prompt, each with N short answers, this times the backbone forward of

- packed: one row, prompt + N responses, causal attention;
- isolated: the same row with the per-response block mask (scores equal separate passes);
- separate x N: N passes of prompt + one response (the plain reward-model baseline);
- separate, batched: the same N rows padded into one forward (the baseline's best case);

and reports times, ratios against the packed pass measured in the same run (machines are
noisy: modes are interleaved within every repeat), an analytic FLOPs ratio, and the
end-to-end `RewardScorer.score` ratio (tokenising and image preprocessing included).

Random weights from a config, nothing downloaded. Examples::

    python bench/bench_packed_scoring.py                       # tiny + mid-size on CPU
    python bench/bench_packed_scoring.py --hidden 512 --layers 6 --repeats 7
    python bench/bench_packed_scoring.py --device cuda --dtype bfloat16 --hidden 3584 \\
        --layers 8 --heads 28 --kv-heads 4 --intermediate 18944 --vision-dim 1280 \\
        --vision-depth 8 --vision-heads 16 --vision-mlp-ratio 4
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workers.media import VideoFrames  # noqa: E402
from workers.reward_model import (  # noqa: E402
    CandidateInput,
    RewardBatch,
    RewardScorer,
    ScoringItem,
    isolated_attention_mask,
)
from workers.tiny import build_tiny_reward_scorer, build_tiny_tokenizer  # noqa: E402

WORDS = [
    "the",
    "model",
    "describes",
    "a",
    "red",
    "boat",
    "on",
    "a",
    "calm",
    "lake",
    "while",
    "two",
    "children",
    "wave",
    "from",
    "the",
    "pier",
    "and",
    "clouds",
    "gather",
    "over",
    "the",
    "distant",
    "mountain",
    "ridge",
    "before",
    "the",
    "evening",
    "rain",
    "begins",
]

TEXT_PROMPT = (
    "Read the following passage and answer the question at the end. "
    + " ".join(WORDS * 6)
    + " Question: what is happening in the passage, and what will probably happen next?"
)


@dataclass
class Result:
    model: str
    scenario: str
    prompt_tokens: int
    response_tokens: int
    packed_ms: float
    isolated_ms: float
    separate_ms: float
    separate_batched_ms: float
    flops_ratio: float
    e2e_ratio: float
    max_abs_diff: float  # max |isolated - separate| over the N scores
    max_abs_score: float  # scale of the scores, to read max_abs_diff against

    @property
    def speedup(self) -> float:
        return self.separate_ms / self.packed_ms


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _responses(n: int, words: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=words)) + "." for _ in range(n)]


def _items(args: argparse.Namespace) -> dict[str, ScoringItem]:
    rng = np.random.default_rng(0)
    side = args.image_side
    image = Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8))
    frames = rng.integers(
        0, 255, (args.video_frames, args.video_side, args.video_side, 3), dtype=np.uint8
    )
    video = VideoFrames(
        frames=frames,
        indices=list(range(args.video_frames)),
        timestamps=[i / 2 for i in range(args.video_frames)],
        fps=2.0,
    )

    def candidates(seed: int) -> list[CandidateInput]:
        return [CandidateInput(text=t) for t in _responses(args.n, args.response_words, seed)]

    return {
        # A one-line question: the shared prompt is a small share, the low end of the gain.
        "short text": ScoringItem("What is the capital of France?", candidates(4)),
        "text": ScoringItem(TEXT_PROMPT, candidates(1)),
        "image": ScoringItem("Describe the image.", candidates(2), prompt_image=image),
        "video": ScoringItem("What happens in the video?", candidates(3), prompt_video=video),
    }


def _linear_flops_per_token(cfg) -> int:
    text = cfg.text_config
    head_dim = text.hidden_size // text.num_attention_heads
    q = text.num_attention_heads * head_dim
    kv = text.num_key_value_heads * head_dim
    h = text.hidden_size
    per_layer = h * q + 2 * h * kv + q * h + 3 * h * text.intermediate_size
    return 2 * per_layer * text.num_hidden_layers


def _vision_flops(cfg, grids: torch.Tensor | None) -> float:
    if grids is None:
        return 0.0
    vision = cfg.vision_config
    dim = getattr(vision, "embed_dim", None) or vision.hidden_size
    mlp = getattr(vision, "intermediate_size", None) or dim * vision.mlp_ratio
    patch_in = vision.in_channels * vision.temporal_patch_size * vision.patch_size**2
    merged_in = dim * vision.spatial_merge_size**2
    out = cfg.text_config.hidden_size
    total = 0.0
    for t, h, w in grids.tolist():
        patches = t * h * w
        block = 2 * patches * (4 * dim * dim + 2 * dim * mlp) + 4 * dim * patches * patches
        merger = 2 * (patches // vision.spatial_merge_size**2) * (merged_in**2 + merged_in * out)
        total += 2 * patches * patch_in * dim + vision.depth * block + merger
    return total


def forward_flops(cfg, batch: RewardBatch) -> float:
    """Useful FLOPs of one forward: matmuls, attention over allowed (query, key) pairs, vision.

    Attention pairs masked out in isolated mode are not counted although a dense-mask kernel
    still computes them.
    """
    text = cfg.text_config
    tokens = batch.num_tokens
    if batch.mode == "isolated":
        mask = isolated_attention_mask(batch.segment_ids, torch.float32)
        pairs = int((mask == 0).sum()) - int((batch.segment_ids == -2).sum())
    else:
        lengths = (batch.segment_ids != -2).sum(-1).tolist()
        pairs = sum(n * (n + 1) // 2 for n in lengths)
    attention = 4 * text.hidden_size * pairs * text.num_hidden_layers
    vision = _vision_flops(cfg, batch.image_grid_thw) + _vision_flops(cfg, batch.video_grid_thw)
    return _linear_flops_per_token(cfg) * tokens + attention + vision


def _time(fn, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return (time.perf_counter() - start) * 1000


def bench_model(args: argparse.Namespace, hidden: int, layers: int, tokenizer) -> list[Result]:
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    overrides = {
        "vision_depth": args.vision_depth or max(1, layers // 2),
        "vision_embed_dim": args.vision_dim or max(32, hidden // 2),
        "vision_heads": args.vision_heads or max(2, (args.vision_dim or hidden // 2) // 64),
        "vision_mlp_ratio": args.vision_mlp_ratio,
    }
    if args.heads:
        overrides["num_heads"] = args.heads
    if args.kv_heads:
        overrides["num_kv_heads"] = args.kv_heads
    if args.intermediate:
        overrides["intermediate_size"] = args.intermediate
    started = time.perf_counter()
    scorer: RewardScorer = build_tiny_reward_scorer(
        tokenizer=tokenizer,
        hidden_size=hidden,
        num_layers=layers,
        device=device,
        dtype=dtype,
        config_overrides=overrides,
        image_max_pixels=args.image_side**2,
        video_max_pixels=args.video_side**2,
        max_frames=args.video_frames,
    )
    params = sum(p.numel() for p in scorer.model.parameters()) / 1e6
    name = f"h{hidden} L{layers} ({params:.0f}M params, {args.dtype}, {device.type})"
    print(f"# built {name} in {time.perf_counter() - started:.1f} s", file=sys.stderr)

    results = [
        bench_scenario(scorer, name, scenario, item, args)
        for scenario, item in _items(args).items()
    ]
    del scorer
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return results


def bench_scenario(
    scorer: RewardScorer, name: str, scenario: str, item: ScoringItem, args: argparse.Namespace
) -> Result:
    """Time every mode on one item; modes are interleaved within each repeat."""
    model, builder, device = scorer.model, scorer.builder, scorer.device
    encoded = builder.encode_item(item)
    batches = {}
    for mode in ("packed", "isolated", "separate"):
        plan = builder.plan(0, encoded, mode)
        assert plan.error is None and not plan.candidate_errors, plan
        assert plan.layout == mode, plan.note
        batches[mode] = [builder.collate([row], mode).to(device) for row in plan.rows]
    separate_rows = builder.plan(0, encoded, "separate").rows
    batches["separate_batched"] = [builder.collate(separate_rows, "separate").to(device)]
    assert len(batches["packed"]) == 1, "the packed row was split: raise max_length"

    def run(mode: str) -> torch.Tensor:
        with torch.inference_mode():
            return torch.cat([model(batch)[0] for batch in batches[mode]])

    # Isolated scores must match separate passes; report how closely in this dtype.
    separate_scores = run("separate")
    max_abs_diff = float((run("isolated") - separate_scores).abs().max())
    max_abs_score = float(separate_scores.abs().max())

    for mode in ("packed", "separate"):  # a failed row would be timed as a fast no-op
        (result,) = scorer.score([item], mode)
        assert result.ok, result
    timings: dict[str, list[float]] = {mode: [] for mode in batches}
    e2e: dict[str, list[float]] = {"packed": [], "separate": []}
    for _ in range(args.warmup):
        for mode in batches:
            run(mode)
    for _ in range(args.repeats):
        # Interleaved, so drift in machine speed hits every mode alike.
        for mode in batches:
            timings[mode].append(_time(lambda m=mode: run(m), device))
        for mode in e2e:
            e2e[mode].append(_time(lambda m=mode: scorer.score([item], m), device))
    median = {mode: statistics.median(values) for mode, values in timings.items()}
    packed = batches["packed"][0]
    # The shared prompt: everything before the first response (system + user turn + header).
    prompt_tokens = int(packed.response_starts[0, 0])
    cfg = model.backbone.config
    separate_flops = sum(forward_flops(cfg, b) for b in batches["separate"])
    print(f"# {scenario}: done", file=sys.stderr)
    return Result(
        model=name,
        scenario=scenario,
        prompt_tokens=prompt_tokens,
        response_tokens=int(packed.num_tokens) - prompt_tokens,
        packed_ms=median["packed"],
        isolated_ms=median["isolated"],
        separate_ms=median["separate"],
        separate_batched_ms=median["separate_batched"],
        flops_ratio=separate_flops / forward_flops(cfg, packed),
        e2e_ratio=statistics.median(e2e["separate"]) / statistics.median(e2e["packed"]),
        max_abs_diff=max_abs_diff,
        max_abs_score=max_abs_score,
    )


def markdown(results: list[Result], n: int) -> str:
    lines = [
        f"| model | prompt | tokens (prompt + {n} responses) | packed ms | isolated ms "
        f"| separate x{n} ms | separate batched ms | separate / packed (wall) "
        f"| separate / packed (FLOPs) | separate / packed (end-to-end) "
        f"| max abs(isolated - separate) / max abs(score) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.model} | {r.scenario} | {r.prompt_tokens} + {r.response_tokens} "
            f"| {r.packed_ms:.1f} | {r.isolated_ms:.1f} | {r.separate_ms:.1f} "
            f"| {r.separate_batched_ms:.1f} | **{r.speedup:.2f}x** | {r.flops_ratio:.2f}x "
            f"| {r.e2e_ratio:.2f}x | {r.max_abs_diff:.1e} / {r.max_abs_score:.1e} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--hidden", type=int, nargs="+", default=[64, 512])
    parser.add_argument(
        "--layers",
        type=int,
        nargs="+",
        default=[2, 6],
        help="one per --hidden value (or one for all)",
    )
    parser.add_argument("--heads", type=int, default=None)
    parser.add_argument("--kv-heads", type=int, default=None)
    parser.add_argument("--intermediate", type=int, default=None)
    parser.add_argument("--vision-dim", type=int, default=None, help="default hidden/2")
    parser.add_argument("--vision-depth", type=int, default=None, help="default layers/2")
    parser.add_argument("--vision-heads", type=int, default=None)
    parser.add_argument("--vision-mlp-ratio", type=int, default=2)
    parser.add_argument("--n", type=int, default=4, help="responses per prompt")
    parser.add_argument("--response-words", type=int, default=24)
    parser.add_argument("--image-side", type=int, default=448, help="448 -> 256 visual tokens")
    parser.add_argument("--video-frames", type=int, default=8)
    parser.add_argument("--video-side", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args(argv)
    if len(args.layers) == 1:
        args.layers = args.layers * len(args.hidden)
    if len(args.layers) != len(args.hidden):
        parser.error("give one --layers value per --hidden value")

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tokenizer = build_tiny_tokenizer()
    results: list[Result] = []
    for hidden, layers in zip(args.hidden, args.layers, strict=True):
        results += bench_model(args, hidden, layers, tokenizer)
    print(markdown(results, args.n))
    if args.device == "cpu":
        print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    else:
        print(f"\ntorch {torch.__version__}, {torch.cuda.get_device_name(args.device)}")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))


if __name__ == "__main__":
    main()
