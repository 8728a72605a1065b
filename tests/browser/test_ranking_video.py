"""An annotator ranks four videos with the keyboard only; the shared controls keep them in sync."""

from __future__ import annotations

import pytest

from annotate.models import Judgment
from tests.browser.conftest import (
    letters,
    login,
    make_media_project,
    screenshot,
    shown_order,
    shown_ranking,
)
from tests.factories import add_member, make_user

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

VIDEO_STATE = """() => [...document.querySelectorAll('[data-task] video[data-sync]')].map(
    v => ({paused: v.paused, time: v.currentTime, seeking: v.seeking, ready: v.readyState}))"""


def _videos(page) -> list[dict]:
    return page.evaluate(VIDEO_STATE)


def test_it_ranks_four_videos_with_the_keyboard_and_plays_them_in_sync(page):
    project = make_media_project(name="video-ranking", kind="video", n=4)
    user = make_user("vid")
    add_member(project, user)
    login(page, "vid", f"/projects/{project.pk}/annotate/")
    page.wait_for_function(
        "() => [...document.querySelectorAll('video[data-sync]')].every(v => v.readyState >= 2)"
    )
    assert len(_videos(page)) == 4

    page.keyboard.press("Space")  # shared play
    page.wait_for_function(
        """() => document.querySelector('[data-video-sync]').dataset.syncState === 'playing'
           && [...document.querySelectorAll('video[data-sync]')].every(v => !v.paused && v.currentTime > 0.3)"""
    )
    playing = _videos(page)
    times = [v["time"] for v in playing]
    assert all(not v["paused"] for v in playing)
    assert max(times) - min(times) < 0.25, times

    page.keyboard.press("Space")  # shared pause
    page.wait_for_function(
        "() => [...document.querySelectorAll('video[data-sync]')].every(v => v.paused && !v.seeking)"
    )
    paused = _videos(page)
    assert page.get_attribute("[data-video-sync]", "data-sync-state") == "paused"
    assert max(v["time"] for v in paused) - min(v["time"] for v in paused) < 0.05

    page.keyboard.press("0")  # shared seek: start, then +1 s, then -0.1 s
    page.keyboard.press("ArrowRight")
    page.keyboard.press("Shift+ArrowLeft")

    page.wait_for_function(
        """() => [...document.querySelectorAll('video[data-sync]')].every(
            v => !v.seeking && Math.abs(v.currentTime - 0.9) < 0.02)"""
    )
    assert all(abs(v["time"] - 0.9) < 0.02 and v["paused"] for v in _videos(page))

    ids = letters(page)
    page.keyboard.press("c")
    page.keyboard.press("a")
    page.keyboard.press("b")
    page.keyboard.press("Backspace")  # undo B
    page.keyboard.press("Shift+D")  # D ties with A
    page.keyboard.press("b")
    live = page.locator("[data-rank-live]")
    page.wait_for_function(
        "() => document.querySelector('[data-rank-live]').textContent.includes('Complete')"
    )
    assert "1: C, 2: A tied with D, 3: B" in live.text_content()
    assert page.locator("[data-rank-list] .rank-group").count() == 3
    screenshot(page, "ranking-video")

    page.keyboard.press("Enter")
    page.wait_for_selector("text=No task for you right now")
    judgment = Judgment.objects.get()
    assert judgment.annotator == user
    assert shown_ranking(judgment) == [[ids["C"]], [ids["A"], ids["D"]], [ids["B"]]]
    assert shown_order(judgment) == [ids[letter] for letter in "ABCD"]
    assert judgment.duration_ms > 0
    screenshot(page, "ranking-video-done")
