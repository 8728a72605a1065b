"""A scoring run whose rows are built in processes (``QUORUM_ROW_BUILD_PROCESSES``) where one
prompt's media file kills its row-building process: the run finishes, the other prompts are
scored as without it, and that prompt's candidates are recorded as failed, naming the file.

The crash is a decoder that ends its process on the file (as a segfault in a decoding library
would); it is installed in the row-building processes by the function they run, so this module
imports no Django at its top (the spawned processes import it).
"""

from __future__ import annotations

import io
import os

import pytest

from workers.reward_model import row_building

# What the crashing decoder recognises: a PNG signature followed by this.
CRASHING = b"\x89PNG\r\n\x1a\nthis file crashes the decoder"


def _build_rows_with_a_crashing_decoder(item, index, mode, media):
    """`row_building._build_rows` in a process whose picture decoder ends the process on a
    file that starts with `CRASHING`."""
    import workers.reward_model.inputs as inputs

    if not getattr(inputs.load_image, "crashes", False):
        decode = inputs.load_image

        def load_image(path, **kwargs):
            with open(path, "rb") as file:
                if file.read(len(CRASHING)) == CRASHING:
                    os._exit(139)
            return decode(path, **kwargs)

        load_image.crashes = True
        inputs.load_image = load_image
    return row_building._build_rows(item, index, mode, media)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from workers.tiny import save_tiny_reward_model

    path = tmp_path_factory.mktemp("rm") / "tiny-rm"
    save_tiny_reward_model(path, seed=7)
    return path


def _picture_project(crashing_prompt: int):
    """Four prompts of two picture candidates each; one candidate of `crashing_prompt` is a
    file that crashes the decoder. Returns (project, that candidate)."""
    import numpy as np
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage
    from PIL import Image

    from tests.factories import make_project

    project = make_project(n_prompts=4, n_candidates=2)
    rng = np.random.default_rng(18)
    crashing = None
    for prompt_index, prompt in enumerate(project.prompts.order_by("id")):
        for index, candidate in enumerate(prompt.candidates.order_by("id")):
            if prompt_index == crashing_prompt and index == 1:
                data, name = CRASHING + bytes(64), "crashing.png"
                crashing = candidate
            else:
                picture = io.BytesIO()
                pixels = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(picture, "PNG")
                data, name = picture.getvalue(), f"{prompt_index}-{index}.png"
            candidate.kind = "image"
            candidate.media = default_storage.save(f"p{project.pk}/{name}", ContentFile(data))
            candidate.save()
    return project, crashing


def _score(project, path, name: str):
    from annotate.models import RewardModel
    from workers.models import ScoringRun
    from workers.scoring import score_prompts

    rm = RewardModel.objects.create(name=name, version="1", backend="multi_response", path=path)
    prompt_ids = list(project.prompts.values_list("id", flat=True))
    run = ScoringRun.objects.create(
        project=project, reward_model=rm, total_prompts=len(prompt_ids), prompt_ids=prompt_ids
    )
    score_prompts(run_id=run.pk, prompt_ids=prompt_ids)
    run.refresh_from_db()
    return rm, run


@pytest.mark.django_db(transaction=True)
def test_it_fails_the_prompt_whose_file_kills_its_process_alone(
    tiny_checkpoint, settings, tmp_path, monkeypatch
):
    from annotate.models import ModelScore
    from workers.models import ScoringRun
    from workers.scoring import scorer_for

    settings.DATA_DIR = tmp_path / "data"  # an empty media store: every file is decoded
    project, crashing = _picture_project(crashing_prompt=1)
    monkeypatch.setattr(row_building, "_build_rows", _build_rows_with_a_crashing_decoder)
    settings.QUORUM_ROW_BUILD_PROCESSES = 0
    threads_rm, _ = _score(project, str(tiny_checkpoint), "threads")
    settings.QUORUM_ROW_BUILD_PROCESSES = 2

    rm, run = _score(project, str(tiny_checkpoint), "processes")

    scorer = scorer_for(rm)
    try:
        assert scorer.row_pool.processes == 2
        rows = {row.candidate_id: row for row in ModelScore.objects.filter(reward_model=rm)}
        threads = dict(
            ModelScore.objects.filter(reward_model=threads_rm).values_list("candidate_id", "score")
        )
        assert run.status == ScoringRun.Status.DONE and run.done_prompts == 4
        assert run.scored_candidates == 6 and run.failed_candidates == 2
        failed = {cid for cid, row in rows.items() if row.score is None}
        assert failed == set(crashing.prompt.candidates.values_list("id", flat=True))
        for cid in failed:
            assert "row-building process died" in rows[cid].error
            assert os.path.basename(crashing.media.name) in rows[cid].error
        # The other prompts' scores are the threads' (which report the file as undecodable and
        # score the prompt's other candidate: its row shares a forward pass with the last
        # prompt's, whose scores then move by float rounding).
        assert {cid: rows[cid].score for cid in rows if cid not in failed} == pytest.approx(
            {cid: score for cid, score in threads.items() if cid not in failed}, rel=1e-5
        )
        assert (
            "cannot decode image"
            in ModelScore.objects.get(reward_model=threads_rm, candidate=crashing).error
        )
    finally:
        scorer.close()
