"""The flags pass's per-vote steps done once per project or on arrays (h15d) equal the
per-vote code they replaced, kept here as the reference, on random data."""

from __future__ import annotations

import random
import statistics
from collections import defaultdict

import pytest

from annotate.models import Task
from curation import agreement as A
from curation import consensus as C
from curation import selectors


def _too_fast_reference(records, *, ratio=0.25, min_history=5):
    """`agreement.too_fast` before h15d: a median per annotator, a loop per record."""
    timed = [r for r in records if r.duration_ms is not None]
    if not timed:
        return []
    project = statistics.median(r.duration_ms for r in timed)
    own = defaultdict(list)
    for record in timed:
        own[record.annotator].append(record.duration_ms)
    rule = {}
    for annotator, durations in own.items():
        personal = statistics.median(durations) if len(durations) >= min_history else 0.0
        reference = "annotator" if personal > project else "project"
        rule[annotator] = (ratio * max(personal, project), reference)
    flagged = []
    for record in timed:
        threshold, reference = rule[record.annotator]
        if record.duration_ms < threshold:
            flagged.append(A.FastJudgment(record, threshold, reference))
    return flagged


def _records(rng: random.Random, n: int, *, floats: bool = False) -> list[A.PairRecord]:
    annotators = [f"user:{i}" for i in range(rng.randint(1, 12))] + [7, ("ext", "x")]
    spread = rng.choice([3, 50, 5000])  # 3: many equal durations, equal medians
    records = []
    for i in range(n):
        duration = rng.choice([None, rng.randint(0, spread), rng.randint(0, spread)])
        if floats and duration is not None and rng.random() < 0.3:
            duration += 0.5
        records.append(
            A.PairRecord(
                task=rng.randint(1, 20),
                annotator=rng.choice(annotators[: rng.randint(1, len(annotators))]),
                a=2 * i,
                b=2 * i + 1,
                outcome=rng.choice(["a", "b", "tie", "both_bad"]),
                duration_ms=duration,
            )
        )
    return records


def _fast_view(fast: list[A.FastJudgment]) -> list[tuple]:
    # The very record objects, the thresholds with their types, the references.
    return [(id(f.record), repr(f.threshold_ms), f.reference) for f in fast]


@pytest.mark.parametrize("seed", range(60))
def test_it_flags_the_same_fast_judgments_as_the_per_record_rule(seed):
    rng = random.Random(seed)
    records = _records(rng, rng.choice([1, 2, 7, 40, 400]))
    ratio = rng.choice([0.25, 0.5, 1, 2.0])
    min_history = rng.choice([1, 2, 5])
    got = A.too_fast(records, ratio=ratio, min_history=min_history)
    want = _too_fast_reference(records, ratio=ratio, min_history=min_history)
    assert got == want
    assert _fast_view(got) == _fast_view(want)


@pytest.mark.parametrize("seed", range(10))
def test_it_flags_the_same_with_float_or_huge_durations(seed):
    rng = random.Random(seed)
    records = _records(rng, 200, floats=True)
    records.append(
        A.PairRecord(task=1, annotator="user:0", a=1, b=2, outcome="a", duration_ms=2**60)
    )
    got = A.too_fast(records)
    assert _fast_view(got) == _fast_view(_too_fast_reference(records))


def _usable_reference(data, votes):
    """`selectors.usable_votes` as the flags pass called it per prompt before h15d."""
    return [
        v
        for v in votes
        if data.task_status.get(v.task_id) != Task.Status.DISCARDED
        and v.evaluator not in data.marked
        and not (v.pair is not None and len(v.pair) != 2)
    ]


def _project_data(rng: random.Random) -> selectors.ProjectData:
    tasks = list(range(1, 40))
    status = {
        t: rng.choice([Task.Status.COMPLETE, Task.Status.OPEN, Task.Status.DISCARDED])
        for t in tasks
        if rng.random() < 0.9  # some tasks absent: kept, as `dict.get` gives None
    }
    if rng.random() < 0.4:
        status = {t: Task.Status.COMPLETE for t in status}
    evaluators = [f"user:{i}" for i in range(6)]
    votes = []
    for j in range(rng.randint(0, 120)):
        task = rng.choice(tasks)
        if rng.random() < 0.8:
            pair = rng.choice([(2 * task, 2 * task + 1)] * 8 + [(2 * task,), ()])
            ranking: tuple = ()
        else:
            pair, ranking = None, ((2 * task,), (2 * task + 1,))
        votes.append(
            C.Vote(j, task, task % 7, rng.choice(evaluators), ranking, pair, rng.choice("ab"))
        )
    marked = set(rng.sample(evaluators, rng.choice([0, 0, 1, 2])))
    return selectors.ProjectData(
        project=None,  # type: ignore[arg-type]
        votes=votes,
        task_status=status,
        gold={},
        candidates={},
        prompts={},
        rm_scores={},
        rm_label="",
        weights={},
        marked=marked,
    )


@pytest.mark.parametrize("seed", range(80))
def test_it_keeps_the_same_usable_votes_per_prompt(seed):
    rng = random.Random(seed)
    data = _project_data(rng)
    by_prompt = data.votes_by_prompt()
    chosen = [p for p in by_prompt if rng.random() < 0.8]
    got = selectors.usable_votes_by_prompt(data, by_prompt, iter(chosen))
    want = {p: _usable_reference(data, by_prompt[p]) for p in chosen}
    assert list(got) == list(want)
    for p in chosen:
        assert [id(v) for v in got[p]] == [id(v) for v in want[p]]
        assert got[p] is not by_prompt[p]  # a list of its own, as `usable_votes` gives


@pytest.mark.parametrize("seed", range(40))
def test_it_keeps_the_same_live_votes(seed):
    data = _project_data(random.Random(seed))
    want = [v for v in data.votes if data.task_status.get(v.task_id) != Task.Status.DISCARDED]
    got = selectors.live_votes(data)
    assert [id(v) for v in got] == [id(v) for v in want]
    assert got is not data.votes


def _content_reference(project):
    """`services._snapshot_input`'s candidates and prompts before h15d: `project_data`'s
    `CandidateInfo` / `PromptInfo`, then each built again as the snapshot's type."""
    from curation import exporting as E

    data = selectors.project_data(project=project, with_content=True, with_times=False)
    prompts = {
        p.id: selectors.frozen_instance(E.SnapshotPrompt, p.__dict__) for p in data.prompts.values()
    }
    candidates = {
        c.id: selectors.frozen_instance(
            E.SnapshotCandidate,
            {
                "id": c.id,
                "external_id": c.external_id,
                "model_name": c.model_name,
                "kind": c.kind,
                "text": c.text,
                "media": c.media,
            },
        )
        for c in data.candidates.values()
    }
    return candidates, prompts


@pytest.mark.django_db
def test_it_builds_the_snapshots_candidates_and_prompts_as_before():
    from annotate.models import Candidate, Prompt
    from curation import exporting as E
    from tests.factories import make_project

    rng = random.Random(3)
    project = make_project(name="content", n_prompts=4, n_candidates=3, k=2)
    make_project(name="other", n_prompts=2, n_candidates=2, k=2)  # not read
    texts = ["", "plain", "ünïcode ✓", "line\nbreak", "x" * 300]
    for candidate in Candidate.objects.filter(project=project).order_by("?"):
        candidate.text = rng.choice(texts)
        candidate.media = rng.choice(["", "media/v.mp4"])
        candidate.model_name = rng.choice(["m1", "m2", ""])
        candidate.save()
    for prompt in Prompt.objects.filter(project=project):
        prompt.text = rng.choice(texts)
        prompt.image = rng.choice(["", "img/p.png"])
        prompt.video = rng.choice(["", "vid/p.mp4"])
        prompt.save()
    got = selectors.content_rows(
        project=project, candidate_type=E.SnapshotCandidate, prompt_type=E.SnapshotPrompt
    )
    want = _content_reference(project)
    for got_rows, want_rows in zip(got, want, strict=True):
        assert list(got_rows) == list(want_rows)  # same ids, same order
        for key, row in want_rows.items():
            assert got_rows[key] == row
            assert type(got_rows[key]) is type(row)
            assert got_rows[key].__dict__ == row.__dict__
    assert len(got[0]) == 12 and len(got[1]) == 4
