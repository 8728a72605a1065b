"""Checks that two trees' imports store the same rows: every row of every table, ids included,
datetimes and the upload's path excluded, after the same sequence of imports.

    .venv/bin/python bench/peers/import_h13i_same_rows.py --before /tmp/h13i-base [--after .]
        [--tasks 2000]

Each tree imports, through ``import_job_create`` (the job path the API takes, run inline), into
a fresh data folder (SQLite) or a scratch PostgreSQL database (``DATABASE_URL`` set): the peer
workload unjudged (a first import), the same file again (everything skipped), the judged
workload into another project, and a second file into that project that shares half its
prompts (the look-up path, judgments skipped by key). Prints the tables and row counts compared
and exits 1 on the first difference. Not a timing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from import_before_after import CHILD_SETUP, run_child  # noqa: E402

CHILD = (
    CHILD_SETUP
    + r"""
from django.db import connection
from workload import quorum_rows, write_quorum_jsonl
from annotate.services import import_job_create
n = int(os.environ["IMPORT_TASKS"])
folder = Path(tempfile.mkdtemp())
plain = write_quorum_jsonl(folder / "plain.jsonl", n, judged=False)
judged = write_quorum_jsonl(folder / "judged.jsonl", n, judged=True)
mixed = folder / "mixed.jsonl"
rows = quorum_rows(n + n // 2, judged=True, seed=99)[n // 2 :]
with open(mixed, "w") as fh:
    for row in rows:
        fh.write(json.dumps(row) + "\n")
jobs = []
for path, name in [(plain, "plain"), (plain, "plain"), (judged, "judged"), (mixed, "judged")]:
    job = import_job_create(path=str(path), project_name=name, run_async=False)
    jobs.append((job.status, job.counts, job.errors))
dump = {"jobs": jobs}
skip_tables = {"django_migrations", "django_session", "sqlite_sequence"}
with connection.cursor() as cursor:
    for table in sorted(connection.introspection.table_names(cursor)):
        if table in skip_tables:
            continue
        desc = connection.introspection.get_table_description(cursor, table)
        cols = [d.name for d in desc]
        cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
        out = []
        for row in cursor.fetchall():
            keep = []
            for col, value in zip(cols, row):
                if col in ("source_file",) or col.endswith("_at") or col in ("date_joined", "last_login"):
                    continue
                if hasattr(value, "isoformat"):
                    continue
                if isinstance(value, (dict, list)):
                    value = json.dumps(value, sort_keys=True)
                elif isinstance(value, str) and value[:1] in "{[":
                    try:
                        value = json.dumps(json.loads(value), sort_keys=True)
                    except ValueError:
                        pass
                keep.append(repr(value))
            out.append("|".join(keep))
        dump[table] = sorted(out)
print("DUMP" + json.dumps(dump))
import shutil
shutil.rmtree(folder, ignore_errors=True)
"""
)


def _dump(tree: Path, tasks: int) -> dict:
    out = run_child(tree, tasks, CHILD, "DUMP", tag="same")
    return json.loads(out.split("DUMP", 1)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="the older tree (a folder)")
    parser.add_argument("--after", type=Path, default=REPO, help="the newer tree (a folder)")
    parser.add_argument("--tasks", type=int, default=2000)
    args = parser.parse_args()
    before = _dump(args.before.resolve(), args.tasks)
    after = _dump(args.after.resolve(), args.tasks)
    if before["jobs"] != after["jobs"]:
        print("import jobs differ:", before["jobs"], after["jobs"], sep="\n")
        raise SystemExit(1)
    print("jobs:", [(s, c) for s, c, _ in after["jobs"]])
    for table in sorted(set(before) | set(after)):
        if table == "jobs":
            continue
        a, b = before.get(table), after.get(table)
        if a != b:
            diff = sorted(set(a or []) ^ set(b or []))[:5]
            print(f"{table}: DIFFERENT ({len(a or [])} / {len(b or [])} rows), e.g. {diff}")
            raise SystemExit(1)
        if a:
            digest = hashlib.sha1("\n".join(a).encode()).hexdigest()[:12]
            print(f"{table}: {len(a)} rows, same ({digest})")
    print("the same rows in every table")


if __name__ == "__main__":
    main()
