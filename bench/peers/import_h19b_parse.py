"""The import's Python steps that h19b changed, an older tree against a newer one, in one process,
alternated call by call: ``parse_import`` and ``quorum_stream`` + ``records`` of the peer file
(10,000 ranking tasks of 4 text candidates), ``markdown_html_stored_many`` of its candidate
texts, and the conversion of a metadata column for ``columns_insert`` (SQLite's text, PostgreSQL's
binary ``jsonb``). CPU seconds (``time.process_time``), medians of ``--runs``; each step's output
compared between the trees (equal, or the script stops).

    .venv/bin/python bench/peers/import_h19b_parse.py --before var/h19b-base [--after DIR]
        [--runs 9] [--tasks 10000]

Both trees' modules are loaded side by side from their files (Django set up from this tree's
settings, on a scratch data folder). Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import shutil
import statistics
import sys
import tempfile
import time
from itertools import repeat
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True)
    parser.add_argument("--after", type=Path, default=REPO)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--tasks", type=int, default=10_000)
    args = parser.parse_args()
    sys.path[:0] = [str(REPO), str(HERE)]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    scratch = []  # the folders this run made, removed at its end
    if "QUORUM_DATA_DIR" not in os.environ:
        scratch.append(tempfile.mkdtemp(prefix="h19b-parse-"))
        os.environ["QUORUM_DATA_DIR"] = scratch[-1]
    try:
        _run(args, scratch)
    finally:
        for folder in scratch:
            shutil.rmtree(folder, ignore_errors=True)


def _run(args: argparse.Namespace, scratch: list) -> None:
    import django

    django.setup()
    import gc

    from django.db import models
    from workload import write_quorum_jsonl

    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    mods = {
        name: {
            m: _load(f"h19b_{name}_{m}", tree / "annotate" / f"{m}.py")
            for m in ("importing", "rendering", "bulk_insert")
        }
        for name, tree in trees.items()
    }
    scratch.append(tempfile.mkdtemp())
    path = write_quorum_jsonl(Path(scratch[-1]) / "tasks.jsonl", args.tasks, judged=False)
    limits = {"max_media_bytes": 10**9, "max_file_bytes": 10**9, "max_text_chars": 100_000}
    texts = [c.text for p in mods["before"]["importing"].parse_import(path, **limits).prompts
             for c in p.candidates]  # fmt: skip
    field = models.JSONField()
    field.set_attributes_from_name("metadata")

    def parse(m):
        parsed = m["importing"].parse_import(path, **limits)
        parsed.source.close()
        return [dataclasses.asdict(p) for p in parsed.prompts[:50]], len(parsed.prompts)

    def stream(m):
        s = m["importing"].quorum_stream(path, **limits)
        out = []
        for start in range(0, len(s.rows), 1000):
            out += s.records(start, start + 1000)
        s.source.close()
        return [dataclasses.asdict(p) for p in out[:50]], len(out)

    def render(m):
        return m["rendering"].markdown_html_stored_many(texts)

    def metadata(m, binary):
        b = m["bulk_insert"]
        values = [{} for _ in texts]
        convert = b._converter(field, strict_json=True, jsonb_binary=binary)
        if hasattr(b, "_one_value") and b._one_value(field, values):
            return list(zip(repeat(convert(values[0])), range(len(values))))
        return list(zip(map(convert, values), range(len(values)), strict=True))

    steps = {
        "parse_import": parse,
        "quorum_stream": stream,
        "render candidates": render,
        "metadata column (text)": lambda m: metadata(m, False),
        "metadata column (jsonb)": lambda m: metadata(m, True),
    }
    got = {s: {n: [] for n in trees} for s in steps}
    gc.disable()
    for run in range(args.runs):
        for step, fn in steps.items():
            outs = {}
            for name in list(trees) if run % 2 == 0 else list(trees)[::-1]:
                c0 = time.process_time()
                outs[name] = fn(mods[name])
                got[step][name].append(time.process_time() - c0)
            if outs["before"] != outs["after"]:
                raise SystemExit(f"{step}: the trees' outputs differ")
        gc.collect()
    print(f"{args.tasks:,} tasks, CPU medians of {args.runs} (load {os.getloadavg()[0]:.1f}):")
    for step in steps:
        b, a = (statistics.median(got[step][n]) for n in trees)
        print(f"  {step:24s} {b * 1000:7.1f} -> {a * 1000:7.1f} ms ({b / a:.2f}x)")


if __name__ == "__main__":
    main()
