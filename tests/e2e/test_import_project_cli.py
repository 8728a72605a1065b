"""``manage.py import_project`` on a deployment with the embedded broker: it succeeds without a
traceback, and the flag recompute it queues is run by the separate worker process, whether
CELERY_BROKER_URL=filesystem:// is given explicitly or left unset (issue 8)."""

from __future__ import annotations

import json

import pytest

from tests.e2e.conftest import Deployment, wait_for
from tests.e2e.quorum_files import judged_rows, project_line, write_jsonl

# e1 and e2 agree, e3 ranks the other way round: every prompt gets a low-agreement flag.
JUDGES = {"e1": "abcd", "e2": "abcd", "e3": "dcba"}
PROMPTS = 3

STATE = """
import json
from annotate.models import Judgment, Project
from curation.models import AnnotatorQuality, Flag
from workers.models import Job
project = Project.objects.get(name=%r)
jobs = [
    {"status": j.status, "worker": j.worker, "error": j.error}
    for j in Job.objects.filter(name="quorum.flags_recompute")
    if j.kwargs.get("project_id") == project.pk
]
print(json.dumps({
    "judgments": Judgment.objects.filter(project=project).count(),
    "flags": Flag.objects.filter(project=project, kind="low_agreement", status="open").count(),
    "quality": sorted(AnnotatorQuality.objects.filter(project=project).values_list("label", flat=True)),
    "jobs": jobs,
}))
"""


@pytest.fixture(scope="module")
def deployment(deploy) -> Deployment:
    return deploy(broker_url="filesystem://")


def _import(deployment: Deployment, tmp_path, name: str, broker: str | None):
    path = write_jsonl(
        tmp_path / f"{name}.jsonl",
        [project_line(), *judged_rows(name, PROMPTS, annotators=JUDGES)],
    )
    result = deployment.manage(
        "import_project",
        str(path),
        "--project",
        name,
        env={"CELERY_BROKER_URL": broker},
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Traceback" not in output, output
    return result


def _recomputed_by_the_worker(deployment: Deployment, name: str) -> dict:
    worker_pid = deployment.workers[0].pid

    seen: list[dict] = []

    def state():
        seen.append(deployment.shell(STATE % name))
        now = seen[-1]
        done = [j for j in now["jobs"] if j["status"] == "done"]
        return bool(done) and len(now["quality"]) == len(JUDGES) and now["flags"] == PROMPTS

    wait_for(f"the worker to recompute {name}'s flags", state, timeout=90, interval=2, seen=seen)
    now = seen[-1]
    assert now["judgments"] == PROMPTS * len(JUDGES)
    assert any(j["worker"].endswith(f":{worker_pid}") for j in now["jobs"]), json.dumps(now)
    return now


def test_it_imports_with_an_explicit_filesystem_broker(deployment, tmp_path):
    _import(deployment, tmp_path, "cli-explicit", "filesystem://")
    _recomputed_by_the_worker(deployment, "cli-explicit")


def test_it_imports_with_the_default_broker(deployment, tmp_path):
    _import(deployment, tmp_path, "cli-default", None)
    _recomputed_by_the_worker(deployment, "cli-default")
