"""Dataset exports: the files load, options do what they say, versions are immutable, and
every door (service, CLI, page, API, admin, a real Celery worker) builds the same thing."""

from __future__ import annotations

import html
import io
import json
import re
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from django.core.management import call_command
from django.urls import reverse

from annotate.models import Candidate, Judgment, ModelScore, Task
from annotate.services import api_token_create
from curation import services
from curation.exporting import ExportOptions, ExportOptionsInvalid, parse_splits
from curation.models import AnnotatorQuality, DatasetExport
from tests.curation.builders import (  # noqa: F401  (fast_passwords: autouse fixture)
    disputed_ranking_project,
    fast_passwords,
    judge_pair,
    judge_ranking,
    members,
    score,
    slots,
)
from tests.factories import make_project

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("_data_dir")]


def _build(project, **options) -> DatasetExport:
    export = services.export_create(project=project, options=options, enqueue=False)
    export = services.export_build(export_id=export.pk)
    assert export.status == DatasetExport.Status.DONE, export.error
    return export


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def ranked(users):
    """Six prompts, four annotators (one reverses everything), N=4."""
    project, people = disputed_ranking_project(users, n_prompts=6)
    return project, people


# --------------------------------------------------------------------------- files


def test_it_writes_the_seed_training_format(ranked):
    project, _ = ranked
    export = _build(project)
    rows = _lines(export.path / "rankings" / "train.jsonl")
    assert len(rows) == 6
    for row in rows:
        assert set(row) <= {"prompt", "responses", "rankings", "image", "video"}
        assert {"prompt", "responses", "rankings"} <= set(row)
        assert len(row["rankings"]) == len(row["responses"]) == 4
        # Ranks 1..N, 1 = best, ties share a rank ("1134"), one per response.
        ranks = sorted(row["rankings"])
        assert ranks[0] == 1
        for i, rank in enumerate(ranks):
            assert rank == 1 + sum(r < rank for r in ranks)
            assert 1 <= rank <= len(ranks) and rank <= i + 1
    # The reverser is outvoted: the best response is "Answer 0" everywhere.
    for row in rows:
        assert row["responses"][row["rankings"].index(1)].startswith("Answer 0")


def test_it_allows_ties_in_the_seed_format(users):
    project = make_project(n_prompts=1, n_candidates=4, k=2)
    members(project, users)
    task = Task.objects.get(project=project)
    a, b, c, d = slots(task)
    for user in (users["annotator"], users["annotator2"]):
        judge_ranking(task, user, [[a], [b, c], [d]])
    export = _build(project)
    (row,) = _lines(export.path / "rankings" / "train.jsonl")
    texts = [Candidate.objects.get(pk=x).text for x in (a, b, c, d)]
    by_text = dict(zip(row["responses"], row["rankings"], strict=True))
    assert [by_text[t] for t in texts] == [1, 2, 2, 4]


def test_it_writes_parquet_that_pyarrow_reads(ranked):
    project, _ = ranked
    export = _build(project, splits={"train": 0.5, "test": 0.5})
    pairs = pq.read_table(export.path / "parquet" / "pairs.parquet")
    rankings = pq.read_table(export.path / "parquet" / "rankings.parquet")
    assert pairs.num_rows == export.counts["pairs"] > 0
    assert rankings.num_rows == 6
    assert set(pairs.column("split").to_pylist()) == {"train", "test"}
    assert {"chosen", "rejected", "margin", "agreement", "n_judgments", "judgment_ids"} <= set(
        pairs.column_names
    )


def test_it_writes_an_hf_dataset_that_load_from_disk_reads(ranked):
    import datasets

    project, _ = ranked
    export = _build(project, splits={"train": 0.5, "test": 0.5})
    pairs = datasets.load_from_disk(str(export.path / "hf" / "pairs"))
    rankings = datasets.load_from_disk(str(export.path / "hf" / "rankings"))
    assert set(pairs) == {"train", "test"}
    assert pairs["train"].num_rows + pairs["test"].num_rows == export.counts["pairs"]
    assert rankings["train"].num_rows + rankings["test"].num_rows == 6
    assert rankings["train"].features["rankings"].feature.dtype == "int32"


def test_hf_fingerprints_follow_the_content(ranked):
    """`datasets` keys its transform cache (``.map``) by a dataset's fingerprint: two exports
    of the same rows share one, and a changed row or another split never does."""
    import datasets

    project, _ = ranked

    def fingerprints(export: DatasetExport) -> dict[str, str]:
        loaded = datasets.load_from_disk(str(export.path / "hf" / "rankings"))
        return {split: part._fingerprint for split, part in loaded.items()}

    splits = {"train": 0.5, "test": 0.5}
    first, again = (
        fingerprints(_build(project, splits=splits)),
        fingerprints(_build(project, splits=splits)),
    )
    assert first == again and first["train"] != first["test"]
    judgment = Judgment.objects.filter(project=project, kind="ranking").order_by("id").first()
    judgment.ranking = list(reversed(judgment.ranking))
    judgment.save(update_fields=["ranking"])
    changed = fingerprints(_build(project, splits=splits))
    assert changed != first


def test_it_writes_pairs_with_margin_agreement_and_provenance(ranked):
    project, people = ranked
    export = _build(project)
    pairs = _lines(export.path / "pairs" / "train.jsonl")
    assert pairs
    for pair in pairs:
        assert pair["chosen"].startswith("Answer") and pair["rejected"].startswith("Answer")
        assert pair["n_judgments"] == 4
        assert pair["margin"] > 0
        assert 0 <= pair["agreement"] <= 1
        assert pair["provenance"]["source"] == "consensus"
        assert len(pair["provenance"]["judgment_ids"]) == 4
    # "Answer 0" beats "Answer 1" in three of four judgments.
    top = next(
        p
        for p in pairs
        if p["chosen"].startswith("Answer 0") and p["rejected"].startswith("Answer 1")
    )
    assert (top["votes_chosen"], top["votes_rejected"]) == (3, 1)


def test_it_samples_four_response_variants_from_full_rankings(users):
    project = make_project(n_prompts=2, n_candidates=6, k=1)
    members(project, users)
    for task in Task.objects.filter(project=project):
        judge_ranking(task, users["annotator"], [[c] for c in slots(task)])
    export = _build(project)
    variants = _lines(export.path / "rankings_4" / "train.jsonl")
    assert len(variants) == 2 * 3
    for row in variants:
        assert len(row["responses"]) == 4
        assert sorted(row["rankings"]) == [1, 2, 3, 4]
        # Induced from the full ranking: a lower answer number is always better.
        numbers = [int(r.split()[1]) for r in row["responses"]]
        order = sorted(range(4), key=lambda i: row["rankings"][i])
        assert [numbers[i] for i in order] == sorted(numbers)


def test_it_writes_a_datasheet(ranked):
    project, _ = ranked
    export = _build(project)
    sheet = json.loads((export.path / "datasheet.json").read_text())
    assert sheet["counts"]["prompts_exported"] == 6
    assert sheet["agreement"]["exported"]["krippendorff_alpha"]["rankings"]["ordinal"] is not None
    assert sheet["leaderboard"][0]["model"] == "model-a"
    assert {f["path"] for f in sheet["files"]} >= {
        "pairs/train.jsonl",
        "rankings/train.jsonl",
        "datasheet.md",
    }
    md = (export.path / "datasheet.md").read_text()
    assert "## Dropped, and why" in md and "## Leaderboard" in md and "## Cycles removed" in md
    assert export.datasheet == sheet | {"files": export.datasheet["files"]}


def test_it_lists_every_file_it_wrote_with_its_digest(ranked):
    from curation.exporting import _file_list

    export = _build(ranked[0], splits={"train": 0.5, "test": 0.5})
    assert [f["path"] for f in export.files].count("datasheet.json") == 1
    assert export.files == _file_list(export.path, skip=set())


def test_it_lists_every_file_and_the_media_of_an_export_with_media(users):
    from curation.exporting import _file_list

    export = _build(_image_project(users), include_media=True)
    assert export.files[-1]["path"] == "media/" and export.files[-1]["files"] == 6
    assert export.files == _file_list(export.path, skip=set())


def test_it_stores_files_under_the_data_dir_by_project_and_version(ranked, _data_dir):
    project, _ = ranked
    export = _build(project)
    assert export.path == Path(_data_dir) / "exports" / str(project.pk) / "v1"
    assert (export.path / "datasheet.json").is_file()


PATH_LIKE = re.compile(r"(^|/)media/|\.(png|jpe?g|gif|webp|mp4|webm)$", re.IGNORECASE)


def _seed_loader(folder: Path) -> list[dict]:
    """Reads a seed-format folder by the seed trainer's rules: answers are non-empty text
    (empty ones dropped), ranks are 1..N with ties, ``image``/``video`` resolve under the base
    folder the README names (the export root)."""
    root = folder.parent
    samples = []
    for path in sorted(folder.glob("*.jsonl")):
        for row in _lines(path):
            assert set(row) <= {"prompt", "responses", "rankings", "image", "video"}
            # The seed loader raises on a row without prompt text (and trains on the next
            # row in its place).
            assert isinstance(row["prompt"], str) and row["prompt"].strip(), row
            kept = [(r, k) for r, k in zip(row["responses"], row["rankings"], strict=True) if r]
            assert len(kept) == len(row["responses"]) >= 2, row
            for response, _ in kept:
                assert isinstance(response, str) and not PATH_LIKE.search(response), response
            ranks = sorted(row["rankings"])
            assert ranks[0] == 1
            assert all(r == 1 + sum(x < r for x in ranks) for r in ranks)
            for key in ("image", "video"):
                if key in row:
                    assert (root / row[key]).is_file(), row[key]
            samples.append(row)
    return samples


def _read_back(export: DatasetExport) -> dict[str, dict]:
    """Every Parquet file through pyarrow and every HF folder and split through
    ``load_from_disk``; returns the HF tables by name."""
    import datasets

    splits = set(export.options["splits"])
    parquet = sorted((export.path / "parquet").glob("*.parquet"))
    assert {p.stem for p in parquet} == {"pairs", "rankings", "rankings_4"}
    for path in parquet:
        pq.read_table(path)
    loaded = {}
    for folder in sorted((export.path / "hf").iterdir()):
        assert "## Counts" in (folder / "README.md").read_text()  # the dataset card
        dsd = datasets.load_from_disk(str(folder))
        assert set(dsd) == splits
        for split in splits:
            table = pq.read_table(export.path / "parquet" / f"{folder.name}.parquet")
            assert dsd[split].num_rows == table.column("split").to_pylist().count(split)
            list(dsd[split])
        loaded[folder.name] = dsd
    assert set(loaded) == {"pairs", "rankings", "rankings_4"}
    for name in ("rankings", "rankings_4"):
        if (export.path / name).is_dir():
            _seed_loader(export.path / name)
    return loaded


def test_it_loads_every_table_of_a_pairwise_project(users):
    project = make_project(mode="pairwise", n_prompts=4, k=1)
    members(project, users)
    for task in Task.objects.filter(project=project):
        judge_pair(task, users["annotator"], "a")
    export = _build(project, splits={"train": 0.5, "test": 0.5})
    loaded = _read_back(export)
    assert sum(d.num_rows for d in loaded["pairs"].values()) == 4
    assert all(d.num_rows == 0 for d in loaded["rankings_4"].values())
    assert loaded["rankings_4"]["test"].features["rankings"].feature.dtype == "int32"
    sheet = json.loads((export.path / "datasheet.json").read_text())
    assert any("rankings_4 is empty" in w for w in sheet["warnings"])
    assert "## Warnings" in (export.path / "datasheet.md").read_text()


def test_it_loads_every_split_of_a_three_candidate_ranking_project(users):
    project = make_project(n_prompts=1, n_candidates=3, k=1)
    members(project, users)
    task = Task.objects.get(project=project)
    judge_ranking(task, users["annotator"], [[c] for c in slots(task)])
    export = _build(project, splits={"train": 0.5, "test": 0.5})
    loaded = _read_back(export)
    assert sorted(d.num_rows for d in loaded["rankings"].values()) == [0, 1]
    empty = "test" if loaded["rankings"]["test"].num_rows == 0 else "train"
    assert f"table rankings: split {empty!r} is empty (0 rows)" in export.datasheet["warnings"]


def _image_project(users):
    from django.core.files.base import ContentFile

    from tests.media_fixtures import png_bytes

    project = make_project(n_prompts=2, n_candidates=3, k=1)
    members(project, users)
    for task in Task.objects.filter(project=project):
        ids = slots(task)
        for n, cid in enumerate(ids):
            cand = Candidate.objects.get(pk=cid)
            cand.kind, cand.text = "image", ""
            cand.media.save(f"c{cid}.png", ContentFile(png_bytes(size=8 + n)), save=True)
        judge_ranking(task, users["annotator"], [[c] for c in ids])
    return project


def test_it_puts_no_media_path_in_a_text_field_for_image_candidates(users):
    from tests.media_fixtures import png_bytes

    export = _build(_image_project(users))
    loaded = _read_back(export)
    # The seed format cannot hold image answers: not written, and the datasheet says why.
    assert not (export.path / "rankings").exists()
    assert any(f["path"] == "rankings/" for f in export.datasheet["files_not_written"])
    rows = _lines(export.path / "rankings_multimodal" / "train.jsonl")
    pairs = _lines(export.path / "pairs" / "train.jsonl")
    assert len(rows) == 2 and len(pairs) == 6
    for row in rows + list(loaded["rankings"]["train"]):
        assert row["response_kinds"] == ["image"] * 3
        assert not any(PATH_LIKE.search(r) for r in row["responses"] if r)
        assert not any(row["responses"])
    for row in rows:
        for path in row["response_images"]:
            assert (export.path / path).read_bytes()[:8] == png_bytes()[:8]
    for pair in pairs + list(loaded["pairs"]["train"]):
        assert not pair["chosen"] and not pair["rejected"]
        assert pair["chosen_video"] is None
    for pair in pairs:
        for key in ("chosen_image", "rejected_image"):
            assert (export.path / pair[key]).is_file()


def test_it_loads_hf_image_columns_as_the_pictures_the_rows_name(users):
    import datasets
    from PIL import Image

    export = _build(_image_project(users))
    loaded = _read_back(export)
    pairs = {p["id"]: p for p in _lines(export.path / "pairs" / "train.jsonl")}
    for pair in loaded["pairs"]["train"]:
        for key in ("chosen_image", "rejected_image"):
            assert isinstance(pair[key], Image.Image)
            with Image.open(export.path / pairs[pair["id"]][key]) as expected:
                assert pair[key].size == expected.size
                assert pair[key].tobytes() == expected.convert(pair[key].mode).tobytes()
        assert pair["image"] is None
    rows = {
        tuple(r["response_images"])
        for r in _lines(export.path / "rankings_multimodal" / "train.jsonl")
    }
    for row in loaded["rankings"]["train"]:
        sizes = [img.size for img in row["response_images"]]
        assert any(sizes == [Image.open(export.path / p).size for p in paths] for paths in rows)
    # The file's path stays beside the picture (pairs: chosen_media / rejected_media).
    for pair in loaded["pairs"]["train"].cast_column("chosen_image", datasets.Image(decode=False)):
        assert pair["chosen_media"] == pairs[pair["id"]]["chosen_image"]
        assert pair["chosen_image"]["bytes"] == (export.path / pair["chosen_media"]).read_bytes()
    # Parquet keeps plain paths relative to the export root.
    table = pq.read_table(export.path / "parquet" / "pairs.parquet")
    assert all((export.path / p).is_file() for p in table.column("chosen_image").to_pylist())


def test_it_resolves_context_images_under_the_export_root(users):
    from django.core.files.base import ContentFile

    from annotate.models import Prompt
    from tests.media_fixtures import png_bytes

    project = make_project(n_prompts=2, n_candidates=3, k=1)
    members(project, users)
    for n, prompt in enumerate(Prompt.objects.filter(project=project)):
        prompt.image.save(f"q{n}.png", ContentFile(png_bytes(size=10 + n)), save=True)
    for task in Task.objects.filter(project=project):
        judge_ranking(task, users["annotator"], [[c] for c in slots(task)])
    export = _build(project)
    loaded = _read_back(export)
    rows = _seed_loader(export.path / "rankings")
    assert len(rows) == 2 and all(row["image"].startswith("media/") for row in rows)
    sizes = sorted(row["image"].size for row in loaded["rankings"]["train"])
    assert sizes == [(10, 10), (11, 11)]
    assert not (export.path / "rankings_multimodal").exists()


def test_it_resolves_context_videos_under_the_export_root(users):
    from django.core.files.base import ContentFile

    from annotate.models import Prompt
    from tests.media_fixtures import mp4_bytes

    project = make_project(n_prompts=2, n_candidates=3, k=1)
    members(project, users)
    for n, prompt in enumerate(Prompt.objects.filter(project=project)):
        clip = mp4_bytes(frames=4, size=16, color=(40 * n, 90, 160))
        prompt.video.save(f"q{n}.mp4", ContentFile(clip), save=True)
    for task in Task.objects.filter(project=project):
        judge_ranking(task, users["annotator"], [[c] for c in slots(task)])
    export = _build(project)
    loaded = _read_back(export)
    rows = _seed_loader(export.path / "rankings")
    assert len(rows) == 2 and all(row["video"].startswith("media/") for row in rows)
    assert all("image" not in row for row in rows)
    for row in loaded["pairs"]["train"]:
        assert (export.path / row["video"]).read_bytes()[4:8] == b"ftyp"
    assert not (export.path / "rankings_multimodal").exists()


def test_it_writes_video_answers_to_the_multimodal_layout(users):
    from django.core.files.base import ContentFile

    from tests.media_fixtures import mp4_bytes

    project = make_project(n_prompts=1, n_candidates=2, k=1)
    members(project, users)
    task = Task.objects.get(project=project)
    a, b = slots(task)
    cand = Candidate.objects.get(pk=a)
    cand.kind, cand.text = "video", ""
    # Encoded once: the export must hold the stored bytes, and a second libx264 encode of the
    # same frames is not always byte-identical (seen once in ~18,000 encodes under load).
    clip = mp4_bytes()
    cand.media.save("v.mp4", ContentFile(clip), save=True)
    judge_ranking(task, users["annotator"], [[a], [b]])
    export = _build(project)
    loaded = _read_back(export)
    (row,) = _lines(export.path / "rankings_multimodal" / "train.jsonl")
    assert row["response_kinds"] == [
        "video" if v else "text" for v in row["response_videos"]
    ] and sorted(row["response_kinds"]) == ["text", "video"]
    video = next(v for v in row["response_videos"] if v)
    assert (export.path / video).read_bytes() == clip
    assert "Answer 1 to question 0" in row["responses"]
    (pair,) = loaded["pairs"]["train"]
    assert (pair["chosen"], pair["chosen_video"]) == ("", video)
    assert pair["rejected"] == "Answer 1 to question 0" and pair["rejected_video"] is None


def test_it_keeps_votes_without_content_out_of_training_files(users):
    project = make_project(n_prompts=3, n_candidates=2, k=1)
    members(project, users)
    Candidate.objects.filter(project=project).update(text="")
    for task in Task.objects.filter(project=project):
        judge_ranking(task, users["annotator"], [[c] for c in slots(task)])
    export = _build(project)
    loaded = _read_back(export)
    assert all(d.num_rows == 0 for t in loaded.values() for d in t.values())
    assert _lines(export.path / "pairs" / "train.jsonl") == []
    sheet = export.datasheet
    assert sheet["without_content"]["candidates"] == 6
    assert sheet["without_content"]["prompts_dropped"] == 3
    # The leaderboard still counts the votes.
    assert sheet["leaderboard"][0]["model"] == "model-a"
    assert "## Rows without content" in (export.path / "datasheet.md").read_text()


def test_it_drops_an_empty_answer_from_seed_rows(users):
    project = make_project(n_prompts=1, n_candidates=4, k=1)
    members(project, users)
    task = Task.objects.get(project=project)
    a, b, c, d = slots(task)
    Candidate.objects.filter(pk=b).update(text="")
    judge_ranking(task, users["annotator"], [[a], [b], [c], [d]])
    export = _build(project)
    (row,) = _seed_loader(export.path / "rankings")
    by_text = dict(zip(row["responses"], row["rankings"], strict=True))
    texts = [Candidate.objects.get(pk=x).text for x in (a, c, d)]
    assert [by_text[t] for t in texts] == [1, 2, 3]
    assert all(p["chosen"] and p["rejected"] for p in _lines(export.path / "pairs" / "train.jsonl"))


# --------------------------------------------------------------------------- options


def test_it_splits_by_prompt_with_no_prompt_in_two_splits(users):
    project = make_project(n_prompts=20, n_candidates=3, k=1)
    members(project, users)
    for task in Task.objects.filter(project=project):
        judge_ranking(task, users["annotator"], [[c] for c in slots(task)])
    export = _build(project, splits={"train": 0.8, "test": 0.2}, seed=7)
    seen: dict[str, str] = {}
    for split in ("train", "test"):
        for folder in ("pairs", "rankings"):
            for row in _lines(export.path / folder / f"{split}.jsonl"):
                assert seen.setdefault(row["prompt"], split) == split
    counts = export.counts["by_split"]
    assert (counts["train"]["prompts"], counts["test"]["prompts"]) == (16, 4)
    again = _build(project, splits={"train": 0.8, "test": 0.2}, seed=7)
    assert (again.path / "rankings" / "test.jsonl").read_text() == (
        export.path / "rankings" / "test.jsonl"
    ).read_text()


def test_it_keeps_prompts_with_the_same_text_in_one_split(users):
    from annotate.models import Prompt

    project = make_project(n_prompts=20, n_candidates=3, k=1)
    members(project, users)
    # Five texts, four prompts each, under different ids and spellings.
    for prompt in Prompt.objects.filter(project=project):
        n = int(prompt.external_id[1:])
        prompt.text = f"  Question {n % 5}? " if n % 2 else f"question {n % 5}?"
        prompt.save(update_fields=["text"])
    for task in Task.objects.filter(project=project):
        judge_ranking(task, users["annotator"], [[c] for c in slots(task)])
    export = _build(project, splits={"train": 0.6, "test": 0.4}, seed=3)
    split_of: dict[str, str] = {}
    for split in ("train", "test"):
        for folder in ("pairs", "rankings"):
            for row in _lines(export.path / folder / f"{split}.jsonl"):
                key = " ".join(row["prompt"].casefold().split())
                assert split_of.setdefault(key, split) == split
    assert sorted(split_of.values()) == ["test", "test", "train", "train", "train"]
    counts = export.counts["by_split"]
    assert (counts["train"]["prompts"], counts["test"]["prompts"]) == (12, 8)
    assert "| test | 8 |" in (export.path / "datasheet.md").read_text()
    again = _build(project, splits={"train": 0.6, "test": 0.4}, seed=3)
    assert (again.path / "rankings" / "test.jsonl").read_text() == (
        export.path / "rankings" / "test.jsonl"
    ).read_text()


def test_it_keeps_prompts_with_the_same_context_image_in_one_split():
    from curation.exporting import content_splits

    keys = {1: ["text:a", "media:x"], 2: ["text:b"], 3: ["text:c", "media:x"], 4: ["text:d"]}
    for seed in range(10):
        out = content_splits(keys, {"train": 0.5, "test": 0.5}, seed)
        assert out[1] == out[3]
        assert content_splits(keys, {"train": 0.5, "test": 0.5}, seed) == out


def test_it_keeps_prompts_with_the_same_context_image_bytes_in_one_split(users):
    """Two prompts whose pictures are the same bytes (stored under two names) share a split,
    whatever their text: the split key is the file's content, not its name."""
    from django.core.files.base import ContentFile

    from annotate.models import Prompt
    from tests.media_fixtures import png_bytes

    project = make_project(n_prompts=16, n_candidates=3, k=1)
    members(project, users)
    for n, prompt in enumerate(Prompt.objects.filter(project=project).order_by("id")):
        picture = png_bytes(color=(30 * (n // 2), 60, 90), size=10 + n // 2)
        prompt.image.save(f"q{n}.png", ContentFile(picture), save=True)
    assert len({p.image.name for p in Prompt.objects.filter(project=project)}) == 16
    for task in Task.objects.filter(project=project):
        judge_ranking(task, users["annotator"], [[c] for c in slots(task)])
    for seed in range(3):
        export = _build(project, splits={"train": 0.5, "test": 0.5}, seed=seed)
        split_of: dict[bytes, set[str]] = {}
        for row in pq.read_table(export.path / "parquet" / "rankings.parquet").to_pylist():
            picture = (export.path / row["image"]).read_bytes()
            split_of.setdefault(picture, set()).add(row["split"])
        assert len(split_of) == 8
        assert all(len(splits) == 1 for splits in split_of.values()), split_of.values()
        assert sorted(s for (s,) in split_of.values()) == ["test"] * 4 + ["train"] * 4


def test_it_keeps_prompts_without_text_out_of_the_seed_format(users):
    """A prompt whose question is its picture (no prompt text) is a row the seed loader skips,
    so it stays out of rankings/ (the datasheet says so) and in Parquet, HF and pairs."""
    from django.core.files.base import ContentFile

    from annotate.models import Prompt
    from tests.media_fixtures import png_bytes

    project = make_project(n_prompts=2, n_candidates=3, k=1)
    members(project, users)
    for n, prompt in enumerate(Prompt.objects.filter(project=project).order_by("id")):
        prompt.image.save(f"q{n}.png", ContentFile(png_bytes(size=10 + n)), save=True)
    Prompt.objects.filter(project=project, external_id="p1").update(text="  ")
    for task in Task.objects.filter(project=project):
        judge_ranking(task, users["annotator"], [[c] for c in slots(task)])
    export = _build(project)
    loaded = _read_back(export)
    (row,) = _seed_loader(export.path / "rankings")
    assert row["prompt"] == "Question 0?"
    assert loaded["rankings"]["train"].num_rows == 2
    assert {p["prompt_id"] for p in _lines(export.path / "pairs" / "train.jsonl")} == {"p0", "p1"}
    (seed_file,) = [f for f in export.datasheet["files_written"] if f["path"] == "rankings/"]
    assert seed_file["rows"] == 1 and "1 rows without prompt text" in seed_file["why"]
    assert "1 rows without prompt text" in (export.path / "datasheet.md").read_text()


def test_it_applies_reviewer_decisions_unless_told_not_to(users, ranked):
    project, _ = ranked
    tasks = list(Task.objects.filter(project=project).order_by("id"))
    services.review_discard_prompt(actor=users["reviewer"], prompt=tasks[0].prompt)
    a, b, c, d = slots(tasks[1])
    services.review_set_ranking(
        actor=users["reviewer"], prompt=tasks[1].prompt, ranking=[[d], [c], [b], [a]]
    )
    export = _build(project)
    assert export.counts["prompts_exported"] == 5
    assert export.datasheet["dropped"]["prompts"] == {"discarded by a reviewer": 1}
    assert export.counts["reviewer_rankings_used"] == 1
    reviewed = [
        p
        for p in _lines(export.path / "pairs" / "train.jsonl")
        if p["provenance"]["source"] == "reviewer"
    ]
    assert len(reviewed) == 6
    assert all(int(p["chosen"].split()[1]) > int(p["rejected"].split()[1]) for p in reviewed)

    ignored = _build(project, use_decisions=False)
    assert ignored.counts["reviewer_rankings_used"] == 0
    assert ignored.counts["prompts_exported"] == 6
    assert not ignored.datasheet["dropped"]["judgments"]


def test_it_drops_prompts_below_the_minimum_agreement(users, ranked):
    project, _ = ranked
    export = _build(project, min_agreement=0.9)
    assert export.counts["prompts_exported"] == 0
    assert export.datasheet["dropped"]["prompts"] == {"below the minimum agreement": 6}
    lenient = _build(project, min_agreement=0.3)
    assert lenient.counts["prompts_exported"] == 6


def _shown_both_ways(project) -> None:
    """Reverses the display order on every other task. The fixtures show every ranking in
    slot order, best first: the joint model's position term (the export uses it) cannot tell
    such annotators from ones who click the first answer."""
    tasks = Task.objects.filter(project=project).order_by("id")
    for judgment in Judgment.objects.filter(task__in=list(tasks)[1::2]):
        judgment.presented_order = judgment.presented_order[::-1]
        judgment.save(update_fields=["presented_order"])


def test_it_leaves_out_annotators_marked_unreliable(ranked):
    project, people = ranked
    _shown_both_ways(project)
    AnnotatorQuality.objects.create(
        project=project, evaluator=f"user:{people[3].pk}", marked_unreliable=True
    )
    export = _build(project)
    assert export.datasheet["dropped"]["judgments"] == {"by annotators marked unreliable": 6}
    pairs = _lines(export.path / "pairs" / "train.jsonl")
    assert pairs and all(p["n_judgments"] == 3 for p in pairs)
    assert sum(p["votes_rejected"] for p in pairs) == 6  # people[2]'s c/d swap on six prompts


def test_it_uses_the_reward_model_as_an_evaluator_when_asked(users):
    project = make_project(n_prompts=1, n_candidates=4, k=1)
    members(project, users)
    task = Task.objects.get(project=project)
    a, b, c, d = slots(task)
    judge_ranking(task, users["annotator"], [[a], [b, c, d]])  # says nothing about b, c, d
    # The model agrees with the human where they overlap (a first), so it is trusted on the
    # rest; one that contradicts every human vote is gated out (the second half).
    score(project, {a: 4.0, b: 3.0, c: 2.0, d: 1.0})
    plain = _build(project)
    with_rm = _build(project, rm_evaluator=True)
    assert _lines(plain.path / "rankings" / "train.jsonl")[0]["rankings"].count(2) == 3
    row = _lines(with_rm.path / "rankings" / "train.jsonl")[0]
    by_text = dict(zip(row["responses"], row["rankings"], strict=True))
    texts = [Candidate.objects.get(pk=x).text for x in (a, b, c, d)]
    assert [by_text[t] for t in texts] == [1, 2, 3, 4]  # humans first, the model orders the rest
    assert with_rm.datasheet["method"]["reward_model"] == f"rm-{project.pk}@1"
    assert with_rm.datasheet["method"]["joint_model"]["reward_model"]["used"] is True
    ModelScore.objects.filter(candidate_id=a).update(score=0.0)
    against = _build(project, rm_evaluator=True)
    assert _lines(against.path / "rankings" / "train.jsonl")[0]["rankings"].count(2) == 3
    assert against.datasheet["method"]["joint_model"]["reward_model"]["used"] is False


def test_it_turns_denoising_off_on_request(users):
    project = make_project(n_prompts=1, n_candidates=3, k=3)
    people = members(project, users, extra_annotators=1)
    task = Task.objects.get(project=project)
    a, b, c = slots(task)
    # Each shown in the same order relative to their ranking (no one looks like a clicker).
    judge_ranking(task, people[0], [[a], [b], [c]], presented=[b, a, c])
    judge_ranking(task, people[1], [[b], [c], [a]], presented=[c, b, a])
    judge_ranking(task, people[2], [[c], [a], [b]], presented=[a, c, b])
    denoised = _build(project)
    raw = _build(project, denoise=False)
    assert denoised.datasheet["cycles"]["prompts_with_cycles"] == 1
    assert raw.datasheet["cycles"]["prompts_with_cycles"] == 0
    # Majority arcs a>b, b>c, c>a: denoising overrules one, the raw export keeps all three.
    assert raw.counts["pairs"] == 3 and denoised.counts["pairs"] == 2


@pytest.mark.parametrize(
    "options, field",
    [
        ({"splits": {"train": 0.5}}, "splits"),
        ({"splits": "train=0.8;test=0.2"}, "splits"),
        ({"min_agreement": 2}, "min_agreement"),
        ({"seed": -1}, "seed"),
        ({"denoise": "yes"}, "denoise"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_it_rejects_bad_options_naming_them(options, field):
    with pytest.raises(ExportOptionsInvalid) as error:
        ExportOptions.from_dict(options)
    assert error.value.field == field


def test_it_parses_split_specs():
    assert parse_splits("train=0.8,test=0.2") == {"train": 0.8, "test": 0.2}


# --------------------------------------------------------------------------- immutability


def test_it_numbers_versions_per_project_and_never_rebuilds_a_done_one(ranked):
    project, _ = ranked
    first = _build(project)
    written = (first.path / "datasheet.json").read_text()
    again = services.export_build(export_id=first.pk)
    assert again.finished_at == first.finished_at
    assert (first.path / "datasheet.json").read_text() == written
    second = _build(project, seed=3)
    other = _build(make_project(name="other-project", n_prompts=1))
    assert (first.version, second.version, other.version) == (1, 2, 1)


def test_it_refuses_to_save_a_done_export(ranked):
    project, _ = ranked
    export = _build(project)
    export.options = {"seed": 99}
    with pytest.raises(ValueError, match="immutable"):
        export.save()
    export.refresh_from_db()
    assert export.options["seed"] == 0


def test_it_records_a_failure_with_its_reason(ranked, settings):
    project, _ = ranked
    export = services.export_create(project=project, options={}, enqueue=False)
    DatasetExport.objects.filter(pk=export.pk).update(options={"splits": "nonsense"})
    export = services.export_build(export_id=export.pk)
    assert export.status == DatasetExport.Status.FAILED
    assert "splits" in export.error
    assert not export.path.exists()


# --------------------------------------------------------------------------- doors


def test_it_exports_from_the_command_line(ranked):
    project, _ = ranked
    out = io.StringIO()
    call_command(
        "export_dataset",
        project.name,
        "--no-denoise",
        "--min-agreement",
        "0.1",
        "--split",
        "train=0.5,test=0.5",
        "--seed",
        "4",
        stdout=out,
    )
    export = DatasetExport.objects.get(project=project)
    assert export.status == "done"
    assert export.options["denoise"] is False and export.options["min_agreement"] == 0.1
    assert export.options["splits"] == {"train": 0.5, "test": 0.5} and export.options["seed"] == 4
    assert f"v{export.version}" in out.getvalue()


def test_it_names_the_bad_option_on_the_command_line(ranked):
    from django.core.management.base import CommandError

    project, _ = ranked
    with pytest.raises(CommandError, match="--split"):
        call_command("export_dataset", project.name, "--split", "train=2")
    assert not DatasetExport.objects.exists()


@pytest.mark.parametrize(
    "user_key, status", [("annotator", 403), ("reviewer", 403), ("outsider", 404)]
)
def test_it_lets_only_admins_download(client, users, ranked, user_key, status):
    project, _ = ranked
    export = _build(project)
    client.force_login(users[user_key])
    assert client.get(reverse("curation:export_download", args=[export.pk])).status_code == status
    assert (
        client.get(reverse("curation:export_file", args=[export.pk, "datasheet.md"])).status_code
        == status
    )


def test_it_sends_anonymous_downloads_to_the_login(client, ranked):
    project, _ = ranked
    export = _build(project)
    response = client.get(reverse("curation:export_download", args=[export.pk]))
    assert response.status_code == 302


@pytest.mark.parametrize("user_key", ["admin", "staff"])
def test_it_streams_the_export_as_a_zip(client, users, ranked, user_key):
    project, _ = ranked
    export = _build(project)
    client.force_login(users[user_key])
    response = client.get(reverse("curation:export_download", args=[export.pk]))
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    names = archive.namelist()
    prefix = f"quorum-{project.pk}-v{export.version}/"
    assert f"{prefix}rankings/train.jsonl" in names
    assert archive.read(f"{prefix}datasheet.json") == (export.path / "datasheet.json").read_bytes()


def test_it_serves_no_file_outside_the_export(client, users, ranked, _data_dir):
    project, _ = ranked
    export = _build(project)
    (Path(_data_dir) / "secret.txt").write_text("no")
    client.force_login(users["admin"])
    url = reverse("curation:export_file", args=[export.pk, "../../../secret.txt"])
    assert client.get(url).status_code == 404


def test_it_starts_an_export_from_the_exports_page(
    client, users, ranked, django_capture_on_commit_callbacks
):
    project, _ = ranked
    client.force_login(users["admin"])
    url = reverse("curation:exports", args=[project.pk])
    with django_capture_on_commit_callbacks() as callbacks:
        response = client.post(
            url,
            {"denoise": "on", "use_decisions": "on", "splits": "train=0.9,test=0.1", "seed": "2"},
        )
    assert response.status_code == 302
    export = DatasetExport.objects.get(project=project)
    assert (
        export.status == "pending"
        and export.options["seed"] == 2
        and export.options["rm_evaluator"] is False
    )
    assert len(callbacks) == 1  # the Celery task is enqueued once the row is committed
    assert client.post(url, {"splits": "train=2"}).status_code == 400


def test_it_starts_an_export_from_the_admin(
    client, users, ranked, django_capture_on_commit_callbacks
):
    project, _ = ranked
    client.force_login(users["staff"])
    with django_capture_on_commit_callbacks() as callbacks:
        response = client.post(
            reverse("admin:curation_datasetexport_add"),
            {
                "project": project.pk,
                "denoise": "on",
                "splits": "train=0.8,test=0.2",
                "seed": "1",
                "min_agreement": "0.5",
            },
        )
    assert response.status_code == 302
    export = DatasetExport.objects.get(project=project)
    assert (
        export.options["splits"] == {"train": 0.8, "test": 0.2}
        and export.options["min_agreement"] == 0.5
    )
    assert len(callbacks) == 1
    page = client.get(reverse("admin:curation_datasetexport_change", args=[export.pk]))
    assert page.status_code == 200 and b'name="_save"' not in page.content  # read-only


def _auth(user) -> dict:
    _token, key = api_token_create(user=user, name="test")
    return {"HTTP_AUTHORIZATION": f"Bearer {key}"}


def test_it_starts_and_follows_an_export_through_the_api(
    client, users, ranked, django_capture_on_commit_callbacks
):
    project, _ = ranked
    headers = _auth(users["admin"])
    with django_capture_on_commit_callbacks() as callbacks:
        response = client.post(
            f"/api/projects/{project.pk}/exports",
            data=json.dumps({"splits": "train=0.5,test=0.5", "seed": 1}),
            content_type="application/json",
            **headers,
        )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["version"] == 1 and body["status"] == "pending"
    assert len(callbacks) == 1
    services.export_build(export_id=body["id"])
    status = client.get(f"/api/exports/{body['id']}", **headers).json()
    assert status["status"] == "done" and status["progress"] == 100
    download = client.get(f"/api/exports/{body['id']}/download", **headers)
    assert download.status_code == 200
    assert zipfile.ZipFile(io.BytesIO(b"".join(download.streaming_content))).namelist()


def test_it_refuses_api_exports_to_non_admins_and_bad_options(client, users, ranked):
    project, _ = ranked
    url = f"/api/projects/{project.pk}/exports"
    body = json.dumps({"splits": {"train": 1.0}})
    assert (
        client.post(
            url, data=body, content_type="application/json", **_auth(users["reviewer"])
        ).status_code
        == 403
    )
    bad = client.post(
        url,
        data=json.dumps({"min_agreement": 3}),
        content_type="application/json",
        **_auth(users["admin"]),
    )
    assert bad.status_code == 422 and "min_agreement" in bad.json()["detail"]
    assert not DatasetExport.objects.exists()


def test_it_offers_the_reward_model_as_evaluator_when_the_project_has_one(client, users, ranked):
    from tests.curation.builders import score

    project, _ = ranked
    client.force_login(users["admin"])
    url = reverse("curation:exports", args=[project.pk])
    assert 'name="rm_evaluator">' in client.get(url).content.decode()
    rm = score(project, {})
    project.active_reward_model = rm
    project.save()
    assert 'name="rm_evaluator" checked>' in client.get(url).content.decode()


def test_it_cancels_a_pending_export_from_the_exports_page(client, users, ranked):
    project, _ = ranked
    export = services.export_create(project=project, options={})
    url = reverse("curation:export_cancel", args=[export.pk])
    client.force_login(users["outsider"])
    assert client.post(url).status_code == 404
    client.force_login(users["admin"])
    page = client.get(reverse("curation:exports", args=[project.pk]))
    assert url in page.content.decode()  # the Cancel button of the pending row
    assert client.post(url).status_code == 302
    export.refresh_from_db()
    assert export.status == "cancelled" and export.error == "cancelled by padmin"
    assert client.get(url).status_code == 405


def test_it_refuses_to_cancel_a_done_export(client, users, ranked):
    project, _ = ranked
    export = services.export_create(project=project, options={}, enqueue=False)
    services.export_build(export_id=export.pk)
    client.force_login(users["admin"])
    response = client.post(reverse("curation:export_cancel", args=[export.pk]), follow=True)
    assert "Not cancelled: export v1 is done." in response.content.decode()
    export.refresh_from_db()
    assert export.status == "done"


def test_it_shows_an_exports_warnings_on_the_exports_page(client, users):
    project = make_project(n_prompts=1, n_candidates=3, k=1)
    members(project, users)
    task = Task.objects.get(project=project)
    judge_ranking(task, users["annotator"], [[c] for c in slots(task)])
    export = _build(project, splits={"train": 0.5, "test": 0.5})
    client.force_login(users["admin"])
    page = client.get(reverse("curation:exports", args=[project.pk])).content.decode()
    assert f'aria-label="warnings of v{export.version}"' in page
    for warning in export.datasheet["warnings"]:
        assert warning.replace("'", "&#x27;") in page


def test_it_shows_an_exports_warnings_on_its_datasheet_page(client, users):
    project = make_project(n_prompts=1, n_candidates=3, k=1)
    members(project, users)
    task = Task.objects.get(project=project)
    judge_ranking(task, users["annotator"], [[c] for c in slots(task)])
    export = _build(project, splits={"train": 0.5, "test": 0.5})
    assert any("split" in w and "is empty" in w for w in export.datasheet["warnings"])
    client.force_login(users["admin"])
    url = reverse("curation:export_datasheet", args=[export.pk])
    page = client.get(url).content.decode()
    warnings = html.unescape(page[page.index("<h2>Warnings</h2>") : page.index("<h2>Options</h2>")])
    for warning in export.datasheet["warnings"]:
        assert f"<li>{warning}</li>" in warnings, warnings


def test_it_writes_hf_folders_as_datasets_save_to_disk_does(tmp_path):
    import datasets
    import pyarrow as pa
    from datasets.table import InMemoryTable

    from curation.exporting import hf_image_columns, write_hf_folder

    datasets.disable_progress_bars()
    table = pa.table(
        {
            "split": ["train", "train", "test"],
            "image": ["media/p/one.png", None, "media/two.png"],
            "response_images": [["media/a.png", None], None, []],
            "n": [1, 2, 3],
        }
    )
    table, features = hf_image_columns(table, lambda path: f"bytes of {path}".encode())
    info = datasets.DatasetInfo(features=features)
    parts = {
        split: datasets.Dataset(
            InMemoryTable(table.filter(pa.compute.equal(table["split"], split))), info=info.copy()
        )
        for split in ("train", "test", "empty")
    }
    datasets.DatasetDict(parts).save_to_disk(str(tmp_path / "library"), num_shards={"empty": 1})
    write_hf_folder(
        tmp_path / "ours",
        {split: part.data.table for split, part in parts.items()},
        features,
        {split: part._fingerprint for split, part in parts.items()},
    )
    library = datasets.load_from_disk(str(tmp_path / "library"))
    ours = datasets.load_from_disk(str(tmp_path / "ours"))
    assert list(ours) == ["train", "test", "empty"]
    for split in parts:
        assert ours[split].features == library[split].features
        assert ours[split].data.table.equals(library[split].data.table)
        for name in ("state.json", "dataset_info.json"):
            assert (tmp_path / "ours" / split / name).read_text() == (
                tmp_path / "library" / split / name
            ).read_text()
    cell = ours["train"].with_format("arrow")[0]["image"].to_pylist()[0]
    assert cell == {"bytes": b"bytes of media/p/one.png", "path": "one.png"}
