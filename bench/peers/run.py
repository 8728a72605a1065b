"""Quorum beside Label Studio, the same workload over HTTP, in one run; prints one table of ratios.

    .venv/bin/python bench/peers/run.py [--quick] [--rounds 1] [--no-ls] [--dbs sqlite,postgres]

Label Studio is measured by ``../shared/bench/label_studio_bench.sh`` (it installs Label Studio
1.23 in a scratch virtualenv, ``LSB_VENV``, default /tmp/lsvenv, once; starts it with
``label-studio start`` on SQLite; measures over HTTP); Quorum by ``quorum_side.py`` beside this
file (gunicorn with ``config/gunicorn.conf.py`` and a Celery worker; on SQLite with the embedded broker, as
``make demo`` runs it, and on the PostgreSQL server at ``--pg`` with the Redis broker at
``--redis``, as deployed). Both get the same sizes: N tasks of a prompt and 4 text
candidates, N calls per latency figure, T annotators with their own sessions, R repetitions of
imports and exports. The servers are measured one after the other and, with ``--rounds`` > 1,
in alternating order round by round (the machine's load drifts); every figure pools the rounds.
Ratios are Label Studio / Quorum: above 1, Quorum is faster (or lighter).

``--quick`` (1,000 tasks, 48 calls, 1 rep) is for development; the default sizes are the
issue's (10,000 tasks, 200 calls, 8 annotators, 3 reps). Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LS_SCRIPT = REPO.parent / "shared" / "bench" / "label_studio_bench.sh"


def _log(*a) -> None:
    print("[peers]", time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


def pct(xs: list[float], q: float) -> float | None:
    """The q-th percentile as the peer script computes it (nearest rank)."""
    xs = sorted(xs)
    if not xs:
        return None
    if q == 50:
        return (xs[(len(xs) - 1) // 2] + xs[len(xs) // 2]) / 2
    return xs[max(0, math.ceil(q / 100 * len(xs)) - 1)]


def run_label_studio(args, sizes: dict) -> dict:
    env = {
        **os.environ,
        "LSB_TASKS": str(sizes["tasks"]),
        "LSB_REPS": str(sizes["reps"]),
        "LSB_CALLS": str(sizes["calls"]),
        "LSB_THREADS": str(sizes["threads"]),
        "LSB_KEEP": "1",  # keeps results.json; the folder is removed below
    }
    proc = subprocess.run(["bash", str(args.ls_script)], env=env, capture_output=True, text=True)
    kept = re.search(r"raw results: (\S+)", proc.stderr)
    if proc.returncode != 0 or not kept:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"label_studio_bench.sh failed (rc {proc.returncode})")
    results_path = Path(kept.group(1))
    data = json.loads(results_path.read_text())
    data["table"] = proc.stdout
    if results_path.parent.name.startswith("lsbench."):
        shutil.rmtree(results_path.parent, ignore_errors=True)
    return data


def run_quorum(args, sizes: dict, db: str) -> dict:
    env = dict(os.environ)
    env.pop("CELERY_BROKER_URL", None)
    if db == "postgres":  # as deployed: PostgreSQL and a Redis broker
        env["DATABASE_URL"] = args.pg
        if args.redis:
            env["QUORUM_PEERS_BROKER"] = args.redis
    else:  # as `make demo` runs it: SQLite and the embedded broker
        env.pop("DATABASE_URL", None)
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [
            sys.executable,
            str(Path(__file__).with_name("quorum_side.py")),
            *("--tasks", str(sizes["tasks"]), "--calls", str(sizes["calls"])),
            *("--threads", str(sizes["threads"]), "--reps", str(sizes["reps"])),
            *("--out", out.name),
            *("--parts", args.parts),
        ]
        subprocess.run(cmd, env=env, check=True, cwd=REPO)
        return json.loads(Path(out.name).read_text())


def _ls_samples(ls_runs: list[dict], label: str) -> list[float]:
    """Raw samples of the peer's metric whose label starts with ``label`` (its units)."""
    found: list[float] = []
    for run in ls_runs:
        for name, metric in run["metrics"].items():
            if name.startswith(label) and isinstance(metric, dict) and "raw" in metric:
                found += metric["raw"]
    return found


def _q_samples(q_runs: list[dict], key: str, scale: float = 1.0) -> list[float]:
    return [x * scale for run in q_runs for x in run.get(key, [])]


def _fmt(x: float | None, unit: str) -> str:
    if x is None:
        return "-"
    if unit == "MB":
        return f"{x:.3f} MB" if x < 1 else f"{x:.2f} MB"
    if unit == "ms":
        return f"{x:.0f} ms" if x >= 10 else f"{x:.1f} ms"
    return f"{x:.1f} s" if x >= 10 else f"{x:.2f} s"


def table(ls_runs: list[dict], q: dict[str, list[dict]], sizes: dict) -> str:
    n, t = sizes["tasks"], sizes["threads"]
    dbs = list(q)
    rows: list[tuple[str, float | None, list[float | None], str, str]] = []

    def add(label, ls_value, q_values, unit, target=""):
        rows.append((label, ls_value, q_values, unit, target))

    def metric(ls_label, q_key, stat, unit, label, target="", scale=1.0):
        ls = _ls_samples(ls_runs, ls_label) if ls_label else []
        add(
            label,
            pct(ls, stat) if ls else None,
            [pct(_q_samples(q[db], q_key, scale), stat) for db in dbs],
            unit,
            target,
        )

    metric("a) import", "import_api", 50, "s", f"import {n:,} tasks, HTTP API (median)", ">= 3x")
    metric(None, "import_cli", 50, "s", f"import {n:,} tasks, CLI (median, start-up included)")
    for stat in (50, 95):
        metric(
            "b) next task, sequential",
            "next_seq",
            stat,
            "ms",
            f"next task p{stat}, sequential",
            scale=1e3,
        )
    for stat in (50, 95):
        target = ">= 10x" if stat == 95 else ""
        metric(
            f"b) next task, {t} clients",
            "next_conc",
            stat,
            "ms",
            f"next task p{stat}, {t} annotators",
            target,
            1e3,
        )
    for stat in (50, 95):
        target = ">= 10x" if stat == 95 else ""
        metric(f"b) next task in loop, {t} clients", "loop_conc_next", stat, "ms",
               f"next in next->submit loop p{stat}, {t} annotators", target, 1e3)  # fmt: skip
    for stat in (50, 95):
        metric("c) submit in next->submit loop, sequential", "loop_seq_submit", stat, "ms",
               f"submit p{stat}, sequential (loop)", scale=1e3)  # fmt: skip
    for stat in (50, 95):
        target = ">= 10x" if stat == 95 else ""
        metric(f"c) submit in loop, {t} clients", "loop_conc_submit", stat, "ms",
               f"submit p{stat}, {t} annotators (loop)", target, 1e3)  # fmt: skip
    dups_ls = [
        r["checks"].get(next((k for k in r["checks"] if "handed the same task" in k), ""), None)
        for r in ls_runs
    ]
    dups_ls = [d for d in dups_ls if isinstance(d, int)]
    add(
        f"tasks handed to > k annotators (k = 1, {t} clients)",
        sum(dups_ls) if dups_ls else None,
        [
            sum(r.get("over_k_leased", 0) for r in q[db])
            if "queue" in q[db][0].get("parts", "queue")
            else None
            for db in dbs
        ],
        "count",
        "0",
    )
    metric(
        "d) bulk create",
        "bulk_judged_import",
        50,
        "s",
        f"import {n:,} tasks with a ranking each (API)",
    )
    metric(
        "d) export JSON",
        "export_raw",
        50,
        "s",
        f"export {n:,} judged tasks, raw (API, median)",
    )
    metric(
        "d) export JSON",
        "export_denoised",
        50,
        "s",
        f"export {n:,} judged tasks, denoised (API, median)",
        ">= 10x",
    )
    # Like for like: Label Studio's export is one JSON file; this is the same denoised
    # export (same build) downloaded as its JSONL files only (?format=jsonl), no Parquet/HF.
    metric(
        "d) export JSON",
        "export_denoised_jsonl",
        50,
        "s",
        f"export {n:,} judged tasks, denoised, JSONL only: like for like (API, median)",
    )
    # The "raw export" bar (30x) is read here as the judgments as stored: Label
    # Studio's JSON export is its raw annotations. "raw" above is the curated dataset build
    # with denoising off (the same build as denoised), shown for reference without a bar.
    metric("d) export JSON", "export_stored_api", 50, "s",
           "export raw judgments as stored (API, median)", ">= 30x")  # fmt: skip
    metric(None, "export_cli_raw", 50, "s", "export raw judgments as stored, CLI (median)")

    def ls_page(run):
        pw = run.get("page_weight") or {}
        if "initial_js" not in pw:
            return None
        parts = ("initial_js", "initial_css", "lazy_js", "lazy_css")
        return (pw.get("html_bytes", 0) + sum(pw[p][0] for p in parts)) / 1e6

    ls_pages = [p for p in map(ls_page, ls_runs) if p is not None]
    add(
        "ranking page weight: HTML + JS + CSS",
        ls_pages[0] if ls_pages else None,
        [q[db][0]["page"]["bytes"] / 1e6 if "page" in q[db][0] else None for db in dbs],
        "MB",
    )

    names = {"sqlite": "SQLite", "postgres": "PostgreSQL"}
    head = "| metric | Label Studio | " + " | ".join(f"Quorum {names[d]}" for d in dbs)
    head += " | LS / Quorum (" + " / ".join(names[d] for d in dbs) + ") | target |"
    lines = [head, "|" + "---|" * (4 + len(dbs))]
    for label, ls_value, q_values, unit, target in rows:
        if unit == "count":
            cells = ["-" if ls_value is None else str(ls_value)]
            cells += ["-" if v is None else str(v) for v in q_values]
            ratio = ""
        else:
            cells = [_fmt(ls_value, unit)] + [_fmt(v, unit) for v in q_values]
            ratio = " / ".join(
                "-" if ls_value is None or not v else f"{ls_value / v:.1f}x" for v in q_values
            )
            if ls_value is None:
                ratio = ""
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {ratio} | {target} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 tasks, 48 calls, 1 rep")
    parser.add_argument("--tasks", type=int)
    parser.add_argument("--calls", type=int)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--reps", type=int)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--dbs", default="sqlite,postgres")
    parser.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432/postgres")
    parser.add_argument(
        "--redis",
        default="redis://127.0.0.1:6379/14",
        help="broker of the PostgreSQL deployment ('' for the embedded one)",
    )
    parser.add_argument("--no-ls", action="store_true", help="Quorum only (Label Studio missing)")
    parser.add_argument("--ls-script", type=Path, default=LS_SCRIPT)
    parser.add_argument("--save", type=Path, help="write every raw result here (JSON)")
    parser.add_argument(
        "--parts",
        default="import,queue,export",
        help="Quorum's parts to measure (a subset of import,queue,export; the rest print -)",
    )
    args = parser.parse_args()
    sizes = {
        "tasks": args.tasks or (1000 if args.quick else 10_000),
        "calls": args.calls or (48 if args.quick else 200),
        "threads": args.threads,
        "reps": args.reps or (1 if args.quick else 3),
    }
    dbs = [d.strip() for d in args.dbs.split(",") if d.strip()]
    unknown = sorted(set(dbs) - {"sqlite", "postgres"})
    if unknown or not dbs:
        raise SystemExit(f"--dbs {args.dbs!r}: name sqlite and/or postgres (unknown: {unknown})")
    systems = ([] if args.no_ls else ["label-studio"]) + dbs
    if not args.no_ls and not args.ls_script.is_file():
        raise SystemExit(f"{args.ls_script}: no such file (--no-ls measures Quorum alone)")
    ls_runs: list[dict] = []
    q: dict[str, list[dict]] = {db: [] for db in dbs}
    started = time.monotonic()
    for round_ in range(args.rounds):
        order = systems if round_ % 2 == 0 else systems[::-1]
        for system in order:
            load = os.getloadavg()
            _log(f"round {round_ + 1}: {system} (load average {load[0]:.1f} / {load[1]:.1f})")
            if system == "label-studio":
                ls_runs.append(run_label_studio(args, sizes))
            else:
                q[system].append(run_quorum(args, sizes, system))
    load = os.getloadavg()
    if args.save:
        args.save.write_text(
            json.dumps({"sizes": sizes, "label_studio": ls_runs, "quorum": q}, default=str)
        )
    version = ls_runs[0]["meta"].get("label_studio") if ls_runs else "not run"
    print(
        f"Label Studio {version} (label-studio start, SQLite) vs Quorum (gunicorn + 1 Celery worker); "
        f"{sizes['tasks']:,} tasks, {sizes['calls']} calls per latency figure, {sizes['threads']} annotators, "
        f"{sizes['reps']} reps, {args.rounds} round(s); {time.monotonic() - started:.0f} s; "
        f"load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on {os.cpu_count()} CPUs"
    )
    print(table(ls_runs, q, sizes))
    print(legs(q))


def legs(q: dict[str, list[dict]]) -> str:
    """The API imports' and the curated exports' legs, medians over reps and rounds
    (quorum_side.import_legs, quorum_side.api_export)."""
    out = ["", "Quorum's import over the API, median seconds of each leg:", ""]
    out.append("| database | request | queue | run | notice | total |")
    out.append("|---|---|---|---|---|---|")
    keys = ("request", "queue", "run", "notice", "total")
    for db, runs in q.items():
        phases = [p for run in runs for p in run.get("import_api_phases", [])]
        if phases:
            cells = [f"{pct([p[k] for p in phases], 50):.2f}" for k in keys]
            out.append(f"| {db} | " + " | ".join(cells) + " |")
    out += ["", "Quorum's curated export over the API, median seconds of each leg:", ""]
    out.append("| database | export | request | queue | build | notice | download | total |")
    out.append("|---|---|---|---|---|---|---|---|")
    keys = ("request", "queue", "build", "notice", "download", "total")
    for db, runs in q.items():
        for kind in ("raw", "denoised"):
            phases = [p for run in runs for p in run.get(f"export_{kind}_phases", [])]
            if phases:
                cells = [f"{pct([p[k] for p in phases], 50):.2f}" for k in keys]
                out.append(f"| {db} | {kind} | " + " | ".join(cells) + " |")
    return "\n".join(out)


if __name__ == "__main__":
    main()
