"""Reviewer and admin pages write what happened in words: candidates by the letters the review
pages show, annotators by name, options as phrases; never a Python dict or a database id."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from annotate.models import Candidate, Prompt, Task
from curation import services
from curation.models import DatasetExport, Flag
from tests.curation.builders import (  # noqa: F401  (fast_passwords: autouse fixture)
    disputed_ranking_project,
    fast_passwords,
    slots,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("_data_dir")]

REPRS = ("{'", "{&#x27;", "&#x27;: ", "': ")


@pytest.fixture
def disputed(users):
    return disputed_ranking_project(users, n_prompts=2)


def _letters(prompt: Prompt) -> dict[str, int]:
    ids = Candidate.objects.filter(prompt=prompt).order_by("id").values_list("id", flat=True)
    return dict(zip("ABCD", ids, strict=True))


def _text(html: str) -> str:
    """The page's text: tags dropped, whitespace collapsed, entities left as they are."""
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def _no_reprs(body: str) -> None:
    for marker in REPRS:
        assert marker not in body, marker


def test_it_writes_the_history_in_letters_and_names(client, users, disputed):
    project, people = disputed
    first, second = Prompt.objects.filter(project=project).order_by("id")
    x = _letters(first)
    services.review_set_ranking(
        actor=users["reviewer"], prompt=first, ranking=[[x["D"]], [x["C"], x["B"]], [x["A"]]]
    )
    services.review_discard_prompt(actor=users["reviewer"], prompt=second)
    services.review_mark_unreliable(
        actor=users["reviewer"], project=project, evaluator=f"user:{people[3].pk}"
    )
    client.force_login(users["reviewer"])
    body = client.get(reverse("curation:history", args=[project.pk])).content.decode()
    text = _text(body)
    assert "no final ranking (the consensus counts) → final ranking D &gt; C = B &gt; A" in text
    assert (
        "no final ranking (the consensus counts); 1 task open → discarded; 1 task discarded" in text
    )
    assert f">{people[3].username}</a>" in body and f"user:{people[3].pk}<" not in body
    assert "counted normally → marked unreliable" in text
    _no_reprs(body)


def test_it_writes_more_judgments_and_dismissals_in_words(client, users, disputed):
    project, _ = disputed
    prompt = Prompt.objects.filter(project=project).order_by("id").first()
    services.review_request_more(actor=users["reviewer"], prompt=prompt, extra=2)
    flag = Flag.objects.create(
        project=project, kind="low_agreement", key="prompt:x", prompt=prompt, severity=0.5
    )
    services.review_dismiss_flag(actor=users["reviewer"], flag=flag)
    client.force_login(users["reviewer"])
    body = client.get(reverse("curation:history", args=[project.pk])).content.decode()
    text = _text(body)
    assert "1 task open → 1 task open, 6 judgments wanted; +2 judgments per task" in text
    assert "flag open → flag dismissed" in text
    _no_reprs(body)


def test_it_writes_an_annotators_verdicts_in_letters(client, users, disputed):
    project, people = disputed
    client.force_login(users["reviewer"])
    url = reverse("curation:evaluator", args=[project.pk]) + f"?evaluator=user:{people[3].pk}"
    body = client.get(url).content.decode()
    assert body.count("<td>D &gt; C &gt; B &gt; A</td>") == 2
    for candidate_id in Candidate.objects.filter(project=project).values_list("id", flat=True):
        assert f">{candidate_id} &gt;" not in body and f"&gt; {candidate_id}<" not in body


def test_it_adds_model_names_to_verdicts_where_the_project_is_not_blind(client, users, disputed):
    project, people = disputed
    project.blind = False
    project.save(update_fields=["blind"])
    client.force_login(users["reviewer"])
    url = reverse("curation:evaluator", args=[project.pk]) + f"?evaluator=user:{people[0].pk}"
    body = client.get(url).content.decode()
    assert "A (model-a) &gt; B (model-b) &gt; C (model-c) &gt; D (model-d)" in body


def test_it_keeps_model_names_out_of_verdicts_of_a_blind_project(client, users, disputed):
    project, people = disputed
    client.force_login(users["reviewer"])
    url = reverse("curation:evaluator", args=[project.pk]) + f"?evaluator=user:{people[0].pk}"
    body = client.get(url).content.decode()
    assert "A &gt; B &gt; C &gt; D" in body and "model-a" not in body


def test_it_writes_pair_verdicts_with_the_letters_of_the_pair(client, users):
    from tests.curation.builders import judge_pair, members
    from tests.factories import make_project

    project = make_project(mode="pairwise", n_prompts=1, k=1)
    members(project, users)
    task = Task.objects.get(project=project)
    judge_pair(task, users["annotator"], "b")
    client.force_login(users["reviewer"])
    url = (
        reverse("curation:evaluator", args=[project.pk])
        + f"?evaluator=user:{users['annotator'].pk}"
    )
    assert "<td>B &gt; A</td>" in client.get(url).content.decode()


def test_it_names_external_annotators_in_a_queue(client, users, disputed):
    project, _ = disputed
    Flag.objects.create(
        project=project,
        kind="unreliable_annotator",
        key="evaluator:ext:demo-simulation:ann_spammer_1",
        evaluator="ext:demo-simulation:ann_spammer_1",
        severity=0.9,
        details={"weight": 0.1, "reasons": ["low agreement"]},
    )
    client.force_login(users["reviewer"])
    url = reverse("curation:queue_kind", args=[project.pk, "unreliable_annotator"])
    body = client.get(url).content.decode()
    assert "ann_spammer_1 (demo-simulation)</a>" in body
    assert ">ext:demo-simulation:ann_spammer_1<" not in body


def test_it_marks_high_severity_meters_as_bad(client, users, disputed):
    project, _ = disputed
    prompt = Prompt.objects.filter(project=project).first()
    Flag.objects.create(
        project=project, kind="low_agreement", key="prompt:y", prompt=prompt, severity=0.95
    )
    client.force_login(users["reviewer"])
    body = client.get(reverse("curation:queue_kind", args=[project.pk, "low_agreement"])).content
    # optimum at 0: a value above `high` is the meter's "bad" state (red), not green.
    assert b'low="0.34" high="0.67" optimum="0" value="0.95"' in body


def _built(project) -> DatasetExport:
    export = services.export_create(
        project=project, options={"splits": {"train": 0.5, "test": 0.5}, "seed": 3}, enqueue=False
    )
    return services.export_build(export_id=export.pk)


def test_it_lists_export_options_in_words(client, users, disputed):
    project, _ = disputed
    _built(project)
    client.force_login(users["admin"])
    body = client.get(reverse("curation:exports", args=[project.pk])).content.decode()
    for phrase in (
        "denoised (feedback arcs removed)",
        "reviewer decisions applied",
        "splits train 50 %, test 50 %",
        "seed 3",
        "media included",
    ):
        assert f"<li>{phrase}</li>" in body
    _no_reprs(body)


def test_it_renders_the_datasheet_as_a_page(client, users, disputed):
    project, _ = disputed
    export = _built(project)
    client.force_login(users["admin"])
    exports_page = client.get(reverse("curation:exports", args=[project.pk])).content.decode()
    url = reverse("curation:export_datasheet", args=[export.pk])
    assert f'href="{url}"' in exports_page
    response = client.get(url)
    assert response.status_code == 200 and response["Content-Type"].startswith("text/html")
    body = response.content.decode()
    assert "<h1>Datasheet: disputed v1</h1>" in body
    assert "<th>split</th>" in body and "<td>train</td>" in body
    assert "| split |" not in body and "## Counts" not in body


@pytest.mark.parametrize("user_key, status", [("reviewer", 403), ("outsider", 404)])
def test_it_shows_the_datasheet_only_to_project_admins(client, users, disputed, user_key, status):
    project, _ = disputed
    export = _built(project)
    client.force_login(users[user_key])
    url = reverse("curation:export_datasheet", args=[export.pk])
    assert client.get(url).status_code == status


def test_it_answers_404_for_the_datasheet_of_an_unbuilt_export(client, users, disputed):
    project, _ = disputed
    export = services.export_create(project=project, options={}, enqueue=False)
    client.force_login(users["admin"])
    assert client.get(reverse("curation:export_datasheet", args=[export.pk])).status_code == 404


def test_it_summarises_a_position_bias_flag_without_lists(client, users, disputed):
    project, people = disputed
    Flag.objects.create(
        project=project,
        kind="position_bias",
        key=f"evaluator:user:{people[3].pk}",
        evaluator=f"user:{people[3].pk}",
        severity=0.8,
        details={
            "favoured_slot": 0,
            "counts": [9, 1, 1, 1],
            "expected": [3.0, 3.0, 3.0, 3.0],
            "p_adjusted": 0.00123,
        },
    )
    client.force_login(users["reviewer"])
    body = client.get(reverse("curation:queue_kind", args=[project.pk, "position_bias"])).content
    assert (
        b"favours position 1: wins by position 9 / 1 / 1 / 1, expected 3.0 / 3.0 / 3.0 / 3.0 (p = 0.0012)"
        in body
    )
    assert b"[9, 1, 1, 1]" not in body


def test_it_rounds_the_figures_of_a_prompt_flag(client, users, disputed):
    project, _ = disputed
    prompt = Prompt.objects.filter(project=project).first()
    flag = Flag.objects.create(
        project=project,
        kind="low_agreement",
        key="prompt:z",
        prompt=prompt,
        severity=0.5,
        details={"agreement": 0.472222, "comparisons": 36, "disputed_pairs": []},
    )
    gold = Flag.objects.create(
        project=project,
        kind="failed_gold",
        key="judgment:z",
        prompt=prompt,
        severity=0.5,
        details={"gold": [], "given": [], "wrong_share": 0.3333},
    )
    client.force_login(users["reviewer"])
    body = client.get(reverse("curation:flag", args=[project.pk, flag.pk])).content.decode()
    assert "Agreement 0.47 over 36 comparisons." in body and "0.472222" not in body
    body = client.get(reverse("curation:flag", args=[project.pk, gold.pk])).content.decode()
    assert "Gold pairs ordered the other way: 33%" in body
