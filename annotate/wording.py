"""Stored figures in plain words for pages and messages, never a Python repr. Pure: no Django."""

from __future__ import annotations

from collections.abc import Mapping

# Count keys of an import (``annotate.services.import_file``) in reading order, with the noun.
_IMPORT_NOUNS = [
    ("prompts", "prompt", "prompts"),
    ("candidates", "candidate", "candidates"),
    ("tasks", "task", "tasks"),
    ("judgments", "judgment", "judgments"),
]


def plural(n: int, one: str, many: str) -> str:
    """``1 prompt``, ``3 prompts``."""
    return f"{n} {one if n == 1 else many}"


def import_counts_text(counts: Mapping[str, int]) -> str:
    """One sentence for an import's counts, e.g. ``6 prompts, 24 candidates, 6 tasks and
    18 judgments imported; 2 judgments were already there.``"""
    parts = [plural(counts.get(key, 0), one, many) for key, one, many in _IMPORT_NOUNS]
    known = {key for key, _, _ in _IMPORT_NOUNS} | {"skipped_existing", "empty_answers"}
    parts += [
        f"{value} {key.replace('_', ' ')}" for key, value in counts.items() if key not in known
    ]
    if any(counts.get(key, 0) for key, _, _ in _IMPORT_NOUNS):
        text = f"{', '.join(parts[:-1])} and {parts[-1]} imported"
    else:
        text = "Nothing new imported"
    notes = []
    if counts.get("skipped_existing"):
        n = counts["skipped_existing"]
        notes.append(
            f"{plural(n, 'judgment', 'judgments')} {'was' if n == 1 else 'were'} already there"
        )
    if counts.get("empty_answers"):
        n = counts["empty_answers"]
        notes.append(
            f"{plural(n, 'empty answer', 'empty answers')} (kept, left out of training rows)"
        )
    return text + ("; " + "; ".join(notes) if notes else "") + "."
