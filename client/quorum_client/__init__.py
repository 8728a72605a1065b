"""Python client for Quorum's REST API.

>>> from quorum_client import Quorum, PromptIn, CandidateIn
>>> q = Quorum.from_env()  # QUORUM_URL, QUORUM_TOKEN
"""

from quorum_client.client import Quorum
from quorum_client.errors import (
    AuthenticationError,
    Conflict,
    ImportRejected,
    InvalidRequest,
    JobFailed,
    JobTimeout,
    NotFound,
    PermissionDenied,
    QuorumError,
    RateLimited,
)
from quorum_client.types import (
    CandidateIn,
    Export,
    Flag,
    ImportJob,
    Job,
    Judgment,
    JudgmentIn,
    Leaderboard,
    LeaderboardRow,
    Project,
    PromptIn,
    Score,
    ScoringRun,
)

__all__ = [
    "AuthenticationError",
    "CandidateIn",
    "Conflict",
    "Export",
    "Flag",
    "ImportJob",
    "ImportRejected",
    "InvalidRequest",
    "Job",
    "JobFailed",
    "JobTimeout",
    "Judgment",
    "JudgmentIn",
    "Leaderboard",
    "LeaderboardRow",
    "NotFound",
    "PermissionDenied",
    "Project",
    "PromptIn",
    "Quorum",
    "QuorumError",
    "RateLimited",
    "Score",
    "ScoringRun",
]
