#!/usr/bin/env bash
# Packed vs separate-pass scoring on one GPU with a realistically sized random model.
#
# Qwen2-VL-7B-shaped layers (hidden 3584, 28 heads / 4 KV heads, MLP 18944; vision tower
# 1280 wide, MLP ratio 4) cut to 8 text and 8 vision layers, bf16, SDPA, weights drawn from
# the config on the GPU (no download). Two prompt sizes: the CPU benchmark's (256-token
# image, 8 x 224^2 video frames) and a larger one (1024-token image, 16 x 448^2 frames).
# Takes about 2 minutes on one H100 (budget: < 5 minutes).
#
# Usage (repo root): bash bench/gpu_packed_scoring.sh
# transformers 5.24 is pinned here; if the GPU image has another version, put the wheel in
# .whl/ (ignored by git) and it is installed into /tmp/site first:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --platform manylinux2014_x86_64 -d .whl transformers==5.24.0
# JSON results go to $OUT (or bench/out/) as gpu_*.json.
set -euo pipefail
cd "$(dirname "$0")/.."

if compgen -G ".whl/transformers-*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/transformers-*.whl
    if PYTHONPATH=/tmp/site python3 -c 'import transformers.models.qwen2_vl.modeling_qwen2_vl'; then
        export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    else
        echo "carried transformers does not import here; using the installed one" >&2
    fi
fi
export PYTHONUNBUFFERED=1
results=${OUT:-bench/out}
mkdir -p "$results"

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'

model=(--device cuda --dtype bfloat16 --hidden 3584 --layers 8 --heads 28 --kv-heads 4
       --intermediate 18944 --vision-dim 1280 --vision-depth 8 --vision-heads 16
       --vision-mlp-ratio 4 --repeats 10 --warmup 3)

echo "## CPU-benchmark prompt sizes (256-token image, 8 x 224^2 video frames)"
python3 bench/bench_packed_scoring.py "${model[@]}" \
    --image-side 448 --video-frames 8 --video-side 224 --json "$results/gpu_base.json"

echo
echo "## Larger prompts (1024-token image, 16 x 448^2 video frames)"
python3 bench/bench_packed_scoring.py "${model[@]}" \
    --image-side 896 --video-frames 16 --video-side 448 --json "$results/gpu_large.json"
