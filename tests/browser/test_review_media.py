"""Review pages show media as the annotator page does: images at the card's width that zoom
larger on click, and candidate videos at a usable size that play together from the keyboard."""

from __future__ import annotations

import pytest

from annotate.models import Task
from curation.models import Flag, PromptDecision
from tests.browser.conftest import login, make_media_project, screenshot
from tests.factories import add_member, make_user

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

VIDEO_STATE = """() => [...document.querySelectorAll('[data-media-section] video[data-sync]')].map(
    v => ({paused: v.paused, time: v.currentTime, rate: v.playbackRate, width: v.clientWidth}))"""


def _reviewer_on(project) -> None:
    add_member(project, make_user("rev"), "reviewer")


def _flag(project) -> Flag:
    task = Task.objects.filter(project=project).first()
    return Flag.objects.create(
        project=project,
        kind="low_agreement",
        key=f"prompt:{task.prompt_id}",
        prompt_id=task.prompt_id,
        task=task,
        severity=0.9,
        details={"agreement": 0.2, "comparisons": 6, "disputed_pairs": []},
    )


def test_it_shows_images_at_full_width_and_zooms_them_larger(page):
    project = make_media_project(name="review-images", kind="image", n=4, prompt_image=True)
    _reviewer_on(project)
    prompt = project.prompts.get()
    login(page, "rev", f"/curation/projects/{project.pk}/prompts/{prompt.pk}/")
    page.wait_for_function(
        "() => [...document.querySelectorAll('.cur-cand img')].every(i => i.complete && i.naturalWidth)"
    )
    widths = page.eval_on_selector_all(".cur-cand img", "imgs => imgs.map(i => i.clientWidth)")
    assert len(widths) == 4 and min(widths) >= 250, widths  # the files are 64 px wide
    assert page.eval_on_selector("img[alt='Prompt image']", "i => i.clientWidth") >= 250
    screenshot(page, "review-images")

    page.click("[aria-label='Zoom image B']")
    page.wait_for_selector("[data-zoom-dialog][open]")
    zoomed = page.locator("[data-zoom-img]")
    assert zoomed.get_attribute("src") == page.get_attribute(
        "[aria-label='Zoom image B']", "data-zoom-src"
    )
    first = zoomed.evaluate("i => i.clientWidth")
    assert first >= 500, first  # enlarged to the window, not shown at 64 px
    zoomed.click()
    assert zoomed.evaluate("i => i.clientWidth") == 2 * first
    page.keyboard.press("Escape")
    page.wait_for_selector("[data-zoom-dialog]:not([open])", state="attached")


def test_it_works_a_video_flag_with_the_keyboard_and_plays_the_videos_together(page):
    project = make_media_project(name="review-videos", kind="video", n=4)
    _reviewer_on(project)
    flag = _flag(project)
    login(page, "rev", f"/curation/projects/{project.pk}/review/low_agreement/")
    page.keyboard.press("j")
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/flags/{flag.pk}/")
    page.wait_for_function(
        "() => [...document.querySelectorAll('video[data-sync]')].every(v => v.readyState >= 2)"
    )
    videos = page.evaluate(VIDEO_STATE)
    assert len(videos) == 4 and min(v["width"] for v in videos) >= 250, videos

    page.keyboard.press("Space")  # shared play
    page.wait_for_function(
        """() => document.querySelector('[data-video-sync]').dataset.syncState === 'playing'
           && [...document.querySelectorAll('video[data-sync]')].every(v => !v.paused && v.currentTime > 0.3)"""
    )
    times = [v["time"] for v in page.evaluate(VIDEO_STATE)]
    assert max(times) - min(times) < 0.25, times
    screenshot(page, "review-videos")

    page.keyboard.press("Space")  # shared pause
    page.wait_for_function(
        "() => [...document.querySelectorAll('video[data-sync]')].every(v => v.paused && !v.seeking)"
    )
    assert page.get_attribute("[data-video-sync]", "data-sync-state") == "paused"
    page.keyboard.press("0")  # shared seek to the start, then +1 s
    page.keyboard.press("ArrowRight")
    page.keyboard.press("-")  # shared speed: 0.5x
    page.wait_for_function(
        """() => [...document.querySelectorAll('video[data-sync]')].every(
            v => !v.seeking && Math.abs(v.currentTime - 1) < 0.02 && v.playbackRate === 0.5)"""
    )

    page.keyboard.press("d")  # discard the prompt; the queue is then empty
    page.wait_for_url("**/review/low_agreement/?done=*")
    assert PromptDecision.objects.get(prompt_id=flag.prompt_id).discarded
