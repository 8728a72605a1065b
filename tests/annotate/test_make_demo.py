"""The demo world: deterministic generation, real media, import through the service, hidden truth."""

from __future__ import annotations

import io
import json
import random
import re
import statistics
from collections import Counter, defaultdict
from pathlib import Path

import av
import numpy as np
import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from PIL import Image
from scipy import ndimage

from annotate import demo_world as dw
from annotate.models import Candidate, Judgment, Membership, Project, Prompt, Task
from annotate.queue import assignment_next

TINY = 4  # prompts per project: enough for every question type, fast on two cores


@pytest.fixture(scope="module")
def tiny_world() -> dw.DemoWorld:
    return dw.generate_world(3, "small", prompts=TINY)


@pytest.fixture(scope="module")
def world_30() -> dw.DemoWorld:
    """Seed 0's first 30 prompts per project (all its gold prompts among them)."""
    return dw.generate_world(0, "small", prompts=30)


def _make_demo(out: Path, *args: str) -> str:
    buf = io.StringIO()
    call_command("make_demo", "--prompts", str(TINY), "--out", str(out), *args, stdout=buf)
    return buf.getvalue()


def _db_counts() -> dict[str, int]:
    return {
        "projects": Project.objects.count(),
        "prompts": Prompt.objects.count(),
        "candidates": Candidate.objects.count(),
        "tasks": Task.objects.count(),
        "judgments": Judgment.objects.count(),
    }


# --- determinism --------------------------------------------------------------------------


def test_it_writes_byte_identical_files_for_the_same_seed(tmp_path, tiny_world):
    again = dw.generate_world(3, "small", prompts=TINY)
    first = dw.write_world(tiny_world, tmp_path / "a")
    second = dw.write_world(again, tmp_path / "b")
    for name, path in first.items():
        assert path.read_bytes() == second[name].read_bytes()
    truth_a = (tmp_path / "a" / dw.GROUND_TRUTH_FILE).read_bytes()
    assert truth_a == (tmp_path / "b" / dw.GROUND_TRUTH_FILE).read_bytes()
    media_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("media/**/*.*"))
    assert media_a, "the small world has media"
    for rel in media_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


def test_it_differs_for_another_seed(tiny_world):
    other = dw.generate_world(4, "small", prompts=TINY)
    for mine, theirs in zip(tiny_world.projects, other.projects, strict=True):
        assert mine.jsonl_bytes() != theirs.jsonl_bytes()
    assert tiny_world.ground_truth() != other.ground_truth()


def test_the_mr2bench_generator_is_deterministic_for_a_seed():
    first, again, other = (dw.generate_world(s, "mr2bench", prompts=40) for s in (5, 5, 6))
    assert first.projects[0].jsonl_bytes() == again.projects[0].jsonl_bytes()
    assert first.ground_truth() == again.ground_truth()
    assert first.projects[0].jsonl_bytes() != other.projects[0].jsonl_bytes()


def test_a_smaller_world_is_a_prefix_of_a_larger_one(tiny_world):
    larger = dw.generate_world(3, "small", prompts=TINY + 2)
    for small, big in zip(tiny_world.projects, larger.projects, strict=True):
        assert big.rows[:TINY] == small.rows


# --- media --------------------------------------------------------------------------------


def test_every_image_opens_and_every_video_decodes_as_h264(tiny_world):
    images = videos = 0
    for project in tiny_world.projects:
        for rel, data in project.media.items():
            if rel.endswith(".png"):
                with Image.open(io.BytesIO(data)) as img:
                    assert img.format == "PNG"
                    img.load()
                    assert min(img.size) >= 256 and max(img.size) <= 512, (rel, img.size)
                images += 1
            else:
                assert rel.endswith(".mp4"), rel
                with av.open(io.BytesIO(data)) as container:
                    stream = container.streams.video[0]
                    assert stream.codec_context.name == "h264"
                    assert stream.codec_context.pix_fmt == "yuv420p"
                    frames = list(container.decode(stream))
                assert len(frames) >= 16
                assert 256 <= frames[0].width <= 512 and 256 <= frames[0].height <= 512
                videos += 1
            assert len(data) < 64_000, f"{rel} is {len(data)} bytes; keep demo media small"
    assert images > 0 and videos > 0


def _components(mask: np.ndarray) -> list[np.ndarray]:
    """Connected regions (4-neighbour) of a boolean mask, as arrays of (y, x) pixels."""
    labels, count = ndimage.label(mask)
    regions = [np.argwhere(labels == n) for n in range(1, count + 1)]
    return [r for r in regions if len(r) > 20]  # ignore stray anti-aliasing specks


def _shape_of(region: np.ndarray) -> str:
    """Tells the four demo shapes apart by how they fill their bounding box."""
    ys, xs = region[:, 0], region[:, 1]
    height, width = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    fill = len(region) / (height * width)
    if fill > 0.9:
        return "square"
    if fill > 0.68:
        return "circle"
    middle = ys.min() + height / 2
    top, bottom = (ys < middle).sum(), (ys >= middle).sum()
    return "triangle" if bottom > 1.5 * top else "diamond"


def test_vqa_count_answers_can_be_read_off_the_picture(tiny_world):
    # The VQA project alone: the other two would render and encode 25 prompts' media too.
    people = dw.make_annotators(dw.SMALL_POOL, dw.SMALL_WEIGHTS)
    vqa = dw._vqa_project(3, dw.make_models(3, 8), people, 25)
    checked = 0
    for row in vqa.rows:
        match = re.fullmatch(r"How many (\w+) (\w+)s are in the picture\?", row["prompt"])
        if not match:
            continue
        colour, shape = match.groups()
        pixels = np.asarray(Image.open(io.BytesIO(vqa.media[row["image"]])).convert("RGB"))
        mask = (pixels == np.array(dw.COLOURS[colour], dtype=np.uint8)).all(axis=-1)
        seen = sum(_shape_of(r) == shape for r in _components(mask))
        assert str(seen) == vqa.truth["prompts"][row["id"]]["answer"], row["id"]
        checked += 1
    assert checked >= 3


# --- the simulated world --------------------------------------------------------------------


def test_candidate_quality_follows_model_skill(world_30):
    world = world_30
    skill = {m.name: m.skill for m in world.models}
    for project in world.projects:
        by_model = defaultdict(list)
        for c in project.truth["candidates"].values():
            by_model[c["model"]].append(c["quality"])
        ranked = sorted(by_model, key=lambda m: skill[m])
        weak = statistics.mean(statistics.mean(by_model[m]) for m in ranked[:3])
        strong = statistics.mean(statistics.mean(by_model[m]) for m in ranked[-3:])
        assert strong > weak + 0.3, project.name


@pytest.mark.parametrize(("scale", "prompts"), [("small", None), ("mr2bench", 200)])
def test_no_prompt_has_two_candidates_with_the_same_text(scale, prompts):
    """Identical answers cannot be ranked; a repeated reply is reworded, its claim kept."""
    world = dw.generate_world(0, scale, prompts=prompts)
    reworded = 0
    for project in world.projects:
        for row in project.rows:
            texts = [c.get("text", "") for c in row["candidates"] if c.get("kind") == "text"]
            assert len(set(texts)) == len(texts), (row["id"], texts)
            reworded += sum(t != t.strip() or t.startswith("Answer: ") for t in texts)
    assert reworded > 0  # the generator does repeat itself: the rewording is exercised


def test_a_reworded_answer_keeps_its_claim_and_quality():
    used: set[str] = set()
    first = dw._distinct("KEY.", used)
    second = dw._distinct("KEY.", used)
    third = dw._distinct("KEY.", used)
    assert first == "KEY." and len({first, second, third}) == 3
    assert "KEY." in second and "KEY." in third


@pytest.mark.parametrize(
    ("kind", "expect_first"),
    [("position_biased", (0.75, 1.0)), ("reliable", (0.3, 0.7)), ("spammer", (0.35, 0.65))],
)
def test_it_simulates_position_bias_only_for_biased_annotators(kind, expect_first):
    import random

    annotator = next(a for a in dw.make_annotators({kind: 1}))
    rng = random.Random(1)
    quality = {"x": 0.6, "y": 0.6}
    outcomes = Counter(dw.simulate_pair(annotator, ["x", "y"], quality, rng) for _ in range(600))
    share_first = outcomes["a"] / (outcomes["a"] + outcomes["b"])
    assert expect_first[0] <= share_first <= expect_first[1]


def test_reliable_annotators_agree_with_the_truth_and_spammers_do_not():
    import random

    rng = random.Random(2)
    quality = {"good": 0.9, "fair": 0.6, "bad": 0.2, "worse": 0.1}
    truth = ["good", "fair", "bad", "worse"]
    people = {a.kind: a for a in dw.make_annotators(dw.SMALL_POOL)}
    exact = Counter()
    for _ in range(300):
        for kind, annotator in people.items():
            shown = truth[:]
            rng.shuffle(shown)
            ranking = dw.simulate_ranking(annotator, shown, quality, rng)
            exact[kind] += [c for group in ranking for c in group] == truth
    assert exact["reliable"] > 0.9 * 300
    assert exact["spammer"] < 0.15 * 300
    assert exact["reliable"] > exact["noisy"] > exact["spammer"]


def test_spammers_are_too_fast():
    import random

    rng = random.Random(3)
    people = {a.kind: a for a in dw.make_annotators(dw.SMALL_POOL)}
    median = {
        kind: statistics.median(dw.simulate_duration(a, rng, slots=4) for _ in range(200))
        for kind, a in people.items()
    }
    assert median["spammer"] < 3000 < median["reliable"]


def test_every_annotator_judges_a_gold_task_without_changing_the_first_judgments():
    import random

    people = dw.make_annotators(dw.SMALL_POOL, dw.SMALL_WEIGHTS)
    quality = {"w": 0.9, "x": 0.7, "y": 0.5, "z": 0.3}
    common = {
        "pid": "p",
        "task_ids": list(quality),
        "quality": quality,
        "annotators": people,
        "count": 2,
        "pairwise": False,
        "video": False,
    }
    plain = dw._judge_task(**common, rng=random.Random(7))
    gold = dw._judge_task(**common, rng=random.Random(7), gold_rng=random.Random(8))
    assert gold[:2] == plain
    assert sorted(j["annotator"] for j in gold) == sorted(a.username for a in people)


def test_gold_prompts_have_clearly_ordered_candidates(world_30):
    world = world_30
    for project in world.projects:
        gold = [pid for pid, p in project.truth["prompts"].items() if p["gold"]]
        assert len(gold) == dw.GOLD_PER_PROJECT, project.name
        for row in project.rows:
            if row["id"] not in gold:
                continue
            ranked = sorted(
                (project.truth["candidates"][c["id"]]["quality"] for c in row["candidates"]),
                reverse=True,
            )
            assert all(a - b >= dw.GOLD_GAP for a, b in zip(ranked, ranked[1:], strict=False))
            assert ranked[0] >= dw.GOLD_BEST


def test_the_mr2bench_world_has_twenty_judgments_per_prompt_over_19_models():
    world = dw.generate_world(0, "mr2bench", prompts=300)
    (project,) = world.projects
    assert project.name == dw.PROJECT_MR2 and project.settings["mode"] == "pairwise"
    assert len(world.models) == 19
    per_prompt, pairs_per_prompt, panel_sizes = [], [], []
    by_kind: Counter[str] = Counter()
    kind_of = {a.username: a.kind for a in world.annotators}
    for row in project.rows:
        assert len({c["model"] for c in row["candidates"]}) == 19
        assert not any(c.get("image") or c.get("video") for c in row["candidates"])
        judgments = row["judgments"]
        per_prompt.append(len(judgments))
        pairs = {frozenset(j["pair"]) for j in judgments}
        pairs_per_prompt.append(len(pairs))
        panel_sizes.append(len({j["annotator"] for j in judgments}))
        by_kind.update(kind_of[j["annotator"]] for j in judgments)
        # The judged pairs connect all 19 candidates (a leaderboard needs that).
        reached, frontier = set(), [row["candidates"][0]["id"]]
        while frontier:
            node = frontier.pop()
            reached.add(node)
            frontier += [x for p in pairs if node in p for x in p if x not in reached]
        assert len(reached) == 19
    assert 19.5 <= statistics.mean(per_prompt) <= 20.5
    assert set(pairs_per_prompt) == {19}
    assert min(panel_sizes) >= 2 and max(panel_sizes) <= 5 and statistics.mean(panel_sizes) > 3
    total = sum(by_kind.values())
    assert set(by_kind) == {"reliable", "noisy", "position_biased", "spammer"}
    assert 0.3 < by_kind["reliable"] / total < 0.6
    assert 0.03 < by_kind["spammer"] / total < 0.15
    accuracy = world.ground_truth()["projects"][dw.PROJECT_MR2]["annotators"]
    mean_by_kind = {
        kind: statistics.mean(v for name, v in accuracy.items() if kind_of[name] == kind)
        for kind in by_kind
    }
    assert mean_by_kind["reliable"] > 0.9
    assert 0.4 < mean_by_kind["spammer"] < 0.6
    assert mean_by_kind["spammer"] < mean_by_kind["noisy"] < mean_by_kind["reliable"]


def test_the_full_mr2bench_scale_is_the_advertised_size():
    world = dw.generate_world(0, "mr2bench")
    (project,) = world.projects
    assert len(project.rows) == 4700
    assert project.candidate_count == 4700 * 19
    assert 93_000 <= project.judgment_count <= 95_000


# --- loading through the import service ---------------------------------------------------


@pytest.mark.django_db
def test_it_loads_the_world_through_the_import_service(tmp_path):
    out = _make_demo(tmp_path / "demo")
    assert "3 projects" in out
    names = {dw.PROJECT_VQA, dw.PROJECT_T2I, dw.PROJECT_T2V}
    assert set(Project.objects.values_list("name", flat=True)) == names
    assert Project.objects.get(name=dw.PROJECT_T2V).mode == "pairwise"
    for project in Project.objects.all():
        assert project.prompts.count() == TINY
        assert project.tasks.exists()
        assert project.judgments.exists()
    assert Candidate.objects.filter(kind="image").exclude(media="").exists()
    assert Candidate.objects.filter(kind="video").exclude(media="").exists()
    assert Prompt.objects.exclude(video="").exists()
    judgment = Judgment.objects.filter(source=Judgment.Source.EXTERNAL).first()
    assert judgment.external_annotator.startswith("ann_")
    assert judgment.source_name == dw.DEMO_SOURCE
    assert not Judgment.objects.filter(duration_ms__isnull=True).exists()
    # Some tasks reached k and closed; some are left open for real annotators.
    assert Task.objects.filter(status="complete").exists()
    assert Task.objects.filter(status="open").exists()


def _evaluator(username: str) -> str:
    return f"ext:{dw.DEMO_SOURCE}:{username}"


@pytest.mark.django_db
def test_the_full_demo_fills_every_flag_queue_with_the_annotators_planted_for_it(tmp_path):
    """Each simulated annotator lands where it was designed to: the position-biased one in the
    position-bias queue, the spammer in the too-fast, unreliable and failed-gold queues (and no
    reliable annotator fails gold), a labelled planted cycle in every ranking project. The
    reward-model queue needs a model's scores: see the next test."""
    from curation.models import Flag
    from curation.services import flags_recompute

    call_command("make_demo", "--out", str(tmp_path / "demo"), stdout=io.StringIO())
    kinds: set[str] = set()
    for project in Project.objects.all():
        flags_recompute(project_id=project.pk)
        flags = Flag.objects.filter(project=project)
        by_kind = defaultdict(set)
        for kind, evaluator in flags.values_list("kind", "evaluator"):
            by_kind[kind].add(evaluator)
        kinds |= set(by_kind)
        where = (project.name, {k: sorted(v) for k, v in by_kind.items()})
        assert by_kind["position_bias"] == {_evaluator("ann_biased_1")}, where
        assert by_kind["too_fast"] == {_evaluator("ann_spammer_1")}, where
        assert _evaluator("ann_spammer_1") in by_kind["unreliable_annotator"], where
        assert _evaluator("ann_spammer_1") in by_kind["failed_gold"], where
        assert not {e for e in by_kind["failed_gold"] if "reliable" in e}, where
        assert by_kind["low_agreement"], where
        if project.mode == "ranking":
            planted = project.prompts.get(metadata__demo_case=dw.CYCLE_CASE)
            assert flags.filter(kind="cycle", prompt=planted).exists(), where
    assert kinds == set(Flag.Kind.values) - {"rm_disagreement"}


class _BackwardsScorer:
    """Stands in for the demo reward model (minutes of training): it scores every answer by its
    hidden quality the wrong way round, and confidently, so it contradicts the annotators
    wherever they agree."""

    def __init__(self, score_of: dict[str, float]) -> None:
        self.score_of = score_of

    def score(self, items, mode):  # noqa: ANN001, ANN201 - the scorer's duck type
        from types import SimpleNamespace

        return [
            SimpleNamespace(
                scores=[self.score_of[c.path or c.text] for c in item.candidates],
                error=None,
                errors=[None] * len(item.candidates),
            )
            for item in items
        ]


@pytest.mark.django_db
def test_the_reward_model_queue_fills_when_the_demo_projects_scoring_run_finishes(
    tmp_path, monkeypatch
):
    from annotate.models import RewardModel
    from curation.models import Flag
    from workers import jobs, scoring
    from workers.curation_tasks import flags_recompute_task
    from workers.models import Job

    _make_demo(tmp_path / "demo")
    truth = dw.load_ground_truth(tmp_path / "demo")
    score_of = {}
    for cand in Candidate.objects.select_related("project"):
        quality = truth.projects[cand.project.name].quality()[cand.external_id]
        score_of[scoring._media_path(cand.media) or cand.text] = -10.0 * quality
    model = RewardModel.objects.create(name="backwards", version="1", path=str(tmp_path))
    monkeypatch.setattr(scoring, "scorer_for", lambda reward_model: _BackwardsScorer(score_of))
    for project in Project.objects.all():
        project.active_reward_model = model
        project.save(update_fields=["active_reward_model"])
        assert not Flag.objects.filter(project=project, kind="rm_disagreement").exists()
        run = scoring.scoring_run_start(project=project, reason="demo")
        Job.objects.filter(name=jobs.FLAGS_RECOMPUTE).delete()  # the import's own recompute

        scoring.score_prompts(run_id=run.pk, prompt_ids=run.prompt_ids)

        # The finished run asks for a flag recompute; a worker runs it as this job.
        job = Job.objects.get(name=jobs.FLAGS_RECOMPUTE, kwargs={"project_id": project.pk})
        flags_recompute_task.run(project_id=project.pk, job_id=job.pk)
        flagged = Flag.objects.filter(project=project, kind="rm_disagreement")
        assert flagged.exists(), project.name


@pytest.mark.django_db
def test_it_stores_the_true_ranking_as_the_gold_answer_of_the_gold_prompts(tmp_path):
    # Seed 2's first five prompts hold a gold prompt in every project.
    call_command(
        "make_demo",
        "--seed",
        "2",
        "--prompts",
        "5",
        "--out",
        str(tmp_path / "demo"),
        stdout=io.StringIO(),
    )
    truth = dw.load_ground_truth(tmp_path / "demo")
    gold = Task.objects.filter(is_gold=True).select_related("project", "prompt")
    assert gold.exists()
    assert {t.prompt.external_id for t in gold} == {
        pid for p in truth.projects.values() for pid in p.gold_prompts()
    }
    for task in gold:
        ext = dict(task.candidates.values_list("pk", "external_id"))
        quality = truth.projects[task.project.name].quality()
        answer = [[quality[ext[pk]] for pk in group] for group in task.gold_ranking]
        assert sum(map(len, answer)) == len(ext)
        assert all(min(a) > max(b) for a, b in zip(answer, answer[1:], strict=False))
        # Every simulated annotator judged it, as every annotator is served a gold task.
        assert task.judgment_count == len(truth.annotators)


@pytest.mark.django_db
def test_running_it_twice_creates_nothing_new(tmp_path):
    _make_demo(tmp_path / "demo")
    before = _db_counts()
    judgment_ids = set(Judgment.objects.values_list("pk", flat=True))
    out = _make_demo(tmp_path / "demo")
    assert _db_counts() == before
    assert set(Judgment.objects.values_list("pk", flat=True)) == judgment_ids
    assert "0 new prompts, 0 new candidates, 0 new tasks, 0 new judgments" in out


@pytest.mark.django_db
def test_every_imported_candidate_has_ground_truth(tmp_path):
    _make_demo(tmp_path / "demo")
    truth = dw.load_ground_truth(tmp_path / "demo")
    assert truth.seed == 0 and truth.scale == "small"
    for project in Project.objects.all():
        quality = truth.projects[project.name].quality()
        ids = set(project.candidates.values_list("external_id", flat=True))
        assert ids == set(quality)
        prompt_id = project.prompts.first().external_id
        best = truth.projects[project.name].true_ranking(prompt_id)[0]
        assert quality[best] == max(
            q for cid, q in quality.items() if cid.startswith(prompt_id + "-")
        )


@pytest.mark.django_db
def test_ground_truth_is_not_in_any_database_row_or_served_file(tmp_path, settings):
    _make_demo(tmp_path / "demo")
    raw = json.loads((tmp_path / "demo" / dw.GROUND_TRUTH_FILE).read_text())
    hidden_keys = {"quality", "skill", "category", "drawn", "artefact", "answer", "scene"}
    for project_name, project in raw["projects"].items():
        for prompt in Prompt.objects.filter(project__name=project_name):
            blob = json.dumps(prompt.metadata)
            assert not hidden_keys & set(prompt.metadata), prompt.external_id
            answer = project["prompts"][prompt.external_id].get("answer")
            if answer and len(answer) >= 3 and not answer.isdigit():  # longer words cannot
                # turn up by chance
                assert answer not in blob and answer not in prompt.text
        for cand in Candidate.objects.filter(project__name=project_name):
            assert cand.metadata == {}, cand.external_id
            assert str(project["candidates"][cand.external_id]["quality"]) not in cand.text
    for model, profile in raw["models"].items():
        assert not Candidate.objects.filter(text__contains=str(profile["skill"])).exists(), model
    served = [p for p in Path(settings.MEDIA_ROOT).rglob("*") if p.is_file()]
    assert served, "media was imported"
    assert not any(p.suffix == ".json" for p in served)
    assert not any(b"quorum-demo-ground-truth" in p.read_bytes() for p in served)


@pytest.mark.django_db
def test_it_refuses_an_out_folder_that_is_served_publicly(settings):
    with pytest.raises(CommandError, match="served publicly"):
        _make_demo(Path(settings.MEDIA_ROOT) / "demo")
    assert not Project.objects.exists()


@pytest.mark.django_db
def test_it_refuses_to_clear_a_folder_it_did_not_write(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(CommandError, match="not written by make_demo"):
        _make_demo(tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


@pytest.mark.django_db
def test_it_creates_demo_users_once(tmp_path, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast
    out = _make_demo(tmp_path / "demo", "--users")
    assert "password quorum-demo" in out
    User = get_user_model()
    admin = User.objects.get(username="admin")
    assert admin.is_superuser and admin.is_staff and admin.check_password("quorum-demo")
    for project in Project.objects.all():
        roles = dict(
            Membership.objects.filter(project=project).values_list("user__username", "role")
        )
        assert roles == {
            "admin": "admin",
            "alice": "annotator",
            "bob": "annotator",
            "rita": "reviewer",
        }
    alice = User.objects.get(username="alice")
    alice.set_password("alice-changed-it")
    alice.save()

    out = _make_demo(tmp_path / "demo", "--users")

    assert User.objects.filter(username__in=["admin", "alice", "bob", "rita"]).count() == 4
    assert Membership.objects.count() == 4 * 3
    alice.refresh_from_db()
    assert alice.check_password("alice-changed-it")
    assert "password unchanged" in out


class _GoldDrawFirst(random.Random):
    """A random stream whose first draw is 0.0: the queue's gold-or-not draw picks gold."""

    drawn = False

    def random(self) -> float:
        if not self.drawn:
            self.drawn = True
            return 0.0
        return super().random()


@pytest.mark.django_db
def test_people_trying_the_demo_are_served_its_gold_tasks(tmp_path, settings):
    """Gold tasks measure real people too: the demo projects serve them at GOLD_RATE."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast
    call_command(
        "make_demo", "--seed", "2", "--prompts", "5", "--users", "--out", str(tmp_path / "demo"),
        stdout=io.StringIO(),
    )  # fmt: skip
    alice = get_user_model().objects.get(username="alice")
    projects = Project.objects.filter(tasks__is_gold=True).distinct()
    assert projects.exists()
    for project in projects:
        assert project.gold_rate == dw.GOLD_RATE > 0
        assignment = assignment_next(project=project, annotator=alice, rng=_GoldDrawFirst(0))
        assert assignment is not None and assignment.task.is_gold, project.name
