"""The Python client (``client/``, package ``quorum_client``) against Quorum as deployed:
gunicorn and a Celery worker in their own processes, reached over HTTP only.

README.md's notebook block is read from the README and run here, so it cannot drift.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from tests.e2e.conftest import ADMIN, PYTHON, REPO, REVIEWER, Deployment, add_members
from tests.media_fixtures import mp4_bytes, png_bytes

# The client is a package of its own (``pip install ./client``); the tests use the source.
sys.path.insert(0, str(REPO / "client"))

from quorum_client import (  # noqa: E402
    AuthenticationError,
    CandidateIn,
    ImportRejected,
    InvalidRequest,
    JudgmentIn,
    PermissionDenied,
    PromptIn,
    Quorum,
    QuorumError,
)


@pytest.fixture(scope="module")
def deployment(deploy) -> Deployment:
    return deploy()


def _token(deployment: Deployment, username: str) -> str:
    return deployment.manage("create_api_token", username).stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def admin(deployment) -> Quorum:
    with Quorum(deployment.base_url, _token(deployment, ADMIN), poll_interval=0.3) as client:
        yield client


def _prompt(pid: str, *, judged: bool = True, image: bytes | None = None) -> PromptIn:
    """Three candidates (text, image, video); expert-1 and expert-2 rank them, a-b-c."""
    ids = [f"{pid}-{c}" for c in "abc"]
    return PromptIn(
        id=pid,
        text=f"Which answer to {pid} is best?",
        image=image,
        candidates=[
            CandidateIn(id=ids[0], model="model-a", text=f"Answer a to {pid}"),
            CandidateIn(id=ids[1], model="model-b", image=png_bytes((20, 200, 20))),
            CandidateIn(id=ids[2], model="model-c", video=mp4_bytes()),
        ],
        judgments=[
            JudgmentIn(annotator=name, ranking=[[i] for i in ids], duration_ms=3000)
            for name in ("expert-1", "expert-2")
        ]
        if judged
        else [],
    )


def test_it_creates_a_project_with_prompts_and_media(admin):
    project = admin.create_project(
        "client-media",
        candidates_per_task=3,
        annotators_per_task=2,
        rubric_dimensions=["accuracy"],
        prompts=[_prompt("m1", image=png_bytes((200, 20, 20)))],
    )
    assert (project.name, project.mode, project.candidates_per_task) == (
        "client-media",
        "ranking",
        3,
    )
    judgments = list(admin.judgments(project.id))
    assert [j.annotator for j in judgments] == ["expert-1", "expert-2"]
    assert judgments[0].ranking == [["m1-a"], ["m1-b"], ["m1-c"]]
    assert judgments[0].source == "external" and judgments[0].duration_ms == 3000


def test_it_refuses_to_create_a_project_whose_name_is_taken(admin):
    admin.create_project("client-taken", candidates_per_task=3)
    with pytest.raises(QuorumError, match="'client-taken' exists"):
        admin.create_project("client-taken", candidates_per_task=3)


def test_it_pushes_prompts_into_a_project_and_repeats_nothing(admin):
    project = admin.create_project("client-push", candidates_per_task=3)
    job = admin.push_prompts(project.id, [_prompt("p1"), _prompt("p2", judged=False)])
    assert job.status == "done" and job.counts["prompts"] == 2 and job.counts["judgments"] == 2
    again = admin.push_prompts(project.id, [_prompt("p1")])
    assert again.counts["prompts"] == 0 and again.counts["judgments"] == 0
    assert [j.prompt_external_id for j in admin.judgments(project.id)] == ["p1", "p1"]


def test_it_waits_for_an_import_run_by_the_worker(admin):
    # The deployment runs imports above 5 rows as a Celery task (QUORUM_ASYNC_IMPORT_ROWS).
    project = admin.create_project("client-async", candidates_per_task=3)
    seen: list[str] = []
    prompts = [_prompt(f"a{i}", judged=False) for i in range(7)]
    started = admin.push_prompts(project.id, prompts, wait=False)
    assert started.status in ("pending", "running")
    job = admin.wait_for_import(started, on_progress=lambda j: seen.append(j.status))
    assert job.status == "done" and job.counts["prompts"] == 7 and seen[-1] == "done"


def test_it_raises_the_import_problems_by_line_and_field(admin):
    project = admin.create_project("client-rejected", candidates_per_task=3)
    bad = _prompt("bad")
    bad.candidates[1].image = b"\x89PNG\r\n\x1a\n not really a png"
    with pytest.raises(ImportRejected) as caught:
        admin.push_prompts(project.id, [_prompt("good"), bad])
    assert caught.value.status_code == 422
    assert any("line 2" in p and "candidates[1].image" in p for p in caught.value.problems), (
        caught.value.problems
    )
    assert list(admin.judgments(project.id)) == []


def test_it_pages_through_judgments_and_filters_by_prompt(admin):
    project = admin.create_project("client-pages", candidates_per_task=3)
    admin.push_prompts(project.id, [_prompt(f"j{i}") for i in range(3)])
    every = list(admin.judgments(project.id, page_size=2))
    assert len(every) == 6 and len({j.id for j in every}) == 6
    assert {j.prompt_external_id for j in admin.judgments(project.id, prompt="j1")} == {"j1"}


def test_it_names_a_pairs_winner_by_candidate_id(admin):
    project = admin.create_project("client-pairs", mode="pairwise", candidates_per_task=2)
    duel = PromptIn(
        id="duel",
        text="Which is nicer?",
        candidates=[CandidateIn(id=f"duel-{c}", model=f"model-{c}", text=c) for c in "xy"],
        judgments=[
            JudgmentIn(annotator="expert-1", pair=("duel-y", "duel-x"), outcome="a"),
            JudgmentIn(annotator="expert-2", pair=("duel-x", "duel-y"), outcome="b"),
            JudgmentIn(annotator="expert-3", pair=("duel-x", "duel-y"), outcome="tie"),
        ],
    )
    admin.push_prompts(project.id, [duel])
    judgments = list(admin.judgments(project.id))
    assert [j.winner for j in judgments] == ["duel-y", "duel-y", None]
    assert all(j.kind == "pair" and j.ranking is None for j in judgments)


def test_it_reads_the_leaderboard_and_flags(admin):
    project = admin.create_project("client-board", candidates_per_task=3)
    split = PromptIn(
        id="split",
        text="Which is best?",
        candidates=[CandidateIn(id=f"split-{c}", model=f"model-{c}", text=c) for c in "abc"],
        judgments=[
            JudgmentIn(annotator="expert-1", ranking=[["split-a"], ["split-b"], ["split-c"]]),
            JudgmentIn(annotator="expert-2", ranking=[["split-c"], ["split-b"], ["split-a"]]),
        ],
    )
    admin.push_prompts(project.id, [_prompt("b1"), _prompt("b2"), split])
    board = admin.leaderboard(project.id, bootstrap=20)
    assert [row.model for row in board.rows] == ["model-a", "model-b", "model-c"]
    assert board.rows[0].ci_low is not None and board.votes > 0
    admin.recompute_flags(project.id)
    flags = _eventually(lambda: list(admin.flags(project.id, kind="low_agreement")))
    assert {f.prompt_external_id for f in flags} == {"split"}


def _eventually(fetch, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while not (found := fetch()):
        if time.monotonic() > deadline:
            pytest.fail(f"nothing after {timeout:.0f} s")
        time.sleep(0.5)
    return found


def test_it_builds_waits_for_and_downloads_an_export(admin, tmp_path):
    project = admin.create_project("client-export", candidates_per_task=3)
    admin.push_prompts(project.id, [_prompt("e1"), _prompt("e2")])
    started = admin.start_export(project.id, splits={"train": 1.0})
    export = admin.wait_for_export(started)
    assert export.status == "done" and export.version == 1
    assert [e.id for e in admin.exports(project.id)] == [export.id]
    path = admin.download_export(export, tmp_path)
    assert path.name == f"quorum-{project.id}-v1.zip"
    with zipfile.ZipFile(path) as zf:
        assert f"quorum-{project.id}-v1/datasheet.json" in zf.namelist()


def test_it_carries_the_servers_message_when_training_has_no_base_model(admin):
    project = admin.create_project("client-train", candidates_per_task=3)
    admin.push_prompts(project.id, [_prompt("t1")])
    export = admin.wait_for_export(admin.start_export(project.id))
    with pytest.raises(InvalidRequest, match="no active reward model to start from") as caught:
        admin.start_training(export, options={"epochs": 1})
    assert caught.value.status_code == 422


def test_it_carries_the_servers_message_when_a_project_has_no_reward_model(admin):
    project = admin.create_project("client-no-model", candidates_per_task=3)
    with pytest.raises(InvalidRequest, match="no active reward model") as caught:
        admin.start_scoring_run(project.id)
    assert caught.value.status_code == 422


def test_it_raises_permission_denied_with_the_servers_message(deployment, admin):
    project = admin.create_project("client-roles", candidates_per_task=3)
    add_members(deployment, "client-roles")
    with Quorum(deployment.base_url, _token(deployment, REVIEWER)) as reviewer:
        assert list(reviewer.flags(project.id)) == []  # reviewers read flags ...
        with pytest.raises(PermissionDenied, match="does not allow this") as caught:
            reviewer.leaderboard(project.id)  # ... but the leaderboard is for admins
    assert caught.value.status_code == 403


def test_it_raises_authentication_error_for_an_unknown_token(deployment):
    stranger = Quorum(deployment.base_url, "qrm_not-a-key")
    with stranger, pytest.raises(AuthenticationError) as caught:
        stranger.projects()
    assert caught.value.status_code == 401


def _readme_notebook_block() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Notebook: the Python client", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README.md's notebook section has no python block"
    return match.group(1)


def test_it_runs_the_readme_notebook_example(deployment, tmp_path, monkeypatch, capsys):
    (tmp_path / "media").mkdir()
    for i, color in enumerate([(220, 30, 30), (30, 30, 220)]):
        (tmp_path / "media" / f"pic-{i}.png").write_bytes(png_bytes(color))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("QUORUM_URL", deployment.base_url)
    monkeypatch.setenv("QUORUM_TOKEN", _token(deployment, ADMIN))
    namespace: dict = {}
    exec(compile(_readme_notebook_block(), "README.md (notebook)", "exec"), namespace)
    printed = capsys.readouterr().out
    project, zip_path = namespace["project"], namespace["zip_path"]
    assert project.name == "captions"
    assert "pic-0 expert-1 [['pic-0-a'], ['pic-0-b', 'pic-0-c']]" in printed
    assert re.search(r"^1 captioner-a ", printed, re.M), printed
    assert zip_path.resolve() == tmp_path.resolve() / f"quorum-{project.id}-v1.zip"
    assert zipfile.is_zipfile(zip_path)


def test_it_installs_with_pip(tmp_path):
    # From a copy: building in place would leave build/ and *.egg-info in the repository.
    source = shutil.copytree(REPO / "client", tmp_path / "client")
    target = tmp_path / "site"
    subprocess.run(
        [PYTHON, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
        + ["--target", str(target), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    shown = subprocess.run(
        [PYTHON, "-c", "import quorum_client; print(quorum_client.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert Path(shown.strip()).is_relative_to(target)
    assert (target / "quorum_client" / "py.typed").exists()
