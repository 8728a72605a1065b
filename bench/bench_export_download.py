"""The curated export's download in-process: a commit's ``curation/download.py`` beside the
tree's, alternating, on one export folder; CPU and wall seconds per zip, its size, and the
same files in both zips (``zipfile`` reads them back byte for byte).

    PYTHONPATH=. python bench/bench_export_download.py <export folder> [--before 49bc1f8]
        [--reps 3] [--formats all,jsonl,parquet,hf]

The export folder: e.g. the one ``bench/bench_export_legs.py`` prints. ``--formats``: the
tree's downloads to time besides ``all`` (``format=`` of the API; the commit's download takes
``all`` only). CPU counts every thread of this process (the compressing ones too).
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import os
import statistics
import subprocess
import sys
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _old_module(commit: str):
    source = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{commit}:curation/download.py"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    spec = importlib.util.spec_from_loader("download_before", loader=None)
    module = importlib.util.module_from_spec(spec)
    sys.modules["download_before"] = module
    exec(compile(source, f"{commit}:curation/download.py", "exec"), module.__dict__)
    return module


def _zip(module, folder: Path, formats) -> tuple[float, float, bytes]:
    kwargs = {} if formats is None else {"formats": formats}
    wall, cpu = time.perf_counter(), time.process_time()
    body = b"".join(module.iter_download_zip(folder, "x", **kwargs))
    return time.perf_counter() - wall, time.process_time() - cpu, body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--before", default="49bc1f8")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--formats", default="all,jsonl,parquet,hf")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from curation import download as after

    before = _old_module(args.before)
    folder = Path(args.folder)
    runs: dict[str, list[tuple[float, float, int]]] = {}
    bodies: dict[str, bytes] = {}
    loads = []
    for rep in range(args.reps):
        loads.append(os.getloadavg()[0])
        sides = [("before", before), ("after", after)]
        for label, module in sides if rep % 2 == 0 else sides[::-1]:
            wall, cpu, body = _zip(module, folder, None)
            runs.setdefault(f"{label} all", []).append((wall, cpu, len(body)))
            bodies.setdefault(label, body)
        for name in args.formats.split(","):
            if name != "all":
                wall, cpu, body = _zip(after, folder, {name})
                runs.setdefault(f"after {name}", []).append((wall, cpu, len(body)))
    with (
        zipfile.ZipFile(io.BytesIO(bodies["before"])) as a,
        zipfile.ZipFile(io.BytesIO(bodies["after"])) as b,
    ):
        same = a.namelist() == b.namelist() and all(a.read(n) == b.read(n) for n in a.namelist())
    print(f"{folder}: {args.reps} reps, load (1 min) {' '.join(f'{x:.1f}' for x in loads)}")
    print("| download | wall s (median) | CPU s (median) | zip MB |")
    print("|---|---|---|---|")
    for label, values in runs.items():
        wall = statistics.median(v[0] for v in values)
        cpu = statistics.median(v[1] for v in values)
        print(f"| {label} | {wall:.2f} | {cpu:.2f} | {values[0][2] / 1e6:.1f} |")
    print("same files in both zips" if same else "FILES DIFFER")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
