"""Per stored media file, the scoring process's CPU and minor page faults (h20i).

The demo world and a demo-shaped checkpoint (``bench_h19d_stored._prepare``), the media store
filled by one scoring pass; then, with the process's media cache emptied each time, every
demo media file encoded from the store by ``encode_image`` / ``encode_video`` (what a worker
does per file after ``make demo``), and the layout step alone (``_patchify_uint8``) on the
stored frames. CPU us and minor faults per file, medians of ``--repeats``::

    PYTHONPATH=. python bench/bench_h20i_layout.py --repeats 7
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--root", type=Path, help="a prepared root (else a temporary one)")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE / "bench"))
    from bench_h19d_stored import _prepare

    from workers.demo_model import examples_from_world
    from workers.media import DecodePool
    from workers.reward_model import load_reward_model
    from workers.reward_model.inputs import _patchify_uint8
    from workers.reward_model.media_cache import MediaStore

    with tempfile.TemporaryDirectory(prefix="h20i-layout-") as tmp:
        root = args.root or Path(tmp)
        if not (root / "model").exists():
            _prepare(root, args.prompts)
        scorer = load_reward_model(root / "model", device="cpu")
        builder = scorer.builder
        builder.decode_pool = DecodePool(0)
        builder.media_store = MediaStore(Path(tmp) / "store")
        files: dict[str, set[str]] = {"image": set(), "video": set()}
        for _, example in examples_from_world(root / "world"):
            item = example.item
            if item.prompt_image:
                files["image"].add(str(item.prompt_image))
            if item.prompt_video:
                files["video"].add(str(item.prompt_video))
            for c in item.candidates:
                if c.path and c.kind in files:
                    files[c.kind].add(str(c.path))
        encode = {"image": builder.encode_image, "video": builder.encode_video}
        for kind, paths in files.items():
            for path in paths:
                encode[kind](path)  # fills the store
        scope = builder._store_scope()
        for kind, paths in files.items():
            if not paths:
                continue
            paths = sorted(paths)
            frames = [builder.media_store.read(scope, kind, builder._digest(p))[0] for p in paths]
            mean = builder.image_processor.image_mean
            std = builder.image_processor.image_std
            geometry = (builder.patch_size, builder.temporal_patch_size, builder.merge_size)
            table: dict[str, list[tuple[float, float]]] = {"encode": [], "layout": []}
            for _ in range(args.repeats):
                builder.media_cache.clear()
                faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                cpu = time.process_time()
                kept = [encode[kind](p) for p in paths]
                table["encode"].append(
                    (
                        (time.process_time() - cpu) / len(paths),
                        (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / len(paths),
                    )
                )
                del kept
                faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                cpu = time.process_time()
                kept = [_patchify_uint8(f, mean, std, *geometry) for f in frames]
                table["layout"].append(
                    (
                        (time.process_time() - cpu) / len(paths),
                        (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / len(paths),
                    )
                )
                del kept
            for step, values in table.items():
                print(
                    f"{kind:5} {len(paths):3} files {step:6}: "
                    f"{1e6 * statistics.median(v[0] for v in values):7.1f} us CPU, "
                    f"{statistics.median(v[1] for v in values):5.1f} minor faults per file"
                )


if __name__ == "__main__":
    main()
