"""Browser fixtures: headless Debian Chromium via Playwright against the live test server,
and projects with real media (Pillow PNGs, H.264 MP4s) under content-addressed names."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.contrib.staticfiles.handlers import StaticFilesHandler
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.handlers.wsgi import WSGIHandler
from django.db import connections
from django.test.testcases import LiveServerThread
from pytest_django.live_server_helper import LiveServer

from annotate.models import Candidate, Project, Prompt, Task, TaskCandidate
from annotate.services import candidate_key
from tests.media_fixtures import mp4_bytes, png_bytes

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "test-output" / "screenshots"
CHROMIUM = os.environ.get("QUORUM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "pw-quorum-1"
COLORS = [(200, 40, 40), (40, 160, 60), (40, 70, 200), (220, 180, 30), (150, 50, 170), (30, 170, 170), (240, 120, 20), (90, 90, 90)]  # fmt: skip


@pytest.fixture(scope="module")
def browser() -> Iterator:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"browser tests need Chromium at {CHROMIUM} (apt-get install chromium)")
    # Playwright's sync API runs an event loop in this thread; Django's ORM refuses to run
    # while one is running unless told it is safe (it is: the test thread makes sync calls).
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    from playwright.sync_api import sync_playwright

    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
            yield browser
            browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


class _AppMediaServerThread(LiveServerThread):
    """A live server that leaves ``/media/`` to the app.

    Django's live server answers MEDIA_URL itself, without the permission check and without
    HTTP Range, so a browser cannot seek videos. This one serves static files only.
    """

    def run(self) -> None:
        try:
            handler = self.static_handler(WSGIHandler())
            self.httpd = self._create_server(connections_override=self.connections_override)
            if self.port == 0:
                self.port = self.httpd.server_address[1]
            self.httpd.set_app(handler)
            self.is_ready.set()
            self.httpd.serve_forever()
        except Exception as exc:  # reported to the starting thread, like Django's
            self.error = exc
            self.is_ready.set()
        finally:
            connections.close_all()


@pytest.fixture(scope="session")
def live_server(request) -> Iterator[LiveServer]:
    """pytest-django's live server with the app serving media (see _AppMediaServerThread)."""
    server = LiveServer("localhost", start=False)
    server.thread = _AppMediaServerThread(
        "localhost",
        static_handler=StaticFilesHandler,
        connections_override=server.thread.connections_override,
    )
    server.thread.daemon = True
    server.start()
    yield server
    server.stop()


@pytest.fixture
def fast_passwords(settings) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def page(browser, live_server, fast_passwords) -> Iterator:
    """A fresh browser context on the live server; fails the test on any JavaScript error."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=live_server.url)
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    page.on("console", lambda msg: _console(msg, errors))
    page.on("response", lambda r: _response(r, errors))
    yield page
    context.close()
    assert not errors, errors


def _console(message, errors: list[str]) -> None:
    # Failed loads are reported by _response, with their URL.
    if message.type == "error" and "Failed to load resource" not in message.text:
        errors.append(f"console error: {message.text}")


def _response(response, errors: list[str]) -> None:
    if response.status >= 400 and not response.url.endswith("/favicon.ico"):
        expected = response.request.method == "POST" and response.status in (400, 409)
        if not expected:
            errors.append(f"HTTP {response.status} for {response.request.method} {response.url}")


def screenshot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def login(page, username: str, next_url: str) -> None:
    page.goto(f"/accounts/login/?next={next_url}")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.press("#id_password", "Enter")
    page.wait_for_url(f"**{next_url}")


def _store(project: Project, data: bytes, ext: str) -> str:
    digest = hashlib.sha256(data).hexdigest()
    return default_storage.save(f"p{project.pk}/{digest[:2]}/{digest}.{ext}", ContentFile(data))


def make_media_project(
    *,
    name: str,
    kind: str,
    n: int,
    mode: str = "ranking",
    n_prompts: int = 1,
    k: int = 1,
    models: list[str] | None = None,
    prompt_image: bool = False,
    instructions: str = "",
) -> Project:
    """A project whose candidates are real media files (or text), one task per prompt."""
    project = Project.objects.create(
        name=name,
        mode=mode,
        candidates_per_task=n,
        annotators_per_task=k,
        blind=True,
        instructions=instructions,
    )
    models = models or [f"secret-model-{i}" for i in range(n)]
    for p in range(n_prompts):
        prompt = Prompt.objects.create(
            project=project,
            external_id=f"prompt-{p}",
            text=f"Prompt {p}: which one shows a **steadier** square?",
            image=_store(project, png_bytes((250, 250, 250 - p), size=48), "png")
            if prompt_image
            else "",
        )
        candidates = []
        for i in range(n):
            color = COLORS[(i + p) % len(COLORS)]
            if kind == "video":
                media = _store(project, mp4_bytes(frames=24, size=64, color=color), "mp4")
            elif kind == "image":
                media = _store(project, png_bytes(color, size=64), "png")
            else:
                media = ""
            candidates.append(
                Candidate.objects.create(
                    project=project,
                    prompt=prompt,
                    external_id=f"prompt-{p}-{i}",
                    model_name=models[i],
                    kind=kind,
                    text=f"Answer {i} to prompt {p}" if kind == "text" else "",
                    media=media,
                )
            )
        task = Task.objects.create(
            project=project, prompt=prompt, candidate_key=candidate_key(c.pk for c in candidates)
        )
        TaskCandidate.objects.bulk_create(
            TaskCandidate(task=task, candidate=c, position=i) for i, c in enumerate(candidates)
        )
    return project


def letters(page) -> dict[str, int]:
    """Letter shown -> the page's candidate id (opaque per assignment), read from the page."""
    return page.eval_on_selector_all(
        "[data-task] [data-candidate]",
        "cards => Object.fromEntries(cards.map(c => [c.dataset.letter, Number(c.dataset.candidateId)]))",
    )


def page_ids(judgment) -> dict[int, int]:
    """Candidate pk -> the id the judgment's page gave it (``letters``)."""
    from annotate import selectors

    return selectors.candidate_tokens(
        assignment_id=judgment.assignment_id, candidate_ids=judgment.presented_order
    )


def shown_ranking(judgment) -> list[list[int]]:
    """A judgment's ranking in the ids its page gave the candidates (``letters``)."""
    ids = page_ids(judgment)
    return [[ids[c] for c in group] for group in judgment.ranking]


def shown_order(judgment) -> list[int]:
    """A judgment's presented order in the ids its page gave the candidates."""
    ids = page_ids(judgment)
    return [ids[c] for c in judgment.presented_order]
