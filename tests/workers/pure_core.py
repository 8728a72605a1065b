"""What the pure-core worker tests (run with ``-p no:django``) share: a module imports
``_media_root`` (autouse there once imported) and the files it needs; the ``tokenizer`` and
``pool`` fixtures are in tests/workers/conftest.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from workers.media import encode_video


@pytest.fixture(autouse=True)
def _media_root():
    """Shadow tests/conftest.py's autouse Django MEDIA_ROOT fixture: a pure-core file runs
    with ``-p no:django`` and touches no Django settings."""


def picture_and_clip(folder: Path, seed: int) -> dict[str, Path]:
    """A random 200 x 150 PNG and a 12-frame 96 x 64 MP4 in ``folder``, from ``seed``."""
    rng = np.random.default_rng(seed)
    picture = folder / "picture.png"
    Image.fromarray(rng.integers(0, 255, (150, 200, 3), dtype=np.uint8)).save(picture)
    clip = encode_video(folder / "clip.mp4", rng.integers(0, 255, (12, 64, 96, 3), np.uint8))
    return {"image": picture, "video": clip}


def packed_forward(scorer, item):
    """``item`` scored in one packed row of a Qwen2-VL-style ``scorer``: the row, its batch, the
    model's scores of it and the backbone's last hidden states (no gradients)."""
    import torch

    builder = scorer.builder
    (row,) = builder.plan(0, builder.encode_item(item), "packed").rows
    batch = builder.collate([row], "packed")
    with torch.no_grad():
        scores = scorer.model(batch)[0]
        hidden = scorer.model.backbone(
            input_ids=batch.input_ids,
            position_ids=batch.position_ids,
            mm_token_type_ids=batch.mm_token_type_ids,
            pixel_values=batch.pixel_values,
            image_grid_thw=batch.image_grid_thw,
        ).last_hidden_state[0]
    return row, batch, scores, hidden
