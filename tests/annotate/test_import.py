"""Import: each format round-trips, re-import is idempotent, bad input is rejected whole."""

from __future__ import annotations

import json
import zipfile
from collections import Counter
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from annotate.exporting import export_project
from annotate.importing import ImportRejected
from annotate.models import Candidate, Judgment, Project, Prompt, Task, TaskCandidate
from annotate.services import import_file
from tests.media_fixtures import mp4_bytes, png_bytes, write, write_quorum_media

ARENA = (
    Path(__file__).resolve().parents[3]
    / "shared"
    / "data"
    / "genai_arena_clean_battle_20240220.json"
)

pytestmark = pytest.mark.django_db


def _db_counts() -> dict[str, int]:
    return {
        m.__name__: m.objects.count()
        for m in (Project, Prompt, Candidate, Task, TaskCandidate, Judgment)
    }


def _media_files(root) -> list[Path]:
    return sorted(p for p in Path(root).rglob("*") if p.is_file())


def _quorum_rows() -> list[dict]:
    return [
        {"project": {"mode": "ranking", "candidates_per_task": 3, "annotators_per_task": 2}},
        {
            "id": "q1",
            "prompt": "What colour is the square?",
            "image": "media/q1.png",
            "candidates": [
                {"id": "q1-a", "model": "alpha", "text": "Red."},
                {"id": "q1-b", "model": "beta", "text": "Blue."},
                {"id": "q1-c", "model": "gamma", "kind": "image", "image": "media/gen.png"},
            ],
            "judgments": [
                {
                    "annotator": "ann-1",
                    "ranking": [["q1-a"], ["q1-b", "q1-c"]],
                    "duration_ms": 5300,
                    "presented_order": ["q1-c", "q1-a", "q1-b"],
                },
                {
                    "annotator": "ann-2",
                    "ranking": [["q1-c"], ["q1-a"], ["q1-b"]],
                    "rationale": "sharp",
                },
            ],
        },
        {
            "id": "q2",
            "prompt": "Describe the clip.",
            "video": "media/clip.mp4",
            "candidates": [
                {"id": "q2-a", "model": "alpha", "text": "A square grows."},
                {"id": "q2-b", "model": "beta", "kind": "video", "video": "media/clip2.mp4"},
            ],
            "judgments": [{"annotator": "ann-1", "pair": ["q2-b", "q2-a"], "outcome": "a"}],
        },
    ]


@pytest.fixture
def quorum_file(tmp_path) -> Path:
    folder = tmp_path / "in"
    write_quorum_media(folder)
    path = folder / "demo.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in _quorum_rows()) + "\n")
    return path


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def _judgments_as_records(project: Project) -> set:
    out = set()
    for j in Judgment.objects.filter(project=project):
        ext = {c.pk: c.external_id for c in Candidate.objects.filter(project=project)}
        order = list(
            TaskCandidate.objects.filter(task=j.task)
            .order_by("position")
            .values_list("candidate_id", flat=True)
        )
        if j.kind == "ranking":
            value = tuple(tuple(sorted(ext[c] for c in g)) for g in j.ranking)
        else:
            winner = {"a": ext[order[0]], "b": ext[order[1]]}.get(j.outcome, j.outcome)
            value = (frozenset(ext[c] for c in order), winner)
        shown = tuple(ext[c] for c in j.presented_order)
        out.add((j.external_annotator, j.kind, value, j.rationale, j.duration_ms, shown))
    return out


def test_it_imports_quorum_jsonl_with_media_and_judgments(quorum_file, settings):
    result = import_file(path=quorum_file)
    project = result.project
    assert (
        project.name == "demo"
        and project.candidates_per_task == 3
        and project.annotators_per_task == 2
    )
    assert result.counts["prompts"] == 2 and result.counts["candidates"] == 5
    assert result.counts["judgments"] == 3
    q1 = Prompt.objects.get(project=project, external_id="q1")
    assert q1.image.name.startswith(f"p{project.pk}/") and q1.image.name.endswith(".png")
    assert "q1" not in q1.image.name  # content-addressed: no source file or model names
    video_cand = Candidate.objects.get(external_id="q2-b")
    assert video_cand.kind == "video" and video_cand.media.name.endswith(".mp4")
    # the pair was given reversed relative to the task's order: the winner is still q2-b
    pair = Judgment.objects.get(kind="pair")
    order = list(
        pair.task.slots.order_by("position").values_list("candidate__external_id", flat=True)
    )
    assert order[{"a": 0, "b": 1}[pair.outcome]] == "q2-b"
    tied = Judgment.objects.get(external_annotator="ann-1", kind="ranking")
    assert len(tied.ranking) == 2 and len(tied.ranking[1]) == 2
    shown = [Candidate.objects.get(pk=c).external_id for c in tied.presented_order]
    assert shown == ["q1-c", "q1-a", "q1-b"]


def test_it_round_trips_quorum_jsonl(quorum_file, tmp_path):
    first = import_file(path=quorum_file).project
    out = tmp_path / "export"
    path = export_project(first, out, format="quorum")
    second = import_file(path=path, project_name="copy").project
    assert _judgments_as_records(first) == _judgments_as_records(second)
    assert second.candidates_per_task == first.candidates_per_task
    src = {
        c.external_id: (c.model_name, c.kind, c.text)
        for c in Candidate.objects.filter(project=first)
    }
    dst = {
        c.external_id: (c.model_name, c.kind, c.text)
        for c in Candidate.objects.filter(project=second)
    }
    assert src == dst
    # media bytes survive the trip
    a = Prompt.objects.get(project=first, external_id="q2").video
    b = Prompt.objects.get(project=second, external_id="q2").video
    assert a.read() == b.read()


def test_it_round_trips_seed_format(tmp_path):
    rows = [
        {
            "prompt": "Which answer is best?",
            "responses": ["a1", "a2", "a3", "a4"],
            "rankings": [2, 1, 4, 3],
        },
        {
            "prompt": "Rank these",
            "responses": ["x", "y", "z", "w"],
            "rankings": [1, 1, 3, 4],
            "image": "img/one.png",
        },
    ]
    picture = write(tmp_path / "img" / "one.png", png_bytes()).read_bytes()
    path = _write_jsonl(tmp_path / "seed.jsonl", rows)
    result = import_file(path=path, source_name="seed-release")
    assert result.format == "seed"
    j = Judgment.objects.filter(project=result.project).order_by("id")
    assert [x.source_name for x in j] == ["seed-release", "seed-release"]
    out = export_project(result.project, tmp_path / "out", format="seed")
    back = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["prompt"], r["responses"], r["rankings"]) for r in back] == [
        (r["prompt"], r["responses"], r["rankings"]) for r in rows
    ]
    assert (tmp_path / "out" / back[1]["image"]).read_bytes() == picture  # the stored bytes


def test_it_round_trips_arena_votes(tmp_path):
    result = import_file(path=ARENA, project_name="arena")
    assert result.format == "arena" and result.project.mode == "pairwise"
    assert result.counts["judgments"] == 2061
    outcomes = Counter(
        Judgment.objects.filter(project=result.project).values_list("outcome", flat=True)
    )
    assert outcomes == {"a": 759, "b": 744, "tie": 130, "both_bad": 428}
    out = export_project(result.project, tmp_path / "out", format="arena")
    original = json.loads(ARENA.read_text())
    exported = json.loads(out.read_text())
    keys = ("model_a", "model_b", "winner", "judge", "anony", "tstamp")
    assert sorted(tuple(r[k] for k in keys) for r in exported) == sorted(
        tuple(r[k] for k in keys) for r in original
    )


@pytest.mark.parametrize("fmt", ["quorum", "seed", "arena"])
def test_it_creates_nothing_on_reimport(fmt, quorum_file, tmp_path):
    if fmt == "quorum":
        path = quorum_file
    elif fmt == "seed":
        path = _write_jsonl(
            tmp_path / "s.jsonl", [{"prompt": "p", "responses": ["a", "b"], "rankings": [1, 2]}] * 2
        )
    else:
        path = _write_jsonl(
            tmp_path / "votes.jsonl",
            [{"model_a": "m1", "model_b": "m2", "winner": "tie", "tstamp": 1.0}] * 3,
        )
    first = import_file(path=path)
    before = _db_counts()
    again = import_file(path=path)
    assert _db_counts() == before
    assert again.counts["judgments"] == 0
    assert again.counts["skipped_existing"] == first.counts["judgments"] > 0


def test_it_keeps_identical_votes_as_separate_judgments(tmp_path):
    path = _write_jsonl(
        tmp_path / "votes.jsonl", [{"model_a": "m1", "model_b": "m2", "winner": "model_a"}] * 3
    )
    import_file(path=path)
    assert Judgment.objects.count() == 3


def test_it_imports_a_zip_with_media(quorum_file, tmp_path):
    archive = tmp_path / "bundle.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in quorum_file.parent.rglob("*"):
            if f.is_file():
                zf.write(f, f"bundle/{f.relative_to(quorum_file.parent).as_posix()}")
    result = import_file(path=archive)
    assert result.project.name == "bundle"
    stored = (quorum_file.parent / "media" / "q1.png").read_bytes()
    assert Prompt.objects.get(external_id="q1").image.read() == stored


def test_it_imports_through_the_command(quorum_file, capsys):
    call_command("import_project", str(quorum_file), "--project", "cli")
    assert "Imported" in capsys.readouterr().out
    assert Project.objects.get(name="cli").prompts.count() == 2


# --- bad input: rejected whole, naming line and field, nothing written ---------------------


def test_it_imports_an_empty_text_answer_marked_and_counted(tmp_path, _media_root):
    def mutate(rows):
        rows[1]["candidates"][1]["text"] = ""

    result = import_file(path=_quorum_with(tmp_path, mutate))
    assert result.counts["empty_answers"] == 1
    assert result.counts["judgments"] == 3
    empty = Candidate.objects.get(external_id="q1-b")
    assert empty.text == "" and empty.metadata["empty_answer"] is True
    assert "empty_answer" not in Candidate.objects.get(external_id="q1-a").metadata


def test_it_imports_a_seed_row_with_an_empty_response(tmp_path):
    rows = [
        {"prompt": "p1", "responses": ["good", "", "bad"], "rankings": [1, 3, 2]},
        {"prompt": "p2", "responses": ["x", "y"], "rankings": [2, 1]},
    ]
    result = import_file(path=_write_jsonl(tmp_path / "s.jsonl", rows))
    assert result.counts["prompts"] == 2 and result.counts["judgments"] == 2
    assert result.counts["empty_answers"] == 1
    (empty,) = Candidate.objects.filter(text="")
    assert empty.metadata == {"response_index": 1, "empty_answer": True}
    # The import report (set-up page, admin) says so in words.
    from annotate.wording import import_counts_text

    report = import_counts_text(result.counts)
    assert report.endswith("; 1 empty answer (kept, left out of training rows).")


def test_it_still_rejects_a_text_candidate_without_text(tmp_path, _media_root):
    def mutate(rows):
        del rows[1]["candidates"][1]["text"]

    _expect_rejected(
        _quorum_with(tmp_path, mutate),
        _media_root,
        line=2,
        field="candidates[1].text",
        text="needs text",
    )


def _expect_rejected(path: Path, media_root, *, line: int | None, field: str, text: str, **kwargs):
    before = _db_counts()
    files_before = _media_files(media_root)
    with pytest.raises(ImportRejected) as info:
        import_file(path=path, **kwargs)
    assert _db_counts() == before
    assert _media_files(media_root) == files_before
    problems = info.value.problems
    assert any(p.line == line and field in p.field and text in p.message for p in problems), (
        problems
    )
    return problems


def _quorum_with(tmp_path, mutate) -> Path:
    rows = _quorum_rows()
    mutate(rows)
    for name, data in {
        "media/q1.png": png_bytes(),
        "media/gen.png": png_bytes((1, 2, 3)),
        "media/clip.mp4": mp4_bytes(),
        "media/clip2.mp4": mp4_bytes(color=(9, 9, 9)),
    }.items():
        write(tmp_path / "bad" / name, data)
    return _write_jsonl(tmp_path / "bad" / "bad.jsonl", rows)


def test_it_rejects_malformed_json_naming_the_line(tmp_path, _media_root):
    path = _quorum_with(tmp_path, lambda rows: None)
    lines = path.read_text().splitlines()
    lines[2] = lines[2][:-5]
    path.write_text("\n".join(lines) + "\n")
    _expect_rejected(path, _media_root, line=3, field="", text="malformed JSON")


def test_it_rejects_an_unknown_outcome(tmp_path, _media_root):
    def mutate(rows):
        rows[2]["judgments"][0]["outcome"] = "draw"

    _expect_rejected(
        _quorum_with(tmp_path, mutate),
        _media_root,
        line=3,
        field="judgments[0].outcome",
        text="draw",
    )


def test_it_rejects_an_unknown_kind(tmp_path, _media_root):
    def mutate(rows):
        rows[1]["candidates"][0]["kind"] = "audio"

    _expect_rejected(
        _quorum_with(tmp_path, mutate),
        _media_root,
        line=2,
        field="candidates[0].kind",
        text="audio",
    )


def test_it_rejects_an_unknown_arena_winner(tmp_path, _media_root):
    path = _write_jsonl(
        tmp_path / "v.jsonl",
        [
            {"model_a": "a", "model_b": "b", "winner": "model_a"},
            {"model_a": "a", "model_b": "b", "winner": "bothbad"},
        ],
    )
    _expect_rejected(path, _media_root, line=2, field="winner", text="bothbad")


def test_it_rejects_a_ranking_that_misses_a_candidate(tmp_path, _media_root):
    def mutate(rows):
        rows[1]["judgments"][0]["ranking"] = [["q1-a"], ["q1-zz"]]

    _expect_rejected(
        _quorum_with(tmp_path, mutate),
        _media_root,
        line=2,
        field="judgments[0].ranking",
        text="q1-zz",
    )


def test_it_rejects_seed_rankings_of_the_wrong_length(tmp_path, _media_root):
    path = _write_jsonl(
        tmp_path / "s.jsonl", [{"prompt": "p", "responses": ["a", "b", "c"], "rankings": [1, 2]}]
    )
    _expect_rejected(path, _media_root, line=1, field="rankings", text="2 entries for 3")


def test_it_rejects_missing_media(tmp_path, _media_root):
    def mutate(rows):
        rows[2]["video"] = "media/nope.mp4"

    _expect_rejected(
        _quorum_with(tmp_path, mutate), _media_root, line=3, field="video", text="missing"
    )


def test_it_rejects_unreadable_media(tmp_path, _media_root):
    path = _quorum_with(tmp_path, lambda rows: rows[1].update(image="media"))
    _expect_rejected(path, _media_root, line=2, field="image", text="missing")


def test_it_rejects_bytes_that_are_not_an_image(tmp_path, _media_root):
    path = _quorum_with(tmp_path, lambda rows: None)
    (path.parent / "media" / "q1.png").write_bytes(b"GIF89a but not really an image at all")
    _expect_rejected(path, _media_root, line=2, field="image", text="not a valid image")


def test_it_rejects_an_image_claimed_as_video(tmp_path, _media_root):
    def mutate(rows):
        rows[2]["video"] = "media/q1.png"

    _expect_rejected(
        _quorum_with(tmp_path, mutate), _media_root, line=3, field="video", text="used as both"
    )


def test_it_rejects_a_png_renamed_to_mp4(tmp_path, _media_root):
    path = _quorum_with(tmp_path, lambda rows: None)
    (path.parent / "media" / "clip.mp4").write_bytes(png_bytes())
    _expect_rejected(path, _media_root, line=3, field="video", text="not a valid video")


def test_it_rejects_a_path_escaping_the_media_folder(tmp_path, _media_root):
    write(tmp_path / "secret.png", png_bytes())

    def mutate(rows):
        rows[1]["image"] = "../secret.png"

    _expect_rejected(
        _quorum_with(tmp_path, mutate), _media_root, line=2, field="image", text="escapes"
    )


def test_it_rejects_a_symlink_escaping_the_media_folder(tmp_path, _media_root):
    write(tmp_path / "secret.png", png_bytes())
    path = _quorum_with(tmp_path, lambda rows: rows[1].update(image="media/link.png"))
    (path.parent / "media" / "link.png").symlink_to(tmp_path / "secret.png")
    _expect_rejected(path, _media_root, line=2, field="image", text="outside the media folder")


def test_it_rejects_an_absolute_media_path(tmp_path, _media_root):
    write(tmp_path / "abs.png", png_bytes())

    def mutate(rows):
        rows[1]["image"] = str(tmp_path / "abs.png")

    _expect_rejected(
        _quorum_with(tmp_path, mutate), _media_root, line=2, field="image", text="absolute"
    )


@pytest.mark.parametrize("entry", ["../evil.png", "/abs/evil.png"])
def test_it_rejects_a_zip_entry_escaping_the_archive(entry, quorum_file, tmp_path, _media_root):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(quorum_file, "demo.jsonl")
        for f in (quorum_file.parent / "media").iterdir():
            zf.write(f, f"media/{f.name}")
        zf.writestr(zipfile.ZipInfo(entry), png_bytes())
    problems = _expect_rejected(archive, _media_root, line=None, field="zip", text=entry)
    assert len(problems) == 1


def test_it_rejects_media_over_the_size_limit(tmp_path, _media_root, settings):
    settings.QUORUM_MAX_MEDIA_BYTES = 1000
    path = _quorum_with(tmp_path, lambda rows: None)
    (path.parent / "media" / "clip.mp4").write_bytes(mp4_bytes(frames=48, size=64))
    _expect_rejected(path, _media_root, line=3, field="video", text="over the media limit")


def test_it_rejects_an_undetectable_format(tmp_path, _media_root):
    path = _write_jsonl(tmp_path / "x.jsonl", [{"foo": 1}])
    _expect_rejected(path, _media_root, line=1, field="", text="cannot detect the format")


def test_it_leaves_media_storage_unchanged_when_the_write_phase_fails(
    quorum_file, tmp_path, _media_root
):
    import_file(path=quorum_file, project_name="target")
    files_before = _media_files(_media_root)
    # Same candidate id under a different prompt: only found while writing, after media
    # were stored; the new file (a fresh picture) must be removed again.
    rows = [
        {
            "id": "other",
            "prompt": "x",
            "image": "m/new.png",
            "candidates": [
                {"id": "q1-a", "model": "m", "text": "t"},
                {"id": "new-b", "model": "m", "text": "u"},
            ],
        }
    ]
    write(tmp_path / "clash" / "m" / "new.png", png_bytes((7, 7, 7)))
    path = _write_jsonl(tmp_path / "clash" / "clash.jsonl", rows)
    project = Project.objects.get(name="target")
    before = _db_counts()
    with pytest.raises(ImportRejected, match="already belongs to another prompt"):
        import_file(path=path, project=project)
    assert _db_counts() == before
    assert _media_files(_media_root) == files_before


def test_it_reports_problems_through_the_command(tmp_path):
    path = _write_jsonl(
        tmp_path / "s.jsonl", [{"prompt": "p", "responses": ["a", "b"], "rankings": [1, 5]}]
    )
    with pytest.raises(CommandError, match=r"line 1, field 'rankings'"):
        call_command("import_project", str(path))
    assert Project.objects.count() == 0


@pytest.fixture
def eager_tasks():
    from config.celery import app

    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = False


def test_it_recomputes_flags_after_importing_judgments(
    tmp_path, eager_tasks, django_capture_on_commit_callbacks
):
    from curation.models import Flag

    cands = [{"id": f"x-{c}", "model": f"m{c}", "text": f"answer {c}"} for c in "abcd"]
    order = [[f"x-{c}"] for c in "abcd"]
    rows = [
        {
            "id": "x",
            "prompt": "Which is best?",
            "candidates": cands,
            "judgments": [
                {"annotator": "e1", "ranking": order},
                {"annotator": "e2", "ranking": order[::-1]},
            ],
        }
    ]
    path = _write_jsonl(tmp_path / "disputed.jsonl", rows)
    with django_capture_on_commit_callbacks(execute=True):
        result = import_file(path=path)
    assert Flag.objects.filter(project=result.project, kind="low_agreement", status="open").exists()


def test_it_runs_a_zip_above_the_row_threshold_as_a_job(quorum_file, tmp_path, settings):
    from annotate.models import ImportJob
    from annotate.services import import_job_create
    from workers.models import Job

    settings.QUORUM_ASYNC_IMPORT_ROWS = 1
    archive = tmp_path / "bundle.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(quorum_file, "data/rows.jsonl")
    job = import_job_create(path=archive)
    rows = sum(1 for line in quorum_file.read_text().splitlines() if line.strip())
    assert rows > 1
    assert (job.status, job.total_rows) == (ImportJob.Status.PENDING, rows)
    assert Job.objects.get(name="quorum.import_file").kwargs == {"import_job_id": job.pk}
