"""Builds the zip the import endpoints read: a Quorum JSONL file plus its media.

Pure: no network. The JSONL format is the one README.md ("Quorum JSONL") describes; media
travel inside the zip under content-derived names, so the same bytes are sent once and a
re-sent prompt refers to the same file (imports are idempotent on the server).
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

from quorum_client.types import CandidateIn, JudgmentIn, Media, PromptIn

# First bytes of the formats the server accepts; bytes given without a name are named after
# them (the server decodes the bytes to check them, whatever the name says).
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", ".png"),
    (b"\xff\xd8\xff", ".jpg"),
    (b"GIF8", ".gif"),
    (b"\x1a\x45\xdf\xa3", ".webm"),
)


def _suffix(data: bytes) -> str:
    for magic, suffix in _MAGIC:
        if data.startswith(magic):
            return suffix
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    if data[4:8] == b"ftyp":
        return ".mp4"
    return ".bin"


class _MediaFolder:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    def add(self, media: Media) -> str:
        if isinstance(media, bytes):
            data, suffix = media, _suffix(media)
        else:
            path = Path(media)
            data = path.read_bytes()
            suffix = path.suffix.lower() or _suffix(data)
        name = f"media/{hashlib.sha256(data).hexdigest()[:32]}{suffix}"
        self.files[name] = data
        return name


def _judgment_row(judgment: JudgmentIn) -> dict[str, Any]:
    if (judgment.ranking is None) == (judgment.pair is None):
        raise ValueError(f"judgment by {judgment.annotator!r}: give a ranking or a pair")
    row: dict[str, Any] = {"annotator": judgment.annotator}
    if judgment.ranking is not None:
        row["ranking"] = [list(group) for group in judgment.ranking]
    else:
        row["pair"] = list(judgment.pair or ())
        row["outcome"] = judgment.outcome
    if judgment.presented_order is not None:
        row["presented_order"] = list(judgment.presented_order)
    if judgment.rationale:
        row["rationale"] = judgment.rationale
    if judgment.duration_ms is not None:
        row["duration_ms"] = judgment.duration_ms
    return row


def _candidate_row(candidate: CandidateIn, media: _MediaFolder) -> dict[str, Any]:
    row: dict[str, Any] = {"id": candidate.id, "model": candidate.model}
    if candidate.text is not None:
        row["text"] = candidate.text
    if candidate.image is not None:
        row["image"] = media.add(candidate.image)
    if candidate.video is not None:
        row["video"] = media.add(candidate.video)
    if candidate.metadata:
        row["metadata"] = candidate.metadata
    return row


def prompt_row(prompt: PromptIn, media: _MediaFolder) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": prompt.id,
        "prompt": prompt.text,
        "candidates": [_candidate_row(c, media) for c in prompt.candidates],
    }
    if prompt.image is not None:
        row["image"] = media.add(prompt.image)
    if prompt.video is not None:
        row["video"] = media.add(prompt.video)
    if prompt.metadata:
        row["metadata"] = prompt.metadata
    if prompt.judgments:
        row["judgments"] = [_judgment_row(j) for j in prompt.judgments]
    return row


def import_zip(prompts: list[PromptIn], *, project_settings: dict[str, Any] | None = None) -> bytes:
    """The zip for ``prompts``; ``project_settings`` becomes the file's first line (read only
    when the import creates the project)."""
    media = _MediaFolder()
    rows: list[dict[str, Any]] = []
    if project_settings:
        rows.append({"project": project_settings})
    rows += [prompt_row(p, media) for p in prompts]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("prompts.jsonl", "".join(json.dumps(row) + "\n" for row in rows))
        for name, data in media.files.items():
            zf.writestr(name, data)
    return buffer.getvalue()
