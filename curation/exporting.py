"""Dataset snapshots: options, and writing one export folder from a project's judgments.

Called by ``curation.services.export_build`` (the Celery task, the CLI and the admin all end
there). The folder, written to a temporary path and renamed into place by the service::

    datasheet.md, datasheet.json      what is in it, what was dropped and why, the leaderboard,
                                      which files were written and why, warnings (empty splits)
    pairs/<split>.jsonl               chosen/rejected pairs with margin, agreement, provenance;
                                      answer text in chosen/rejected, media in chosen_image /
                                      rejected_image / chosen_video / rejected_video
    rankings/<split>.jsonl            the seed paper's training format, one prompt a line, for
                                      prompts whose responses are all text:
                                      {"prompt", "responses", "rankings", "image"?, "video"?}
    rankings_multimodal/<split>.jsonl prompts with image/video responses: the seed keys plus
                                      response_kinds, response_images, response_videos
    rankings_4[_multimodal]/          4-response variants sampled from the full rankings
    parquet/{pairs,rankings,rankings_4}.parquet   every row of each table (a ``split`` column)
    hf/{pairs,rankings,rankings_4}/   ``datasets.DatasetDict`` folders (``load_from_disk``);
                                      every split is present, empty ones as typed empty tables;
                                      image columns are ``Image`` features (the pictures' bytes),
                                      video columns paths
    media/...                         the media the rows name (when ``include_media``)

Paths in rows (``image``, ``video``, ``*_image``, ``*_video``, ``response_images``,
``response_videos``) are relative to the export folder, the trainer's base folder. No text
field (``prompt``, ``responses``, ``chosen``, ``rejected``) ever holds a path. Candidates
without content (model names only, empty answers) never reach a row.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from curation import agreement as A
from curation import consensus as C
from curation import graph as G

if TYPE_CHECKING:
    # pyarrow loads in the worker that writes an export, not in every process that imports
    # this module for its options and zip streaming (web, admin, commands).
    import pyarrow as pa

    # numpy and scipy too: `batch_consensus` is imported where a snapshot is built.
    from curation import batch_consensus as BC
    from curation.download import DeflatedMember, DeflatedMembers

FORMAT = "quorum-dataset-export/2"
NO_CONTENT_PAIR = "a side without content (model name only, or an empty answer)"
NO_CONTENT_RANKING = "fewer than two candidates with content (model names only, or empty answers)"
UNPAIRED = "pair judgments on a task without two candidate slots (a slot removed after judging)"
RM_WEIGHT = 0.5
VARIANT_SIZE = 4
OVERRULED_FILE = "overruled_arcs.jsonl"
Progress = Callable[[int, str], None]


class ExportOptionsInvalid(ValueError):
    """Bad export options; ``field`` names the option."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")


@dataclass(frozen=True)
class ExportOptions:
    """How a snapshot is built.

    Attributes:
        denoise: Remove a minimum feedback arc set per prompt before ranking (off: weighted
            majority vote, cycles and all).
        rm_evaluator: Add the project's active reward model as one more, down-weighted
            evaluator (weight 0.5; a reliable human counts about 1).
        min_agreement: Drop prompts whose annotator agreement is below this (prompts without
            overlapping judgments are kept: there is nothing to measure).
        use_decisions: Reviewer decisions override: final rankings replace the consensus,
            discarded prompts are left out and annotators marked unreliable are dropped.
            Off, the export ignores all three (tasks withdrawn otherwise stay out).
        splits: Split name -> fraction, by prompt.
        seed: Seeds the split assignment, response shuffling and variant sampling.
        include_media: Copy the media the rows name into the export.
        variants_per_prompt: 4-response variants sampled per prompt with more than 4 ranked
            candidates.
        model_prior: Rank by the joint model with the model-strength prior (`curation.prior`):
            a candidate's strength is its model's strength across prompts plus a deviation
            whose spread held-out votes choose. Strong human consensus stays a hard
            constraint. Needs ``denoise``; not combined with ``rm_evaluator`` yet.
    """

    denoise: bool = True
    rm_evaluator: bool = False
    min_agreement: float | None = None
    use_decisions: bool = True
    splits: dict[str, float] = field(default_factory=lambda: {"train": 1.0})
    seed: int = 0
    include_media: bool = True
    variants_per_prompt: int = 3
    model_prior: bool = False

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None) -> ExportOptions:
        """Validated options; unknown keys and wrong types raise `ExportOptionsInvalid`."""
        raw = dict(raw or {})
        known = {f for f in cls.__dataclass_fields__}
        for key in raw:
            if key not in known:
                raise ExportOptionsInvalid(key, "unknown option")
        values: dict[str, Any] = {}
        for key in ("denoise", "rm_evaluator", "use_decisions", "include_media", "model_prior"):
            if key in raw:
                if not isinstance(raw[key], bool):
                    raise ExportOptionsInvalid(key, f"must be true or false, got {raw[key]!r}")
                values[key] = raw[key]
        if raw.get("min_agreement") is not None:
            value = raw["min_agreement"]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ExportOptionsInvalid("min_agreement", f"must be a number, got {value!r}")
            if not 0 <= value <= 1:
                raise ExportOptionsInvalid("min_agreement", f"must be between 0 and 1, got {value}")
            values["min_agreement"] = float(value)
        for key in ("seed", "variants_per_prompt"):
            if key in raw:
                value = raw[key]
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ExportOptionsInvalid(
                        key, f"must be a non-negative integer, got {value!r}"
                    )
                values[key] = value
        if "splits" in raw:
            splits = raw["splits"]
            if isinstance(splits, str):
                splits = parse_splits(splits)
            values["splits"] = check_splits(splits)
        if values.get("model_prior"):
            if not values.get("denoise", True):
                raise ExportOptionsInvalid(
                    "model_prior", "needs denoise (it ranks the joint model)"
                )
            if values.get("rm_evaluator"):
                raise ExportOptionsInvalid(
                    "model_prior", "cannot be combined with rm_evaluator yet: choose one"
                )
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_splits(text: str) -> dict[str, float]:
    """``"train=0.8,test=0.2"`` -> ``{"train": 0.8, "test": 0.2}`` (validated)."""
    splits: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        if not sep:
            raise ExportOptionsInvalid("splits", f"expected name=fraction, got {part!r}")
        try:
            splits[name.strip()] = float(value)
        except ValueError:
            raise ExportOptionsInvalid("splits", f"{value!r} is not a number") from None
    return check_splits(splits)


def check_splits(splits: object) -> dict[str, float]:
    if not isinstance(splits, dict) or not splits:
        raise ExportOptionsInvalid("splits", "must name at least one split")
    out: dict[str, float] = {}
    for name, value in splits.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ExportOptionsInvalid("splits", f"split name {name!r} must be a plain word")
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ExportOptionsInvalid("splits", f"fraction of {name!r} must be positive")
        out[name] = float(value)
    if not math.isclose(sum(out.values()), 1.0, abs_tol=1e-6):
        raise ExportOptionsInvalid("splits", f"fractions must sum to 1, got {sum(out.values()):g}")
    return out


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class SnapshotCandidate:
    id: int
    external_id: str
    model_name: str
    kind: str
    text: str
    media: str  # storage name, "" for text


@dataclass(frozen=True)
class SnapshotPrompt:
    id: int
    external_id: str
    text: str
    image: str
    video: str


@dataclass
class SnapshotInput:
    """Everything a snapshot is built from; the service loads it from the database.

    Attributes:
        votes: All judgments of the project.
        discarded_tasks: Tasks with status discarded (their judgments are dropped).
        gold: Gold ranking per gold task id (for reliability).
        prompts, candidates: Content by id.
        rm_scores / rm_label: The active reward model's scores, if any.
        marked: Evaluators reviewers marked unreliable (their judgments are dropped).
        decisions: Prompt id -> (final ranking or None, discarded).
    """

    project_name: str
    project_id: int
    version: int
    votes: list[C.Vote]
    discarded_tasks: set[int]
    gold: dict[int, list[list[int]]]
    prompts: dict[int, SnapshotPrompt]
    candidates: dict[int, SnapshotCandidate]
    rm_scores: dict[int, float]
    rm_label: str
    marked: set[str]
    decisions: dict[int, tuple[list[list[int]] | None, bool]]
    media_root: Path
    # Bootstrap rounds of the datasheet's leaderboard (QUORUM_LEADERBOARD_BOOTSTRAP, as the
    # CLI, API and dashboard use).
    leaderboard_bootstrap: int = 200
    # Where the joint model's fit is shared with the flags pass (`C.joint_estimates`); None:
    # fit afresh.
    fit_cache: Path | None = None


def _pair_schema() -> pa.Schema:
    """Columns of the pairs table (Parquet and Hugging Face)."""
    import pyarrow as pa

    return pa.schema(
        [
            ("id", pa.string()),
            ("split", pa.string()),
            ("prompt_id", pa.string()),
            ("prompt", pa.string()),
            ("image", pa.string()),
            ("video", pa.string()),
            ("chosen", pa.string()),
            ("rejected", pa.string()),
            ("chosen_id", pa.string()),
            ("rejected_id", pa.string()),
            ("chosen_model", pa.string()),
            ("rejected_model", pa.string()),
            ("chosen_kind", pa.string()),
            ("rejected_kind", pa.string()),
            ("chosen_media", pa.string()),
            ("rejected_media", pa.string()),
            ("chosen_image", pa.string()),
            ("rejected_image", pa.string()),
            ("chosen_video", pa.string()),
            ("rejected_video", pa.string()),
            ("margin", pa.float64()),
            ("human_margin", pa.float64()),
            ("agreement", pa.float64()),
            ("n_judgments", pa.int32()),
            ("votes_chosen", pa.int32()),
            ("votes_rejected", pa.int32()),
            ("ties", pa.int32()),
            ("source", pa.string()),
            ("denoised", pa.bool_()),
            ("reward_model", pa.string()),
            ("judgment_ids", pa.list_(pa.int64())),
        ]
    )


def _ranking_schema() -> pa.Schema:
    """Columns of the rankings tables (Parquet and Hugging Face)."""
    import pyarrow as pa

    return pa.schema(
        [
            ("id", pa.string()),
            ("split", pa.string()),
            ("prompt_id", pa.string()),
            ("prompt", pa.string()),
            ("image", pa.string()),
            ("video", pa.string()),
            ("responses", pa.list_(pa.string())),
            ("response_kinds", pa.list_(pa.string())),
            ("response_images", pa.list_(pa.string())),
            ("response_videos", pa.list_(pa.string())),
            ("rankings", pa.list_(pa.int32())),
            ("candidate_ids", pa.list_(pa.string())),
            ("models", pa.list_(pa.string())),
            ("source", pa.string()),
            ("n_judgments", pa.int32()),
            ("agreement", pa.float64()),
        ]
    )


# --------------------------------------------------------------------------- build


class PairOut(NamedTuple):
    """One pair row before the table is built: candidates by id, figures as written."""

    better: int
    worse: int
    margin: float
    human_margin: float
    agreement: float | None
    n_judgments: int
    votes_chosen: int
    votes_rejected: int
    ties: int
    source: str
    judgment_ids: list[int]


class RankingOut(NamedTuple):
    """One ranking row before the table is built: candidates by id in listed order."""

    suffix: str  # the row id's suffix after the prompt's id ("" or ":v<i>")
    order: list[int]
    rankings: list[int]
    source: str
    n_judgments: int
    agreement: float | None


@dataclass
class Snapshot:
    """The tables and the datasheet of one export (written by `write_snapshot`).

    The tables are Arrow tables built column-wise (`_export_tables`) with the Parquet
    schemas; Parquet, the Hugging Face folders and the JSONL files are all written from them.
    """

    pairs: pa.Table
    rankings: pa.Table
    variants: pa.Table
    sheet: dict[str, Any]
    media: set[str]
    # Human arcs the consensus overrules (`curation.overruled`), rows of overruled_arcs.jsonl.
    overruled: list[dict[str, Any]] = field(default_factory=list)
    # `jsonl_tables` of this snapshot, worked out once by `build_snapshot` (empty: not yet).
    jsonl: list[JsonlTable] = field(default_factory=list)
    # The datasheet's leaderboard and stability, still being worked out (`_leaderboard`).
    leaderboard: Future | None = None

    @property
    def datasheet(self) -> dict[str, Any]:
        """The datasheet, its leaderboard waited for (an error of its fit raises here)."""
        if self.leaderboard is not None:
            self.sheet["leaderboard"], self.sheet["stability"] = self.leaderboard.result()
            self.leaderboard = None
        return self.sheet


def build_snapshot(
    source: SnapshotInput,
    options: ExportOptions,
    progress: Progress | None = None,
    *,
    batched: bool = True,
) -> Snapshot:
    """Consensus per prompt under ``options``, turned into rows and a datasheet.

    With the joint model's strengths (denoised), and with denoising off (majority vote),
    prompts get their consensus and pair rows from `batch_consensus` (all prompts at once,
    on columns: `batch_consensus.batch_consensus`, `batch_consensus.batch_majority`);
    ``batched=False`` keeps every prompt on the per-prompt path
    (`consensus.prompt_consensus`), the reference the tests hold the batch equal to.
    """
    progress = progress or (lambda _p, _s: None)
    drops_prompts: Counter[str] = Counter()
    drops_judgments: Counter[str] = Counter()
    drops_pairs: Counter[str] = Counter()

    # Without reviewer decisions, a reviewer's discard and unreliable marks are ignored too;
    # tasks withdrawn any other way stay out.
    reviewer_discarded = {p for p, (_, discarded) in source.decisions.items() if discarded}
    marked = source.marked if options.use_decisions else set()
    kept_votes = []
    for vote in source.votes:
        if vote.task_id in source.discarded_tasks and (
            options.use_decisions or vote.prompt_id not in reviewer_discarded
        ):
            drops_judgments["on discarded tasks"] += 1
        elif vote.evaluator in marked:
            drops_judgments["by annotators marked unreliable"] += 1
        elif vote.pair is not None and len(vote.pair) != 2:
            # `C.unpaired`: its task lost a candidate slot; it names no pair (the flags pass
            # skips it too).
            drops_judgments[UNPAIRED] += 1
        else:
            kept_votes.append(vote)

    progress(8, "reliability weights")
    records = [v.record() for v in kept_votes]
    gold_by_prompt = {}
    task_prompt = {v.task_id: v.prompt_id for v in kept_votes}
    for task_id, ranking in source.gold.items():
        if task_id in task_prompt:
            gold_by_prompt[task_prompt[task_id]] = ranking
    by_prompt: dict[int, list[C.Vote]] = defaultdict(list)
    for vote in kept_votes:
        by_prompt[vote.prompt_id].append(vote)

    use_rm = options.rm_evaluator and bool(source.rm_scores)
    if use_rm:
        # The reward model joins the reliability estimate as one more annotator (CROWDLAB):
        # its weight comes from its agreement with the humans, and on sparse data, where
        # humans rarely judge the same pair, humans get an agreement figure through it.
        records += C.rm_records(by_prompt, source.rm_scores)
    reliability = A.annotator_reliability(records, gold=gold_by_prompt)
    weights = {e: r.weight for e, r in reliability.items()}
    rm_reliability = weights.pop(C.RM_EVALUATOR, None)
    rm_weight = RM_WEIGHT * (rm_reliability if rm_reliability is not None else 1.0)
    # The denoised consensus ranks by the joint annotator model (curation.crowd_bt): one fit
    # over the project, its reliabilities weigh the human graphs, the reward model (if asked
    # for) centres the strengths' prior where the humans' held-out votes say it helps.
    joint = (
        C.joint_estimates(
            kept_votes,
            rm_scores=source.rm_scores if use_rm else None,
            model_of={c.id: c.model_name for c in source.candidates.values()}
            if options.model_prior
            else None,
            fit_cache=source.fit_cache,
        )
        if options.denoise
        else None
    )
    if joint is not None:
        weights = {**weights, **joint.weights}
    cycles = {"prompts_with_cycles": 0, "arcs_removed": 0, "weight_removed": 0.0, "exact": True}
    overruled: list[dict[str, Any]] = []
    prompt_rows: dict[int, tuple[list[dict], dict | None, list[dict]]] = {}
    decisions_used = 0
    without: dict[str, set[int]] = {"candidates": set()}
    no_content_prompts: set[int] = set()
    all_prompts = sorted(source.prompts)
    cells: dict[int, _Cells] = {}
    rng = random.Random(f"export:{options.seed}")
    batch: dict[int, BC.BatchPrompt] = {}
    if batched and joint is not None and options.denoise:
        from curation import batch_consensus as BC

        batch = BC.batch_consensus(
            by_prompt,
            weights=weights,
            scores=joint.scores,
            eta={e: f.eta for e, f in joint.evaluators.items()},
        )
    elif batched and not options.denoise:
        from curation import batch_consensus as BC

        batch = BC.batch_majority(
            by_prompt,
            weights=weights,
            rm_scores=source.rm_scores,
            rm_weight=rm_weight if use_rm else 0.0,
        )
    # The batched prompts' pair rows stay columns (`batch_consensus.PairColumns`): a prompt's
    # rows are a range of ``batch_rows.kept``, the rows with content on both sides.
    batch_rows = _batch_rows(source, batch, cells) if batch else None
    for done, prompt_id in enumerate(all_prompts):
        if done % max(1, len(all_prompts) // 20) == 0:
            progress(15 + int(55 * done / max(1, len(all_prompts))), "consensus per prompt")
        final, discarded = source.decisions.get(prompt_id, (None, False))
        votes = by_prompt.get(prompt_id, [])
        if options.use_decisions and discarded:
            drops_prompts["discarded by a reviewer"] += 1
            continue
        if not votes and not (options.use_decisions and final):
            drops_prompts["no judgments"] += 1
            continue
        batched_prompt = batch.get(prompt_id)
        if batched_prompt is not None and not (options.use_decisions and final):
            if (
                options.min_agreement is not None
                and batched_prompt.agreement is not None
                and batched_prompt.agreement < options.min_agreement
            ):
                drops_prompts["below the minimum agreement"] += 1
                continue
            if batched_prompt.removed_arcs:
                cycles["prompts_with_cycles"] += 1
                cycles["arcs_removed"] += len(batched_prompt.removed_arcs)
                cycles["weight_removed"] += sum(w for _, _, w in batched_prompt.removed_arcs)
                cycles["exact"] = False
            ranking, origin = batched_prompt.ranking, "consensus"
            if batched_prompt.overruled:
                overruled += _overruled_arc_rows(source, batched_prompt.overruled)
            for reason, count in batched_prompt.drops:
                drops_pairs[reason] += count
            assert batch_rows is not None
            lo, hi = batched_prompt.span
            pairs = range(batch_rows.before[lo], batch_rows.before[hi])
            if len(pairs) < hi - lo:
                drops_pairs[NO_CONTENT_PAIR] += hi - lo - len(pairs)
            n_votes, agreement = batched_prompt.n_votes, batched_prompt.agreement
        else:
            pairs, ranking, origin, n_votes, agreement = _prompt_rows(
                source,
                options,
                prompt_id,
                votes,
                final,
                weights=weights,
                use_rm=use_rm,
                rm_weight=rm_weight,
                joint=joint,
                cycles=cycles,
                overruled=overruled,
                drops_pairs=drops_pairs,
                cells=cells,
            )
            if pairs is None:
                drops_prompts["below the minimum agreement"] += 1
                continue
            if options.use_decisions and final:
                decisions_used += 1
        # Training rows hold only candidates with content: a vote that names models only
        # (arena imports) or an empty answer teaches a trainer nothing, and the seed loader
        # drops empty responses. The votes still count for agreement and the leaderboard.
        ranked = [c for group in ranking for c in group]
        with_content = [
            c
            for c, cell in zip(ranked, _cells_of(source, cells, ranked), strict=True)
            if cell.content
        ]
        if len(with_content) < len(ranked):
            without["candidates"].update(c for c in ranked if c not in with_content)
        if len(with_content) < 2 and len(ranked) >= 2:
            # Pairs need content on both sides, so there are none here either. A tie between
            # two model names (an arena tie) lands here too, so its vote reaches the board.
            drops_prompts[NO_CONTENT_RANKING] += 1
            no_content_prompts.add(prompt_id)
            continue
        # `C.restrict_ranking` to those with content; when that is every candidate, the
        # same: the non-empty groups.
        ranking = (
            [list(group) for group in ranking if group]
            if len(with_content) == len(ranked)
            else C.restrict_ranking(ranking, with_content)
        )
        if len(ranking) < 2:
            # Everything tied (e.g. a majority cycle without denoising): no ranking to train
            # on, though majority pairs may remain.
            drops_prompts["no strict ranking"] += 1
            if pairs:
                prompt_rows[prompt_id] = (pairs, None, [])
            continue
        full = _ranking_row(n_votes, agreement, ranking, origin, rng, "")
        variants = [
            _ranking_row(n_votes, agreement, sub, origin, rng, f":v{i}")
            for i, sub in enumerate(
                C.sample_variants(
                    ranking, size=VARIANT_SIZE, count=options.variants_per_prompt, rng=rng
                )
            )
        ]
        prompt_rows[prompt_id] = (pairs, full, variants)

    progress(72, "splits")
    if len(options.splits) == 1:
        # One split holds every prompt (`content_splits` would give each group to it): no
        # content keys (normalised prompt texts, media digests) to group prompts by.
        split_of = dict.fromkeys(prompt_rows, next(iter(options.splits)))
    else:
        split_of = content_splits(
            {p: _content_keys(source, p) for p in prompt_rows}, options.splits, options.seed
        )
    order = sorted(prompt_rows, key=lambda p: source.prompts[p].external_id)
    media: set[str] = set()
    # The media file of each candidate that has one (none in a text-only project).
    media_of = {c.id: c.media for c in source.candidates.values() if c.media}
    by_split: dict[str, Counter[str]] = {name: Counter() for name in options.splits}
    batched_spans: list[range] = []
    for prompt_id in order:
        pairs, full, variants = prompt_rows[prompt_id]
        counts = by_split[split_of[prompt_id]]
        counts["prompts"] += 1
        counts["pairs"] += len(pairs)
        counts["rankings"] += full is not None
        counts["rankings_4"] += len(variants)
        if isinstance(pairs, range):
            batched_spans.append(pairs)
        elif media_of:
            for row in pairs:
                media.update(media_of[c] for c in row[:2] if c in media_of)
        if full is not None and media_of:
            media.update(media_of[c] for c in full.order if c in media_of)
        prompt = source.prompts[prompt_id]
        if prompt.image or prompt.video:
            media.update(m for m in (prompt.image, prompt.video) if m)
    if batch_rows is not None and batched_spans and media_of:
        import numpy as np

        rows = batch_rows.kept[np.concatenate([np.arange(r.start, r.stop) for r in batched_spans])]
        sides = np.unique(
            np.concatenate((batch_rows.columns.better[rows], batch_rows.columns.worse[rows]))
        )
        media.update(media_of[c] for c in sides.tolist() if c in media_of)
    pairs_table, rankings_table, variants_table = _export_tables(
        source, order, split_of, prompt_rows, cells, options, use_rm, batch_rows
    )

    progress(75, "leaderboard")
    exported_votes = [v for v in kept_votes if v.prompt_id in prompt_rows]
    # Every judgment but those naming no pair (`C.unpaired`: no record to compare).
    all_votes = C.without_unpaired(source.votes)
    all_figures = _agreement_figures(all_votes)
    # exported_votes is a sublist of all_votes in order: as long, it is the same list.
    exported_figures = (
        all_figures if len(exported_votes) == len(all_votes) else _agreement_figures(exported_votes)
    )
    model_of = {c.id: c.model_name for c in source.candidates.values()}
    # Votes on candidates without content rank models all the same (arena-style data).
    board_votes = [
        v for v in kept_votes if v.prompt_id in prompt_rows or v.prompt_id in no_content_prompts
    ]
    # The leaderboard (the model comparisons, a seeded bootstrap and up to 200 refits) is
    # worked out in a thread while the files are written (`Snapshot.datasheet` waits for it).
    background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="export-leaderboard")
    leaderboard = background.submit(
        _leaderboard, board_votes, model_of, source.leaderboard_bootstrap, options.seed
    )
    background.shutdown(wait=False)  # the thread ends with its one task

    datasheet = {
        "format": FORMAT,
        "project": {"id": source.project_id, "name": source.project_name},
        "version": source.version,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "options": options.to_dict(),
        "method": {
            "unit": "prompt",
            "evaluator_weights": "joint annotator model: Crowd-BT reliability eta "
            "(curation.crowd_bt)"
            if joint is not None
            else "CROWDLAB reliability (curation.agreement.annotator_reliability)",
            "denoise": "ranking by the joint annotator model's strengths (Crowd-BT with a "
            "position term, one fit over the project); human arcs it contradicts are "
            "overruled (listed under cycles)"
            if joint is not None
            else "minimum-weight feedback arc set per prompt (exact up to 12 nodes per "
            "strongly connected component, else Eades-Lin-Smyth + local search)"
            if options.denoise
            else "off: weighted majority vote, ranked by Copeland score",
            "ranking": "crowd_bt"
            if joint is not None
            else C.RANKING_METHOD
            if options.denoise
            else "copeland",
            "joint_model": None
            if joint is None
            else {"alpha": joint.alpha, "reward_model": joint.reward_model},
            "model_prior": joint.model_prior if joint is not None else None,
            "reward_model": source.rm_label if use_rm else None,
            "reward_model_weight": (
                joint.reward_model["beta"] if joint and joint.reward_model else round(rm_weight, 4)
            )
            if use_rm
            else None,
            "reward_model_reliability": None
            if rm_reliability is None
            else round(rm_reliability, 4),
            "pairs": "human-judged pairs ordered as the final ranking orders them, with a "
            "positive human net preference that way (reviewer rankings: every ordered pair)",
            "ranks": "1 = best, tied candidates share a rank (competition ranking)",
        },
        "counts": {
            "prompts_in_project": len(source.prompts),
            "prompts_exported": len(prompt_rows),
            "prompts_with_rankings": rankings_table.num_rows,
            "judgments_in_project": len(source.votes),
            "judgments_used": len(exported_votes),
            "pairs": pairs_table.num_rows,
            "rankings": rankings_table.num_rows,
            "rankings_4": variants_table.num_rows,
            "reviewer_rankings_used": decisions_used,
            "by_split": {name: dict(c) for name, c in by_split.items()},
        },
        # Two scopes, each figure computed the same way in both: reviewers' discards, marked
        # annotators and the export's filters change which judgments are in, so the figures
        # of the export and of the project differ, and a reader must know which is which.
        "agreement": {
            "all_judgments": {
                "scope": AGREEMENT_SCOPES["all_judgments"],
                **all_figures,
            },
            "exported": {
                "scope": AGREEMENT_SCOPES["exported"],
                **exported_figures,
            },
        },
        "dropped": {
            "prompts": dict(drops_prompts),
            "judgments": dict(drops_judgments),
            "pairs": dict(drops_pairs),
        },
        "cycles": {**cycles, "weight_removed": round(cycles["weight_removed"], 4)},
        "overruled_arcs": {
            "listed": len(overruled),
            "strong": sum(row["strong"] for row in overruled),
            "file": OVERRULED_FILE,
            "why": "human net preferences the exported ranking reverses (or ties), for review; "
            "strong: at least two reliable annotators agreeing, none against",
        },
        "evaluators": {
            e: {"weight": round(r.weight, 4), "judgments": r.n_judgments}
            for e, r in sorted(reliability.items())
            if e != C.RM_EVALUATOR
        },
        # Filled in by `Snapshot.datasheet` from ``leaderboard``: the keys hold their place.
        "leaderboard": None,
        "stability": None,
        "media_included": options.include_media,
        "without_content": {
            "candidates": len(without["candidates"]),
            "pairs_dropped": drops_pairs.get(NO_CONTENT_PAIR, 0),
            "prompts_dropped": drops_prompts.get(NO_CONTENT_RANKING, 0),
            "why": "candidates with neither answer text nor a media file (votes that name "
            "models only, e.g. arena imports, and empty answers) never reach training rows; "
            "their votes still count for the leaderboard and agreement",
        },
    }
    snapshot = Snapshot(
        pairs_table,
        rankings_table,
        variants_table,
        datasheet,
        media,
        overruled,
        leaderboard=leaderboard,
    )
    written, skipped = jsonl_tables(snapshot)
    snapshot.jsonl = written
    datasheet["files_not_written"] = [{"path": f"{f}/", "why": why} for f, why in skipped]
    datasheet["files_written"] = [
        {"path": f"{folder}/", "rows": table.num_rows, "why": why}
        for folder, table, _shape, why in written
    ] + [
        {"path": f"{kind}/{name}", "rows": table.num_rows, "why": why}
        for name, table, why in (
            ("pairs", pairs_table, "every pair, all candidate kinds"),
            ("rankings", rankings_table, "every full ranking, all candidate kinds"),
            ("rankings_4", variants_table, "every 4-response variant, all candidate kinds"),
        )
        for kind in ("parquet", "hf")
    ]
    datasheet["files_written"].append(
        {"path": OVERRULED_FILE, "rows": len(overruled), "why": "human arcs overruled, for review"}
    )
    datasheet["warnings"] = _empty_warnings(snapshot, list(options.splits))
    return snapshot


def _leaderboard(
    votes: list[C.Vote], model_of: dict[int, str], bootstrap: int, seed: int
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The datasheet's ``leaderboard`` and ``stability``: the Bradley-Terry board of the
    votes' model comparisons and the fewest votes that change its leader."""
    comparisons = C.model_comparisons(votes, model_of)
    board = G.bradley_terry_leaderboard(comparisons, bootstrap=bootstrap, seed=seed)
    stability = None
    if board:
        main = {r.model for r in board if r.component == 0}
        stability = G.leaderboard_stability(
            [c for c in comparisons if c[0] in main and c[1] in main], max_removals=200
        )
    rows = [
        {
            "rank": i + 1,
            "model": row.model,
            "score": round(row.score, 1),
            "ci_low": None if math.isnan(row.ci_low) else round(row.ci_low, 1),
            "ci_high": None if math.isnan(row.ci_high) else round(row.ci_high, 1),
            "comparisons": row.n_comparisons,
            "component": row.component,
        }
        for i, row in enumerate(board)
    ]
    return rows, None if stability is None else {
        "leader": stability.leader,
        "votes_to_change": stability.votes_to_change,
        "new_leader": stability.new_leader,
        "votes": stability.n_votes,
    }


# A JSONL folder: (folder, its rows, the line shape: a key of `LINE_SHAPES`, why).
JsonlTable = tuple[str, "pa.Table", str, str]


def jsonl_tables(snapshot: Snapshot) -> tuple[list[JsonlTable], list[tuple[str, str]]]:
    """The JSONL folders of an export, and those left out: (folder, rows, line shape, why).

    The seed format holds answer text only, so ``rankings/`` and ``rankings_4/`` get the rows
    whose responses are all text; rows with image or video responses go to the multimodal
    layout (``*_multimodal/``). A folder with no rows is left out, except the seed folders when
    there are no multimodal rows either (an export always has somewhere to look).
    """
    import pyarrow as pa

    written: list[JsonlTable] = [
        ("pairs", snapshot.pairs, "pairs", "every pair, all candidate kinds (Quorum's layout)")
    ]
    skipped: list[tuple[str, str]] = []
    for folder, table in (("rankings", snapshot.rankings), ("rankings_4", snapshot.variants)):
        all_text = _all_text(table.column("response_kinds"))
        n_media = all_text.count(False)
        n_text = len(all_text) - n_media
        if n_text or not n_media:
            why = "the seed paper's training format: prompts whose responses are all text"
            if n_media:
                why += f" ({n_media} rows with image/video responses: {folder}_multimodal/)"
            # The seed loader raises on a row without prompt text and trains on the next one
            # in its place: such rows (the question in the picture) stay in parquet/ and hf/.
            seed = [
                text and has_text
                for text, has_text in zip(all_text, _not_blank(table.column("prompt")), strict=True)
            ]
            n_seed = seed.count(True)
            if n_seed < n_text:
                why += f" ({n_text - n_seed} rows without prompt text left out: the seed "
                why += "loader skips them; they are in parquet/ and hf/)"
            # Every row kept (the usual case): the table itself, no copy of its columns.
            rows = table if n_seed == len(seed) else table.filter(pa.array(seed, pa.bool_()))
            written.append((folder, rows, "seed", why))
        else:
            skipped.append(
                (
                    folder,
                    "every row has image or video responses, which the seed format "
                    "(answer text in responses) cannot hold: see "
                    f"{folder}_multimodal/",
                )
            )
        if n_media:
            media = pa.array([not text for text in all_text], pa.bool_())
            written.append(
                (
                    f"{folder}_multimodal",
                    table.filter(media),
                    "multimodal",
                    "rows with image or video responses: media paths in response_images / "
                    "response_videos (relative to the export root), never in responses",
                )
            )
    return written, skipped


# The characters `str.strip` strips (those `str.isspace` holds true for), as an RE2 class of
# every other character: a string matches exactly when ``text.strip()`` is not empty.
_PY_SPACES = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680"
    + "".join(map(chr, range(0x2000, 0x200B)))
    + "\u2028\u2029\u202f\u205f\u3000"
)
_NOT_SPACE = "[^" + "".join(f"\\x{{{ord(c):x}}}" for c in _PY_SPACES) + "]"


def _not_blank(strings: pa.ChunkedArray) -> list[bool]:
    """Per row, ``bool(text.strip())`` (a missing value: False), matched by Arrow."""
    import pyarrow.compute as pc

    return pc.fill_null(pc.match_substring_regex(strings, _NOT_SPACE), False).to_pylist()


def _all_text(kinds: pa.ChunkedArray) -> list[bool]:
    """Per row of a ``response_kinds`` column (lists, never missing), whether every kind is
    ``"text"`` (an empty list: True), counted by numpy over the flattened kinds."""
    import numpy as np
    import pyarrow.compute as pc

    flags: list[bool] = []
    for chunk in kinds.chunks:
        offsets = chunk.offsets.to_numpy()
        if not len(chunk):
            continue
        values = chunk.values.slice(offsets[0], offsets[-1] - offsets[0])
        other = ~pc.fill_null(pc.equal(values, "text"), False).to_numpy(zero_copy_only=False)
        rows = np.repeat(np.arange(len(chunk)), np.diff(offsets))
        flags += (np.bincount(rows[other], minlength=len(chunk)) == 0).tolist()
    return flags


def _empty_warnings(snapshot: Snapshot, splits: list[str]) -> list[str]:
    import pyarrow.compute as pc

    warnings = []
    for name, table in (
        ("pairs", snapshot.pairs),
        ("rankings", snapshot.rankings),
        ("rankings_4", snapshot.variants),
    ):
        if not table.num_rows:
            warnings.append(f"table {name} is empty: {_EMPTY_WHY[name]}")
            continue
        # The splits holding a row, by Arrow (no Python string per row).
        present = set(pc.unique(table.column("split")).to_pylist())
        for split in splits:
            if split not in present:
                warnings.append(f"table {name}: split {split!r} is empty (0 rows)")
    return warnings


_EMPTY_WHY = {
    "pairs": "no human-judged pair with a strict preference and content on both sides",
    "rankings": "no prompt with a strict ranking of two or more candidates with content",
    "rankings_4": "no prompt with a strict ranking of at least 4 candidates with content to "
    "sample variants from",
}


def normalise_prompt(text: str) -> str:
    """Prompt text as compared across splits: case-folded, whitespace collapsed."""
    return " ".join(text.casefold().split())


def _content_keys(source: SnapshotInput, prompt_id: int) -> list[str]:
    """What makes two prompts the same for splitting: normalised text, context media bytes."""
    prompt = source.prompts[prompt_id]
    keys = []
    if text := normalise_prompt(prompt.text):
        keys.append(f"text:{text}")
    for name in (prompt.image, prompt.video):
        if name:
            keys.append(f"media:{_file_digest(source.media_root / name) or name}")
    return keys


def _file_digest(path: Path) -> str | None:
    try:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def content_splits(
    keys: Mapping[int, Sequence[str]], fractions: Mapping[str, float], seed: int
) -> dict[int, str]:
    """Split prompts so that no content key (prompt text, media hash) is in two splits.

    Prompts sharing any key form one group (transitively); groups are shuffled by ``seed``
    and each goes to the split furthest below its target share of prompts, so sizes follow
    ``fractions`` as closely as whole groups allow. Deterministic for the same input and seed.
    """
    parent = {p: p for p in keys}

    def root(p: int) -> int:
        while parent[p] != p:
            parent[p] = parent[parent[p]]
            p = parent[p]
        return p

    owner: dict[str, int] = {}
    for p in sorted(keys):
        for key in keys[p]:
            if key in owner:
                a, b = root(owner[key]), root(p)
                if a != b:
                    parent[max(a, b)] = min(a, b)
            else:
                owner[key] = p
    groups: dict[int, list[int]] = defaultdict(list)
    for p in sorted(keys):
        groups[root(p)].append(p)
    ordered = [groups[r] for r in sorted(groups)]
    random.Random(f"split:{seed}").shuffle(ordered)
    names = list(fractions)
    total = sum(fractions.values())
    target = {n: len(keys) * fractions[n] / total for n in names}
    size = dict.fromkeys(names, 0)
    out: dict[int, str] = {}
    for group in ordered:
        name = max(names, key=lambda n: (target[n] - size[n], -names.index(n)))
        size[name] += len(group)
        for p in group:
            out[p] = name
    return out


AGREEMENT_SCOPES = {
    "all_judgments": "every judgment in the project, before anything is dropped or discarded",
    "exported": "the judgments behind this export: on exported prompts, without those "
    "dropped (discarded tasks, annotators marked unreliable)",
}


def _agreement_figures(votes: Sequence[C.Vote]) -> dict[str, Any]:
    """Agreement of human ``votes``, per prompt: mean pairwise agreement and Krippendorff's alpha.

    ``mean_prompt_agreement`` averages, over prompts judged by two or more evaluators, the share
    of evaluator pairs giving a candidate pair the same relation (`agreement.pairwise_agreement`).
    Alpha is given per record kind (``rankings``: values are rank positions; ``pairs``: the
    relation +1/0/-1) at both levels of measurement.
    """
    # Both figures come from prompts with two or more judgments (a pair of annotators on a
    # candidate pair): the others are left out before the relation tables are built, the
    # same figures (the prompts kept in their order) without a unit per candidate pair of
    # every prompt judged once.
    per_prompt_votes = Counter(v.prompt_id for v in votes)
    records = [v.record() for v in votes if per_prompt_votes[v.prompt_id] >= 2]
    kinds = {type(v.record()) for v in votes}
    if kinds == {A.PairRecord}:
        by_prompt = A.pairwise_agreement(records)
    else:  # what `pairwise_agreement` runs on records not all pairs, whatever is left here
        by_prompt = A._pairwise_agreement_per_unit(records)
    per_prompt = [a.agreement for a in by_prompt.values() if a.agreement is not None]
    alpha: dict[str, dict[str, float | None]] = {}
    for label, kind in (("pairs", A.PairRecord), ("rankings", A.RankingRecord)):
        if kind in kinds:
            subset = [r for r in records if isinstance(r, kind)]
            alpha[label] = {
                level: _safe_alpha(subset, level=level) for level in ("nominal", "ordinal")
            }
    return {
        "judgments": len(votes),
        "prompts": len({v.prompt_id for v in votes}),
        "prompts_with_overlap": len(per_prompt),
        "mean_prompt_agreement": round(sum(per_prompt) / len(per_prompt), 4)
        if per_prompt
        else None,
        "krippendorff_alpha": alpha,
    }


def _safe_alpha(
    records: Sequence[A.RankingRecord | A.PairRecord], *, level: Literal["nominal", "ordinal"]
) -> float | None:
    try:
        value = A.krippendorff_alpha(records, level=level)
    except (ValueError, ZeroDivisionError):
        return None
    return None if value is None or math.isnan(value) else round(value, 4)


def _media_path(name: str) -> str | None:
    return f"media/{name}" if name else None


def _content_kind(candidate: SnapshotCandidate) -> str:
    """``image``/``video`` for a candidate with a media file, else ``text``."""
    return candidate.kind if candidate.kind in ("image", "video") and candidate.media else "text"


def has_content(candidate: SnapshotCandidate) -> bool:
    """Whether a trainer can learn from the candidate: non-empty answer text or a media file.

    Placeholders (the source named a model but gave no content, e.g. arena votes) and empty
    answers have none.
    """
    return bool(candidate.media) or bool(candidate.text.strip())


def _answer_text(candidate: SnapshotCandidate) -> str:
    """Answer text only, never a media path ("" for an image or video candidate)."""
    return candidate.text if _content_kind(candidate) == "text" else ""


def _media_of(candidate: SnapshotCandidate, kind: str) -> str | None:
    """The candidate's media path relative to the export root when it is of ``kind``."""
    return _media_path(candidate.media) if _content_kind(candidate) == kind else None


class _Cells(NamedTuple):
    """What the rows hold of one candidate, worked out once per export."""

    content: bool  # `has_content`
    kind: str  # `_content_kind`
    text: str  # `_answer_text`
    image: str | None  # `_media_of(candidate, "image")`
    video: str | None  # `_media_of(candidate, "video")`
    media: str | None  # `_media_path(candidate.media)`


def _candidate_cells(source: SnapshotInput, cache: dict[int, _Cells], candidate_id: int) -> _Cells:
    """``candidate_id``'s `_Cells`, from ``cache`` when an earlier row worked them out."""
    cells = cache.get(candidate_id)
    if cells is None:
        cells = _cells_of(source, cache, (candidate_id,))[0]
    return cells


def _cells_of(source: SnapshotInput, cache: dict[int, _Cells], ids: Iterable[int]) -> list[_Cells]:
    """`_candidate_cells` of each of ``ids``, in one loop (the batched prompts' 40,000 sides
    at 10,000 prompts)."""
    candidates = source.candidates
    new = tuple.__new__
    out = []
    for candidate_id in ids:
        cells = cache.get(candidate_id)
        if cells is None:
            c = candidates[candidate_id]
            # `has_content`, `_content_kind`, `_answer_text`, `_media_of` and `_media_path`,
            # the kind and the path worked out once. ``text.strip()`` is non-empty exactly
            # when the text is not empty and not all whitespace (`str.isspace`), without the
            # copy.
            media, text = c.media, c.text
            kind = c.kind if media and c.kind in ("image", "video") else "text"
            path = f"media/{media}" if media else None
            cells = cache[candidate_id] = new(
                _Cells,
                (
                    bool(media) or (text != "" and not text.isspace()),
                    kind,
                    text if kind == "text" else "",
                    path if kind == "image" else None,
                    path if kind == "video" else None,
                    path,
                ),
            )
        out.append(cells)
    return out


def _prompt_rows(
    source: SnapshotInput,
    options: ExportOptions,
    prompt_id: int,
    votes: Sequence[C.Vote],
    final: list[list[int]] | None,
    *,
    weights: Mapping[str, float],
    use_rm: bool,
    rm_weight: float,
    joint: C.JointEstimates | None,
    cycles: dict[str, Any],
    overruled: list[dict[str, Any]],
    drops_pairs: Counter[str],
    cells: dict[int, _Cells],
) -> tuple[list[dict[str, Any]] | None, list[list[int]], str, int, float | None]:
    """One prompt on the per-prompt path (`consensus.prompt_consensus`): its pair rows (None
    when below the minimum agreement), ranking, origin, judgments and agreement; counts its
    removed arcs into ``cycles`` and appends its overruled arcs to ``overruled``."""
    consensus = C.prompt_consensus(
        prompt_id,
        votes,
        weights=weights,
        rm_scores=source.rm_scores,
        rm_weight=rm_weight if use_rm and joint is None else 0.0,
        denoise=options.denoise,
        scores=joint.scores.get(prompt_id, {}) if joint is not None else None,
    )
    if (
        options.min_agreement is not None
        and consensus.agreement is not None
        and consensus.agreement < options.min_agreement
    ):
        return None, [], "", 0, None
    if consensus.removed_arcs:
        cycles["prompts_with_cycles"] += 1
        cycles["arcs_removed"] += len(consensus.removed_arcs)
        cycles["weight_removed"] += sum(w for _, _, w in consensus.removed_arcs)
        cycles["exact"] = cycles["exact"] and consensus.exact
    if options.use_decisions and final:
        ranking, origin = [list(g) for g in final], "reviewer"
    else:
        ranking, origin = consensus.ranking, "consensus"
        if options.denoise:
            overruled += _overruled_rows(source, consensus, votes, joint)
    pairs = _pair_rows(
        source, consensus, votes, ranking, origin, options, use_rm, drops_pairs, cells
    )
    return pairs, ranking, origin, consensus.n_votes, consensus.agreement


def _overruled_rows(
    source: SnapshotInput,
    consensus: C.PromptConsensus,
    votes: Sequence[C.Vote],
    joint: C.JointEstimates | None,
) -> list[dict[str, Any]]:
    from curation.overruled import overruled_arcs

    eta = {e: f.eta for e, f in joint.evaluators.items()} if joint is not None else None
    return _overruled_arc_rows(source, overruled_arcs(consensus, votes, eta))


def _overruled_arc_rows(source: SnapshotInput, arcs: Sequence[Any]) -> list[dict[str, Any]]:
    """Rows of overruled_arcs.jsonl for `overruled.OverruledArc`s."""
    rows = []
    for arc in arcs:
        prompt = source.prompts[arc.prompt_id]
        preferred, over = source.candidates[arc.preferred], source.candidates[arc.over]
        rows.append(
            {
                "prompt_id": prompt.external_id,
                "quorum_prompt_id": arc.prompt_id,
                "preferred_id": preferred.external_id,
                "preferred_model": preferred.model_name,
                "over_id": over.external_id,
                "over_model": over.model_name,
                "net_weight": round(arc.net_weight, 6),
                "evaluators_for": arc.evaluators_for,
                "evaluators_against": arc.evaluators_against,
                "reliable_for": arc.reliable_for,
                "reliable_against": arc.reliable_against,
                "strong": arc.strong,
            }
        )
    return rows


def _pair_rows(
    source: SnapshotInput,
    consensus: C.PromptConsensus,
    votes: Sequence[C.Vote],
    ranking: list[list[int]],
    origin: str,
    options: ExportOptions,
    use_rm: bool,
    drops: Counter[str],
    cells: dict[int, _Cells],
) -> list[dict[str, Any]]:
    position = {c: g for g, group in enumerate(ranking) for c in group}
    judgments: dict[tuple[int, int], list[int]] = defaultdict(list)
    rows = []
    if origin == "reviewer":
        ordered = [(u, v) for u, v, _ in G.edges_from_ranking(ranking)]
    else:
        ordered = []
        for (x, y), evidence in consensus.evidence.items():
            if x not in position or y not in position:
                continue
            if evidence.x_over_y + evidence.y_over_x == 0:
                continue  # only ties: no strict preference to export
            if not consensus.denoised:
                # Majority vote: every pair with a net human preference, cycles and all.
                if evidence.net != 0:
                    ordered.append((x, y) if evidence.net > 0 else (y, x))
                else:
                    drops["no net human preference"] += 1
                continue
            if position[x] == position[y]:
                drops["tied in the final ranking"] += 1
                continue
            better, worse = (x, y) if position[x] < position[y] else (y, x)
            net = consensus.human_net(better, worse)
            if net < 0:
                drops["overruled by denoising (feedback arcs)"] += 1
                continue
            if net == 0:
                drops["no net human preference"] += 1
                continue
            ordered.append((better, worse))
    if ordered:
        # Unordered pairs as (smaller id, larger id), the key of `judgments` and `evidence`.
        wanted = {(u, v) if u < v else (v, u) for u, v in ordered}
        for vote in votes:
            members = vote.candidates
            for i, x in enumerate(members):
                for y in members[i + 1 :]:
                    key = (x, y) if x < y else (y, x)
                    if key in wanted:
                        judgments[key].append(vote.judgment_id)
    no_evidence = C.PairEvidence()
    for better, worse in ordered:
        x, y = (better, worse) if better < worse else (worse, better)
        evidence = consensus.evidence.get((x, y), no_evidence)
        chosen_cells = _candidate_cells(source, cells, better)
        rejected_cells = _candidate_cells(source, cells, worse)
        if not (chosen_cells.content and rejected_cells.content):
            drops[NO_CONTENT_PAIR] += 1
            continue
        rows.append(
            PairOut(
                better,
                worse,
                round(consensus.margin(better, worse), 6),
                # `consensus.human_net(better, worse)` from the evidence fetched above.
                round(evidence.net if better == x else -evidence.net, 6),
                evidence.agreement,
                evidence.n_judgments,
                evidence.x_over_y if better == x else evidence.y_over_x,
                evidence.y_over_x if better == x else evidence.x_over_y,
                evidence.ties,
                origin,
                judgments.get((x, y), []),
            )
        )
    return rows


def _batched_pair_rows(
    source: SnapshotInput,
    prompt_id: int,
    batched: BC.BatchPrompt,
    options: ExportOptions,
    use_rm: bool,
    drops: Counter[str],
    cells: dict[int, _Cells],
) -> list[dict[str, Any]]:
    """`_pair_rows` (consensus origin) of a prompt whose consensus `batch_consensus` built:
    the same rows and the same drops in the same order."""
    for reason, count in batched.drops:
        drops[reason] += count
    rows = []
    for pair in batched.pairs:
        chosen_cells = cells.get(pair.better) or _candidate_cells(source, cells, pair.better)
        rejected_cells = cells.get(pair.worse) or _candidate_cells(source, cells, pair.worse)
        if not (chosen_cells.content and rejected_cells.content):
            drops[NO_CONTENT_PAIR] += 1
            continue
        rows.append(
            PairOut(
                pair.better,
                pair.worse,
                round(pair.margin, 6),
                round(pair.human_margin, 6),
                pair.agreement,
                pair.n_judgments,
                pair.votes_for,
                pair.votes_against,
                pair.ties,
                "consensus",
                pair.judgment_ids,
            )
        )
    return rows


class _BatchRows(NamedTuple):
    """The pair rows `batch_consensus` built, with content on both sides."""

    columns: BC.PairColumns
    kept: Any  # numpy int64: the rows of ``columns`` with content on both sides, in order
    before: list[int]  # before[r]: how many of rows ``0:r`` are kept (len(columns) + 1 items)


def _batch_rows(
    source: SnapshotInput, batch: Mapping[int, BC.BatchPrompt], cells: dict[int, _Cells]
) -> _BatchRows:
    """The rows of ``batch``'s shared columns whose two sides have content (`_pair_rows`
    drops the others, one `NO_CONTENT_PAIR` each); every side's cells worked out."""
    import numpy as np

    columns = next(iter(batch.values())).columns
    sides = np.unique(np.concatenate((columns.better, columns.worse)))
    content = np.array([c.content for c in _cells_of(source, cells, sides.tolist())], dtype=bool)
    keep = (
        content[np.searchsorted(sides, columns.better)]
        & content[np.searchsorted(sides, columns.worse)]
        if len(sides)
        else np.zeros(0, dtype=bool)
    )
    before = np.concatenate(([0], np.cumsum(keep))).tolist()
    return _BatchRows(columns, np.flatnonzero(keep), before)


def _ranking_row(
    n_votes: int,
    agreement: float | None,
    ranking: list[list[int]],
    origin: str,
    rng: random.Random,
    suffix: str,
) -> RankingOut:
    """A ranking row of ``ranking``'s candidates (the caller worked out their cells and kept
    those with content)."""
    order = [c for group in ranking for c in group]
    # The seed model reads responses under a causal mask: never list the best one first by
    # construction.
    rng.shuffle(order)
    return RankingOut(
        suffix, order, C.competition_ranks(ranking, order), origin, n_votes, agreement
    )


# --------------------------------------------------------------------------- tables

# Rows per Arrow chunk of an export table: each chunk's string columns stay far below the
# 2 GiB a `string` array can hold, whatever the prompts and answers weigh.
TABLE_CHUNK_ROWS = 1 << 16


def _export_tables(
    source: SnapshotInput,
    order: Sequence[int],
    split_of: Mapping[int, str],
    prompt_rows: Mapping[int, tuple[list[PairOut], RankingOut | None, list[RankingOut]]],
    cells: Mapping[int, _Cells],
    options: ExportOptions,
    use_rm: bool,
    batch_rows: _BatchRows | None = None,
) -> tuple[pa.Table, pa.Table, pa.Table]:
    """The pairs, rankings and 4-response variants tables, column by column.

    Prompt and candidate cells are Arrow columns once per prompt and per candidate; a row
    names them by index (``take``), so a prompt's text is copied into its rows by Arrow, not
    held by a dict per row. Rows go in ``order`` (prompts by external id), each prompt's rows
    in the order they were built. A prompt's pairs are `PairOut`s, or a range of
    ``batch_rows.kept`` (a batched prompt's rows, columns already).
    """
    import numpy as np
    import pyarrow as pa

    prompts = [source.prompts[p] for p in order]
    prompt_cols = {
        "external_id": pa.array([p.external_id for p in prompts], pa.string()),
        "split": pa.array([split_of[p] for p in order], pa.string()),
        "text": pa.array([p.text for p in prompts], pa.string()),
        "image": pa.array([_media_path(p.image) for p in prompts], pa.string()),
        "video": pa.array([_media_path(p.video) for p in prompts], pa.string()),
    }
    index = {c: i for i, c in enumerate(cells)}
    cands = [source.candidates[c] for c in cells]
    cell_list = list(cells.values())
    cand_cols = {
        "external_id": pa.array([c.external_id for c in cands], pa.string()),
        "model": pa.array([c.model_name for c in cands], pa.string()),
        "kind": pa.array([c.kind for c in cands], pa.string()),
        "content_kind": pa.array([c.kind for c in cell_list], pa.string()),
        "text": pa.array([c.text for c in cell_list], pa.string()),
        "image": pa.array([c.image for c in cell_list], pa.string()),
        "video": pa.array([c.video for c in cell_list], pa.string()),
        "media": pa.array([c.media for c in cell_list], pa.string()),
    }
    pair_columns = _pair_columns(order, prompt_rows, cells, batch_rows)
    full_rows = [(i, full) for i, p in enumerate(order) if (full := prompt_rows[p][1]) is not None]
    variant_rows = [(i, row) for i, p in enumerate(order) for row in prompt_rows[p][2]]
    reward_model = source.rm_label if use_rm else None

    def chunked(rows, build, schema):
        chunks = [
            build(rows[at : at + TABLE_CHUNK_ROWS]) for at in range(0, len(rows), TABLE_CHUNK_ROWS)
        ]
        return pa.Table.from_batches(chunks or [build(rows[:0])], schema=schema)

    pairs_schema, rankings_schema = _pair_schema(), _ranking_schema()

    def pair_batch(rows: range) -> pa.RecordBatch:
        at = slice(rows.start, rows.stop)
        p, better, worse = (pa.array(pair_columns[k][at]) for k in ("p", "better", "worse"))
        n = len(rows)
        offsets = pair_columns["jid_offsets"][rows.start : rows.stop + 1]
        columns = {
            "id": _joined(
                prompt_cols["external_id"].take(p),
                ":",
                cand_cols["external_id"].take(better),
                ">",
                cand_cols["external_id"].take(worse),
            ),
            "split": prompt_cols["split"].take(p),
            "prompt_id": prompt_cols["external_id"].take(p),
            "prompt": prompt_cols["text"].take(p),
            "image": prompt_cols["image"].take(p),
            "video": prompt_cols["video"].take(p),
            "chosen": cand_cols["text"].take(better),
            "rejected": cand_cols["text"].take(worse),
            "chosen_id": cand_cols["external_id"].take(better),
            "rejected_id": cand_cols["external_id"].take(worse),
            "chosen_model": cand_cols["model"].take(better),
            "rejected_model": cand_cols["model"].take(worse),
            "chosen_kind": cand_cols["kind"].take(better),
            "rejected_kind": cand_cols["kind"].take(worse),
            "chosen_media": cand_cols["media"].take(better),
            "rejected_media": cand_cols["media"].take(worse),
            "chosen_image": cand_cols["image"].take(better),
            "rejected_image": cand_cols["image"].take(worse),
            "chosen_video": cand_cols["video"].take(better),
            "rejected_video": cand_cols["video"].take(worse),
            "margin": pa.array(pair_columns["margin"][at], pa.float64()),
            "human_margin": pa.array(pair_columns["human_margin"][at], pa.float64()),
            "agreement": _float_column(pair_columns["agreement"][at]),
            "n_judgments": pa.array(pair_columns["n_judgments"][at], pa.int32()),
            "votes_chosen": pa.array(pair_columns["votes_chosen"][at], pa.int32()),
            "votes_rejected": pa.array(pair_columns["votes_rejected"][at], pa.int32()),
            "ties": pa.array(pair_columns["ties"][at], pa.int32()),
            "source": pa.array(pair_columns["source"][0], pa.string()).take(
                pa.array(pair_columns["source"][1][at])
            ),
            "denoised": pa.repeat(pa.scalar(options.denoise, pa.bool_()), n),
            "reward_model": pa.repeat(pa.scalar(reward_model, pa.string()), n),
            "judgment_ids": pa.ListArray.from_arrays(
                pa.array(offsets - offsets[0], pa.int32()),
                pa.array(pair_columns["judgment_ids"][offsets[0] : offsets[-1]], pa.int64()),
            ),
        }
        return pa.RecordBatch.from_arrays(
            [columns[f.name] for f in pairs_schema], schema=pairs_schema
        )

    def ranking_batch(rows: list[tuple[int, RankingOut]]) -> pa.RecordBatch:
        n = len(rows)
        outs = [r for _, r in rows]
        p = pa.array(np.fromiter((i for i, _ in rows), np.int64, n))
        # Each row's candidates, flat (indexes into the candidate columns), and its offsets.
        orders = [r.order for r in outs]
        offsets = np.zeros(n + 1, dtype=np.int32)
        np.cumsum(np.fromiter(map(len, orders), np.int32, n), out=offsets[1:])
        size = int(offsets[-1])
        flat = pa.array(
            np.fromiter(map(index.__getitem__, chain.from_iterable(orders)), np.int64, size)
        )
        ranks = np.fromiter(chain.from_iterable(r.rankings for r in outs), np.int32, size)
        offsets_array = pa.array(offsets)

        def listed(values: pa.Array) -> pa.Array:
            return pa.ListArray.from_arrays(offsets_array, values)

        columns = {
            "id": _joined(
                prompt_cols["external_id"].take(p), pa.array([r.suffix for r in outs], pa.string())
            ),
            "split": prompt_cols["split"].take(p),
            "prompt_id": prompt_cols["external_id"].take(p),
            "prompt": prompt_cols["text"].take(p),
            "image": prompt_cols["image"].take(p),
            "video": prompt_cols["video"].take(p),
            "responses": listed(cand_cols["text"].take(flat)),
            "response_kinds": listed(cand_cols["content_kind"].take(flat)),
            "response_images": listed(cand_cols["image"].take(flat)),
            "response_videos": listed(cand_cols["video"].take(flat)),
            "rankings": listed(pa.array(ranks)),
            "candidate_ids": listed(cand_cols["external_id"].take(flat)),
            "models": listed(cand_cols["model"].take(flat)),
            "source": pa.array([r.source for r in outs], pa.string()),
            "n_judgments": pa.array(np.fromiter((r.n_judgments for r in outs), np.int32, n)),
            "agreement": pa.array([r.agreement for r in outs], pa.float64()),
        }
        return pa.RecordBatch.from_arrays(
            [columns[f.name] for f in rankings_schema], schema=rankings_schema
        )

    return (
        chunked(range(len(pair_columns["p"])), pair_batch, pairs_schema),
        chunked(full_rows, ranking_batch, rankings_schema),
        chunked(variant_rows, ranking_batch, rankings_schema),
    )


def _float_column(values: Any) -> pa.Array:
    """A float64 column of a numpy array, NaN read as a missing value (no validity bitmap
    without one, as ``pa.array`` of a list without None)."""
    import numpy as np
    import pyarrow as pa

    missing = np.isnan(values)
    if not missing.any():
        return pa.array(values, pa.float64())
    # 0.0 under a missing value, as ``pa.array`` of a list with None writes it.
    return pa.array(np.where(missing, 0.0, values), pa.float64(), mask=missing)


def _rounded(values: Any) -> Any:
    """``round(v, 6)`` of each float of a numpy array (Python's rounding, each distinct
    value, by its bits, rounded once)."""
    import numpy as np

    if not len(values):
        return values.astype(np.float64)
    bits, inverse = np.unique(values.view(np.int64), return_inverse=True)
    return np.array([round(v, 6) for v in bits.view(np.float64).tolist()])[inverse.reshape(-1)]


def _pair_columns(
    order: Sequence[int],
    prompt_rows: Mapping[int, tuple[Sequence[PairOut] | range, Any, Any]],
    cells: Mapping[int, _Cells],
    batch_rows: _BatchRows | None,
) -> dict[str, Any]:
    """Every pair row of the export, in table order, as numpy columns (``p``: the prompt's
    index in ``order``; ``better`` / ``worse``: the candidates' indexes in ``cells``;
    ``agreement`` NaN where missing; ``source`` (names, each row's index in them); row
    ``r``'s judgment ids are
    ``judgment_ids[jid_offsets[r]:jid_offsets[r + 1]]``). A prompt's rows are `PairOut`s
    or a range of ``batch_rows.kept``."""
    import numpy as np

    # Rows are gathered from two blocks: the batched columns (their rows, rounded as
    # `PairOut` rounds them), then the `PairOut`s, after them.
    outs: list[PairOut] = []
    pick: list[Any] = []  # per prompt, its rows' indexes in the two blocks together
    prompt_of: list[int] = []
    n_batched = len(batch_rows.columns.better) if batch_rows is not None else 0
    for i, prompt_id in enumerate(order):
        pairs = prompt_rows[prompt_id][0]
        if isinstance(pairs, range):
            assert batch_rows is not None
            picked = batch_rows.kept[pairs.start : pairs.stop]
        elif pairs:
            picked = np.arange(n_batched + len(outs), n_batched + len(outs) + len(pairs))
            outs.extend(pairs)
        else:
            continue
        pick.append(picked)
        prompt_of.append(i)
    take = np.concatenate(pick) if pick else np.zeros(0, dtype=np.int64)
    p = np.repeat(np.array(prompt_of, dtype=np.int64), [len(x) for x in pick])

    def block(name: str, batched: Any, dtype: Any) -> Any:
        listed = np.array([getattr(r, name) for r in outs], dtype=dtype)
        return np.concatenate((batched, listed)) if batch_rows is not None else listed

    c = batch_rows.columns if batch_rows is not None else None
    none_i, none_f = np.zeros(0, dtype=np.int64), np.zeros(0)
    agreement_out = np.array(
        [np.nan if r.agreement is None else r.agreement for r in outs], dtype=np.float64
    )
    columns: dict[str, Any] = {
        "better": block("better", c.better if c else none_i, np.int64),
        "worse": block("worse", c.worse if c else none_i, np.int64),
        "margin": block("margin", _rounded(c.margin) if c else none_f, np.float64),
        "human_margin": block(
            "human_margin", _rounded(c.human_margin) if c else none_f, np.float64
        ),
        "agreement": np.concatenate((c.agreement if c else none_f, agreement_out)),
        "n_judgments": block("n_judgments", c.n_judgments if c else none_i, np.int64),
        "votes_chosen": block("votes_chosen", c.votes_for if c else none_i, np.int64),
        "votes_rejected": block("votes_rejected", c.votes_against if c else none_i, np.int64),
        "ties": block("ties", c.ties if c else none_i, np.int64),
    }
    out = {name: column[take] for name, column in columns.items()}
    # Candidates as indexes into ``cells`` (the order of the candidate columns).
    ids = np.fromiter(cells, dtype=np.int64, count=len(cells))
    by_id = np.argsort(ids)
    for side in ("better", "worse"):
        out[side] = by_id[np.searchsorted(ids, out[side], sorter=by_id)]
    # Each row's source as an index into the few names there are (no string per row here).
    names = ["consensus", *sorted({r.source for r in outs} - {"consensus"})]
    code = {name: i for i, name in enumerate(names)}
    sources = np.concatenate(
        (
            np.zeros(n_batched, dtype=np.int64),
            np.fromiter((code[r.source] for r in outs), np.int64, len(outs)),
        )
    )
    out["source"] = (names, sources[take])
    out["p"] = p
    # Judgment ids: each row's slice of the batched ids or its `PairOut` list.
    lengths = np.array([len(r.judgment_ids) for r in outs], dtype=np.int64)
    if c is not None:
        lengths = np.concatenate((np.diff(c.jid_offsets), lengths))
        values = np.concatenate(
            (c.judgment_ids, np.array([j for r in outs for j in r.judgment_ids], dtype=np.int64))
        )
    else:
        values = np.array([j for r in outs for j in r.judgment_ids], dtype=np.int64)
    starts = np.concatenate(([0], np.cumsum(lengths)))
    row_lengths = lengths[take]
    out["jid_offsets"] = np.concatenate(([0], np.cumsum(row_lengths))).astype(np.int64)
    gather = np.repeat(starts[take] - out["jid_offsets"][:-1], row_lengths) + np.arange(
        out["jid_offsets"][-1]
    )
    out["judgment_ids"] = values[gather]
    return out


def _joined(*parts: pa.Array | str) -> pa.Array:
    """Strings joined element-wise (a ``str`` part is the same in every row)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kinds = {part.type for part in parts if not isinstance(part, str)}
    kind = pa.large_string() if pa.large_string() in kinds else pa.string()
    return pc.binary_join_element_wise(
        *(pa.scalar(part, kind) if isinstance(part, str) else part.cast(kind) for part in parts),
        pa.scalar("", kind),
    )


# --------------------------------------------------------------------------- write


# The keys of a JSONL line per shape, in order, each a column of the table. "?" after a key:
# written only when the value is a non-empty string. Pairs (Quorum's layout) are every column
# of the pairs table (`PAIR_LINE_KEYS`), the provenance columns (`PAIR_PROVENANCE`) nested.
LINE_SHAPES: dict[str, tuple[str, ...]] = {
    # The seed paper's training record: exactly its keys, media keys only when present.
    "seed": ("prompt", "responses", "rankings", "image?", "video?"),
    # A ranking with image or video responses: the seed keys plus aligned media lists.
    # ``responses[i]`` is answer text ("" for a media response), ``response_kinds[i]`` is
    # text/image/video, ``response_images[i]`` / ``response_videos[i]`` the path relative to
    # the export root (null when that response is not of that kind).
    "multimodal": (
        "prompt",
        "responses",
        "response_kinds",
        "response_images",
        "response_videos",
        "rankings",
        "image?",
        "video?",
    ),
}
# A pair line's keys before its provenance (the order rows have always been written in).
PAIR_LINE_KEYS = (
    "id",
    "split",
    "prompt_id",
    "prompt",
    "image",
    "video",
    "chosen",
    "rejected",
    "chosen_image",
    "rejected_image",
    "chosen_video",
    "rejected_video",
    "chosen_id",
    "rejected_id",
    "chosen_model",
    "rejected_model",
    "chosen_kind",
    "rejected_kind",
    "chosen_media",
    "rejected_media",
    "margin",
    "human_margin",
    "agreement",
    "n_judgments",
    "votes_chosen",
    "votes_rejected",
    "ties",
)
PAIR_PROVENANCE = ("source", "denoised", "reward_model", "judgment_ids")
# Rows encoded at a time: bounds the memory of the lines being written.
JSONL_CHUNK_ROWS = 1 << 14


def _json_float(value: float | None) -> str | None:
    """A float as `json.dumps` writes it (None stays None)."""
    if value is None:
        return None
    if value != value:
        return "NaN"
    if value in (math.inf, -math.inf):
        return "Infinity" if value > 0 else "-Infinity"
    return float.__repr__(value)


# What `json.dumps(..., ensure_ascii=False)` (and orjson) escape in a string, and the line
# breaks escaped besides (`_LINE_BREAKS`), RE2 syntax.
_JSON_ESCAPED = r'[\x00-\x1f"\\\x{2028}\x{2029}\x{85}]'
# The characters ``str.splitlines`` (and other line-based readers) end a line at that JSON
# leaves as they are (it escapes only those below U+0020): written escaped in every JSONL
# file, as the raw export writes them (`annotate.exporting`), so no reader splits a row. A
# JSON reader reads the escape back as the character.
_LINE_BREAKS = (("\u2028", "\\u2028"), ("\u2029", "\\u2029"), ("\x85", "\\u0085"))


# The bytes `_escaped_rows` looks for (below 0x20, the quote, the backslash; 0xC2 and 0xE2, the
# lead bytes of U+0085, U+2028 and U+2029), as a `bytes.translate` table that maps them to 1 and
# every other byte to 0, and the other bytes (to delete).
_FLAGGED = frozenset([*range(0x20), 0x22, 0x5C, 0xC2, 0xE2])
_FLAGGED_BYTES = bytes(int(b in _FLAGGED) for b in range(256))
_PLAIN_BYTES = bytes(b for b in range(256) if b not in _FLAGGED)


def _escape_line_breaks(text: str) -> str:
    for raw, escaped in _LINE_BREAKS:
        if raw in text:
            text = text.replace(raw, escaped)
    return text


def _escaped_rows(strings: pa.Array) -> Any:
    """The rows (numpy, ascending) of a string array whose value holds a character to escape
    (`_JSON_ESCAPED`). Its bytes are scanned once in C (`bytes.translate`) for the bytes of
    those characters (below 0x20, the quote, the backslash; 0xC2 and 0xE2, which begin U+0085,
    U+2028 and U+2029 as they begin other characters), the few rows with such a byte matched
    exactly."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(strings)
    buffers = strings.buffers()
    if not n or buffers[2] is None:
        return np.zeros(0, dtype=np.int64)
    width = np.int64 if pa.types.is_large_string(strings.type) else np.int32
    offsets = np.frombuffer(buffers[1], dtype=width)[strings.offset : strings.offset + n + 1]
    start, end = int(offsets[0]), int(offsets[-1])
    data = bytes(memoryview(buffers[2])[start:end])
    # `bytes.translate` is one pass in C over the bytes, three times the speed of numpy's
    # comparisons: deleting every other byte says whether there is any, mapping says where.
    if not data.translate(None, _PLAIN_BYTES):
        return np.zeros(0, dtype=np.int64)
    hits = np.flatnonzero(np.frombuffer(data.translate(_FLAGGED_BYTES), dtype=np.uint8))
    rows = np.unique(np.searchsorted(offsets, hits + start, side="right") - 1)
    exact = pc.fill_null(pc.match_substring_regex(strings.take(rows), _JSON_ESCAPED), False)
    return rows[exact.to_numpy(zero_copy_only=False)]


def _string_bodies(strings: pa.Array) -> pa.Array:
    """Each string as it is written between a JSON string's quotes: as it is, or (those with a
    character to escape, each distinct one once) escaped as orjson escapes it, whose string
    escapes are `json`'s, and line breaks escaped (`_LINE_BREAKS`). Nulls stay null."""
    import numpy as np
    import orjson
    import pyarrow as pa
    import pyarrow.compute as pc

    rows = _escaped_rows(strings)
    if not len(rows):
        return strings
    words: dict[str, str] = {}
    bodies = []
    for value in strings.take(rows).to_pylist():
        word = words.get(value)
        if word is None:
            word = words[value] = _escape_line_breaks(orjson.dumps(value).decode()[1:-1])
        bodies.append(word)
    mask = np.zeros(len(strings), dtype=bool)
    mask[rows] = True
    return pc.replace_with_mask(strings, pa.array(mask), pa.array(bodies, strings.type))


def json_values(column: pa.Array) -> pa.Array:
    """Each value of ``column`` as JSON text, the bytes ``json.dumps(value,
    ensure_ascii=False)`` writes (a ``large_string`` array, ``null`` for a missing value),
    with U+2028, U+2029 and U+0085 escaped (`_LINE_BREAKS`).

    Strings in quotes (`_string_bodies`); numbers and lists as `json` writes them (``repr``
    of a float, ``", "`` between list items).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = column.type
    text = pa.large_string()
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        # A string with none of the characters to escape is itself in quotes: quoted by
        # Arrow, no Python object per value.
        out = pc.binary_join_element_wise(
            pa.scalar('"', text),
            _string_bodies(column).cast(text),
            pa.scalar('"', text),
            pa.scalar("", text),
        )
    elif pa.types.is_float64(kind):
        # Each distinct value (by its bits: 0.0 and -0.0 apart) formatted once: a margin or
        # an agreement repeats across rows.
        encoded = column.view(pa.int64()).dictionary_encode()
        values = encoded.dictionary.view(pa.float64()).to_pylist()
        out = pa.array([_json_float(v) for v in values], text).take(encoded.indices)
    elif pa.types.is_floating(kind):
        out = pa.array([_json_float(v) for v in column.to_pylist()], text)
    elif pa.types.is_integer(kind):
        out = column.cast(text)
    elif pa.types.is_boolean(kind):
        out = pc.if_else(column, pa.scalar("true", text), pa.scalar("false", text))
    elif pa.types.is_list(kind) and not len(column):
        out = pa.array([], text)
    elif pa.types.is_list(kind):
        # The items' JSON joined by Arrow, list by list (a missing list stays missing).
        offsets = column.offsets.to_numpy()
        items = json_values(column.values.slice(offsets[0], offsets[-1] - offsets[0]))
        lists = pa.LargeListArray.from_arrays(
            pa.array(offsets - offsets[0], pa.int64()),
            items,
            mask=column.is_null() if column.null_count else None,
        )
        out = pc.binary_join_element_wise(
            pa.scalar("[", text),
            pc.binary_join(lists, pa.scalar(", ", text)),
            pa.scalar("]", text),
            pa.scalar("", text),
        )
    elif pa.types.is_null(kind):
        out = pa.nulls(len(column), text)
    else:
        raise TypeError(f"no JSON encoding for column type {kind}")
    return pc.fill_null(out, pa.scalar("null", text))


def _same_json(column: pa.Array) -> str | None:
    """The JSON text (`json_values`) every row of ``column`` holds, or None where the rows
    differ (or there are none). A value the same in every row is written into the lines'
    constant text: no column of its JSON, one argument less for the join per row. Floats
    compare by their bits (0.0 and -0.0 are written apart; a NaN equals a NaN); lists are
    never taken as the same."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(column)
    if not n or pa.types.is_list(column.type):
        return None
    if column.null_count == n:
        return "null"
    if column.null_count:
        return None
    values = column
    if pa.types.is_floating(column.type):
        if not pa.types.is_float64(column.type):
            return None
        values = column.view(pa.int64())
    # The first row against the last before a pass over every row: a prompt or answer
    # column differs there and costs nothing more.
    first = values[0]
    if first != values[n - 1] or not pc.all(pc.equal(values, first)).as_py():
        return None
    return json_values(column.slice(0, 1))[0].as_py()


def _line_pieces(batch: pa.RecordBatch, shape: str) -> list[pa.Array | str]:
    """One JSONL line per row of ``batch``, as constant text and columns of JSON values (a
    value the same in every row of the batch written in the constant text, `_same_json`)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    pieces: list[pa.Array | str] = []
    opening = "{"

    def key(name: str) -> None:
        nonlocal opening
        column = batch.column(name)
        head = f"{opening}{json.dumps(name)}: "
        same = _same_json(column)
        if same is not None:
            pieces.append(head + same)
        elif column.null_count == 0 and (
            pa.types.is_string(column.type) or pa.types.is_large_string(column.type)
        ):
            # No null to write as ``null``: the quotes go with the constant text around.
            pieces.extend((head + '"', _string_bodies(column), '"'))
        else:
            pieces.extend((head, json_values(column)))
        opening = ", "

    if shape == "pairs":
        for name in PAIR_LINE_KEYS:
            key(name)
        pieces.append(', "provenance": ')
        opening = "{"
        for name in PAIR_PROVENANCE:
            key(name)
        pieces.append("}}\n")
        return pieces
    for name in LINE_SHAPES[shape]:
        if not name.endswith("?"):
            key(name)
            continue
        name = name[:-1]
        column = batch.column(name)
        same = _same_json(column)
        if same is not None:
            # Written in no line (missing or empty) or in every line.
            pieces.append("" if same in ("null", '""') else f", {json.dumps(name)}: {same}")
            continue
        present = pc.fill_null(pc.not_equal(column, ""), False)
        member = _joined(f", {json.dumps(name)}: ", json_values(column))
        pieces.append(pc.if_else(present, member, pa.scalar("", pa.large_string())))
    pieces.append("}\n")
    return pieces


def _merged(pieces: list[pa.Array | str]) -> list[pa.Array | str]:
    """``pieces`` with each run of constant text joined into one."""
    out: list[pa.Array | str] = []
    for piece in pieces:
        if isinstance(piece, str) and out and isinstance(out[-1], str):
            out[-1] += piece
        else:
            out.append(piece)
    return out


def jsonl_chunks(table: pa.Table, shape: str) -> Iterator[memoryview]:
    """The JSONL bytes of ``table``'s rows in the line ``shape`` (`LINE_SHAPES`, or
    ``"pairs"``), a chunk of rows at a time: every line exactly `_json_line` of the row's
    dict (``json.dumps(line, ensure_ascii=False)``, line breaks escaped, ``"\\n"``), with no
    dict built per row."""
    import numpy as np

    for batch in table.to_batches(max_chunksize=JSONL_CHUNK_ROWS):
        if not batch.num_rows:
            continue
        lines = _joined(*_merged(_line_pieces(batch, shape)))
        offsets = np.frombuffer(lines.buffers()[1], dtype=np.int64)
        start, end = offsets[lines.offset], offsets[lines.offset + len(lines)]
        yield memoryview(lines.buffers()[2])[start:end]


# `json.dumps(row, ensure_ascii=False)` builds a JSONEncoder per call; one shared encoder writes
# the same bytes (same separators, no indent, the C encoder) without that cost per line.
_ENCODE_LINE = json.JSONEncoder(ensure_ascii=False).encode


def _json_line(row: Mapping[str, Any]) -> str:
    """One JSONL line: exactly ``json.dumps(row, ensure_ascii=False) + "\\n"`` with U+2028,
    U+2029 and U+0085 escaped (`_LINE_BREAKS`)."""
    return _escape_line_breaks(_ENCODE_LINE(row)) + "\n"


def write_snapshot(
    snapshot: Snapshot,
    out_dir: Path,
    source: SnapshotInput,
    options: ExportOptions,
    progress: Progress | None = None,
) -> list[dict[str, Any]]:
    """Writes every file of the snapshot into ``out_dir``; returns the file list.

    Beside ``out_dir``, the big files' deflate streams for the download
    (`curation.download.DeflatedMembers`), made on the cores the writing leaves free."""
    progress = progress or (lambda _p, _s: None)
    progress(80, "JSONL, Parquet and Hugging Face datasets")
    from curation.download import DeflatedMembers

    members = DeflatedMembers(out_dir)
    try:
        files = _write_files(snapshot, out_dir, source, options, progress, members)
        members.finish()
    except BaseException:
        members.discard()
        raise
    return files


def _write_files(
    snapshot: Snapshot,
    out_dir: Path,
    source: SnapshotInput,
    options: ExportOptions,
    progress: Progress,
    members: DeflatedMembers,
) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    splits = list(options.splits)
    stored: dict[str, bytes] = {}
    # SHA-256 of the big files, worked out as they are written (`_file_list` reads the rest).
    digests: dict[str, str] = {}

    def read_media(path: str) -> bytes:
        # ``path`` is relative to the export root: media/<storage name>.
        if path not in stored:
            stored[path] = _stored_media(source.media_root, path.removeprefix("media/"))
        return stored[path]

    def write_tables() -> None:
        """Parquet and the Hugging Face folders (no database access: run in a thread)."""
        (out_dir / "parquet").mkdir()
        (out_dir / "hf").mkdir()
        for name, table in (
            ("pairs", snapshot.pairs),
            ("rankings", snapshot.rankings),
            ("rankings_4", snapshot.variants),
        ):
            parquet = out_dir / "parquet" / f"{name}.parquet"
            pq.write_table(table, parquet)
            table, features = hf_image_columns(table, read_media)
            # The table's content named by its Parquet file's digest: `datasets` would
            # otherwise fingerprint each split by pickling the whole in-memory table (a tenth
            # of a second per 10,000 rows) for a cache key nothing here uses.
            content = hashlib.sha256(parquet.read_bytes()).hexdigest()
            digests[parquet.relative_to(out_dir).as_posix()] = content
            write_hf_folder(
                out_dir / "hf" / name,
                {split: _split_rows(table, split) for split in splits},
                features,
                {
                    split: hashlib.sha256(f"{content}:{split}".encode()).hexdigest()[:16]
                    for split in splits
                },
            )
            # Digested and deflated here, in this thread, while the JSONL is still being encoded.
            for path in (out_dir / "hf" / name).rglob("*.arrow"):
                rel = path.relative_to(out_dir).as_posix()
                digests[rel] = _digest(path, members.member(rel))

    # Arrow writes Parquet and the Arrow shards without the GIL: they go on beside the JSONL
    # encoding (Python in part), on another core where there is one. The JSONL files are
    # written, and their SHA-256 worked out, by the members' digester thread
    # (`DeflatedMember.sha256`), block by block as they are deflated, not by the encoding
    # thread, the build's critical path.
    with ThreadPoolExecutor(max_workers=1) as pool:
        tables_written = pool.submit(write_tables)
        jsonl_members = {}
        for folder, table, shape, _why in snapshot.jsonl or jsonl_tables(snapshot)[0]:
            (out_dir / folder).mkdir(parents=True)
            for split in splits:
                part = _split_rows(table, split)
                rel = f"{folder}/{split}.jsonl"
                member = jsonl_members[rel] = members.member(rel, digest=True, write=True)
                for chunk in jsonl_chunks(part, shape):
                    member.write(chunk)
                member.end()
        with open(out_dir / OVERRULED_FILE, "w", encoding="utf-8") as fh:
            fh.write("".join(map(_json_line, snapshot.overruled)))
        for rel, member in jsonl_members.items():
            digests[rel] = member.sha256()
        tables_written.result()

    if options.include_media and snapshot.media:
        progress(93, "media")
        for name in sorted(snapshot.media):
            src = _stored_media_path(source.media_root, name)
            target = out_dir / "media" / name
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(src, target)
            except OSError:
                shutil.copyfile(src, target)

    progress(96, "datasheet")
    sheet_md = datasheet_markdown(snapshot.datasheet)
    (out_dir / "datasheet.md").write_text(sheet_md, encoding="utf-8")
    for name in ("pairs", "rankings", "rankings_4"):
        # A dataset card beside each HF folder's data: the datasheet's facts travel with it.
        card = (
            f"# {snapshot.datasheet['project']['name']} v{snapshot.datasheet['version']}: "
            f"{name}\n\nLoad with `datasets.load_from_disk(<this folder>)`. Image columns "
            "(`image`, `chosen_image`, `rejected_image`, `response_images`) are `Image` "
            "features that hold the pictures (they load as PIL images); video columns hold "
            "paths relative to the export root (two folders up), the trainer's image/video "
            "base folder.\n\n" + sheet_md
        )
        (out_dir / "hf" / name / "README.md").write_text(card, encoding="utf-8")
    files = _file_list(out_dir, skip={"datasheet.json"}, digests=digests)
    snapshot.datasheet["files"] = files
    (out_dir / "datasheet.json").write_text(
        json.dumps(snapshot.datasheet, indent=1, ensure_ascii=False, default=str) + "\n",
        encoding="utf-8",
    )
    # What `_file_list(out_dir, skip=set())` returns, without reading every file again: the
    # other files are as listed, datasheet.json joins them where the sorted walk puts it.
    (sheet,) = _file_list(out_dir, skip=set(), only="datasheet.json")
    at = next(
        (i for i, f in enumerate(files) if tuple(f["path"].split("/")) > ("datasheet.json",)),
        len(files),
    )
    return [*files[:at], sheet, *files[at:]]


def _split_rows(table: pa.Table, split: str) -> pa.Table:
    """The rows of ``split``: ``table`` itself when every row is in it (one split: no copy)."""
    import pyarrow.compute as pc

    mask = pc.equal(table["split"], split)
    if table.num_rows and pc.all(mask).as_py():
        return table
    return table.filter(mask)


# The Hugging Face folders, written as `datasets.DatasetDict.save_to_disk` (datasets 5) writes
# them, byte for byte, with pyarrow and json only: importing `datasets` (with pandas, fsspec,
# huggingface_hub) takes about 0.6 s of CPU in a fresh process, more than writing the shards.
HF_SHARD = "data-00000-of-00001.arrow"
# `datasets`' `Value` dtype of each Arrow type an export table may hold (its
# `_arrow_to_datasets_dtype`).
_HF_DTYPES = {
    **{name: name for name in ("bool", "string", "large_string", "binary", "large_binary")},
    **{f"{sign}int{bits}": f"{sign}int{bits}" for sign in ("", "u") for bits in (8, 16, 32, 64)},
    "halffloat": "float16",
    "float": "float32",
    "double": "float64",
}
# The record batch size `datasets`' `ArrowWriter` takes for a table whose features hold an
# `Image` or a binary `Value` (`config.ARROW_RECORD_BATCH_SIZE_FOR_IMAGE_DATASETS`,
# `..._FOR_BINARY_DATASETS`), and for the others (`config.DEFAULT_MAX_BATCH_SIZE`).
_HF_BATCH_IMAGES = 100
_HF_BATCH = 1000


def _hf_image_type() -> pa.DataType:
    """The Arrow type of a `datasets.Image` cell."""
    import pyarrow as pa

    return pa.struct({"bytes": pa.binary(), "path": pa.string()})


def hf_features(schema: pa.Schema) -> dict[str, Any]:
    """The `datasets` features of an HF table, as `datasets` writes them in
    ``dataset_info.json`` and the shard's schema (``Features`` through its ``asdict``): a
    column of `HF_IMAGE_COLUMNS` of picture cells is an ``Image``, one of
    `HF_IMAGE_LIST_COLUMNS` a ``List`` of them; the rest ``Value``s and ``List``s of them.
    Raises ValueError for an Arrow type an export table does not hold (no guessing at how
    `datasets` would name it)."""
    import pyarrow as pa

    image = _hf_image_type()

    def feature(name: str, kind: pa.DataType, pictures: bool) -> dict[str, Any]:
        if pictures and kind == image:
            return {"_type": "Image"}
        if pa.types.is_list(kind) or pa.types.is_large_list(kind):
            return {
                "feature": feature(name, kind.value_type, pictures),
                "_type": "LargeList" if pa.types.is_large_list(kind) else "List",
            }
        if str(kind) in _HF_DTYPES:
            return {"dtype": _HF_DTYPES[str(kind)], "_type": "Value"}
        raise ValueError(
            f"Hugging Face folder: column {name!r} has a type ({kind}) without a feature"
        )

    pictures = HF_IMAGE_COLUMNS + HF_IMAGE_LIST_COLUMNS
    return {f.name: feature(f.name, f.type, f.name in pictures) for f in schema}


def _hf_batch_size(features: Mapping[str, Any]) -> int:
    """`datasets`' `get_arrow_writer_batch_size_from_features` for `hf_features`' features."""

    def small(feature: Mapping[str, Any]) -> bool:
        if feature["_type"] in ("List", "LargeList"):
            return small(feature["feature"])
        return feature["_type"] == "Image" or feature.get("dtype") == "binary"

    return _HF_BATCH_IMAGES if any(map(small, features.values())) else _HF_BATCH


def write_hf_folder(
    folder: Path,
    splits: Mapping[str, pa.Table],
    features: Mapping[str, Any],
    fingerprints: Mapping[str, str],
) -> None:
    """The ``datasets.DatasetDict`` folder of ``splits`` (tables whose pictures
    `hf_image_columns` embedded, ``features`` from it), byte for byte what
    ``DatasetDict.save_to_disk`` writes for them (``num_shards`` 1 per split, each split's
    ``Dataset`` made with its ``fingerprints`` entry): ``dataset_dict.json``; per split one Arrow
    stream shard (the features in the schema's ``huggingface`` metadata, `datasets`' record
    batch size), ``state.json`` and ``dataset_info.json``. ``load_from_disk`` reads it.

    Every split gets its shard, an empty one too (without it ``load_from_disk`` raises
    IndexError). Image cells are written as they are (``save_to_disk`` would walk every cell
    of every image column to embed files these already hold)."""
    import pyarrow as pa

    features = dict(features)
    if not splits:
        raise ValueError("Hugging Face folder: no split to write")
    info = {"citation": "", "description": "", "features": features, "homepage": "", "license": ""}
    metadata = {"huggingface": json.dumps({"info": {"features": features}})}
    batch = _hf_batch_size(features)
    folder.mkdir(parents=True)
    (folder / "dataset_dict.json").write_text(json.dumps({"splits": list(splits)}))
    for split, table in splits.items():
        if list(features) != table.column_names:
            raise ValueError(
                f"Hugging Face folder: split {split!r} has columns {table.column_names}, "
                f"the features {list(features)}"
            )
        # `datasets`' schema: the columns' types as its features give them (nullable, no
        # field metadata), its features as the schema's metadata.
        schema = pa.schema([(f.name, f.type) for f in table.schema], metadata=metadata)
        table = table.combine_chunks().cast(schema)
        path = folder / split
        path.mkdir()
        with (
            pa.OSFile(str(path / HF_SHARD), "wb") as sink,
            pa.ipc.new_stream(sink, schema) as writer,
        ):
            writer.write_table(table, max_chunksize=batch)
        state = {
            "_data_files": [{"filename": HF_SHARD}],
            "_fingerprint": fingerprints[split],
            "_format_columns": None,
            "_format_kwargs": {},
            "_format_type": None,
            "_output_all_columns": False,
            "_split": None,
        }
        (path / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True))
        (path / "dataset_info.json").write_text(json.dumps(info, indent=2))


def _stored_media_path(media_root: Path, name: str) -> Path:
    src = (media_root / name).resolve()
    if media_root.resolve() not in src.parents or not src.is_file():
        raise FileNotFoundError(f"media file {name!r} is missing from storage")
    return src


def _stored_media(media_root: Path, name: str) -> bytes:
    return _stored_media_path(media_root, name).read_bytes()


# Columns of the Hugging Face tables that hold pictures (HF ``Image`` feature): the context
# image, a pair's chosen/rejected image, and a ranking's response images.
HF_IMAGE_COLUMNS = ("image", "chosen_image", "rejected_image")
HF_IMAGE_LIST_COLUMNS = ("response_images",)


def hf_image_columns(
    table: pa.Table, read: Callable[[str], bytes]
) -> tuple[pa.Table, dict[str, Any]]:
    """An export table as the Hugging Face folders hold it, and its features (`hf_features`).

    Image path columns become ``datasets.Image()`` cells holding the picture's bytes, so
    ``ds[0]["chosen_image"]`` is a PIL image wherever the folder is loaded; a missing image
    stays None. ``datasets`` keeps only the file's base name beside the bytes: the path
    relative to the export root is in the Parquet and JSONL rows, and in a pair's
    ``chosen_media``/``rejected_media``. Video columns stay path strings relative to the export
    root (decoding video is the trainer's choice). The pictures of one table are held in memory
    while it is written.

    Args:
        table: Rows with path columns (the Parquet table).
        read: Returns the bytes of a path relative to the export root.
    """
    import pyarrow as pa

    image = _hf_image_type()

    def cell(path: str | None) -> dict[str, Any] | None:
        # The base name, as `datasets` keeps it when it embeds a file itself.
        return None if path is None else {"bytes": read(path), "path": os.path.basename(path)}

    for index, name in enumerate(table.column_names):
        if name not in HF_IMAGE_COLUMNS + HF_IMAGE_LIST_COLUMNS:
            continue
        values = table.column(name)
        if values.null_count == len(values):
            # No picture in the column (a text-only project): the same None cells, without
            # a Python call per row.
            cells: list[Any] = [None] * len(values)
        elif name in HF_IMAGE_COLUMNS:
            cells = [cell(p) for p in values.to_pylist()]
        else:
            cells = [
                None if paths is None else [cell(p) for p in paths] for paths in values.to_pylist()
            ]
        kind = image if name in HF_IMAGE_COLUMNS else pa.list_(image)
        table = table.set_column(index, name, pa.array(cells, type=kind))
    return table, hf_features(table.schema)


def _digest(path: Path, member: DeflatedMember | None = None) -> str:
    """SHA-256 of the file; its bytes also written to ``member`` (`download.DeflatedMembers`)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
            if member is not None:
                member.write(chunk)
    if member is not None:
        member.end()
    return digest.hexdigest()


def _file_list(
    out_dir: Path,
    skip: set[str],
    only: str | None = None,
    digests: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Path, size and SHA-256 of every file under ``out_dir`` but ``skip`` (media summed up
    in one entry), sorted; with ``only``, of that one file (no media entry). ``digests``:
    SHA-256 already worked out (as the files were written), by relative path."""
    listed = []
    for path in [out_dir / only] if only is not None else sorted(out_dir.rglob("*")):
        rel = path.relative_to(out_dir).as_posix()
        if path.is_file() and rel not in skip and not rel.startswith("media/"):
            listed.append((rel, path))
    known = digests or {}

    def entry(item: tuple[str, Path]) -> dict[str, Any]:
        rel, path = item
        sha = known.get(rel) or _digest(path)
        return {"path": rel, "bytes": path.stat().st_size, "sha256": sha}

    # SHA-256 runs without the GIL on large buffers: two files at a time where there are cores.
    with ThreadPoolExecutor(max_workers=2) as pool:
        files = list(pool.map(entry, listed))
    media = (
        [p for p in (out_dir / "media").rglob("*") if p.is_file()]
        if only is None and (out_dir / "media").is_dir()
        else []
    )
    if media:
        files.append(
            {"path": "media/", "bytes": sum(p.stat().st_size for p in media), "files": len(media)}
        )
    return files


def _agreement_lines(agreement: Mapping[str, Any]) -> list[str]:
    """The agreement section: both scopes side by side, each row saying what it covers."""
    names = {"all_judgments": "all judgments", "exported": "exported"}
    lines = [
        "Computed twice, the same way: over **all judgments** in the project and over the "
        "judgments behind the **exported** data. They differ when prompts are discarded, "
        "filtered out or not exported, or judgments dropped.",
        "",
        *(f"- {names[key]}: {agreement[key]['scope']}" for key in names),
        "",
        "| scope | judgments | prompts | prompts with overlap | mean prompt agreement "
        "| Krippendorff's alpha, nominal | Krippendorff's alpha, ordinal |",
        "|---|---|---|---|---|---|---|",
    ]

    def cell(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    for key, name in names.items():
        figures = agreement[key]
        alpha = figures["krippendorff_alpha"] or {"-": {"nominal": None, "ordinal": None}}
        for kind, levels in alpha.items():
            label = name if len(alpha) == 1 else f"{name} ({kind})"
            lines.append(
                f"| {label} | {figures['judgments']} | {figures['prompts']} "
                f"| {figures['prompts_with_overlap']} | {cell(figures['mean_prompt_agreement'])} "
                f"| {cell(levels['nominal'])} | {cell(levels['ordinal'])} |"
            )
    lines += [
        "",
        "Mean prompt agreement: the share of annotator pairs giving a candidate pair the same "
        "relation, averaged over prompts judged by two or more annotators. Alpha: rank "
        "positions for rankings, the relation (+1/0/-1) for pairs.",
    ]
    return lines


def _overruled_lines(sheet: Mapping[str, Any]) -> list[str]:
    """The overruled-arc count and, when asked for, the model prior's record."""
    lines = []
    listed = sheet.get("overruled_arcs")
    if listed:
        lines.append(
            f"- human arcs overruled: {listed['listed']}, of which strong consensus: "
            f"{listed['strong']} (listed in `{listed['file']}` for review)"
        )
    prior = sheet["method"].get("model_prior")
    if prior:
        lines += [
            "",
            "## Model-strength prior",
            "",
            f"- used: {prior['used']} (held-out log-likelihood {prior['held_out_log_likelihood']}"
            f" vs {prior['human_held_out_log_likelihood']} without it)",
            f"- spread of a candidate around its model: {prior['spread']} (alpha {prior['alpha']})",
            f"- strong human consensus ({prior['strong_rule']}): {prior['strong_pairs']} pairs; "
            f"the prior contradicted {prior['strong_pairs_contradicted_by_prior']} "
            f"({prior['strong_pair_contradiction_rate']:.1%}), put back as hard constraints; "
            f"still overruled (cycles of strong arcs): {prior['strong_pairs_overruled']}",
        ]
        if prior["strengths"]:
            lines.append(
                "- model strengths: "
                + ", ".join(f"{m} {v:+.2f}" for m, v in list(prior["strengths"].items())[:30])
            )
    return lines


def datasheet_markdown(sheet: Mapping[str, Any]) -> str:
    """The datasheet for people: counts, agreement, drops, cycles, leaderboard."""
    c = sheet["counts"]
    lines = [
        f"# Datasheet: {sheet['project']['name']} v{sheet['version']}",
        "",
        f"Built {sheet['created_at']} by Quorum ({sheet['format']}).",
        "",
    ]
    if sheet.get("warnings"):
        lines += ["## Warnings", "", *(f"- {w}" for w in sheet["warnings"]), ""]
    lines += [
        "## Options",
        "",
        *(f"- {k}: `{json.dumps(v)}`" for k, v in sheet["options"].items()),
        "",
        "## Method",
        "",
        # The model prior has its own section (`_overruled_lines`).
        *(
            f"- {k}: {v}"
            for k, v in sheet["method"].items()
            if v is not None and k != "model_prior"
        ),
        "",
        "## Counts",
        "",
        f"- prompts: {c['prompts_exported']} exported of {c['prompts_in_project']}",
        f"- judgments: {c['judgments_used']} used of {c['judgments_in_project']}",
        f"- pairs: {c['pairs']}; full rankings: {c['rankings']}; 4-response variants: "
        f"{c['rankings_4']}",
        f"- reviewer rankings used: {c['reviewer_rankings_used']}",
        "",
        "| split | prompts | pairs | rankings | 4-response variants |",
        "|---|---|---|---|---|",
        *(
            f"| {name} | {s.get('prompts', 0)} | {s.get('pairs', 0)} | {s.get('rankings', 0)} "
            f"| {s.get('rankings_4', 0)} |"
            for name, s in c["by_split"].items()
        ),
        "",
        "## Agreement",
        "",
        *_agreement_lines(sheet["agreement"]),
        "",
        "## Dropped, and why",
        "",
    ]
    for what, reasons in sheet["dropped"].items():
        if reasons:
            lines += [f"- {what}: " + "; ".join(f"{r}: {n}" for r, n in reasons.items())]
        else:
            lines += [f"- {what}: none"]
    wc = sheet.get("without_content")
    if wc:
        lines += [
            "",
            "## Rows without content",
            "",
            f"- candidates without content: {wc['candidates']}; pairs dropped: "
            f"{wc['pairs_dropped']}; prompts dropped: {wc['prompts_dropped']}",
            f"- why: {wc['why']}",
        ]
    cy = sheet["cycles"]
    lines += [
        "",
        "## Cycles removed",
        "",
        f"- prompts with cycles: {cy['prompts_with_cycles']}; arcs removed: "
        f"{cy['arcs_removed']} (weight {cy['weight_removed']}); provably minimum: {cy['exact']}",
        *_overruled_lines(sheet),
        "",
        "## Leaderboard (Bradley-Terry, ties = half a win, 95% bootstrap CI)",
        "",
        "| # | model | score | 95% CI | comparisons |",
        "|---|---|---|---|---|",
    ]
    for row in sheet["leaderboard"]:
        ci = "n/a" if row["ci_low"] is None else f"{row['ci_low']} - {row['ci_high']}"
        lines.append(
            f"| {row['rank']} | {row['model']} | {row['score']} | {ci} | {row['comparisons']} |"
        )
    st = sheet["stability"]
    if st:
        lines += [""]
        if st["votes_to_change"] is None:
            lines.append(
                f"Stability: no greedy removal of up to 200 votes dethrones {st['leader']}."
            )
        else:
            lines.append(
                f"Stability: removing {st['votes_to_change']} of {st['votes']} votes puts "
                f"{st['new_leader']} above {st['leader']} (greedy, an upper bound)."
            )
    lines += [
        "",
        "## Files",
        "",
        *(
            f"- `{f['path']}` ({f['rows']} rows): {f['why']}"
            for f in sheet.get("files_written", [])
        ),
        *(f"- `{f['path']}` not written: {f['why']}" for f in sheet.get("files_not_written", [])),
        "- media paths are relative to this folder, the export root: pass it as the trainer's "
        "image/video base folder"
        + ("" if sheet["media_included"] else " (media not included: copy them from storage)"),
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- download


# Keys of JSONL rows that hold a path relative to the export root, and those holding a list.
PATH_KEYS = (
    "image",
    "video",
    "chosen_image",
    "rejected_image",
    "chosen_video",
    "rejected_video",
    "chosen_media",
    "rejected_media",
)
PATH_LIST_KEYS = ("response_images", "response_videos")


def check_base_folder(value: str) -> str:
    """An absolute folder for `with_base_folder` (POSIX ``/...`` or Windows ``C:/...``),
    without a trailing separator. Raises ValueError naming what is wrong."""
    folder = value.strip()
    windows = len(folder) > 2 and folder[0].isalpha() and folder[1] == ":" and folder[2] in "/\\"
    if not (folder.startswith("/") or windows):
        raise ValueError(f"base_folder must be an absolute path, got {value!r}")
    if any(part == ".." for part in folder.replace("\\", "/").split("/")):
        raise ValueError("base_folder must not contain '..'")
    if any(ord(ch) < 32 for ch in folder):
        raise ValueError("base_folder must not contain control characters")
    return folder.rstrip("/\\") or "/"


def with_base_folder(row: Mapping[str, Any], base_folder: str) -> dict[str, Any]:
    """A JSONL row with its media paths made absolute under ``base_folder``, the folder where
    the export will lie unpacked (for a trainer given no base folder)."""

    def absolute(path: Any) -> Any:
        return f"{base_folder.rstrip('/')}/{path}" if isinstance(path, str) and path else path

    out = dict(row)
    for key in PATH_KEYS:
        if key in out:
            out[key] = absolute(out[key])
    for key in PATH_LIST_KEYS:
        if isinstance(out.get(key), list):
            out[key] = [absolute(p) for p in out[key]]
    return out


def export_file_chunks(
    path: Path, *, base_folder: str | None = None, chunk_size: int = 1 << 20
) -> Iterator[bytes]:
    """The bytes of one export file; JSONL rows with absolute paths when ``base_folder`` is
    given (see `with_base_folder`). Parquet, HF folders and the datasheet's digests keep
    describing the files with relative paths."""
    if base_folder is None or path.suffix != ".jsonl":
        with open(path, "rb") as src:
            yield from iter(lambda: src.read(chunk_size), b"")
        return
    with open(path, encoding="utf-8") as src:
        batch: list[str] = []
        for line in src:
            if line.strip():
                row = with_base_folder(json.loads(line), base_folder)
                batch.append(_json_line(row))
            if len(batch) >= 1000:
                yield "".join(batch).encode()
                batch = []
        if batch:
            yield "".join(batch).encode()


def copy_with_absolute_paths(folder: Path, dest: Path) -> Path:
    """Copies an export folder to ``dest`` (a new folder) with every JSONL path absolute under
    it, for a trainer run on this machine; media are hard-linked where the file system allows.
    Returns the absolute ``dest``."""
    dest = dest.resolve()
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} exists and is not empty")
    base_folder = check_base_folder(dest.as_posix())
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        target = dest / path.relative_to(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix != ".jsonl":
            try:
                os.link(path, target)
                continue
            except OSError:
                pass
        with open(target, "wb") as out:
            for chunk in export_file_chunks(path, base_folder=base_folder):
                out.write(chunk)
    return dest
