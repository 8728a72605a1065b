"""A fresh PostgreSQL database for a bench script that runs Django in-process."""

from __future__ import annotations

import os
from collections.abc import Callable


def in_fresh_database(run: Callable[[], None]) -> None:
    """Runs ``run()`` with the PostgreSQL database named by ``DATABASE_URL`` dropped and
    created first and dropped after (Django's connections closed first); without a PostgreSQL
    ``DATABASE_URL`` (SQLite), runs it as is."""
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        run()
        return
    server, _, name = url.rpartition("/")
    import psycopg

    def drop(create: bool) -> None:
        with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            if create:
                conn.execute(f'CREATE DATABASE "{name}"')

    drop(create=True)
    try:
        run()
    finally:
        from django.db import connections

        connections.close_all()
        drop(create=False)
