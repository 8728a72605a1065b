"""Scoring throughput through the workers' path vs the bare forward pass, on demo prompts.

The workers call ``RewardScorer.score`` on a batch of prompts: media are decoded and rows are
built (tokenising the chat template), then the model runs. This bench times, on the demo world's
prompts (VQA with image prompts, text-to-image and text-to-video candidates), in the same run:

- bare forward: the same rows built beforehand, only the model's forward passes (the ceiling);
- scorer, serial: ``RewardScorer.score`` decoding media before each forward pass (before);
- scorer, prefetch: ``RewardScorer.score`` with media decoded in threads while the model runs
  (the workers' path before the decoding processes);
- scorer, pool: the same, each item's media files handed to ``--decode-processes`` decoding
  processes (``workers.media.DecodePool``) while the model runs (what the workers run);
- scorer, prefetch, stored: the same call with the process's media cache emptied but the media
  store (decoded frames resized for the model, on disk) filled by the call before: a later
  scoring run, or another worker process, meeting files scored before;
- scorer, prefetch, warm: the same call again, the media now in the builder's cache (a worker
  scoring the same files again: a picture shared by prompts, a prompt scored again);
- scorer, build processes: rows built (media decoded, template rendered, tokens, pixel patches,
  positions) by ``--build-processes`` processes (``RewardScorer(build_processes=N)``,
  ``workers.reward_model.row_building``), a thread of the scoring process cutting and collating
  the forward passes, the main thread only running the model; first with their media caches and
  the store emptied, then again (caches warm);
- scorer, build processes, main thread collates: the same, the main thread taking the rows
  and collating each pass itself (the path before the collating thread), first and again;
- decoding alone (CPU table only): every picture and every clip frame decoded, nothing resized,
  converted or stored: what no first scoring run can skip. bare / (bare + decoding) bounds
  the CPU ratio any first run can reach on this machine, however it overlaps its work.

The serial, prefetch and pool columns start each repeat with the media cache and the media
store emptied: every file is decoded once (and written to the store), as in a first scoring
run. The stored and warm runs use the pool too (it has nothing to decode there).

It prints prompts/s and each scorer's ratio to the bare forward measured in the same repeat
(modes interleaved; the machine is noisy, ratios are what count), then the same as CPU time per
prompt (every thread of the process, and the decoding processes' own), which moves less with
the machine's load, and last the CPU of the scoring process alone (its threads, no child
process) and of its main thread: on a GPU the forward pass is launch-bound, the Python of the
main thread and of the prefetch threads share one interpreter lock, so the scoring process's own
CPU per prompt against the bare forward's is the proxy for the GPU ratio. Random weights,
nothing downloaded::

    python bench/bench_worker_scoring.py                 # hidden 256 / 4 layers, 3 repeats
    python bench/bench_worker_scoring.py --hidden 512 --layers 6 --repeats 5
    python bench/bench_worker_scoring.py --shape demo    # the demo model's own shape

``--shape demo`` is the model ``manage.py train_demo_model`` trains (``workers/demo_model.py``:
hidden 64, 2 layers, picture and clip answers read out from their visual tokens), with its
media budgets unless ``--limits large`` is given.

On a GPU machine, a 2-4B-shaped random model (``--shape 2b``: Qwen2-VL-2B's widths, as in
``bench/gpu_train_steps.py``) in bf16 with the checkpoint-sized budgets (``--limits large``:
images up to 448^2, 8 video frames up to 224^2) scores the same demo prompts; one policy,
in-process::

    python bench/bench_worker_scoring.py --device cuda --dtype bfloat16 --shape 2b \
        --limits large --decode-processes 8 --build-processes 8 --wait-policy PASSIVE

Workers run with ``OMP_WAIT_POLICY=PASSIVE`` (set by ``config/celery.py`` before torch loads).
The policy must be set before torch is imported, so by default this script runs itself twice in
child processes, once with torch's default (threads spin after each parallel region) and once
as the workers run, rounds alternating; ``--wait-policy PASSIVE`` runs one policy in-process.
"""

from __future__ import annotations

import argparse
import inspect
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if "--wait-policy" in sys.argv:  # a child run: the policy applies to torch's threads only if
    # set before torch loads (as config/celery.py does in the workers).
    os.environ["OMP_WAIT_POLICY"] = sys.argv[sys.argv.index("--wait-policy") + 1]

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# torch and the project are imported in main(): the decoding processes are spawned, and import
# this file again (as __mp_main__), which must stay light.


# A checkpoint's budgets rather than the demo model's: 448^2 images (256 visual tokens after
# merging), 8 frames of at most 224^2.
LARGE_LIMITS = {
    "image_max_pixels": 448 * 448,
    "video_max_pixels": 224 * 224,
    "max_frames": 8,
    "max_length": 8192,
}


def _synchronize() -> None:
    """Waits for queued GPU work, so that a timing covers it (a no-op on CPU)."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _main_thread_collates(scorer):  # noqa: ANN001, ANN202
    """`scorer` with the row-building processes' rows collated by the main thread, as before
    the collating thread (`RewardScorer._score_collated`)."""
    from workers.reward_model import RewardScorer

    class MainThreadCollates(RewardScorer):
        def _score_collated(self, prepared, results) -> None:  # noqa: ANN001
            self._score_prepared(prepared, results)

    return MainThreadCollates(
        scorer.model,
        scorer.builder,
        device=scorer.device,
        build_processes=scorer.row_pool.processes,
        batch_overhead_tokens=scorer.batch_overhead_tokens,
    )


def _bare(scorer, rows_by_mode: list[tuple[str, list]]) -> None:  # noqa: ANN001
    import torch

    with torch.inference_mode():
        for mode, rows in rows_by_mode:
            for group in scorer._batches(rows, mode):
                scorer.model(scorer.builder.collate(group, mode).to(scorer.device))


def _forward_alone(scorer, batches: list) -> None:  # noqa: ANN001
    import torch

    with torch.inference_mode():
        for batch in batches:
            scorer.model(batch)


def _decode_alone(items) -> None:  # noqa: ANN001
    """Only what no first scoring can skip: every picture decoded (Pillow) and every clip's
    frames decoded (PyAV, every frame: the last sampled is the clip's last); no resizing,
    no conversion, no store."""
    import av
    from PIL import Image

    for item in items:
        sources = [(c.kind, c.path) for c in item.candidates if c.path]
        sources += [("image", item.prompt_image), ("video", item.prompt_video)]
        for kind, path in sources:
            if path is None:
                continue
            if kind == "image":
                with Image.open(path) as picture:
                    picture.load()
            else:
                with av.open(str(path)) as container:
                    for _ in container.decode(container.streams.video[0]):
                        pass


def _children_cpu() -> float:
    """CPU seconds used so far by this process's live child processes (the decoding pool's),
    from /proc (10 ms ticks)."""
    import multiprocessing

    total = 0
    for child in multiprocessing.active_children():
        try:
            fields = Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def _timed(run) -> tuple[float, float, float, float]:  # noqa: ANN001
    """(wall seconds, CPU seconds of every thread of this process and of its child processes,
    of this process alone, of this (the main) thread) of `run()`."""
    _synchronize()
    wall, cpu, children = time.perf_counter(), time.process_time(), _children_cpu()
    main = time.thread_time()
    run()
    _synchronize()
    main = time.thread_time() - main
    own = time.process_time() - cpu
    used = own + _children_cpu() - children
    return time.perf_counter() - wall, used, own, main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--prompts", type=int, default=6, help="per demo project")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument(
        "--decode-processes", type=int, default=2, help="the pool column's decoding processes"
    )
    parser.add_argument(
        "--build-processes",
        type=int,
        default=2,
        help="the build columns' row-building processes (RewardScorer(build_processes=N))",
    )
    parser.add_argument(
        "--batch-overhead-tokens",
        type=int,
        help="the scorers' batch_overhead_tokens (what one more forward pass costs, in tokens;"
        " default the scorer's: 128 on a CPU, 4096 on a GPU)",
    )
    parser.add_argument(
        "--wait-policy",
        choices=("ACTIVE", "PASSIVE"),
        help="run one OpenMP wait policy in this process (default: both, in child processes)",
    )
    parser.add_argument("--rounds", type=int, default=2, help="child runs per policy")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument(
        "--shape",
        choices=("tiny", "demo", "2b"),
        default="tiny",
        help="tiny: --hidden/--layers; demo: the demo model's (hidden 64, 2 layers, media"
        " answers read out from their visual tokens); 2b: Qwen2-VL-2B's widths (GPU)",
    )
    parser.add_argument(
        "--limits",
        choices=("demo", "large"),
        default="demo",
        help="demo: the demo model's media budgets; large: 448^2 images, 8 x 224^2 frames",
    )
    args = parser.parse_args()
    if args.wait_policy is None:
        passthrough = [
            f"--hidden={args.hidden}",
            f"--layers={args.layers}",
            f"--prompts={args.prompts}",
            f"--repeats={args.repeats}",
            f"--threads={args.threads}",
            f"--decode-processes={args.decode_processes}",
            f"--build-processes={args.build_processes}",
            f"--device={args.device}",
            f"--dtype={args.dtype}",
            f"--shape={args.shape}",
            f"--limits={args.limits}",
        ]
        if args.batch_overhead_tokens is not None:
            passthrough.append(f"--batch-overhead-tokens={args.batch_overhead_tokens}")
        for round_ in range(args.rounds):
            # torch's default (spinning threads) first, then the workers' setting.
            for policy in ("ACTIVE", "PASSIVE"):
                label = "default, threads spin" if policy == "ACTIVE" else "workers' setting"
                print(f"\n### OMP_WAIT_POLICY={policy} ({label}), round {round_ + 1}", flush=True)
                subprocess.run(
                    [sys.executable, __file__, *passthrough, "--wait-policy", policy], check=True
                )
        return
    import torch

    from annotate.demo_world import generate_world, write_world
    from workers.demo_model import LIMITS, examples_from_world, train_demo_model
    from workers.media import DecodePool
    from workers.reward_model import RewardHeadConfig, RewardScorer
    from workers.reward_model.media_cache import MediaStore
    from workers.tiny import QWEN2_VL_2B_SHAPE, build_tiny_reward_scorer, build_tiny_tokenizer

    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        world = Path(tmp) / "world"
        write_world(generate_world(seed=7, scale="small", prompts=args.prompts), world)
        items_by_project: dict[str, list] = {}
        for name, example in examples_from_world(world):
            items_by_project.setdefault(name, []).append(example.item)
        tokenizer = build_tiny_tokenizer()
        head: dict = {}
        if args.shape == "2b":
            shape = QWEN2_VL_2B_SHAPE
        elif args.shape == "demo":
            defaults = inspect.signature(train_demo_model).parameters
            shape = {
                "hidden_size": defaults["hidden_size"].default,
                "num_layers": defaults["num_layers"].default,
            }
            head["head_config"] = RewardHeadConfig(
                media_repr_mode=defaults["media_repr_mode"].default
            )
        else:
            shape = {"hidden_size": args.hidden, "num_layers": args.layers}
        limits = LARGE_LIMITS if args.limits == "large" else LIMITS
        dtype = getattr(torch, args.dtype)
        started = time.perf_counter()
        base = build_tiny_reward_scorer(
            tokenizer=tokenizer, device=args.device, dtype=dtype, **shape, **head, **limits
        )
        params = sum(p.numel() for p in base.model.parameters())
        built = time.perf_counter() - started
        overhead = {}
        if args.batch_overhead_tokens is not None:
            overhead["batch_overhead_tokens"] = args.batch_overhead_tokens
        serial = RewardScorer(
            base.model, base.builder, device=args.device, prefetch_workers=0, **overhead
        )
        prefetch = RewardScorer(
            base.model, base.builder, device=args.device, prefetch_workers=2, **overhead
        )
        building = RewardScorer(
            base.model,
            base.builder,
            device=args.device,
            build_processes=args.build_processes,
            **overhead,
        )
        main_collating = _main_thread_collates(building)
        pool = DecodePool(args.decode_processes)
        no_pool = DecodePool(0)
        print(
            f"device {args.device} ({args.dtype}), {params / 1e9:.3f} B parameters (built in "
            f"{built:.0f} s), hidden {shape['hidden_size']}, {shape['num_layers']} layers, "
            f"media budgets {args.limits}, torch threads {torch.get_num_threads()}, decoding "
            f"processes {args.decode_processes}, row-building processes {args.build_processes}"
        )
        print(
            "| project | prompts | bare forward prompts/s | serial scorer | prefetch scorer "
            "| prefetch + pool | pool, stored | pool, warm cache | build processes "
            "| build processes, again | build, main thread collates "
            "| build, main thread collates, again |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        cpu_lines = []
        own_lines = []
        beyond_lines = []
        cache = base.builder.media_cache
        store_root = Path(tmp) / "store"

        def empty_store() -> None:
            # A new folder each time: nothing stored, as before a project's first scoring.
            base.builder.media_store = MediaStore(store_root / str(time.perf_counter_ns()))

        for name, items in items_by_project.items():
            rows: dict[str, list] = {}
            for index, item in enumerate(items):
                plan = base.builder.plan(index, base.builder.encode_item(item), "packed")
                rows.setdefault("isolated" if plan.layout == "isolated" else "packed", []).extend(
                    plan.rows
                )
            rows_by_mode = list(rows.items())
            # The bare forward's batches collated and on the device beforehand: what the
            # model's thread costs when it does nothing else.
            batches = [
                base.builder.collate(group, mode).to(base.device)
                for mode, mode_rows in rows_by_mode
                for group in base._batches(mode_rows, mode)
            ]
            modes = (
                "bare",
                "serial",
                "prefetch",
                "pool",
                "stored",
                "warm",
                "build",
                "again",
                "build_main",
                "again_main",
                "decode",
            )
            times: dict[str, list[float]] = {k: [] for k in (*modes, "forward")}
            cpu: dict[str, list[float]] = {k: [] for k in (*modes, "forward")}
            own: dict[str, list[float]] = {k: [] for k in (*modes, "forward")}
            main: dict[str, list[float]] = {k: [] for k in (*modes, "forward")}

            # What each run starts from: "cold" empties the process's cache and the store
            # (a first scoring run), "memory" the process's cache only (a later run, or
            # another worker); the warm run follows the stored one.
            steps = (
                ("bare", None, ""),
                ("serial", serial, "cold"),
                ("prefetch", prefetch, "cold"),
                ("pool", prefetch, "cold"),
                ("stored", prefetch, "memory"),
                ("warm", prefetch, ""),
                ("build", building, "cold"),
                ("again", building, ""),
                ("build_main", main_collating, "cold"),
                ("again_main", main_collating, ""),
                ("decode", None, ""),
                ("forward", None, ""),
            )
            serial.score(items[:2])  # warm-up
            base.builder.decode_pool = pool
            empty_store()
            prefetch.score(items[:2])  # the pool's processes started
            building.score(items[:2])  # the row-building processes started
            main_collating.score(items[:2])
            for _ in range(args.repeats):
                for mode, scorer, start_from in steps:
                    base.builder.decode_pool = (
                        pool if mode in ("pool", "stored", "warm") else no_pool
                    )
                    if start_from:
                        cache.clear()
                        building.row_pool.clear_media_cache()
                        main_collating.row_pool.clear_media_cache()
                    if start_from == "cold":
                        empty_store()
                    if mode == "forward":
                        timed = _timed(lambda: _forward_alone(base, batches))  # noqa: B023
                    elif mode == "decode":
                        timed = _timed(lambda: _decode_alone(items))  # noqa: B023
                    elif scorer is None:
                        timed = _timed(lambda: _bare(base, rows_by_mode))  # noqa: B023
                    else:
                        timed = _timed(lambda: scorer.score(items))  # noqa: B023
                    for table, value in zip((times, cpu, own, main), timed, strict=True):
                        table[mode].append(value)
            bare = statistics.median(times["bare"])
            cells = [
                f"{len(items) / statistics.median(times[k]):.1f} "
                f"({bare / statistics.median(times[k]):.2f}x)"
                for k in modes[1:-1]
            ]
            print(f"| {name} | {len(items)} | {len(items) / bare:.1f} | {' | '.join(cells)} |")
            per_prompt = [1e3 * statistics.median(cpu[k]) / len(items) for k in modes]
            decode = per_prompt[-1]
            cpu_lines.append(
                f"| {name} | {per_prompt[0]:.1f} | "
                + " | ".join(f"{v:.1f} ({per_prompt[0] / v:.2f}x)" for v in per_prompt[1:-1])
                + f" | {decode:.1f} ({per_prompt[0] / (per_prompt[0] + decode):.2f}x) |"
            )
            cells = []
            for k in (
                "bare",
                "prefetch",
                "pool",
                "warm",
                "build",
                "again",
                "build_main",
                "again_main",
            ):
                for table in (own, main):
                    value = 1e3 * statistics.median(table[k]) / len(items)
                    ratio = statistics.median(table["bare"]) / statistics.median(table[k])
                    cells.append(f"{value:.1f}" if k == "bare" else f"{value:.1f} ({ratio:.2f}x)")
            own_lines.append(f"| {name} | {' | '.join(cells)} |")
            alone = 1e3 * statistics.median(main["forward"]) / len(items)
            beyond = [
                1e3 * statistics.median(main[k]) / len(items) - alone
                for k in ("bare", "build", "again", "build_main", "again_main")
            ]
            beyond_lines.append(
                f"| {name} | {alone:.1f} | " + " | ".join(f"{v:.1f}" for v in beyond) + " |"
            )
        # CPU time moves less with the machine's load than wall time: on a busy machine the
        # two cores are shared, and a first scoring run cannot overlap what it must compute.
        # "Decoding alone" is the part of a first run nothing can skip (files decoded, nothing
        # resized or stored); its ceiling, bare / (bare + decoding), bounds any first run's
        # CPU ratio.
        print(
            "\nCPU ms per prompt (all threads of the process and the decoding processes), ratio"
            " to the bare forward's:\n"
            "| project | bare forward | serial scorer | prefetch scorer | prefetch + pool "
            "| pool, stored | pool, warm cache | build processes | build processes, again "
            "| build, main thread collates | build, main thread collates, again "
            "| decoding alone (ceiling) |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|"
        )
        print("\n".join(cpu_lines))
        # The proxy for a GPU, where the forward is launch-bound: what runs on the scoring
        # process's interpreter (its threads share the GIL), without its child processes.
        print(
            "\nCPU ms per prompt of the scoring process alone (all its threads, no child process)"
            " / of its main thread, ratio to the bare forward's:\n"
            "| project | bare, process | bare, main thread | prefetch, process "
            "| prefetch, main thread | pool, process | pool, main thread | warm, process "
            "| warm, main thread | build processes, process | build processes, main thread "
            "| build again, process | build again, main thread "
            "| build, main collates, process | build, main collates, main thread "
            "| build again, main collates, process | build again, main collates, main thread |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
        )
        print("\n".join(own_lines))
        # What the main thread does besides the forward passes (collating, taking rows,
        # waiting for them): on a GPU, where the forward is launch-bound, every millisecond
        # of it is one the GPU may wait.
        print(
            "\nCPU ms per prompt of the main thread beyond the forward passes alone (their batches"
            " collated beforehand):\n"
            "| project | forward alone | bare forward | build processes | build processes, again "
            "| build, main thread collates | build, main thread collates, again |\n"
            "|---|---|---|---|---|---|---|"
        )
        print("\n".join(beyond_lines))
        building.close()
        main_collating.close()
        pool.shutdown()


if __name__ == "__main__":
    main()
