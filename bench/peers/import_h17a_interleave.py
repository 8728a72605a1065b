"""PostgreSQL: what parsing the peer workload while its candidate rows stream into a ``COPY``
left open would save, against parsing everything first and copying after (today's order:
``services._import_file`` parses the whole file, then ``_write_records`` copies each table).

Both orders run the import's own row parser (``importing._Parser.quorum``, orjson per line) on
the peer file and copy the 40,000 candidate rows of a 10,000-task file in binary, as
``bulk_insert.columns_insert`` does, into a scratch clone of ``annotate_candidate`` (its
indexes, no foreign keys), alternating run by run; "interleaved" writes each chunk's rows
before parsing the next chunk, so the server works through the rows in its socket buffers
while Python parses (no second thread). Prints wall seconds and the server backend's CPU
(``/proc``), medians, and checks that both orders stored the same rows.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/quorum_x .venv/bin/python \\
        bench/peers/import_h17a_interleave.py [--runs 5] [--tasks 10000] [--chunk 1000]

The database must exist (the clone ``h17a_interleave_candidates`` is made and dropped there).
Nothing here asserts a timing. Only the candidates are measured: the other three tables would
follow the same way, one ``COPY`` open at a time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson
import psycopg

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(Path(__file__).resolve().parent)]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from workload import write_quorum_jsonl  # noqa: E402

from annotate.importing import MediaSource, _Parser  # noqa: E402

TABLE = "h17a_interleave_candidates"
COLUMNS = "id, external_id, model_name, kind, text, media, metadata, created_at, project_id, prompt_id, text_html"
# bigint, text x5, jsonb as bytea (version byte + text), timestamptz, bigint x2, text
TYPES = [20, 25, 25, 25, 25, 25, 17, 1184, 20, 20, 25]
JSONB_EMPTY = b"\x01{}"


def _backend_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _parse(parser: _Parser, lines: list[str], first_line: int) -> list:
    return [
        parser.quorum(number, orjson.loads(line), line)
        for number, line in enumerate(lines, start=first_line)
    ]


def _rows(records, first_prompt: int, next_pk: list[int], now):
    """The candidate rows of ``records`` (prompts numbered from ``first_prompt``); ``next_pk``
    holds the next candidate id, advanced as rows are made."""
    for prompt_pk, record in enumerate(records, start=first_prompt):
        for c in record.candidates:
            yield (next_pk[0], c.external_id, c.model_name, "text", c.text, "", JSONB_EMPTY, now,
                   1, prompt_pk, "")  # fmt: skip
            next_pk[0] += 1


def _one(conn: psycopg.Connection, pid: int, data: bytes, order: str, chunk: int, now):
    with conn.cursor() as cur:
        cur.execute(f"TRUNCATE {TABLE}")
    conn.commit()
    parser = _Parser(MediaSource.__new__(MediaSource), "interleave")
    sql = f"COPY {TABLE} ({COLUMNS}) FROM STDIN (FORMAT BINARY)"
    server0, wall0 = _backend_cpu(pid), time.perf_counter()
    lines = data.decode().splitlines()[1:]  # the first line holds the project's settings
    with conn.cursor() as cur:
        if order == "serial":
            records = _parse(parser, lines, 2)
            with cur.copy(sql) as copy:
                copy.set_types(TYPES)
                for row in _rows(records, 1, [1], now):
                    copy.write_row(row)
        else:
            next_pk = [1]
            with cur.copy(sql) as copy:
                copy.set_types(TYPES)
                for start in range(0, len(lines), chunk):
                    records = _parse(parser, lines[start : start + chunk], start + 2)
                    for row in _rows(records, start + 1, next_pk, now):
                        copy.write_row(row)
    conn.commit()
    wall, server = time.perf_counter() - wall0, _backend_cpu(pid) - server0
    with conn.cursor() as cur:
        cur.execute(f"SELECT count(*), md5(string_agg(md5(({TABLE}.*)::text), '' ORDER BY id)) FROM {TABLE} "
                    "")  # fmt: skip
        digest = cur.fetchone()
    return wall, server, digest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--chunk", type=int, default=1000, help="rows parsed per chunk")
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    path = write_quorum_jsonl(Path(tempfile.mkdtemp()) / "tasks.jsonl", args.tasks, judged=False)
    data = path.read_bytes()
    shutil.rmtree(path.parent, ignore_errors=True)  # read once; nothing else uses it
    from django.db import connection

    db = connection.settings_dict
    if connection.vendor != "postgresql":
        sys.exit("set DATABASE_URL to a PostgreSQL database")
    conn = psycopg.connect(
        dbname=db["NAME"],
        user=db["USER"] or None,
        password=db["PASSWORD"] or None,
        host=db["HOST"] or None,
        port=db["PORT"] or None,
    )
    with conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {TABLE}")
        cur.execute(f"CREATE TABLE {TABLE} (LIKE annotate_candidate INCLUDING ALL)")
        cur.execute("SELECT pg_backend_pid()")
        pid = cur.fetchone()[0]
    conn.commit()
    got: dict[str, list[tuple[float, float]]] = {"serial": [], "interleaved": []}
    digests = set()
    now = dt.datetime.now(dt.UTC)  # every run's rows the same, to compare them
    try:
        for run in range(args.runs):
            orders = ["serial", "interleaved"] if run % 2 == 0 else ["interleaved", "serial"]
            for order in orders:
                wall, server, digest = _one(conn, pid, data, order, args.chunk, now)
                digests.add(digest)
                got[order].append((wall, server))
                print(f"{order}: {wall:.3f} s, server CPU {server:.2f} s "
                      f"(load {os.getloadavg()[0]:.1f})", file=sys.stderr)  # fmt: skip
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {TABLE}")
        conn.commit()
        conn.close()
    med = {k: (statistics.median(w for w, _ in v), statistics.median(s for _, s in v))
           for k, v in got.items()}  # fmt: skip
    (sw, ss), (iw, is_) = med["serial"], med["interleaved"]
    print(
        f"{args.tasks:,} tasks' candidates, parse + COPY, medians of {args.runs}: serial "
        f"{sw:.3f} s (server {ss:.2f}) -> interleaved {iw:.3f} s (server {is_:.2f}), "
        f"{sw / iw:.2f}x; same rows: {len(digests) == 1}"
    )


if __name__ == "__main__":
    main()
