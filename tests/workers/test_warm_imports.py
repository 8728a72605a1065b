"""A worker that takes ``default`` jobs imports what an export build needs once it starts
(`workers.curation_tasks.WARM_MODULES`), so the first export does not pay for it in its job.

Each case runs in a fresh interpreter (this one has imported everything already) and sends
the Celery signals a worker sends at start-up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
import json, os, sys, threading
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
import django
django.setup()
from celery import signals
from celery.concurrency import prefork, solo
import workers.tasks  # what a worker autodiscovers
from config.celery import app

case, queues = sys.argv[1], sys.argv[2]
before = "datasets" in sys.modules or "pyarrow.parquet" in sys.modules
app.amqp.queues.select(queues.split(",")) if queues else None

class Worker:
    pool_cls = prefork.TaskPool if case == "prefork-parent" else solo.TaskPool

signals.worker_init.send(sender=Worker())
if case == "prefork-child":
    signals.worker_process_init.send(sender=None)
else:
    signals.worker_ready.send(sender=None)
for thread in threading.enumerate():
    if thread.name == "quorum-warm-imports":
        thread.join(120)
print(json.dumps({"before": before, "datasets": "datasets" in sys.modules, "after": {
    m: m in sys.modules for m in ("pyarrow.parquet", "pyarrow.compute", "curation.exporting",
                                  "networkx", "krippendorff")}}))
"""


def _start(tmp_path, case: str, queues: str = "") -> dict:
    env = {**os.environ, "QUORUM_DATA_DIR": str(tmp_path / "data")}
    env.pop("CELERY_BROKER_URL", None)
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, case, queues],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", ["solo", "prefork-child"])
def test_a_worker_imports_the_export_libraries_at_start(tmp_path, case):
    result = _start(tmp_path, case)
    assert result["before"] is False
    assert all(result["after"].values()), result
    # An export writes its Hugging Face folders without `datasets` (and pandas under it).
    assert result["datasets"] is False, result


@pytest.mark.parametrize(
    ("case", "queues"), [("prefork-parent", ""), ("solo", "gpu")], ids=["prefork-parent", "gpu"]
)
def test_a_process_that_runs_no_export_imports_nothing(tmp_path, case, queues):
    result = _start(tmp_path, case, queues)
    assert not result["after"]["krippendorff"] and not result["after"]["pyarrow.parquet"], result
