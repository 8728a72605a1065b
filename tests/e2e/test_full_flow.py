"""The whole flow on a deployment, through Chromium and HTTP only: an admin imports a zip (a
background job), adds members, annotators rank with the keyboard, a reviewer resolves a flag
raised by the per-submit update, the admin exports from the admin panel and the files load,
and "Recompute" on the dashboard fills the annotator figures.

Judgments: ann1 and ann2 rank every prompt a > b > c > d; ann3 ranks p0 the same way and every
other prompt d > c > b > a. So p0 is unanimous, every other prompt has low agreement (1/3 of
annotator pairs agree) and a majority consensus of a > b > c > d.
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    ADMIN,
    ANNOTATORS,
    REVIEWER,
    Deployment,
    open_page,
    reload_until,
)
from tests.e2e.quorum_files import flow_zip

pytestmark = pytest.mark.browser

PROJECT = "e2e-flow"
PROMPTS = ["p0", "p1", "p2", "p3", "p4", "p5", "img"]
DISPUTED = set(PROMPTS) - {"p0"}
JOB_WAIT = 90  # seconds: a job must reach the worker and finish well within this


def order_for(annotator: str, prompt_id: str) -> str:
    if annotator == "ann3" and prompt_id != "p0":
        return "dcba"
    return "abcd"


@dataclass
class Flow:
    deployment: Deployment
    browser: object
    admin: object  # the admin's Playwright page
    import_message: str = ""
    project_id: int | None = None
    judged: dict[str, list[str]] = field(default_factory=dict)


@pytest.fixture(scope="module")
def flow(deploy, browser) -> Flow:
    deployment = deploy()
    admin = open_page(browser, deployment, ADMIN)
    yield Flow(deployment=deployment, browser=browser, admin=admin)
    admin.context.close()


def _reload_until(page, what: str, check, timeout: float = JOB_WAIT):
    return reload_until(page, what, check, timeout=timeout)


@pytest.fixture(scope="module")
def imported(flow: Flow, tmp_path_factory) -> Flow:
    """The admin uploads the zip on Projects -> Import file; the import job reaches done."""
    page = flow.admin
    path = flow_zip(tmp_path_factory.mktemp("flow") / "flow.zip")
    page.goto("/admin/annotate/project/")
    page.click("text=Import file")
    page.set_input_files("input[name=file]", str(path))
    page.fill("input[name=project_name]", PROJECT)
    page.click("input[type=submit][value=Import]")
    page.wait_for_url("**/admin/annotate/importjob/*/change/")
    flow.import_message = page.text_content("ul.messagelist") or ""
    _reload_until(
        page,
        "the import job to be done",
        lambda: _import_status(page) in ("done", "failed"),
    )
    assert _import_status(page) == "done", page.text_content("#content")
    href = page.get_attribute(".field-project .readonly a", "href")
    flow.project_id = int(re.search(r"/project/(\d+)/", href).group(1))
    return flow


def _import_status(page) -> str:
    return page.text_content(".field-status .readonly").strip().lower()


def _add_member(page, username: str, role: str) -> None:
    page.goto("/admin/annotate/membership/add/")
    for name, text in (("user", username), ("project", PROJECT)):
        page.click(f".field-{name} .select2-selection")
        page.fill(".select2-container--open .select2-search__field", text)
        page.click(f".select2-results__option:text-is('{text}')")
    page.select_option("select[name=role]", role)
    page.click("input[name=_save]")
    page.wait_for_selector("ul.messagelist >> text=was added successfully")


@pytest.fixture(scope="module")
def members(imported: Flow) -> Flow:
    for name in ANNOTATORS:
        _add_member(imported.admin, name, "annotator")
    _add_member(imported.admin, REVIEWER, "reviewer")
    return imported


def _cards(page) -> dict[str, str]:
    """Shown letter -> the candidate's own letter (a-d), read from the card text."""
    texts = page.eval_on_selector_all(
        "[data-task] [data-candidate]",
        "cards => cards.map(c => [c.dataset.letter, c.innerText])",
    )
    out = {}
    for shown, text in texts:
        match = re.search(r"Answer ([a-d]) to (\w+)", text)
        assert match, text
        out[match.group(1)] = shown
    prompt = re.search(r"Answer [a-d] to (\w+)", texts[0][1]).group(1)
    return prompt, out


def _judge_all(flow: Flow, annotator: str) -> list[str]:
    page = open_page(flow.browser, flow.deployment, annotator)
    done = []
    try:
        page.goto(f"/projects/{flow.project_id}/annotate/")
        while True:
            page.wait_for_selector("[data-task]")
            if page.query_selector("[data-task][data-mode=none]"):
                assert "No task for you right now" in page.text_content("[data-task]")
                break
            submit_url = page.get_attribute("[data-task]", "data-submit-url")
            prompt_id, shown = _cards(page)
            for letter in order_for(annotator, prompt_id):
                page.keyboard.press(shown[letter].lower())
            page.keyboard.press("Enter")
            page.wait_for_function(
                "url => !document.querySelector(`[data-task][data-submit-url='${url}']`)",
                arg=submit_url,
            )
            done.append(prompt_id)
        assert not page.errors, page.errors
    finally:
        page.context.close()
    return done


@pytest.fixture(scope="module")
def judged(members: Flow) -> Flow:
    # One after the other: the last submit on each prompt is ann3's, which sees all three.
    for annotator in ANNOTATORS:
        members.judged[annotator] = _judge_all(members, annotator)
    return members


# --------------------------------------------------------------------------- tests


def test_it_imports_a_zip_above_the_threshold_as_a_background_job(imported: Flow):
    assert "importing in the background" in imported.import_message
    page = imported.admin
    page.goto(f"/admin/annotate/prompt/?project__id__exact={imported.project_id}")
    assert page.text_content("#changelist-form .paginator").split()[0] == str(len(PROMPTS))


def test_it_lets_every_annotator_judge_every_task_with_the_keyboard(judged: Flow):
    for annotator in ANNOTATORS:
        assert sorted(judged.judged[annotator]) == sorted(PROMPTS), annotator


def test_it_shows_flags_from_submits_in_the_review_queue(judged: Flow):
    """The per-submit flag update runs in the worker: no recompute is ever asked for."""
    page = open_page(judged.browser, judged.deployment, REVIEWER)
    try:
        page.goto(f"/curation/projects/{judged.project_id}/review/low_agreement/")
        _reload_until(
            page,
            "low-agreement flags on every disputed prompt",
            lambda: len(page.query_selector_all("a[data-row]")) >= len(DISPUTED),
        )
        flagged = {a.text_content().strip() for a in page.query_selector_all("a[data-row]")}
        assert flagged == DISPUTED
    finally:
        page.context.close()


def test_it_resolves_a_flag_by_accepting_the_consensus(judged: Flow):
    page = open_page(judged.browser, judged.deployment, REVIEWER)
    queue = f"/curation/projects/{judged.project_id}/review/low_agreement/"
    try:
        page.goto(queue)
        _reload_until(page, "a low-agreement flag", lambda: page.query_selector("a[data-row]"))
        before = len(page.query_selector_all("a[data-row]"))
        subject = page.text_content("a[data-row]").strip()
        with page.expect_navigation():  # the shortcut needs the page's script loaded
            page.click("a[data-row]")
        page.wait_for_selector("h1:has-text('Prompt')")
        assert page.text_content("dl.cur-rankings dd").split()[0:1] != ["none"]
        page.keyboard.press("a")  # Accept consensus
        page.wait_for_selector("ul.messages >> text=recorded as action", state="attached")
        page.goto(queue)
        open_now = {a.text_content().strip() for a in page.query_selector_all("a[data-row]")}
        assert len(open_now) == before - 1 and subject not in open_now
        page.goto(queue + "?status=resolved")
        resolved = {a.text_content().strip() for a in page.query_selector_all("a[data-row]")}
        assert resolved == {subject}
    finally:
        page.context.close()


def _start_export(page) -> None:
    page.goto("/admin/")
    page.click("a:text-is('Dataset exports')")
    page.wait_for_url("**/admin/curation/datasetexport/")
    page.click("#content-main a.addlink")
    page.wait_for_url("**/admin/curation/datasetexport/add/")
    page.select_option("select[name=project]", label=PROJECT)
    page.fill("input[name=splits]", "train=1.0")
    page.click("input[type=submit][value='Build export']")
    page.wait_for_selector("ul.messagelist >> text=queued")


def _export_status(page) -> str:
    cell = page.query_selector("#result_list tbody tr td.field-status")
    return cell.text_content().strip().lower() if cell else ""


def test_it_builds_an_export_from_the_admin_panel_with_files_that_load(judged: Flow, tmp_path):
    page = judged.admin
    _start_export(page)
    _reload_until(page, "the export to end", lambda: _export_status(page) in ("done", "failed"))
    assert _export_status(page) == "done", page.text_content("#result_list")
    with page.expect_download() as download:
        page.click("#result_list tbody tr a:text-is('zip')")
    archive = tmp_path / "export.zip"
    download.value.save_as(archive)
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(tmp_path / "x")
    (root,) = (tmp_path / "x").iterdir()
    _check_export_files(root)


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _check_export_files(root: Path) -> None:
    import datasets
    import pyarrow.parquet as pq
    from PIL import Image

    expected_pairs = {("a", "b"), ("a", "c"), ("a", "d"), ("b", "c"), ("b", "d"), ("c", "d")}
    # Pairs: p0 is unanimous -> every pair 3 votes to 0, agreement 1.
    pairs = _jsonl(root / "pairs" / "train.jsonl")
    p0 = [row for row in pairs if row["prompt_id"] == "p0"]
    assert {(r["chosen_id"][-1], r["rejected_id"][-1]) for r in p0} == expected_pairs
    for row in p0:
        assert row["chosen"] == f"Answer {row['chosen_id'][-1]} to p0"
        assert row["rejected"] == f"Answer {row['rejected_id'][-1]} to p0"
        assert (row["votes_chosen"], row["votes_rejected"], row["n_judgments"]) == (3, 0, 3)
        assert row["agreement"] == 1.0
    # Every prompt: the majority (2 of 3) order a > b > c > d.
    assert {r["prompt_id"] for r in pairs} == set(PROMPTS)
    for row in pairs:
        assert row["chosen_id"][-1] < row["rejected_id"][-1], row

    # Rankings in the seed paper's format: ranks 1 = best, aligned with responses.
    rankings = _jsonl(root / "rankings" / "train.jsonl")
    assert len(rankings) == len(PROMPTS)
    for line in rankings:
        prompt_id = re.search(r"Question (\w+):", line["prompt"]).group(1)
        assert dict(zip(line["responses"], line["rankings"], strict=True)) == {
            f"Answer {c} to {prompt_id}": rank for rank, c in enumerate("abcd", start=1)
        }
        if prompt_id == "img":
            with Image.open(root / line["image"]) as image:
                assert image.size == (48, 48)
        else:
            assert "image" not in line

    # Parquet and the HF folder hold the same tables.
    table = pq.read_table(root / "parquet" / "pairs.parquet")
    assert table.num_rows == len(pairs)
    assert sorted(table.column("id").to_pylist()) == sorted(r["id"] for r in pairs)
    hf = datasets.load_from_disk(str(root / "hf" / "rankings"))
    assert list(hf.keys()) == ["train"]
    by_prompt = {row["prompt_id"]: row for row in hf["train"]}
    assert set(by_prompt) == set(PROMPTS)
    p0_ranks = dict(zip(by_prompt["p0"]["candidate_ids"], by_prompt["p0"]["rankings"], strict=True))
    assert p0_ranks == {"p0-a": 1, "p0-b": 2, "p0-c": 3, "p0-d": 4}


def test_it_recomputes_the_dashboard_figures(judged: Flow):
    """Per-submit updates leave annotator figures alone; "Recompute" fills them."""
    page = judged.admin
    page.goto(f"/curation/projects/{judged.project_id}/dashboard/")
    annotators = "section[aria-labelledby=ann-title] tbody"
    assert "No figures yet" in page.text_content(annotators)
    page.click("button:text('Recompute flags and annotator figures')")
    page.wait_for_selector("ul.messages >> text=Flag recompute queued", state="attached")

    def figures() -> dict[str, str]:
        rows = page.eval_on_selector_all(
            f"{annotators} tr", "rows => rows.map(r => [...r.cells].map(c => c.innerText.trim()))"
        )
        return {row[0]: row[1] for row in rows if len(row) > 2}

    _reload_until(page, "annotator figures after Recompute", lambda: figures())
    assert figures() == {name: str(len(PROMPTS)) for name in ANNOTATORS}
