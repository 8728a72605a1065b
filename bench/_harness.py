"""What the bench scripts share: Django set up on a chosen tree and data folder, a kept world
(a folder `bench/bench_curation_scale.py --repeat 0 --world ...` wrote) copied for one process,
the peer workload's export project, and the before/after rounds in fresh processes (ABAB).

Imported by the scripts as ``from _harness import ...`` (a script's own folder is first on
``sys.path``); nothing here imports the project's code before `django_in` has put the tree
under test first on the path.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def django_in(
    code: Path, data: Path, *, migrate: bool = True, sqlite: bool = False, peers: bool = False
) -> None:
    """Sets Django up on ``code``'s tree (first on the path, the working folder) with its data
    in ``data``; ``sqlite`` drops ``DATABASE_URL``, ``peers`` puts ``bench/peers`` (the peer
    workload) on the path, ``migrate`` migrates the database."""
    sys.path.insert(0, str(code))
    if peers:
        sys.path.insert(0, str(REPO / "bench" / "peers"))
    os.chdir(code)
    os.environ["QUORUM_DATA_DIR"] = str(data)
    if sqlite:
        os.environ.pop("DATABASE_URL", None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    if migrate:
        from django.core.management import call_command

        call_command("migrate", verbosity=0)


@contextmanager
def kept_world(
    world: str | Path, *, prefix: str, code: Path = REPO, migrate: bool = False
) -> Iterator[int]:
    """A copy of the kept world ``world`` in a fresh folder, Django set up on it (`django_in`);
    yields the world's project id. The copy is removed after."""
    data = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        shutil.copytree(Path(world), data, dirs_exist_ok=True)
        project_id = json.loads((data / "setup.json").read_text())["project"]
        django_in(code, data, migrate=migrate)
        yield project_id
    finally:
        shutil.rmtree(data, ignore_errors=True)


def bench_export_project(data: Path, tasks: int):
    """The project ``bench-export``: the peer workload's ``tasks`` judged ranking tasks
    imported once (a later run on the same data folder reuses them). Needs `django_in` with
    ``peers``."""
    from workload import write_quorum_jsonl

    from annotate.models import Project

    project = Project.objects.filter(name="bench-export").first()
    if project is None:
        from annotate.services import import_file

        path = write_quorum_jsonl(data / "tasks.jsonl", tasks, judged=True, k=1)
        import_file(path=path, project_name="bench-export")
        project = Project.objects.get(name="bench-export")
    return project


def before_after_children(
    before: str, rounds: int, command: list[str]
) -> Iterator[tuple[str, dict]]:
    """Runs ``command + ["--child", <tree>]`` in a fresh process per run, the tree ``before``
    (a folder) and this working tree alternated (ABBA...); yields each run's label ("before"
    or "after") and the JSON its last line of output holds."""
    codes = [("before", Path(before).resolve()), ("after", REPO)]
    for r in range(rounds):
        for label, code in codes if r % 2 == 0 else codes[::-1]:
            out = subprocess.run(
                [*command, "--child", str(code)], check=True, capture_output=True, text=True
            )
            yield label, json.loads(out.stdout.strip().splitlines()[-1])


def before_after_cpu(b: list[float], a: list[float]) -> str:
    """The fastest and median CPU seconds of two codes, and their ratios."""
    return (
        f"before {min(b):.3f} s fastest / {statistics.median(b):.3f} median, "
        f"after {min(a):.3f} / {statistics.median(a):.3f}; after/before "
        f"{min(a) / min(b):.2f}x fastest, {statistics.median(a) / statistics.median(b):.2f}x median"
    )


def commit_worktree(rev: str, parent: Path) -> tuple[str, Path]:
    """The full commit ``rev`` names, and a detached git worktree of it made under ``parent``
    (``before-<commit>``); the caller removes it (``git worktree remove --force``)."""
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", rev], check=True, capture_output=True, text=True
    ).stdout.strip()
    path = parent / f"before-{commit[:12]}"
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", str(path), commit],
        check=True,
        capture_output=True,
    )
    return commit, path


def masked_digests(folder: Path, *, version: bool = False) -> dict[str, str]:
    """SHA-256 of every file of an export folder by path, the build time masked where a file
    holds it (the datasheet, ``datasheet.md``, the README cards), and with ``version`` the
    export's version too; the datasheet's file list leaves out those files' digests."""
    sheet = json.loads((folder / "datasheet.json").read_text())
    created, number = sheet["created_at"], sheet.get("version")
    out = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        data = path.read_bytes()
        if rel == "datasheet.json":
            sheet = json.loads(data)
            sheet.pop("created_at")
            if version:
                sheet.pop("version")
            sheet["files"] = [
                f
                for f in sheet["files"]
                if f["path"] != "datasheet.md" and not f["path"].endswith("README.md")
            ]
            data = json.dumps(sheet, sort_keys=True).encode()
        elif rel == "datasheet.md" or rel.endswith("README.md"):
            data = data.replace(created.encode(), b"<created_at>")
            if version:
                data = data.replace(f"bench-export v{number}".encode(), b"bench-export v<version>")
        out[rel] = hashlib.sha256(data).hexdigest()
    return out
