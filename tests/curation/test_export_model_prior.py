"""The export's opt-in model-strength prior and its overruled-arc listing, read back the way
a user reads an export (json, pyarrow, datasets)."""

from __future__ import annotations

import itertools
import json

import pyarrow.parquet as pq
import pytest
from django.urls import reverse

from annotate.models import Candidate, Project, Prompt, Task, TaskCandidate
from annotate.services import candidate_key
from curation import services
from curation.exporting import ExportOptions, ExportOptionsInvalid
from curation.models import DatasetExport
from tests.curation.builders import (  # noqa: F401  (fast_passwords: autouse fixture)
    fast_passwords,
    judge_pair,
    members,
)
from tests.factories import make_project

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("_data_dir")]

MODELS = ("model-a", "model-b", "model-c", "model-d")  # best first, on every prompt


def _build(project, **options) -> DatasetExport:
    export = services.export_create(project=project, options=options, enqueue=False)
    export = services.export_build(export_id=export.pk)
    assert export.status == DatasetExport.Status.DONE, export.error
    return export


def _prompt(project: Project, external_id: str, models=MODELS) -> dict[str, Task]:
    """A prompt with one candidate per model and a pair task for every two of them, the
    better model's answer shown first on every other task (no slot explains the votes)."""
    prompt = Prompt.objects.create(project=project, external_id=external_id, text="Which?")
    cands = {
        m: Candidate.objects.create(
            project=project,
            prompt=prompt,
            external_id=f"{external_id}-{m}",
            model_name=m,
            text=f"{m} answers {external_id}",
        ).pk
        for m in models
    }
    tasks = {}
    for n, (x, y) in enumerate(itertools.combinations(models, 2)):
        task = Task.objects.create(
            project=project, prompt=prompt, candidate_key=candidate_key((cands[x], cands[y]))
        )
        first, second = (x, y) if (n + len(external_id)) % 2 else (y, x)
        TaskCandidate.objects.create(task=task, candidate_id=cands[first], position=0)
        TaskCandidate.objects.create(task=task, candidate_id=cands[second], position=1)
        tasks[(first, second)] = task
    return tasks


def _vote(tasks: dict[str, Task], person, winner: str, loser: str) -> None:
    if (winner, loser) in tasks:
        judge_pair(tasks[(winner, loser)], person, "a")
    else:
        judge_pair(tasks[(loser, winner)], person, "b")


@pytest.fixture
def models_project(users):
    """Model identity predicts quality: on 24 prompts two annotators agree on one pair in
    the models' order and each judges one more pair; on prompt ``p00`` both prefer model-d's
    answer to model-a's (a strong consensus against the models' record)."""
    project = make_project(mode="pairwise", n_prompts=0, k=1)
    people = members(project, users, extra_annotators=2)
    pairs = list(itertools.combinations(MODELS, 2))
    for p in range(1, 25):
        tasks = _prompt(project, f"p{p:02d}")
        for k, person in enumerate(people[:2]):
            _vote(tasks, person, *pairs[p % len(pairs)])
            _vote(tasks, person, *pairs[(p + 1 + 2 * k) % len(pairs)])
    tasks = _prompt(project, "p00")
    _vote(tasks, people[0], "model-d", "model-a")
    _vote(tasks, people[1], "model-d", "model-a")
    _vote(tasks, people[2], "model-b", "model-c")
    return project


def _ranks(export: DatasetExport) -> dict[str, list[tuple[int, int]]]:
    """``(rank, model's place in MODELS)`` per ranked candidate, per prompt."""
    rows = pq.read_table(export.path / "parquet" / "rankings.parquet").to_pylist()
    return {
        r["prompt_id"]: [
            (rank, MODELS.index(m)) for rank, m in zip(r["rankings"], r["models"], strict=True)
        ]
        for r in rows
        if set(r["models"]) <= set(MODELS)
    }


def _rankings(export: DatasetExport) -> dict[str, list[str]]:
    rows = pq.read_table(export.path / "parquet" / "rankings.parquet").to_pylist()
    return {
        r["prompt_id"]: [c for _, c in sorted(zip(r["rankings"], r["candidate_ids"], strict=True))]
        for r in rows
    }


def test_it_is_off_by_default():
    assert ExportOptions().model_prior is False
    assert ExportOptions.from_dict({}).model_prior is False


def test_it_records_no_prior_in_a_default_export(models_project):
    export = _build(models_project)
    sheet = json.loads((export.path / "datasheet.json").read_text())
    assert sheet["options"]["model_prior"] is False
    assert sheet["method"]["model_prior"] is None
    assert "Model-strength prior" not in (export.path / "datasheet.md").read_text()


def test_it_records_the_prior_in_the_datasheet(models_project):
    export = _build(models_project, model_prior=True)
    sheet = json.loads((export.path / "datasheet.json").read_text())
    prior = sheet["method"]["model_prior"]
    assert sheet["options"]["model_prior"] is True
    assert prior["used"] is True
    assert prior["held_out_log_likelihood"] > prior["human_held_out_log_likelihood"]
    assert list(prior["strengths"]) == list(MODELS)  # the models' order, best first
    assert prior["strong_pairs"] >= 1
    text = (export.path / "datasheet.md").read_text()
    assert "## Model-strength prior" in text and "model strengths: model-a" in text


def test_it_ranks_unjudged_model_pairs_by_the_models_record(models_project):
    plain = _ranks(_build(models_project))
    prior = _ranks(_build(models_project, model_prior=True))

    def agrees(ranking: list[tuple[int, str]]) -> float:
        # Pairs ranked in the models' order (a tie counts one half).
        hits = [
            0.5 if ra == rb else float((ra < rb) == (ma < mb))
            for (ra, ma), (rb, mb) in itertools.combinations(ranking, 2)
        ]
        return sum(hits) / len(hits)

    prompts = [p for p in prior if p != "p00"]
    with_prior = sum(agrees(prior[p]) for p in prompts) / len(prompts)
    without = sum(agrees(plain[p]) for p in prompts) / len(prompts)
    assert with_prior == 1.0 > without


def test_it_never_overrules_two_concordant_reliable_votes(models_project):
    export = _build(models_project, model_prior=True)
    ranking = _rankings(export)["p00"]
    assert ranking.index("p00-model-d") < ranking.index("p00-model-a")
    overruled = [
        json.loads(line) for line in (export.path / "overruled_arcs.jsonl").read_text().splitlines()
    ]
    assert not [r for r in overruled if r["strong"]]
    assert export.datasheet["overruled_arcs"]["strong"] == 0


def test_it_writes_tables_that_pyarrow_and_datasets_read(models_project):
    import datasets

    export = _build(models_project, model_prior=True)
    dsd = datasets.load_from_disk(str(export.path / "hf" / "rankings"))
    table = pq.read_table(export.path / "parquet" / "rankings.parquet")
    assert dsd["train"].num_rows == table.num_rows == 25


@pytest.mark.parametrize(
    "raw, field",
    [
        ({"model_prior": "yes"}, "model_prior"),
        ({"model_prior": True, "denoise": False}, "model_prior"),
        ({"model_prior": True, "rm_evaluator": True}, "model_prior"),
    ],
)
def test_it_refuses_options_it_cannot_honour(raw, field):
    with pytest.raises(ExportOptionsInvalid) as caught:
        ExportOptions.from_dict(raw)
    assert caught.value.field == field


# --------------------------------------------------------------------------- overruled arcs


@pytest.fixture
def cyclic_project(users):
    """On prompt ``tri`` three annotators say a > b and b > c, one says c > a: a cycle whose
    lightest arc is c > a. Prompt ``calm`` has no cycle."""
    project = make_project(mode="pairwise", n_prompts=0, k=1)
    people = members(project, users, extra_annotators=2)
    tri = _prompt(project, "tri", models=("a", "b", "c"))
    for person in people[:3]:
        _vote(tri, person, "a", "b")
        _vote(tri, person, "b", "c")
    _vote(tri, people[3], "c", "a")
    calm = _prompt(project, "calm", models=("a", "b", "c"))
    _vote(calm, people[0], "a", "b")
    return project


def test_it_lists_the_human_arcs_the_export_overrules(cyclic_project):
    export = _build(cyclic_project)
    lines = (export.path / "overruled_arcs.jsonl").read_text().splitlines()
    (row,) = [json.loads(line) for line in lines]
    assert (row["prompt_id"], row["preferred_id"], row["over_id"]) == ("tri", "tri-c", "tri-a")
    assert (row["preferred_model"], row["over_model"]) == ("c", "a")
    assert (row["evaluators_for"], row["evaluators_against"], row["strong"]) == (1, 0, False)
    assert row["quorum_prompt_id"] == Prompt.objects.get(external_id="tri").pk
    ranking = _rankings(export)["tri"]
    assert ranking.index("tri-a") < ranking.index("tri-c")  # the export did overrule it
    assert export.datasheet["overruled_arcs"]["listed"] == 1
    assert "human arcs overruled: 1" in (export.path / "datasheet.md").read_text()


def test_it_shows_the_overruled_arcs_page_with_links_to_review(client, users, cyclic_project):
    export = _build(cyclic_project)
    client.force_login(users["admin"])
    response = client.get(reverse("curation:export_overruled", args=[export.pk]))
    assert response.status_code == 200
    html = response.content.decode()
    prompt = Prompt.objects.get(external_id="tri")
    assert reverse("curation:prompt", args=[cyclic_project.pk, prompt.pk]) in html
    assert "tri-c" in html and "tri-a" in html
    strong = client.get(reverse("curation:export_overruled", args=[export.pk]) + "?strong=1")
    assert "tri-c" not in strong.content.decode()  # one annotator's arc is not strong
    exports_page = client.get(reverse("curation:exports", args=[cyclic_project.pk]))
    assert reverse("curation:export_overruled", args=[export.pk]) in exports_page.content.decode()


@pytest.mark.parametrize("user_key, status", [("reviewer", 403), ("outsider", 404)])
def test_it_shows_the_overruled_arcs_page_to_admins_only(
    client, users, cyclic_project, user_key, status
):
    export = _build(cyclic_project)
    client.force_login(users[user_key])
    assert client.get(reverse("curation:export_overruled", args=[export.pk])).status_code == status


def test_it_takes_the_prior_through_the_api_and_the_command(client, users, models_project):
    from django.core.management import call_command

    from annotate.services import api_token_create

    _token, key = api_token_create(user=users["admin"])
    url = f"/api/projects/{models_project.pk}/exports"
    headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"}
    response = client.post(
        url, data=json.dumps({"model_prior": True}), content_type="application/json", **headers
    )
    assert response.status_code == 201, response.content
    assert response.json()["options"]["model_prior"] is True
    both = json.dumps({"model_prior": True, "rm_evaluator": True})
    refused = client.post(url, data=both, content_type="application/json", **headers)
    assert refused.status_code == 422 and "model_prior" in refused.json()["detail"]
    call_command("export_dataset", str(models_project.pk), "--model-prior", "--no-media")
    latest = DatasetExport.objects.filter(project=models_project).order_by("-version")[0]
    assert latest.options["model_prior"] is True
    assert latest.datasheet["method"]["model_prior"]["used"] is True


@pytest.mark.parametrize("options", [{}, {"model_prior": True}])
def test_it_exports_acyclic_pairs_from_cyclic_votes(cyclic_project, options):
    import networkx as nx

    export = _build(cyclic_project, **options)
    rows = pq.read_table(export.path / "parquet" / "pairs.parquet").to_pylist()
    graph = nx.DiGraph((r["chosen_id"], r["rejected_id"]) for r in rows)
    assert {("tri-a", "tri-b"), ("tri-b", "tri-c")} <= set(graph.edges)
    assert nx.is_directed_acyclic_graph(graph)
