"""``Quorum``: typed calls over Quorum's REST API (``/api/``, django-ninja).

Authentication is the API's: ``Authorization: Bearer <key>``, a key made on the server with
``python manage.py create_api_token USERNAME``. Every error status becomes a ``QuorumError``
subclass carrying the server's message (``errors.BY_STATUS``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx

from quorum_client.errors import (
    BY_STATUS,
    ImportRejected,
    JobFailed,
    JobTimeout,
    QuorumError,
)
from quorum_client.types import (
    Export,
    Flag,
    ImportJob,
    Job,
    Judgment,
    Leaderboard,
    Project,
    PromptIn,
    Score,
    ScoringRun,
)
from quorum_client.upload import import_zip

T = TypeVar("T")

# The longest ``?wait=`` the import and export status endpoints honour (seconds).
_SERVER_WAIT_MAX = 10.0


def _problems(detail: Any) -> list[str]:
    """ninja's validation errors (``[{"loc": [...], "msg": ...}]``) as "field: message"."""
    problems = []
    for item in detail:
        if isinstance(item, dict):
            loc = [str(part) for part in item.get("loc", []) if part not in ("body", "query")]
            msg = item.get("msg", "")
            problems.append(f"{'.'.join(loc)}: {msg}" if loc else str(msg))
        else:
            problems.append(str(item))
    return problems


def raise_for_status(response: httpx.Response) -> None:
    """Raises the ``QuorumError`` subclass for an error status, with the server's message."""
    if response.is_success:
        return
    body: Any = None
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        message = text[:500] if text else response.reason_phrase
        problems: list[str] = []
    else:
        detail = body.get("detail") if isinstance(body, dict) else body
        if isinstance(detail, list):
            problems = _problems(detail)
            message = "; ".join(problems) or response.reason_phrase
        else:
            problems = []
            message = str(detail) if detail is not None else response.reason_phrase
    error = BY_STATUS.get(response.status_code, QuorumError)
    raise error(message, status_code=response.status_code, problems=problems, body=body)


class Quorum:
    """A session with one Quorum server.

    >>> q = Quorum("http://127.0.0.1:8000", token="qrm_...")  # or Quorum.from_env()
    >>> [p.name for p in q.projects()]

    ``poll_interval``: seconds between status requests while waiting for a job (imports and
    exports: how long the server may hold one status request, answering as the job ends).
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout: float = 60.0,
        poll_interval: float = 1.0,
        transport: httpx.BaseTransport | None = None,
    ):
        self.url = url.rstrip("/")
        self.poll_interval = poll_interval
        self._http = httpx.Client(
            base_url=f"{self.url}/api",
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            timeout=timeout,
            transport=transport,
        )

    @classmethod
    def from_env(cls, **kwargs: Any) -> Quorum:
        """From ``QUORUM_URL`` (default ``http://127.0.0.1:8000``) and ``QUORUM_TOKEN``."""
        token = os.environ.get("QUORUM_TOKEN")
        if not token:
            raise QuorumError(
                "QUORUM_TOKEN is not set (make a key with: manage.py create_api_token USERNAME)"
            )
        return cls(os.environ.get("QUORUM_URL", "http://127.0.0.1:8000"), token, **kwargs)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Quorum:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------- HTTP

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self._http.request(method, path, **kwargs)
        raise_for_status(response)
        return response

    def _pages(self, path: str, params: dict[str, Any], parse: Callable[[dict], T]) -> Iterator[T]:
        """Follows a list endpoint's ``next`` links until the last page."""
        url: str | None = path
        query: dict[str, Any] | None = {k: v for k, v in params.items() if v is not None}
        while url is not None:
            body = self._request("GET", url, params=query).json()
            yield from (parse(row) for row in body["results"])
            url, query = self._same_server(body["next"]), None  # ``next`` keeps the filters

    def _same_server(self, url: str | None) -> str | None:
        """A ``next`` link's path and query on the server this client talks to (a proxy in
        front of Quorum may make the server build links with another scheme or host)."""
        if url is None:
            return None
        link = httpx.URL(url)
        return f"{self.url}{link.raw_path.decode('ascii')}"

    def _wait(
        self,
        what: str,
        fetch: Callable[[float], T],
        *,
        timeout: float,
        on_progress: Callable[[T], None] | None,
    ) -> T:
        """``fetch(seconds)``: the status, where the endpoint can hold the answer until the
        job finishes (``?wait=``, imports and exports) for at most that long; so the end is
        seen when it happens, not at the next poll. An answer that came sooner and unfinished
        (an endpoint without ``wait``) is followed by a pause of the rest of the interval."""
        deadline = time.monotonic() + timeout
        while True:
            asked = time.monotonic()
            job = fetch(max(0.0, min(self.poll_interval, _SERVER_WAIT_MAX, deadline - asked)))
            if on_progress is not None:
                on_progress(job)
            if job.finished:  # type: ignore[attr-defined]
                return job
            if time.monotonic() > deadline:
                raise JobTimeout(f"{what} not finished after {timeout:.0f} s", job=job)
            time.sleep(max(0.0, self.poll_interval - (time.monotonic() - asked)))

    # ------------------------------------------------------------------------- projects

    def projects(self) -> list[Project]:
        """Projects the token's user is a member of (staff: all)."""
        return list(self._pages("/projects", {}, Project.from_json))

    def project(self, project_id: int) -> Project:
        for project in self.projects():
            if project.id == project_id:
                return project
        raise QuorumError(f"no project {project_id} among the projects this token can see")

    def create_project(
        self,
        name: str,
        *,
        mode: str = "ranking",
        candidates_per_task: int = 4,
        annotators_per_task: int = 3,
        ties_allowed: bool = True,
        blind: bool = True,
        instructions: str = "",
        rubric_dimensions: list[str] | None = None,
        gold_rate: float | None = None,
        lease_minutes: int | None = None,
        prompts: list[PromptIn] | None = None,
        timeout: float = 600,
    ) -> Project:
        """Creates a project (staff only) with these settings and, optionally, its first
        prompts, through the import endpoint; waits for the import and returns the project.

        Raises ``QuorumError`` when a project of that name exists (an import would add to it),
        ``ImportRejected`` with every problem when the server refuses the prompts.
        """
        if any(p.name == name for p in self.projects()):
            raise QuorumError(f"a project named {name!r} exists; push prompts into it instead")
        settings: dict[str, Any] = {
            "mode": mode,
            "candidates_per_task": candidates_per_task,
            "annotators_per_task": annotators_per_task,
            "ties_allowed": ties_allowed,
            "blind": blind,
            "instructions": instructions,
            "rubric_dimensions": list(rubric_dimensions or []),
        }
        if gold_rate is not None:
            settings["gold_rate"] = gold_rate
        if lease_minutes is not None:
            settings["lease_minutes"] = lease_minutes
        data = import_zip(list(prompts or []), project_settings=settings)
        job = self._post_import("/imports", data, {"project_name": name})
        job = self.wait_for_import(job, timeout=timeout)
        return self.project(job.project_id)  # type: ignore[arg-type]

    # ------------------------------------------------------------------------- imports

    def push_prompts(
        self, project_id: int, prompts: list[PromptIn], *, wait: bool = True, timeout: float = 600
    ) -> ImportJob:
        """Adds prompts, their candidates (with media) and any judgments already made to a
        project (project admins, staff). Re-sending a prompt creates nothing new."""
        job = self._post_import(f"/projects/{project_id}/imports", import_zip(prompts), {})
        return self.wait_for_import(job, timeout=timeout) if wait else job

    def import_file(
        self,
        path: str | Path,
        *,
        project_id: int | None = None,
        project_name: str | None = None,
        format: str | None = None,
        wait: bool = True,
        timeout: float = 600,
    ) -> ImportJob:
        """Imports a file as it is (Quorum JSONL, seed or arena format, a zip with media, a
        downloaded export): into ``project_id``, or into a new project (staff)."""
        path = Path(path)
        fields = {"format": format} if format else {}
        if project_id is not None:
            url = f"/projects/{project_id}/imports"
        else:
            url = "/imports"
            if project_name:
                fields["project_name"] = project_name
        job = self._post_import(url, path.read_bytes(), fields, filename=path.name)
        return self.wait_for_import(job, timeout=timeout) if wait else job

    def _post_import(
        self, url: str, data: bytes, fields: dict[str, str], *, filename: str = "prompts.zip"
    ) -> ImportJob:
        response = self._http.post(url, files={"file": (filename, data)}, data=fields)
        if response.status_code == 422:
            body = response.json()
            if isinstance(body, dict) and "errors" in body and "id" in body:
                raise ImportRejected(ImportJob.from_json(body), status_code=422)
        raise_for_status(response)
        return ImportJob.from_json(response.json())

    def import_job(self, job_id: int, *, wait: float = 0) -> ImportJob:
        """The import's status; ``wait`` (seconds, at most 10): answered once it is done or
        failed, or after that long."""
        params = {"wait": wait} if wait > 0 else None
        return ImportJob.from_json(self._request("GET", f"/imports/{job_id}", params=params).json())

    def wait_for_import(
        self,
        job: ImportJob | int,
        *,
        timeout: float = 600,
        on_progress: Callable[[ImportJob], None] | None = None,
    ) -> ImportJob:
        """Waits until the import is done; raises ``ImportRejected`` if it failed."""
        job_id = job if isinstance(job, int) else job.id
        done = self._wait(
            f"import {job_id}",
            lambda seconds: self.import_job(job_id, wait=seconds),
            timeout=timeout,
            on_progress=on_progress,
        )
        if done.status == "failed":
            raise ImportRejected(done)
        return done

    # ------------------------------------------------------------------------- reading

    def judgments(
        self, project_id: int, *, prompt: str | None = None, page_size: int = 500
    ) -> Iterator[Judgment]:
        """Every judgment of a project, oldest first (reviewers, admins, staff);
        ``prompt``: only those on the prompt with this external id."""
        params = {"prompt": prompt, "limit": page_size}
        return self._pages(f"/projects/{project_id}/judgments", params, Judgment.from_json)

    def flags(
        self,
        project_id: int,
        *,
        kind: str | None = None,
        status: str = "open",
        page_size: int = 500,
    ) -> Iterator[Flag]:
        """Flags, most severe first (reviewers, admins, staff)."""
        params = {"kind": kind, "status": status, "limit": page_size}
        return self._pages(f"/projects/{project_id}/flags", params, Flag.from_json)

    def recompute_flags(self, project_id: int) -> None:
        """Queues a full recompute of the project's flags (project admins, staff)."""
        self._request("POST", f"/projects/{project_id}/flags/recompute")

    def leaderboard(
        self, project_id: int, *, bootstrap: int | None = None, seed: int = 0
    ) -> Leaderboard:
        """Bradley-Terry leaderboard with bootstrap intervals (project admins, staff)."""
        params: dict[str, Any] = {"seed": seed}
        if bootstrap is not None:
            params["bootstrap"] = bootstrap
        body = self._request("GET", f"/projects/{project_id}/leaderboard", params=params).json()
        return Leaderboard.from_json(body)

    def scores(
        self, project_id: int, *, reward_model_id: int | None = None, page_size: int = 1000
    ) -> Iterator[Score]:
        """Reward-model scores per candidate (default: the project's active model)."""
        params = {"reward_model_id": reward_model_id, "limit": page_size}
        return self._pages(f"/projects/{project_id}/scores", params, Score.from_json)

    # ------------------------------------------------------------------------- jobs

    def start_export(
        self,
        project_id: int,
        *,
        denoise: bool = True,
        rm_evaluator: bool = False,
        min_agreement: float | None = None,
        use_decisions: bool = True,
        splits: dict[str, float] | None = None,
        seed: int = 0,
        include_media: bool = True,
        variants_per_prompt: int = 3,
    ) -> Export:
        """Starts building a new export version (project admins, staff)."""
        payload = {
            "denoise": denoise,
            "rm_evaluator": rm_evaluator,
            "min_agreement": min_agreement,
            "use_decisions": use_decisions,
            "splits": splits or {"train": 1.0},
            "seed": seed,
            "include_media": include_media,
            "variants_per_prompt": variants_per_prompt,
        }
        body = self._request("POST", f"/projects/{project_id}/exports", json=payload).json()
        return Export.from_json(body)

    def exports(self, project_id: int) -> list[Export]:
        """The project's export versions, newest first."""
        return list(self._pages(f"/projects/{project_id}/exports", {}, Export.from_json))

    def export(self, export_id: int, *, wait: float = 0) -> Export:
        """The export's status; ``wait`` (seconds, at most 10): answered once it is done,
        failed or cancelled, or after that long."""
        params = {"wait": wait} if wait > 0 else None
        return Export.from_json(self._request("GET", f"/exports/{export_id}", params=params).json())

    def wait_for_export(
        self,
        export: Export | int,
        *,
        timeout: float = 1800,
        on_progress: Callable[[Export], None] | None = None,
    ) -> Export:
        """Waits until the export is built; raises ``JobFailed`` with the server's reason if
        it failed or was cancelled."""
        export_id = export if isinstance(export, int) else export.id
        done = self._wait(
            f"export {export_id}",
            lambda seconds: self.export(export_id, wait=seconds),
            timeout=timeout,
            on_progress=on_progress,
        )
        if done.status != "done":
            reason = f": {done.error}" if done.error else ""
            raise JobFailed(f"export {export_id} {done.status}{reason}", job=done)
        return done

    def download_export(
        self, export: Export | int, path: str | Path, *, base_folder: str | None = None
    ) -> Path:
        """Saves the export's zip at ``path`` (a folder: the server's file name inside it);
        returns the file's path. ``base_folder``: where the zip will be unpacked, for JSONL
        with absolute media paths."""
        export_id = export if isinstance(export, int) else export.id
        target = Path(path)
        params = {"base_folder": base_folder} if base_folder else None
        with self._http.stream("GET", f"/exports/{export_id}/download", params=params) as r:
            if not r.is_success:
                r.read()
                raise_for_status(r)
            if target.is_dir():
                target = target / _attachment_name(r, f"quorum-export-{export_id}.zip")
            partial = target.with_name(target.name + ".part")
            with open(partial, "wb") as fh:
                for chunk in r.iter_bytes():
                    fh.write(chunk)
        partial.replace(target)
        return target

    def start_training(
        self,
        export: Export | int,
        *,
        base_reward_model_id: int | None = None,
        options: dict[str, Any] | None = None,
    ) -> Job:
        """Trains the next reward-model version from a built export (a job on the ``gpu``
        queue), from the project's active reward model unless ``base_reward_model_id`` names
        another; ``options`` overrides training settings (epochs, lr, lora_r, ...). When the
        job is done, ``job.result["reward_model"]`` is the new version."""
        export_id = export if isinstance(export, int) else export.id
        payload = {"base_reward_model_id": base_reward_model_id, "options": options or {}}
        body = self._request("POST", f"/exports/{export_id}/train", json=payload).json()
        return Job.from_json(body)

    def job(self, job_id: int) -> Job:
        return Job.from_json(self._request("GET", f"/jobs/{job_id}").json())

    def wait_for_job(
        self,
        job: Job | int,
        *,
        timeout: float = 3 * 3600,
        on_progress: Callable[[Job], None] | None = None,
    ) -> Job:
        """Waits until the job is done; raises ``JobFailed`` with the server's reason if it
        failed or was cancelled."""
        job_id = job if isinstance(job, int) else job.id
        done = self._wait(
            f"job {job_id}",
            lambda _seconds: self.job(job_id),
            timeout=timeout,
            on_progress=on_progress,
        )
        if done.status != "done":
            reason = f": {done.error}" if done.error else ""
            raise JobFailed(f"job {job_id} ({done.name}) {done.status}{reason}", job=done)
        return done

    def start_scoring_run(
        self, project_id: int, *, reward_model_id: int | None = None
    ) -> ScoringRun:
        """Scores the project's prompts with a reward model (default: the active one)."""
        body = self._request(
            "POST",
            f"/projects/{project_id}/scoring-runs",
            json={"reward_model_id": reward_model_id},
        ).json()
        return ScoringRun.from_json(body)

    def scoring_run(self, run_id: int) -> ScoringRun:
        return ScoringRun.from_json(self._request("GET", f"/scoring-runs/{run_id}").json())

    def wait_for_scoring_run(
        self,
        run: ScoringRun | int,
        *,
        timeout: float = 3600,
        on_progress: Callable[[ScoringRun], None] | None = None,
    ) -> ScoringRun:
        run_id = run if isinstance(run, int) else run.id
        return self._wait(
            f"scoring run {run_id}",
            lambda _seconds: self.scoring_run(run_id),
            timeout=timeout,
            on_progress=on_progress,
        )


def _attachment_name(response: httpx.Response, default: str) -> str:
    disposition = response.headers.get("content-disposition", "")
    if 'filename="' in disposition:
        name = disposition.split('filename="', 1)[1].split('"', 1)[0]
        name = Path(name).name  # never a path the server chose
        if name:
            return name
    return default
