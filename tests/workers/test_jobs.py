"""Background jobs: recorded with the change, published after commit, swept when lost."""

from __future__ import annotations

import ast
import json
import os
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from annotate.models import Task
from curation import services as curation_services
from curation.models import DatasetExport
from tests.curation.builders import (  # noqa: F401  (fast_passwords: autouse fixture)
    disputed_ranking_project,
    fast_passwords,
)
from tests.factories import make_project
from workers import jobs
from workers.models import Job

REPO = Path(__file__).resolve().parent.parent.parent


@pytest.fixture(autouse=True)
def _own_data_dir(request, tmp_path):
    """Export folders live under DATA_DIR: each test gets its own."""
    if "db" in request.fixturenames or "users" in request.fixturenames:
        request.getfixturevalue("settings").DATA_DIR = tmp_path


@pytest.fixture
def broker_down(monkeypatch):
    """Every publish fails the way kombu fails against a closed port."""
    calls = []

    def refuse(name, kwargs, queue_name, task_id=None):
        calls.append(name)
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(jobs, "_send", refuse)
    return calls


@pytest.fixture
def broker_log(monkeypatch):
    """Records what would have been sent, in order."""
    sent = []

    def record(name, kwargs, queue_name, task_id=None):
        sent.append((name, kwargs, queue_name))

    monkeypatch.setattr(jobs, "_send", record)
    return sent


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_it_publishes_a_job_only_after_its_transaction_commits(
    db, broker_log, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        job = jobs.job_enqueue(name=jobs.FLAGS_RECOMPUTE, kwargs={"project_id": 7})
        assert broker_log == []  # nothing leaves before the commit
    assert len(callbacks) == 1
    assert broker_log == [
        ("quorum.flags_recompute", {"project_id": 7, "job_id": job.pk}, "default")
    ]
    job.refresh_from_db()
    assert job.status == Job.Status.PUBLISHED
    assert job.publish_count == 1


def test_it_routes_scoring_to_the_gpu_queue(db, broker_log, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        jobs.jobs_enqueue_many(
            name=jobs.SCORE_PROMPTS, kwargs_list=[{"run_id": 1, "prompt_ids": [1, 2]}]
        )
    assert [q for _, _, q in broker_log] == ["gpu"]


def test_it_keeps_a_job_queued_when_the_broker_is_down(
    db, broker_down, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        job = jobs.job_enqueue(name=jobs.EXPORT_BUILD, kwargs={"export_id": 1})
    job.refresh_from_db()
    assert job.status == Job.Status.QUEUED
    assert "Connection refused" in job.publish_error


def test_it_publishes_a_queued_job_when_the_broker_is_back(db, monkeypatch, broker_down):
    job = jobs.job_enqueue(name=jobs.EXPORT_BUILD, kwargs={"export_id": 1})
    jobs.jobs_publish([job.pk])
    sent = []
    monkeypatch.setattr(jobs, "_send", lambda name, kw, q, task_id=None: sent.append(kw))
    report = jobs.jobs_sweep()
    assert report.published == 1
    assert sent == [{"export_id": 1, "job_id": job.pk}]
    job.refresh_from_db()
    assert job.status == Job.Status.PUBLISHED
    assert job.publish_error == ""


def test_it_keeps_one_waiting_recompute_per_project(db, broker_log):
    first = jobs.job_enqueue(name=jobs.FLAGS_RECOMPUTE, kwargs={"p": 1}, dedupe_key="r:1")
    second = jobs.job_enqueue(name=jobs.FLAGS_RECOMPUTE, kwargs={"p": 1}, dedupe_key="r:1")
    other = jobs.job_enqueue(name=jobs.FLAGS_RECOMPUTE, kwargs={"p": 2}, dedupe_key="r:2")
    assert first.pk == second.pk
    assert other.pk != first.pk
    Job.objects.filter(pk=first.pk).update(status=Job.Status.RUNNING)
    third = jobs.job_enqueue(name=jobs.FLAGS_RECOMPUTE, kwargs={"p": 1}, dedupe_key="r:1")
    assert third.pk != first.pk  # a running recompute may have read before the new evidence


def test_it_runs_a_job_once_under_duplicate_delivery(db):
    job = jobs.job_enqueue(name=jobs.FLAGS_RECOMPUTE, kwargs={})
    runs = []
    assert jobs.run_job(job.pk, lambda run: runs.append(run.token) or "ok") == "ok"
    assert jobs.run_job(job.pk, lambda run: runs.append(run.token)) == {
        "job": job.pk,
        "skipped": True,
    }
    job.refresh_from_db()
    assert runs == [f"{job.pk}.1"]
    assert job.status == Job.Status.DONE
    assert job.result == "ok"


def test_it_records_why_a_job_failed(db):
    job = jobs.job_enqueue(name=jobs.FLAGS_RECOMPUTE, kwargs={})

    def boom(run):
        raise ValueError("no such project")

    with pytest.raises(ValueError):
        jobs.run_job(job.pk, boom)
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED
    assert job.error == "ValueError: no such project"


def test_it_retries_a_job_whose_worker_died(db, broker_log):
    job = jobs.job_enqueue(name=jobs.FLAGS_RECOMPUTE, kwargs={"project_id": 3})
    Job.objects.filter(pk=job.pk).update(
        status=Job.Status.RUNNING,
        attempts=1,
        worker=f"{socket.gethostname()}:{_dead_pid()}",
        heartbeat_at=timezone.now(),
    )
    report = jobs.jobs_sweep()
    assert report.retried == 1
    job.refresh_from_db()
    assert job.status == Job.Status.PUBLISHED
    assert "was lost" in job.error
    assert broker_log[-1][1] == {"project_id": 3, "job_id": job.pk}


def test_it_leaves_a_live_runner_alone(db, broker_log):
    job = jobs.job_enqueue(name=jobs.FLAGS_RECOMPUTE, kwargs={})
    Job.objects.filter(pk=job.pk).update(
        status=Job.Status.RUNNING,
        attempts=1,
        worker=f"{socket.gethostname()}:{os.getpid()}",
        heartbeat_at=timezone.now() - timedelta(hours=1),  # busy, but its process lives
    )
    assert jobs.jobs_sweep().retried == 0
    job.refresh_from_db()
    assert job.status == Job.Status.RUNNING


def test_it_trusts_the_heartbeat_for_runners_on_other_hosts(db, broker_log, settings):
    job = jobs.job_enqueue(name=jobs.FLAGS_RECOMPUTE, kwargs={})
    fresh, stale = timezone.now(), timezone.now() - timedelta(seconds=61)
    Job.objects.filter(pk=job.pk).update(
        status=Job.Status.RUNNING, attempts=1, worker="gpu-host-7:123", heartbeat_at=fresh
    )
    assert jobs.jobs_sweep().retried == 0
    Job.objects.filter(pk=job.pk).update(heartbeat_at=stale)
    assert jobs.jobs_sweep().retried == 1


def test_it_fails_an_export_whose_worker_died_on_every_attempt(users, broker_log):
    project, _ = disputed_ranking_project(users, n_prompts=2)
    export = curation_services.export_create(project=project, options={})
    job = Job.objects.get(name=jobs.EXPORT_BUILD)
    DatasetExport.objects.filter(pk=export.pk).update(status="running", builder=f"{job.pk}.3")
    Job.objects.filter(pk=job.pk).update(
        status=Job.Status.RUNNING,
        attempts=3,
        worker=f"{socket.gethostname()}:{_dead_pid()}",
        heartbeat_at=timezone.now(),
    )
    assert jobs.jobs_sweep().failed == 1
    export.refresh_from_db()
    assert export.status == "failed"
    assert "was lost" in export.error and "attempt 3" in export.error


def test_it_takes_over_an_export_left_running_by_a_dead_attempt(users):
    project, _ = disputed_ranking_project(users, n_prompts=2)
    export = curation_services.export_create(project=project, options={}, enqueue=False)
    DatasetExport.objects.filter(pk=export.pk).update(status="running", builder="9.1")
    built = curation_services.export_build(export_id=export.pk, builder="9.2")
    assert built.status == "done"
    assert (built.path / "datasheet.json").is_file()


def test_it_never_replaces_a_done_exports_files(users):
    project, _ = disputed_ranking_project(users, n_prompts=2)
    export = curation_services.export_create(project=project, options={}, enqueue=False)
    built = curation_services.export_build(export_id=export.pk, builder="1.1")
    sheet = built.path / "datasheet.json"
    before = (sheet.stat().st_mtime_ns, sheet.read_bytes())
    again = curation_services.export_build(export_id=export.pk, builder="1.2")
    assert again.status == "done" and again.builder == "1.1"
    assert (sheet.stat().st_mtime_ns, sheet.read_bytes()) == before


def test_it_does_not_publish_a_build_it_no_longer_owns(users, monkeypatch):
    """A stale run (its row taken over or cancelled meanwhile) writes nothing visible."""
    project, _ = disputed_ranking_project(users, n_prompts=2)
    export = curation_services.export_create(project=project, options={}, enqueue=False)
    real_write = curation_services.E.write_snapshot

    def write_then_lose_the_row(*args, **kwargs):
        files = real_write(*args, **kwargs)
        DatasetExport.objects.filter(pk=export.pk).update(builder="someone-else")
        return files

    monkeypatch.setattr(curation_services.E, "write_snapshot", write_then_lose_the_row)
    built = curation_services.export_build(export_id=export.pk, builder="1.1")
    assert built.status == "running" and built.builder == "someone-else"
    assert not built.path.exists()
    assert not [p for p in built.path.parent.iterdir() if p.name.startswith(".v")]


def test_it_cancels_a_pending_export_and_its_job(users, broker_log):
    project, _ = disputed_ranking_project(users, n_prompts=2)
    export = curation_services.export_create(project=project, options={})
    job = Job.objects.get(name=jobs.EXPORT_BUILD)
    curation_services.export_cancel(export=export, actor=users["admin"])
    export.refresh_from_db()
    job.refresh_from_db()
    assert export.status == "cancelled" and export.error == "cancelled by padmin"
    assert job.status == Job.Status.CANCELLED
    # A message already on the broker runs nothing.
    assert jobs.run_job(job.pk, lambda run: pytest.fail("ran a cancelled job"))["skipped"]
    with pytest.raises(curation_services.ExportNotCancellable):
        curation_services.export_cancel(export=export)


def test_it_sweeps_the_flag_updates_of_tasks_left_dirty(db, broker_log, settings):
    tasks = list(make_project(n_prompts=2).tasks.order_by("id"))
    old = timezone.now() - timedelta(seconds=settings.QUORUM_JOB_REPUBLISH_SECONDS + 1)
    Task.objects.filter(pk=tasks[0].pk).update(flags_dirty_at=old)
    Task.objects.filter(pk=tasks[1].pk).update(flags_dirty_at=timezone.now())  # just submitted
    assert jobs.jobs_sweep().flag_updates == 1
    assert broker_log == [
        ("quorum.flags_update_dirty", {"task_ids": [tasks[0].pk], "at_once": True}, "default")
    ]
    assert jobs.jobs_sweep().flag_updates == 0  # backs off while the update may be queued
    later = timezone.now() + timedelta(seconds=2 * settings.QUORUM_JOB_REPUBLISH_SECONDS + 1)
    assert jobs.jobs_sweep(now=later).flag_updates == 2  # still owed, and the new one too


def test_it_sends_one_flag_update_message_per_500_tasks(db, broker_log):
    assert jobs.flags_updates_publish([3, 1, 3, *range(10, 1008)]) == 1000  # 3 once
    assert [(name, len(kw["task_ids"])) for name, kw, _ in broker_log] == [
        ("quorum.flags_update_dirty", 500),
        ("quorum.flags_update_dirty", 500),
    ]
    assert broker_log[0][1]["task_ids"][:3] == [3, 1, 10]


def test_the_publisher_holds_flag_hints_and_sends_them_as_one_message(monkeypatch):
    sent = []
    monkeypatch.setattr(jobs, "flags_updates_publish", lambda ids: sent.append(("flags", ids)))
    monkeypatch.setattr(jobs, "jobs_publish", lambda ids: sent.append(("jobs", ids)))
    publisher = jobs._Publisher(delay=0.3)
    for task_id in (1, 2, 3):
        publisher.put(("flags", [task_id]))
    publisher.put(("jobs", [9]))
    assert not publisher.flush(0.15)  # the hints wait; the job does not
    assert sent == [("jobs", [9])]
    assert publisher.flush(5.0)
    assert sent == [("jobs", [9]), ("flags", [1, 2, 3])]
    publisher.put(("flags", [4]))  # the next hint starts a new wait
    assert publisher.flush(5.0)
    assert sent[-1] == ("flags", [4])


def test_without_a_delay_each_flag_hint_leaves_at_once(monkeypatch):
    sent = []
    monkeypatch.setattr(jobs, "flags_updates_publish", lambda ids: sent.append(ids))
    publisher = jobs._Publisher(delay=0)
    publisher.put(("flags", [1]))
    publisher.put(("flags", [2]))
    assert publisher.flush(5.0)
    assert sent == [[1], [2]]


def test_it_clears_the_dirty_mark_only_for_what_the_update_saw(db):
    tasks = list(make_project(n_prompts=1).tasks.all())
    seen = timezone.now() - timedelta(seconds=5)
    Task.objects.filter(pk=tasks[0].pk).update(flags_dirty_at=seen)
    curation_services.flags_update_for_task(task_id=tasks[0].pk)
    assert Task.objects.get(pk=tasks[0].pk).flags_dirty_at is None


def test_it_loads_the_quorum_celery_app_in_every_django_process(tmp_path):
    """A management command publishes with the configured broker, even when the broker URL
    is given explicitly (the default app would publish to amqp://localhost)."""
    script = (
        "from celery import current_app; from django.conf import settings; "
        "import json; print(json.dumps([current_app.main, current_app.conf.broker_url, "
        "current_app.conf.broker_transport_options.get('data_folder_in'), "
        "type(current_app.connection_for_write().transport).__module__]))"
    )
    for broker in (None, "filesystem://"):
        env = {**os.environ, "QUORUM_DATA_DIR": str(tmp_path)}
        env.pop("CELERY_BROKER_URL", None)
        if broker:
            env["CELERY_BROKER_URL"] = broker
        out = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", script],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        main, url, folder, transport = json.loads(out.stdout.strip().splitlines()[-1])
        assert (main, url) == ("quorum", "filesystem://")
        assert folder == str(tmp_path / "broker" / "queue")
        assert transport == "workers.broker"  # atomic message files, not kombu's own


SERVICE_MODULES = [
    "annotate/services.py",
    "annotate/queue.py",
    "annotate/admin.py",
    "annotate/api.py",
    "annotate/views.py",
    "curation/services.py",
    "curation/admin.py",
    "curation/api.py",
    "curation/views.py",
    "workers/scoring.py",
    "workers/playground.py",
    "workers/demo_training.py",
    "workers/jobs.py",
]
TASK_MODULES = {"workers.tasks", "workers.curation_tasks", "workers.scoring_tasks"}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


@pytest.mark.parametrize("module", SERVICE_MODULES)
def test_it_starts_jobs_without_importing_task_modules(module):
    assert not _imports(REPO / module) & TASK_MODULES


@pytest.mark.parametrize("module", sorted(TASK_MODULES))
def test_it_keeps_task_modules_out_of_the_playground(module):
    path = REPO / (module.replace(".", "/") + ".py")
    assert not {m for m in _imports(path) if m.startswith("workers.playground")}


def test_it_keeps_a_committed_imports_media_when_publishing_fails(
    transactional_db, tmp_path, monkeypatch, settings
):
    """The import commits; publishing its recompute then fails: rows and files both stay."""
    from annotate.models import Candidate, Judgment
    from annotate.services import import_file
    from tests.media_fixtures import png_bytes

    def broken(ids):
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(jobs, "publish_soon", broken)
    folder = tmp_path / "in"
    (folder / "media").mkdir(parents=True)
    (folder / "media" / "a.png").write_bytes(png_bytes((255, 0, 0)))
    row = {
        "id": "q1",
        "prompt": "Which image is red?",
        "candidates": [
            {"id": "a", "model": "m1", "image": "media/a.png"},
            {"id": "b", "model": "m2", "text": "none of them"},
        ],
        "judgments": [{"annotator": "e1", "ranking": [["a"], ["b"]]}],
    }
    path = folder / "rows.jsonl"
    path.write_text(json.dumps(row) + "\n")
    result = import_file(path=path)
    image = Candidate.objects.get(project=result.project, external_id="a")
    assert (Path(settings.MEDIA_ROOT) / image.media.name).is_file()
    assert Judgment.objects.filter(project=result.project).count() == 1
    assert Job.objects.get(name=jobs.FLAGS_RECOMPUTE).status == Job.Status.QUEUED


def test_it_cancels_an_export_when_an_admin_cancels_its_job(users, broker_log):
    project, _ = disputed_ranking_project(users, n_prompts=2)
    export = curation_services.export_create(project=project, options={})
    job = Job.objects.get(name=jobs.EXPORT_BUILD)
    assert jobs.jobs_cancel(ids=[job.pk], reason="cancelled by staff") == 1
    assert jobs.jobs_cancel(ids=[job.pk]) == 0  # only waiting jobs
    export.refresh_from_db()
    assert (export.status, export.error) == ("cancelled", "cancelled by staff")
