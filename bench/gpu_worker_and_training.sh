#!/usr/bin/env bash
# One prepared device check (issue 9): on one GPU, with a Qwen2-VL-2B-shaped random model in bf16,
#   1. training steps/s of the paper's recipe (LoRA r=128, gradient checkpointing) and packed vs
#      separate scoring prompts/s on the same prompts (bench/gpu_train_steps.py);
#   2. the workers' scoring path (RewardScorer.score: media decoded by a pool of processes
#      while the model runs; rows built by 8 processes and collated by a thread, or by the main
#      thread as before, columns "build processes" and "build, main thread collates") against
#      the bare forward pass, in prompts/s, on the demo world's three projects with
#      checkpoint-sized media budgets (bench/bench_worker_scoring.py).
# About 5 minutes on one H200 (step 2 alone, WORKER_ONLY=1: about 2 minutes). Logs and JSON go to
# $OUT (or bench/out/).
#
# Usage (repo root, on the GPU machine): bash bench/gpu_worker_and_training.sh
#         WORKER_ONLY=1 bash bench/gpu_worker_and_training.sh   # step 2 only (issue 9 item 5)
#         TINY=1 bash bench/gpu_worker_and_training.sh     # a check of the script on CPU
# Wheels the GPU image lacks or holds at other versions (transformers 5.24, peft, PyAV for the
# demo world's clips) are installed from .whl/ (ignored by git) into /tmp/site first:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl \
#     transformers==5.24.0 tokenizers==0.23.3 peft==0.21.2 av==18.1.0
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
results=${OUT:-bench/out}
mkdir -p "$results"
python=${PYTHON:-python3}

if [ -z "${TINY:-}" ] && compgen -G ".whl/*.whl" >/dev/null; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
nproc
"$python" -c 'import torch, transformers, av; print("torch", torch.__version__, "transformers", transformers.__version__, "av", av.__version__)'

if [ -n "${TINY:-}" ]; then
    train=(--tiny --steps 4)
    worker=(--hidden 64 --layers 2 --prompts 2 --repeats 1 --decode-processes 2 --build-processes 2)
else
    train=(--steps 20)
    worker=(--device cuda --dtype bfloat16 --shape 2b --prompts 8 --repeats 3 --decode-processes 8
        --build-processes 8)
fi

if [ -z "${WORKER_ONLY:-}" ]; then
    echo "## 1. training steps/s and packed vs separate scoring (gpu_train_steps.py)"
    OUT=$results timeout 240 "$python" bench/gpu_train_steps.py "${train[@]}" 2>&1 \
        | grep -v -e FutureWarning -e 'warnings.warn' | tee "$results/train_steps.log"
    echo "exit ${PIPESTATUS[0]}"
fi

echo
echo "## 2. workers' scoring path vs bare forward, checkpoint-sized budgets (bench_worker_scoring.py)"
timeout 240 "$python" bench/bench_worker_scoring.py "${worker[@]}" --limits large \
    --wait-policy PASSIVE 2>&1 | tee "$results/worker_scoring_large.log"
echo "exit ${PIPESTATUS[0]}"
