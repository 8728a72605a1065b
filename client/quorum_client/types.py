"""What the API returns (``Project``, ``Judgment``, ``Export``, ...) and what the client sends
(``PromptIn``, ``CandidateIn``, ``JudgmentIn``), as plain dataclasses.

Output types take the API's JSON field for field (fields the server adds later are ignored,
so an older client keeps working); timestamps become timezone-aware ``datetime`` objects.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Self

_TIMESTAMPS = frozenset({"created_at", "updated_at", "started_at", "finished_at", "closed_at"})


class _FromJson:
    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        values = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            value = data.get(f.name)
            if f.name in _TIMESTAMPS and isinstance(value, str):
                value = datetime.fromisoformat(value)
            values[f.name] = value
        return cls(**values)


@dataclass(frozen=True)
class Project(_FromJson):
    id: int
    name: str
    mode: str
    candidates_per_task: int
    annotators_per_task: int
    ties_allowed: bool
    blind: bool


@dataclass(frozen=True)
class ImportJob(_FromJson):
    id: int
    project_id: int | None
    status: str  # pending | running | done | failed
    format: str
    total_rows: int
    processed_rows: int
    progress_percent: int
    counts: dict[str, Any]
    errors: list[str]
    created_at: datetime
    finished_at: datetime | None

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed")


@dataclass(frozen=True)
class Judgment(_FromJson):
    """One evaluator's verdict, candidates named by their external ids."""

    id: int
    task_id: int
    prompt_id: int
    prompt_external_id: str
    kind: str  # ranking | pair
    candidates: list[str]  # the task's candidates in slot order; a pair's outcome "a" is [0]
    ranking: list[list[str]] | None  # tie groups, best first; None for a pair
    outcome: str  # a | b | tie | both_bad for a pair; "" for a ranking
    presented_order: list[str]
    annotator: str  # username, or the external annotator id of an imported source
    source: str  # human | external
    source_name: str
    rationale: str
    ratings: dict[str, Any]
    duration_ms: int | None
    created_at: datetime
    updated_at: datetime

    @property
    def winner(self) -> str | None:
        """A pair's winning candidate (None for a tie, both bad, or a ranking)."""
        if self.kind != "pair" or self.outcome not in ("a", "b"):
            return None
        return self.candidates["ab".index(self.outcome)]


@dataclass(frozen=True)
class Flag(_FromJson):
    id: int
    kind: str
    key: str
    status: str
    severity: float
    prompt_id: int | None
    prompt_external_id: str | None
    task_id: int | None
    judgment_id: int | None
    evaluator: str
    annotator: str
    details: dict[str, Any]
    evidence: int
    created_at: datetime
    updated_at: datetime
    closed_at: datetime | None


@dataclass(frozen=True)
class LeaderboardRow(_FromJson):
    rank: int
    model: str
    score: float
    ci_low: float | None
    ci_high: float | None
    comparisons: int
    component: int


@dataclass(frozen=True)
class Leaderboard:
    rows: list[LeaderboardRow]
    leader: str | None
    votes_to_change_leader: int | None
    new_leader: str | None
    votes: int

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Leaderboard:
        return cls(
            rows=[LeaderboardRow.from_json(row) for row in data["rows"]],
            leader=data.get("leader"),
            votes_to_change_leader=data.get("votes_to_change_leader"),
            new_leader=data.get("new_leader"),
            votes=data.get("votes", 0),
        )


@dataclass(frozen=True)
class Export(_FromJson):
    """A dataset export version; its files download as a zip once ``status`` is done."""

    id: int
    project_id: int
    version: int
    status: str  # pending | running | done | failed | cancelled
    progress: int
    phase: str
    options: dict[str, Any]
    counts: dict[str, Any]
    error: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    datasheet: dict[str, Any]

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed", "cancelled")


@dataclass(frozen=True)
class ScoringRun(_FromJson):
    id: int
    project_id: int
    reward_model_id: int
    status: str  # running | done
    total_prompts: int
    done_prompts: int
    scored_candidates: int
    failed_candidates: int
    progress_percent: int
    reason: str
    created_at: datetime
    finished_at: datetime | None

    @property
    def finished(self) -> bool:
        return self.status == "done"


@dataclass(frozen=True)
class Score(_FromJson):
    candidate: str
    prompt: str
    candidate_id: int
    prompt_id: int
    score: float | None
    error: str


@dataclass(frozen=True)
class Job(_FromJson):
    """A background job the API hands out by id (reward-model training)."""

    id: int
    name: str
    status: str  # queued | published | running | done | failed | cancelled
    progress: int
    phase: str
    error: str
    result: dict[str, Any] | None

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed", "cancelled")


# --------------------------------------------------------------------------- what is sent

# Media: a path to a file, or its bytes (named by content; the server checks what they are).
Media = str | Path | bytes


@dataclass
class CandidateIn:
    """A candidate response: ``text``, or an ``image``/``video``."""

    id: str
    model: str
    text: str | None = None
    image: Media | None = None
    video: Media | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class JudgmentIn:
    """A judgment made outside Quorum, imported with its prompt (source: the import).

    Give ``ranking`` (tie groups of candidate ids, best first), or ``pair`` (two candidate
    ids) with ``outcome`` (``a`` | ``b`` | ``tie`` | ``both_bad``, relative to ``pair``).
    """

    annotator: str
    ranking: list[list[str]] | None = None
    pair: tuple[str, str] | list[str] | None = None
    outcome: str | None = None
    presented_order: list[str] | None = None
    rationale: str = ""
    duration_ms: int | None = None


@dataclass
class PromptIn:
    """A prompt with its candidates (at least two), an optional context image or video, and
    optional judgments already made."""

    id: str
    text: str
    candidates: list[CandidateIn]
    image: Media | None = None
    video: Media | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    judgments: list[JudgmentIn] = field(default_factory=list)
