"""A worker SIGKILLed in the middle of an export: the export never stays "running". A fresh
worker retries it to "done", or it ends "failed" with a reason naming the lost worker."""

from __future__ import annotations

import re
import time

import pytest

from tests.e2e.conftest import ADMIN, export_row, import_file, start_export, wait_for
from tests.e2e.quorum_files import judged_rows, project_line, write_jsonl

JUDGES = {"e1": "abcd", "e2": "abcd", "e3": "dcba"}


@pytest.fixture(scope="module")
def deployment(deploy):
    return deploy(worker=False)


def test_it_never_leaves_an_export_running_when_its_worker_dies(deployment, tmp_path):
    path = write_jsonl(
        tmp_path / "killed.jsonl", [project_line(), *judged_rows("k", 4, annotators=JUDGES)]
    )
    project_id = import_file(deployment, path, "e2e-killed")
    slow = deployment.start_worker({"QUORUM_FAULT_EXPORT_DELAY": "30"})
    admin = deployment.client(ADMIN)
    page = start_export(admin, project_id)
    assert page.status_code == 200, page.text[:2000]
    exports = f"/curation/projects/{project_id}/exports/"

    def status() -> str:
        return export_row(admin.get(exports).text, 1)[0]

    wait_for("the export to be running", lambda: status() == "running", timeout=60)
    time.sleep(1)  # inside the injected 30 s delay: the build has claimed the export
    assert status() == "running"
    slow.kill()
    killed_at = time.monotonic()
    deployment.start_worker()

    wait_for(
        "the export to end after its worker was killed",
        lambda: status() in ("done", "failed"),
        timeout=90,
        interval=1,
    )
    final, error = export_row(admin.get(exports).text, 1)
    took = time.monotonic() - killed_at
    if final == "failed":
        assert re.search(r"worker", error, re.I), f"failed without naming the worker: {error!r}"
    else:
        download = admin.get(f"/curation/exports/{_export_id(admin, exports)}/download/")
        assert download.status_code == 200
        assert download.content[:2] == b"PK"
    assert final in ("done", "failed")
    assert took < 90


def _export_id(client, exports_url: str) -> int:
    match = re.search(r"/curation/exports/(\d+)/download/", client.get(exports_url).text)
    assert match, "no download link on the Exports page"
    return int(match.group(1))
