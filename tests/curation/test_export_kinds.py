"""One export per project kind, read back by every consumer (issue 11's "Done when").

Each kind is exported with a train and a test split, then: every Parquet file through pyarrow,
every HF folder and split through ``load_from_disk`` (with its dataset card), the seed-format
folders through a loader that follows the seed trainer's rules, the multimodal folders and the
pairs by their documented layout, every media path under the export root. The README's loading
code for the kind and its trainer call (the base folder) are read from the README and run
against the export, so they cannot drift.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from django.core.files.base import ContentFile

from annotate.models import Candidate, Prompt, Task
from annotate.services import import_file
from curation import services
from curation.models import DatasetExport
from tests.curation.builders import (  # noqa: F401  (fast_passwords: autouse fixture)
    fast_passwords,
    judge_pair,
    judge_ranking,
    members,
    slots,
)
from tests.curation.test_export import PATH_LIKE, _lines, _read_back, _seed_loader
from tests.curation.test_export_votes_only import _votes
from tests.factories import make_project
from tests.media_fixtures import mp4_bytes, png_bytes

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("_data_dir")]

REPO = Path(__file__).resolve().parents[2]
SPLITS = {"train": 0.5, "test": 0.5}
N_PROMPTS = 6


# --------------------------------------------------------------------------- projects


def _ranked(project, users):
    members(project, users)
    for task in Task.objects.filter(project=project).order_by("id"):
        ids = slots(task)
        judge_ranking(task, users["annotator"], [[c] for c in ids])
        judge_ranking(task, users["annotator2"], [[ids[0]], ids[1:3], ids[3:]])
    return project


def _text(users, tmp_path):
    return _ranked(make_project(n_prompts=N_PROMPTS, n_candidates=4), users)


def _prompt_media(users, kind):
    project = make_project(n_prompts=N_PROMPTS, n_candidates=4)
    for n, prompt in enumerate(Prompt.objects.filter(project=project).order_by("id")):
        if kind == "image":
            prompt.image.save(f"q{n}.png", ContentFile(png_bytes(size=10 + n)), save=True)
        else:
            clip = mp4_bytes(frames=4, size=16, color=(30 * n, 90, 160))
            prompt.video.save(f"q{n}.mp4", ContentFile(clip), save=True)
    return _ranked(project, users)


def _answer_media(users, kind):
    project = make_project(n_prompts=N_PROMPTS, n_candidates=4)
    for n, cand in enumerate(Candidate.objects.filter(project=project).order_by("id")):
        cand.kind, cand.text = kind, ""
        if kind == "image":
            data, name = png_bytes(color=(10 * n, 40, 90), size=8 + n % 5), f"c{n}.png"
        else:
            data, name = mp4_bytes(frames=4, size=16, color=(10 * n, 40, 200)), f"c{n}.mp4"
        cand.media.save(name, ContentFile(data), save=True)
    return _ranked(project, users)


def _pairwise(users, tmp_path):
    project = make_project(mode="pairwise", n_prompts=N_PROMPTS, k=2)
    members(project, users)
    for task in Task.objects.filter(project=project).order_by("id"):
        judge_pair(task, users["annotator"], "a")
        judge_pair(task, users["annotator2"], "a")
    return project


def _votes_only(users, tmp_path):
    return import_file(path=_votes(tmp_path / "battles.json"), project_name="arena").project


KINDS = {
    "text answers to text prompts": _text,
    "text answers to image prompts": lambda users, _tmp: _prompt_media(users, "image"),
    "text answers to video prompts": lambda users, _tmp: _prompt_media(users, "video"),
    "text-to-image": lambda users, _tmp: _answer_media(users, "image"),
    "text-to-video": lambda users, _tmp: _answer_media(users, "video"),
    "pairwise": _pairwise,
    "votes only": _votes_only,
}

# Folders each kind writes (JSONL), as the README's table by project kind says.
FOLDERS = {
    "text answers to text prompts": {"pairs", "rankings", "rankings_4"},
    "text answers to image prompts": {"pairs", "rankings", "rankings_4"},
    "text answers to video prompts": {"pairs", "rankings", "rankings_4"},
    "text-to-image": {"pairs", "rankings_multimodal", "rankings_4_multimodal"},
    "text-to-video": {"pairs", "rankings_multimodal", "rankings_4_multimodal"},
    "pairwise": {"pairs", "rankings", "rankings_4"},
    "votes only": {"pairs", "rankings", "rankings_4"},
}
# Tables left empty by design (every split empty, a datasheet warning).
EMPTY = {
    "pairwise": {"rankings_4"},
    "votes only": {"pairs", "rankings", "rankings_4"},
}


# --------------------------------------------------------------------------- consumers


def _competition_ranks(ranks: list[int]) -> bool:
    """1 = best, ties share a rank, the next rank skips (1, 1, 3): the seed trainer's ranks."""
    return bool(ranks) and all(r == 1 + sum(x < r for x in ranks) for r in ranks)


def _multimodal_loader(root: Path, folder: str) -> list[dict]:
    """Reads a ``*_multimodal`` folder by its documented layout: ``responses[i]`` is answer
    text ("" for a media answer, never a path), ``response_kinds[i]`` says which list holds
    the file, every path resolves under the export root."""
    rows = []
    for path in sorted((root / folder).glob("*.jsonl")):
        for row in _lines(path):
            assert row["prompt"].strip()
            n = len(row["responses"])
            assert n >= 2 and _competition_ranks(row["rankings"]) and len(row["rankings"]) == n
            assert len(row["response_kinds"]) == len(row["response_images"]) == n
            assert len(row["response_videos"]) == n
            for i, kind in enumerate(row["response_kinds"]):
                text, image, video = (
                    row[k][i] for k in ("responses", "response_images", "response_videos")
                )
                assert not PATH_LIKE.search(text), text
                if kind == "text":
                    assert text.strip() and image is None and video is None
                else:
                    assert text == ""
                    media = image if kind == "image" else video
                    assert (image if kind == "video" else video) is None
                    assert (root / media).is_file(), media
            for key in ("image", "video"):
                if key in row:
                    assert (root / row[key]).is_file()
            rows.append(row)
    return rows


def _pairs_loader(root: Path) -> dict[str, list[dict]]:
    """Every pairs JSONL file: content on both sides, text never a path, media under the root."""
    by_split = {}
    for split in SPLITS:
        rows = _lines(root / "pairs" / f"{split}.jsonl")
        for pair in rows:
            for side in ("chosen", "rejected"):
                assert not PATH_LIKE.search(pair[side]), pair[side]
                media = [pair[f"{side}_image"], pair[f"{side}_video"]]
                assert pair[side].strip() or any(media), pair
                for path in filter(None, media):
                    assert (root / path).is_file(), path
            for key in ("image", "video"):
                if pair[key]:
                    assert (root / pair[key]).is_file()
        by_split[split] = rows
    return by_split


def _readme_export_section() -> str:
    readme = (REPO / "README.md").read_text()
    start = readme.index("### Export files")
    return readme[start : readme.index("\n## ", start)]


def _readme_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", _readme_export_section(), re.DOTALL)


def _run_readme_loading_code(kind: str, root: Path) -> list[dict]:
    """Runs the README's loading blocks that apply to ``kind`` with ``root`` = this export;
    returns each block's names after it ran."""
    blocks = [b for b in _readme_blocks("python") if 'root = "var/exports/7/v3"' in b]
    assert len(blocks) == 3, "README: the export section's loading blocks changed"
    every, text, media = blocks
    assert "rankings/train.jsonl" in text and "rankings_multimodal/train.jsonl" in media
    run = [every, media] if kind in ("text-to-image", "text-to-video") else [every, text]
    spaces = []
    for block in run:
        code = block.replace('root = "var/exports/7/v3"', f"root = {str(root)!r}")
        namespace: dict = {}
        exec(compile(code, "README.md (export loading)", "exec"), namespace)
        spaces.append(namespace)
    return spaces


# --------------------------------------------------------------------------- the test


@pytest.mark.parametrize("kind", KINDS)
def test_each_project_kind_exports_files_every_consumer_reads(users, tmp_path, kind):
    from PIL import Image

    project = KINDS[kind](users, tmp_path)
    export = services.export_create(project=project, options={"splits": SPLITS}, enqueue=False)
    export = services.export_build(export_id=export.pk)
    assert export.status == DatasetExport.Status.DONE, export.error
    root = export.path
    sheet = json.loads((root / "datasheet.json").read_text())

    # pyarrow, load_from_disk for every folder and split (dataset card), the seed loader.
    loaded = _read_back(export)
    folders = {p.name for p in root.iterdir() if p.is_dir()} - {"parquet", "hf", "media"}
    assert folders == FOLDERS[kind]
    written = {f["path"].rstrip("/") for f in sheet["files_written"]}
    assert folders <= written
    for missing in sheet["files_not_written"]:
        assert not (root / missing["path"]).exists()

    # Rows per table and split: the same in JSONL, Parquet and HF; both splits used.
    for name in ("pairs", "rankings", "rankings_4"):
        table = pq.read_table(root / "parquet" / f"{name}.parquet").to_pylist()
        for split in SPLITS:
            jsonl = sum(
                len(_lines(root / folder / f"{split}.jsonl"))
                for folder in folders
                if folder == name or folder == f"{name}_multimodal"
            )
            in_table = sum(row["split"] == split for row in table)
            assert jsonl == in_table == loaded[name][split].num_rows, (name, split)
            if name in EMPTY.get(kind, ()):
                assert in_table == 0
            else:
                assert in_table > 0, (name, split)
        if name in EMPTY.get(kind, ()):
            assert any(w.startswith(f"table {name} is empty") for w in sheet["warnings"])
    if kind not in EMPTY or kind == "pairwise":
        assert sheet["counts"]["by_split"]["test"]["prompts"] > 0

    # Each layout by its rules.
    pairs = _pairs_loader(root)
    seed = [
        row for f in ("rankings", "rankings_4") if f in folders for row in _seed_loader(root / f)
    ]
    multimodal = [
        row
        for f in ("rankings_multimodal", "rankings_4_multimodal")
        if f in folders
        for row in _multimodal_loader(root, f)
    ]
    if kind == "votes only":
        assert not seed and not multimodal and not any(pairs.values())
        assert sheet["without_content"]["prompts_dropped"] > 0
    elif kind in ("text-to-image", "text-to-video"):
        media_kind = kind.removeprefix("text-to-")
        assert not seed and multimodal
        assert all(set(row["response_kinds"]) == {media_kind} for row in multimodal)
    else:
        assert seed and not multimodal
        if kind == "pairwise":
            assert all(len(row["responses"]) == 2 for row in seed)
        for key, media_kind in (("image", "image"), ("video", "video")):
            wanted = kind == f"text answers to {media_kind} prompts"
            assert all((key in row) == wanted for row in seed), key

    # The README's loading code for this kind, run on this export.
    spaces = _run_readme_loading_code(kind, root)
    every = spaces[0]
    assert every["table"].num_rows == sum(d.num_rows for d in every["rankings"].values())
    assert set(every["pairs"]) == set(SPLITS)
    if kind == "text-to-image":
        assert isinstance(spaces[1]["picture"], Image.Image)
        assert all(os.path.isfile(f) for f in spaces[1]["files"])
    elif kind == "text-to-video":
        assert (root / spaces[1]["video"]).read_bytes()[4:8] == b"ftyp"
        assert all(os.path.isfile(f) for f in spaces[1]["files"])
    else:
        assert len(spaces[1]["rows"]) == loaded["rankings"]["train"].num_rows
        if kind == "text answers to image prompts":
            assert os.path.isfile(spaces[1]["picture"])
        if kind == "text answers to video prompts":
            assert os.path.isfile(spaces[1]["clip"])


# --------------------------------------------------------------------------- base folder


def _trainer_call() -> dict[str, str]:
    (block,) = [b for b in _readme_blocks("sh") if "--image_base_dir" in b]
    words = shlex.split(block.replace("\\\n", " "))
    return {w: words[i + 1] for i, w in enumerate(words) if w.startswith("--")}


def _resolves(base: Path, path: str) -> bool:
    """The seed loader's rule: an absolute path as it is, else under its base folder."""
    p = Path(path)
    return (p.is_absolute() and p.exists()) or (base / p).exists()


@pytest.mark.parametrize("kind", ["image", "video"])
def test_the_readme_trainer_call_names_the_export_root_as_base_folder(users, kind):
    export = services.export_create(project=_prompt_media(users, kind), options={}, enqueue=False)
    export = services.export_build(export_id=export.pk)
    call = _trainer_call()
    named = Path(call["--train_data_path"]).parent.parent  # .../<root>/rankings/train.jsonl
    assert call["--image_base_dir"] == call["--video_base_dir"] == str(named)
    # The README's folder, put where this export lies: every row resolves under it.
    data = Path(str(export.path) + call["--train_data_path"].removeprefix(str(named)))
    base = export.path / Path(call[f"--{kind}_base_dir"]).relative_to(named)
    rows = _lines(data)
    assert len(rows) == N_PROMPTS
    assert all(_resolves(base, row[kind]) for row in rows)
    # The natural wrong guess, media/, resolves nothing (the trainer would go text-only).
    assert not any(_resolves(export.path / "media", row[kind]) for row in rows)
