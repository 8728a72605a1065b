"""gunicorn's default worker count (config/gunicorn.conf.py): 4 x cores + 1 on PostgreSQL,
2 x cores + 1 on SQLite, at most 9; QUORUM_WEB_WORKERS wins."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

CONF = Path(__file__).resolve().parents[2] / "config" / "gunicorn.conf.py"


def _workers(monkeypatch, cores: int, **env: str) -> int:
    for name in ("DATABASE_URL", "DATABASE_URL_FILE", "QUORUM_WEB_WORKERS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    return runpy.run_path(str(CONF))["workers"]


@pytest.mark.parametrize(
    "cores, env, expected",
    [
        (2, {}, 5),
        (2, {"DATABASE_URL": "sqlite:///var/q.sqlite3"}, 5),
        (2, {"DATABASE_URL": "postgres://u@db/quorum"}, 9),
        (1, {"DATABASE_URL": "postgresql://u@db/quorum"}, 5),
        (8, {"DATABASE_URL": "postgres://u@db/quorum"}, 9),
        (2, {"DATABASE_URL": "postgres://u@db/quorum", "QUORUM_WEB_WORKERS": "3"}, 3),
    ],
)
def test_the_default_follows_the_database(monkeypatch, cores, env, expected):
    assert _workers(monkeypatch, cores, **env) == expected


def test_a_database_url_file_counts(monkeypatch, tmp_path):
    url_file = tmp_path / "url"
    url_file.write_text("postgres://u@db/quorum\n")
    assert _workers(monkeypatch, 2, DATABASE_URL_FILE=str(url_file)) == 9
