"""`bench/bench_curation_scale.py` on PostgreSQL with its scratch databases named
``quorum_h19c_bc_<pid>...`` instead of ``quorum_bench_curation_<pid>...`` (a shared server
where each engineer may create only databases under their own prefix). Same arguments, same
output; ``DATABASE_URL`` must point at the server (any database name).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/quorum_h19c \\
        python bench/bench_h19c_scale_pg.py --before HEAD --repeat 2 [--prefix quorum_h19c_bc_]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_curation_scale as B  # noqa: E402

OLD = "quorum_bench_curation_"


def main() -> None:
    prefix = "quorum_h19c_bc_"
    if "--prefix" in sys.argv:
        at = sys.argv.index("--prefix")
        prefix = sys.argv[at + 1]
        del sys.argv[at : at + 2]
    admin, child = B._pg_admin, B._child

    def pg_admin(url: str, sql: str) -> None:
        admin(url, sql.replace(OLD, prefix))

    def run_child(mode, code, args, **extra):
        if extra.get("database"):
            extra["database"] = extra["database"].replace(OLD, prefix)
        return child(mode, code, args, **extra)

    B._pg_admin, B._child = pg_admin, run_child
    B.main()


if __name__ == "__main__":
    main()
