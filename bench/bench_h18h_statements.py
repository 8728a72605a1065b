"""Where next-task's tail goes: per-statement time inside next requests, small vs large.

Runs bench_queue.py's next/submit cycles (``measure``) against databases kept by
``bench_queue_scale.py --keep``, one fresh process per database and pass, the sizes
alternated, and times every SQL statement a next request runs (an execute wrapper), labelled
by what it is: ``current`` (the live-lease lookup), ``pick`` (the open pool's locked pick),
``room``, ``lease`` (the lease's insert/update), ``progress`` (done today / remaining /
editable) and ``other`` (session, user, project, membership). Each process runs ``--passes``
passes back to back: the first after whatever the machine did before (cold), the next ones
right after it (warm). Prints per size and pass: next p50/p95, and for the slowest 5% of
next requests and for all of them the mean ms per statement label, and the large/small ratios.
Does not count rows (a count of 10M judgments evicts the shared buffers it measures).

    python bench/bench_h18h_statements.py --prefix quorum_s7_scale [--rounds 2] [--cycles 100]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

LABELS = ("current", "pick", "room", "lease", "progress", "other")


def _label(sql: str) -> str:
    if "SELECT COUNT(*) FROM (" in sql:
        return "progress"
    if "FOR UPDATE" in sql and '"annotate_task"' in sql and "LIMIT 1" in sql:
        return "pick"
    if '"annotate_assignment"."leased_until" DESC' in sql:
        return "current"
    if sql.startswith(('INSERT INTO "annotate_assignment"', 'UPDATE "annotate_assignment"')):
        return "lease"
    if '"annotate_task"."judgment_count" + COALESCE' in sql and "FOR UPDATE" not in sql:
        return "room"
    return "other"


def _child(database: str, server: str, cycles: int, passes: int, out: Path, tree: str) -> None:
    # The tree measured: its annotate/ and bench/bench_queue.py come first on the path.
    sys.path[:0] = [tree, str(Path(tree) / "bench")]
    os.environ["DATABASE_URL"] = f"{server}/{database}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("QUORUM_DATA_DIR", "/tmp/quorum-bench-queue")
    import django

    django.setup()
    import bench_queue
    from django.db import connection
    from django.test import Client

    from annotate.models import Membership, Project

    project = Project.objects.get(name="bench")
    user_ids = list(
        Membership.objects.filter(project=project)
        .order_by("user_id")
        .values_list("user_id", flat=True)
    )
    state: dict = {"phase": None, "request": None}
    requests: list[dict] = []

    def wrapper(execute, sql, params, many, context):
        start = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            if state["request"] is not None:
                label = _label(sql)
                ms = (time.perf_counter() - start) * 1000
                state["request"][label] = state["request"].get(label, 0.0) + ms

    original_get = Client.get

    def timed_get(self, *args, **kwargs):
        state["request"] = {}
        start = time.perf_counter()
        try:
            return original_get(self, *args, **kwargs)
        finally:
            state["request"]["total"] = (time.perf_counter() - start) * 1000
            # measure() takes its 10 annotators round-robin, the first at the first request.
            state["request"]["user"] = user_ids[len(requests) % 10]
            requests.append(state["request"])
            state["request"] = None

    Client.get = timed_get
    by_pass, reads = [], []
    with connection.execute_wrapper(wrapper):
        for _ in range(passes):
            requests.clear()
            before = _blocks_read(server, database)
            bench_queue.measure(project_id=project.pk, user_ids=user_ids, cycles=cycles, workers=10)
            by_pass.append(list(requests[-cycles:]))  # the warmup's first requests left out
            time.sleep(1.2)  # a backend's I/O counts reach the statistics within a second
            after = _blocks_read(server, database)
            reads.append({k: after[k] - before.get(k, 0) for k in after})
    out.write_text(json.dumps({"requests": by_pass, "reads": reads}))
    connection.close()


def _blocks_read(server: str, database: str) -> dict[str, int]:
    """Blocks each relation of the database read into shared buffers so far (not found there:
    from the OS page cache or the disk)."""
    import psycopg

    with psycopg.connect(f"{server}/{database}", autocommit=True) as conn:
        rows = conn.execute(
            "SELECT relname, coalesce(heap_blks_read, 0) FROM pg_statio_user_tables "
            "UNION ALL SELECT indexrelname, idx_blks_read FROM pg_statio_user_indexes"
        ).fetchall()
    return {name: int(n) for name, n in rows}


def _summary(requests: list[dict]) -> dict:
    totals = sorted(r["total"] for r in requests)
    p95 = totals[min(len(totals) - 1, round(0.95 * (len(totals) - 1)))]
    slow = [r for r in requests if r["total"] >= p95]
    return {
        "p50": statistics.median(totals),
        "p95": p95,
        "all": {k: statistics.fmean(r.get(k, 0.0) for r in requests) for k in LABELS},
        "slow": {k: statistics.fmean(r.get(k, 0.0) for r in slow) for k in LABELS},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--prefix", default="quorum_bench_scale")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cycles", type=int, default=100)
    parser.add_argument("--passes", type=int, default=2, help="passes per process (1 cold)")
    parser.add_argument(
        "--base", help="also measure this worktree (another commit), legs alternated ABBA"
    )
    parser.add_argument("--tree", default=str(REPO), help=argparse.SUPPRESS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.server, args.cycles, args.passes, Path(args.out), args.tree)
        return
    sizes = ("small", "large")
    trees = [("this", str(REPO))] + (
        [("base", str(Path(args.base).resolve()))] if args.base else []
    )
    pooled: dict[tuple[str, str, int], list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for round_no in range(args.rounds):
            order = sizes if round_no % 2 == 0 else tuple(reversed(sizes))
            legs = trees if round_no % 2 == 0 else list(reversed(trees))
            for name in order:
                for leg, (tree_name, tree) in enumerate(legs + legs[::-1]):
                    out = Path(tmp) / f"{tree_name}-{name}-{round_no}-{leg}.json"
                    subprocess.run(
                        [
                            sys.executable, __file__, "--child", f"{args.prefix}_{name}",
                            "--server", args.server, "--cycles", str(args.cycles),
                            "--passes", str(args.passes), "--out", str(out), "--tree", tree,
                        ],
                        check=True,
                        cwd=tree,
                    )  # fmt: skip
                    child = json.loads(out.read_text())
                    for pass_no, requests in enumerate(child["requests"]):
                        read = child["reads"][pass_no]
                        top = sorted(read.items(), key=lambda kv: -kv[1])[:3]
                        pooled.setdefault((tree_name, name, pass_no), []).extend(requests)
                        s = _summary(requests)
                        print(
                            f"round {round_no + 1} {tree_name} {name:<5} pass {pass_no + 1}: "
                            f"next p50 {s['p50']:.1f} p95 {s['p95']:.1f} ms "
                            f"(load {os.getloadavg()[0]:.1f}); blocks read "
                            f"{sum(read.values())}: " + ", ".join(f"{k} {v}" for k, v in top)
                        )
    print(
        f"{'tree':<5} {'size':<5} {'pass':>4} {'p50':>6} {'p95':>6}  ms per statement: all|slow 5%"
    )
    summaries = {key: _summary(requests) for key, requests in pooled.items()}
    for (tree_name, name, pass_no), s in sorted(summaries.items()):
        parts = "  ".join(f"{k} {s['all'][k]:.2f}|{s['slow'][k]:.2f}" for k in LABELS)
        print(
            f"{tree_name:<5} {name:<5} {pass_no + 1:>4} {s['p50']:>6.1f} {s['p95']:>6.1f}  {parts}"
        )
    for tree_name, _ in trees:
        for name in sizes:
            everyone = [r for p in range(args.passes) for r in pooled[(tree_name, name, p)]]
            users = sorted({r["user"] for r in everyone})
            print(
                f"{tree_name} {name} progress ms by annotator (mean|max): "
                + ", ".join(
                    f"{u}: {statistics.fmean(rs):.1f}|{max(rs):.0f}"
                    for u in users
                    for rs in ([r.get("progress", 0.0) for r in everyone if r["user"] == u],)
                )
            )
    for tree_name, _ in trees:
        for pass_no in range(args.passes):
            large = summaries[(tree_name, "large", pass_no)]
            small = summaries[(tree_name, "small", pass_no)]
            print(
                f"{tree_name} pass {pass_no + 1}: large/small next p50 "
                f"{large['p50'] / small['p50']:.2f}x, p95 {large['p95'] / small['p95']:.2f}x"
            )
    if args.base:
        for name in sizes:
            for pass_no in range(args.passes):
                this = summaries[("this", name, pass_no)]
                base = summaries[("base", name, pass_no)]
                print(
                    f"this/base {name} pass {pass_no + 1}: next p50 "
                    f"{this['p50'] / base['p50']:.2f}x, p95 {this['p95'] / base['p95']:.2f}x"
                )


if __name__ == "__main__":
    main()
