"""Reads for the curation app: permissions, judgment loading, queues, review items, dashboard."""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from itertools import chain, repeat
from operator import itemgetter
from pathlib import Path
from typing import Any, TypeVar

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection
from django.db.models import (
    Case,
    Count,
    Exists,
    F,
    IntegerField,
    Max,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    TextField,
    Value,
    When,
)
from django.db.models.functions import Cast, Coalesce, Concat
from django.db.models.sql.constants import CURSOR
from django.utils.safestring import SafeString, mark_safe

from annotate.models import (
    Candidate,
    Judgment,
    Membership,
    ModelScore,
    Project,
    Prompt,
    Task,
    TaskCandidate,
)
from annotate.selectors import LETTERS
from curation import consensus as C
from curation import graph as G
from curation.models import (
    AnnotatorQuality,
    DatasetExport,
    Flag,
    PromptAgreement,
    PromptDecision,
    ReviewAction,
)
from curation.wording import action_change_text, ranking_text, verdict_text

REVIEW_ROLES = (Membership.Role.REVIEWER, Membership.Role.ADMIN)

T = TypeVar("T")


# --------------------------------------------------------------------------- permissions


def role_in_project(*, user: AbstractBaseUser, project: Project) -> str | None:
    if not user.is_authenticated:
        return None
    return (
        Membership.objects.filter(user=user, project=project).values_list("role", flat=True).first()
    )


def can_review(*, user: AbstractBaseUser, project: Project) -> bool:
    """Staff, or a reviewer or admin of the project."""
    if not user.is_authenticated:
        return False
    return bool(user.is_staff or role_in_project(user=user, project=project) in REVIEW_ROLES)


def can_administer(*, user: AbstractBaseUser, project: Project) -> bool:
    """Staff, or an admin of the project (dashboard, exports)."""
    if not user.is_authenticated:
        return False
    return bool(user.is_staff or role_in_project(user=user, project=project) == "admin")


def projects_for_reviewer(*, user: AbstractBaseUser) -> QuerySet[Project]:
    if user.is_staff:
        return Project.objects.all()
    return Project.objects.filter(
        memberships__user=user, memberships__role__in=REVIEW_ROLES
    ).distinct()


# --------------------------------------------------------------------------- loading


def evaluator_id(annotator_id: int | None, source_name: str, external_annotator: str) -> str:
    """Same string as ``Judgment.evaluator``, from plain column values."""
    if annotator_id is not None:
        return f"user:{annotator_id}"
    return f"ext:{source_name}:{external_annotator}"


@dataclass(frozen=True)
class CandidateInfo:
    id: int
    prompt_id: int
    model_name: str
    kind: str
    external_id: str
    media: str
    text: str = ""


@dataclass(frozen=True)
class PromptInfo:
    id: int
    external_id: str
    text: str
    image: str
    video: str


@dataclass
class ProjectData:
    """A project's judgments and what curation needs beside them, loaded in a few queries.

    Attributes:
        votes: Every judgment as a `consensus.Vote`, on tasks of any status.
        task_status: Status per task id.
        gold: Gold ranking per gold task id.
        candidates: Candidate facts per id.
        prompts: Prompt facts per id (``with_content`` loads prompt text and media).
        rm_scores: Active reward model's score per candidate id (empty without one).
        rm_label: ``name@version`` of the active reward model, or "".
        weights: Stored reliability weight per evaluator.
        marked: Evaluators a reviewer marked unreliable.
        decisions: Reviewer decision per prompt id.
    """

    project: Project
    votes: list[C.Vote]
    task_status: dict[int, str]
    gold: dict[int, list[list[int]]]
    candidates: dict[int, CandidateInfo]
    prompts: dict[int, PromptInfo]
    rm_scores: dict[int, float]
    rm_label: str
    weights: dict[str, float]
    marked: set[str]
    decisions: dict[int, PromptDecision] = field(default_factory=dict)
    _by_prompt: dict[int, list[C.Vote]] | None = field(default=None, repr=False)

    def votes_by_prompt(self) -> dict[int, list[C.Vote]]:
        """Votes grouped by prompt (computed once; ``votes`` must not change afterwards)."""
        if self._by_prompt is None:
            grouped: dict[int, list[C.Vote]] = defaultdict(list)
            for vote in self.votes:
                grouped[vote.prompt_id].append(vote)
            self._by_prompt = dict(grouped)
        return self._by_prompt


def frozen_instance(cls: type[T], *fields: Iterable[tuple[str, Any]] | dict[str, Any]) -> T:
    """``cls(**fields)`` for a frozen dataclass given every field (later ones win), without
    its ``object.__setattr__`` per field: a loader builds one per row (about twice as fast).
    The same object: equal, hashing the same, as frozen. No ``__post_init__`` runs."""
    instance = object.__new__(cls)
    for part in fields:
        instance.__dict__.update(part)
    return instance


def project_data(
    *,
    project: Project,
    prompt_ids: Sequence[int] | None = None,
    with_content: bool = False,
    with_presented: bool = True,
    with_times: bool = True,
    with_candidates: bool = True,
    shared: bool = False,
) -> ProjectData:
    """Loads a project (or some of its prompts) for curation, in eight queries (nine with
    ``shared``, one fewer when it reuses the votes, two fewer without ``with_candidates``).

    ``with_presented`` / ``with_times`` load the display order and timestamps of judgments;
    a full pass over ~100K judgments is markedly faster without columns it does not read.
    Without ``with_candidates``, ``candidates`` and ``prompts`` are left empty.
    ``shared`` (whole projects only): the votes come from the previous shared load of the
    project in this process while its judgments are unchanged (`_judgments_mark`), and are
    kept for the next one: the flags pass and an export after it load the judgments once.
    """
    judgments = Judgment.objects.filter(project=project)
    tasks = Task.objects.filter(project=project)
    slots = TaskCandidate.objects.filter(task__project=project)
    candidates = Candidate.objects.filter(project=project)
    prompts = Prompt.objects.filter(project=project)
    decisions = PromptDecision.objects.filter(project=project)
    if prompt_ids is not None:
        judgments = judgments.filter(task__prompt_id__in=prompt_ids)
        tasks = tasks.filter(prompt_id__in=prompt_ids)
        slots = slots.filter(task__prompt_id__in=prompt_ids)
        candidates = candidates.filter(prompt_id__in=prompt_ids)
        prompts = prompts.filter(pk__in=prompt_ids)
        decisions = decisions.filter(prompt_id__in=prompt_ids)

    # JSON columns are read as their text and decoded here, only where a value is used:
    # Django's JSON converter runs on every row of every JSON column (on NULL too), about a
    # fifth of loading 100K judgments. Same values: the converter is ``json.loads``. A
    # task's gold ranking is read only where it is gold (no boolean column: on SQLite that
    # has a converter per row).
    loads = json.loads
    task_prompt: dict[int, int] = {}
    task_status: dict[int, str] = {}
    gold: dict[int, list[list[int]]] = {}
    gold_of = Case(
        When(is_gold=True, then=Cast("gold_ranking", TextField())),
        default=Value(None),
        output_field=TextField(),
    )
    for task_id, prompt_id, status, gold_text in fetched_rows(
        tasks.values_list("id", "prompt_id", "status", gold_of)
    ):
        task_prompt[task_id] = prompt_id
        task_status[task_id] = status
        if gold_text is not None and (gold_ranking := loads(gold_text)):
            gold[task_id] = [g if isinstance(g, list) else [g] for g in gold_ranking]

    shared_key = None
    if shared and prompt_ids is None:
        shared_key = (
            connection.alias,
            connection.settings_dict["NAME"],
            project.pk,
            with_presented,
            with_times,
            _judgments_mark(judgments),
        )
    kept = _shared_votes.get(shared_key) if shared_key is not None else None
    if kept is not None:
        votes = list(kept)  # a caller may change its list, never the votes (frozen)
    else:
        votes = _load_votes(
            judgments, slots, task_prompt, with_presented=with_presented, with_times=with_times
        )
        if shared_key is not None:
            # One project at a time: what a worker holds between passes is bounded by that.
            _shared_votes.clear()
            _shared_votes[shared_key] = list(votes)

    cands: dict[int, CandidateInfo] = {}
    prompt_rows: dict[int, PromptInfo] = {}
    if with_candidates:
        cand_fields = ["id", "prompt_id", "model_name", "kind", "external_id", "media"]
        if with_content:
            cand_fields.append("text")
        no_text = {"text": ""}
        for row in candidates.order_by("id").values_list(*cand_fields):
            cands[row[0]] = frozen_instance(
                CandidateInfo, no_text, zip(cand_fields, row, strict=True)
            )
        prompt_fields = ["id", "external_id"]
        if with_content:
            prompt_fields += ["text", "image", "video"]
        blank = {"text": "", "image": "", "video": ""}
        for row in prompts.values_list(*prompt_fields):
            prompt_rows[row[0]] = frozen_instance(
                PromptInfo, blank, zip(prompt_fields, row, strict=True)
            )

    rm_scores: dict[int, float] = {}
    rm_label = ""
    rm = project.active_reward_model
    if rm is not None:
        rm_label = f"{rm.name}@{rm.version}"
        scores = ModelScore.objects.filter(
            reward_model=rm, candidate__project=project, score__isnull=False
        )
        if prompt_ids is not None:
            scores = scores.filter(candidate__prompt_id__in=prompt_ids)
        rm_scores = dict(fetched_rows(scores.values_list("candidate_id", "score")))

    weights: dict[str, float] = {}
    marked: set[str] = set()
    for evaluator, weight, is_marked in AnnotatorQuality.objects.filter(
        project=project
    ).values_list("evaluator", "weight", "marked_unreliable"):
        weights[evaluator] = weight
        if is_marked:
            marked.add(evaluator)

    return ProjectData(
        project=project,
        votes=votes,
        task_status=task_status,
        gold=gold,
        candidates=cands,
        prompts=prompt_rows,
        rm_scores=rm_scores,
        rm_label=rm_label,
        weights=weights,
        marked=marked,
        decisions={d.prompt_id: d for d in decisions},
    )


C_ = TypeVar("C_")
P_ = TypeVar("P_")


def content_rows(
    *, project: Project, candidate_type: type[C_], prompt_type: type[P_]
) -> tuple[dict[int, C_], dict[int, P_]]:
    """A project's candidates (by id) and prompts with their content, each built once as
    ``candidate_type`` / ``prompt_type``: frozen dataclasses whose fields are columns of
    `Candidate` / `Prompt` (`frozen_instance`). The rows and order of `project_data`'s
    ``candidates`` and ``prompts`` with ``with_content``, without its `CandidateInfo` and
    `PromptInfo` in between (an export would build each candidate twice)."""
    cand_fields = [f.name for f in fields(candidate_type)]  # type: ignore[arg-type]
    prompt_fields = [f.name for f in fields(prompt_type)]  # type: ignore[arg-type]
    # One ``fetchall`` each (`fetched_rows`): 940K candidates at MR2Bench x10 were 9,400
    # ``fetchmany(100)`` calls, each row copied into a new tuple.
    candidates = {
        row[0]: frozen_instance(candidate_type, zip(cand_fields, row, strict=True))
        for row in fetched_rows(
            Candidate.objects.filter(project=project).order_by("id").values_list(*cand_fields)
        )
    }
    prompts = {
        row[0]: frozen_instance(prompt_type, zip(prompt_fields, row, strict=True))
        for row in fetched_rows(Prompt.objects.filter(project=project).values_list(*prompt_fields))
    }
    return candidates, prompts


# The votes of the last shared load (`project_data(shared=True)`), by its key: one project.
_shared_votes: dict[tuple[Any, ...], list[C.Vote]] = {}


def _judgments_mark(judgments: QuerySet[Judgment]) -> tuple[int, int | None, Any]:
    """What changes whenever a project's judgments do: their count, largest id and latest
    ``updated_at`` (``auto_now``: every save, create and bulk create sets it). A write that
    bypasses ``save()`` (``QuerySet.update``, raw SQL) must set ``updated_at`` too; tasks'
    prompts and slots, which votes also read, never change once written."""
    mark = judgments.aggregate(n=Count("pk"), last=Max("pk"), changed=Max("updated_at"))
    return mark["n"], mark["last"], mark["changed"]


def fetched_rows(queryset: QuerySet[Any]) -> Iterable[Sequence[Any]]:
    """The rows of a ``values_list`` queryset as iterating it gives them (Django's
    converters applied where a column has one), read with one ``fetchall``: Django reads
    100 rows per ``fetchmany`` and copies every row into a new tuple. Rows are the
    driver's tuples (lists where a column has a converter); an empty result set runs no
    query."""
    compiler = queryset.query.get_compiler(using=queryset.db)
    cursor = compiler.execute_sql(CURSOR)
    if cursor is None:  # EmptyResultSet: e.g. ``pk__in=[]``
        return []
    try:
        rows = cursor.fetchall()
    finally:
        cursor.close()
    if compiler.has_extra_select:
        rows = [row[: compiler.col_count] for row in rows]
    return compiler.results_iter(results=[rows])


# ``evaluator_id`` in SQL: the same string from the database's text of the same columns.
EVALUATOR_SQL = Case(
    When(
        annotator_id__isnull=False,
        then=Concat(Value("user:"), Cast("annotator_id", TextField())),
    ),
    default=Concat(Value("ext:"), "source_name", Value(":"), "external_annotator"),
    output_field=TextField(),
)


# Display orders decoded per this many judgments (`_display_orders`): a chunk's decoded
# lists are all that is held at a time.
DISPLAY_ORDER_CHUNK = 8192


def _display_orders(rows: Sequence[Sequence[Any]], column: int) -> Iterable[tuple[Any, ...]]:
    """``tuple(json.loads(text) or ())`` of each row's JSON text in ``column`` (NULL: ``()``),
    from one decode per `DISPLAY_ORDER_CHUNK` rows: at 94K judgments 35 ms of CPU where
    decoding them one by one (or reading ``[12, 34]`` by a regular expression) took 95.
    The texts are a JSON column's, one JSON value each."""
    texts = list(map(itemgetter(column), rows))
    chunks = (
        texts[start : start + DISPLAY_ORDER_CHUNK]
        for start in range(0, len(texts), DISPLAY_ORDER_CHUNK)
    )
    return chain.from_iterable(map(_decoded_orders, chunks))


def _decoded_orders(texts: list[str | None]) -> list[tuple[Any, ...]]:
    loads = json.loads
    joined = ["null" if text is None else text for text in texts] if None in texts else texts
    values = loads("[" + ",".join(joined) + "]")
    if len(values) != len(texts):  # not one JSON value per text: decode them one by one
        values = [None if text is None else loads(text) for text in texts]
    if set(map(type, values)) <= {list}:
        return list(map(tuple, values))
    return [tuple(value or ()) for value in values]


def _load_votes(
    judgments: QuerySet[Judgment],
    slots: QuerySet[TaskCandidate],
    task_prompt: dict[int, int],
    *,
    with_presented: bool,
    with_times: bool,
) -> list[C.Vote]:
    """Every judgment of ``judgments`` as a `consensus.Vote`, in id order.

    Read as rows of plain columns (`fetched_rows`): the evaluator's id built in SQL, a pair
    judgment's ranking as NULL, every display order in one JSON decode (`_display_orders`);
    values that repeat across votes (evaluator ids, a task's pair) are one object each.
    """
    loads = json.loads
    pair_of: dict[int, tuple[int, ...]] = {}  # a task's first two slots' candidates
    for task_id, candidate_id in fetched_rows(
        slots.order_by("task_id", "position").values_list("task_id", "candidate_id")
    ):
        got = pair_of.get(task_id)
        if got is None:
            pair_of[task_id] = (candidate_id,)
        elif len(got) == 1:
            pair_of[task_id] = (got[0], candidate_id)

    # A pair judgment's ranking is empty: NULL from the database, so no JSON to decode.
    judgments = judgments.annotate(
        ranking_of_ranking=Case(
            When(kind=Judgment.Kind.PAIR, then=Value(None)),
            default=Cast("ranking", TextField()),
            output_field=TextField(),
        ),
        presented_text=Cast("presented_order", TextField()),
        evaluator_text=EVALUATOR_SQL,
    )
    columns = [
        "id",
        "task_id",
        "evaluator_text",
        "kind",
        "ranking_of_ranking",
        "outcome",
        "presented_text" if with_presented else "outcome",
        "duration_ms",
        "created_at" if with_times else "duration_ms",
    ]
    rows = fetched_rows(judgments.order_by("id").values_list(*columns))
    rows = rows if isinstance(rows, list) else list(rows)
    votes = []
    append = votes.append
    new, vote_type = object.__new__, C.Vote
    evaluators: dict[str, str] = {}
    one_evaluator = evaluators.setdefault
    pair_kind = Judgment.Kind.PAIR.value
    for (
        jid,
        task_id,
        evaluator,
        kind,
        ranking,
        outcome,
        _,
        duration,
        created,
    ), shown in zip(
        rows, _display_orders(rows, 6) if with_presented else repeat((), len(rows)), strict=True
    ):
        is_pair = kind == pair_kind
        # `consensus.loaded_vote` inline (no call per row): the fields one by one, in order.
        vote = new(vote_type)
        fields = vote.__dict__
        fields["judgment_id"] = jid
        fields["task_id"] = task_id
        fields["prompt_id"] = task_prompt[task_id]
        fields["evaluator"] = one_evaluator(evaluator, evaluator)
        fields["ranking"] = () if is_pair else tuple(tuple(g) for g in loads(ranking))
        fields["pair"] = pair_of.get(task_id, ()) if is_pair else None
        fields["outcome"] = outcome
        fields["presented_order"] = shown
        fields["duration_ms"] = duration
        fields["created_at"] = created if with_times else None
        append(vote)

    return votes


def joint_fit_cache(project_id: int) -> Path:
    """Where a project's joint annotator model fit is kept between passes (an ``.npz``,
    `curation.crowd_bt.fit_crowd_bt_cached`): under ``DATA_DIR``, which the web process
    and the workers share as they share exports. Keyed by the votes, so never stale."""
    return Path(settings.DATA_DIR) / "fits" / f"project-{project_id}.npz"


def usable_votes(data: ProjectData, votes: Iterable[C.Vote]) -> list[C.Vote]:
    """Votes that count for consensus: not on discarded tasks, not by marked evaluators,
    not pair judgments whose task lacks two candidate slots (`consensus.unpaired`)."""
    return [
        v
        for v in votes
        if data.task_status.get(v.task_id) != Task.Status.DISCARDED
        and v.evaluator not in data.marked
        and not (v.pair is not None and len(v.pair) != 2)
    ]


def discarded_tasks(data: ProjectData) -> set[int]:
    """Ids of the project's discarded tasks."""
    discarded = Task.Status.DISCARDED
    return {task_id for task_id, status in data.task_status.items() if status == discarded}


def live_votes(data: ProjectData) -> list[C.Vote]:
    """``data.votes`` not on a discarded task, in load order."""
    discarded = discarded_tasks(data)
    if not discarded:
        return list(data.votes)
    return [v for v in data.votes if v.task_id not in discarded]


def usable_votes_by_prompt(
    data: ProjectData, by_prompt: Mapping[int, Sequence[C.Vote]], prompt_ids: Iterable[int]
) -> dict[int, list[C.Vote]]:
    """`usable_votes` of each of ``prompt_ids``' votes in ``by_prompt`` (the same lists),
    with the discarded tasks, marked evaluators and unpaired judgments found once for the
    project instead of once per vote: the flags pass asks for every prompt."""
    prompt_ids = list(prompt_ids)
    discarded = discarded_tasks(data)
    marked = data.marked
    if not discarded and not marked:
        every = chain.from_iterable(by_prompt[p] for p in prompt_ids)
        if not C.any_unpaired(every):
            return {p: list(by_prompt[p]) for p in prompt_ids}
    return {
        p: [
            v
            for v in by_prompt[p]
            if v.task_id not in discarded
            and v.evaluator not in marked
            and not (v.pair is not None and len(v.pair) != 2)
        ]
        for p in prompt_ids
    }


def evaluator_labels(evaluators: Iterable[str]) -> dict[str, str]:
    """Display names: the username for ``user:<id>``, ``annotator (source)`` otherwise."""
    evaluators = list(evaluators)
    user_ids = {e: int(e[5:]) for e in evaluators if e.startswith("user:") and e[5:].isdigit()}
    names = dict(
        get_user_model().objects.filter(pk__in=user_ids.values()).values_list("pk", "username")
    )
    labels = {}
    for e in evaluators:
        if e in user_ids:
            labels[e] = names.get(user_ids[e], e)
        elif e.startswith("ext:") and e.count(":") >= 2:
            _, source, annotator = e.split(":", 2)
            labels[e] = f"{annotator or 'anonymous'} ({source})" if source else annotator
        else:
            labels[e] = e
    return labels


def prompt_consensus_for(
    *, data: ProjectData, prompt_id: int, use_rm: bool = False
) -> C.PromptConsensus:
    """The live consensus of one prompt (denoised; humans only unless ``use_rm``).

    Humans only, it is the default denoised export's ranking: the joint annotator model's
    strengths, with the annotators' reliabilities and prior of the project's kept fit
    (`consensus.cached_prompt_scores`). Before any fit is kept (no flags pass yet), the
    per-prompt consensus with the stored weights.
    """
    votes = usable_votes(data, data.votes_by_prompt().get(prompt_id, []))
    weights, scores = data.weights, None
    if not use_rm and votes:
        cached = C.cached_prompt_scores(votes, joint_fit_cache(data.project.pk))
        if cached is not None:
            scores, eta = cached
            weights = {**weights, **eta}
    return C.prompt_consensus(
        prompt_id,
        votes,
        weights=weights,
        rm_scores=data.rm_scores,
        rm_weight=0.5 if use_rm else 0.0,
        scores=scores,
    )


# --------------------------------------------------------------------------- queues


KIND_ORDER = [k for k, _ in Flag.Kind.choices]


def queue_counts(*, project: Project) -> list[dict[str, Any]]:
    """Open and closed flags per kind, in the kinds' fixed order."""
    counts = {
        (row["kind"], row["status"]): row["n"]
        for row in Flag.objects.filter(project=project)
        .values("kind", "status")
        .annotate(n=Count("id"))
    }
    return [
        {
            "kind": kind,
            "label": label,
            "open": counts.get((kind, "open"), 0),
            "resolved": counts.get((kind, "resolved"), 0),
            "cleared": counts.get((kind, "cleared"), 0),
        }
        for kind, label in Flag.Kind.choices
    ]


def queue_flags(*, project: Project, kind: str, status: str = "open") -> QuerySet[Flag]:
    """One review queue: flags of a kind, most severe first."""
    return (
        Flag.objects.filter(project=project, kind=kind, status=status)
        .select_related("prompt")
        .order_by("-severity", "id")
    )


def next_open_flag(*, project: Project, kind: str, after: Flag | None = None) -> Flag | None:
    """The next open flag of a queue (the most severe other than ``after``)."""
    flags = Flag.objects.filter(project=project, kind=kind, status=Flag.Status.OPEN)
    if after is not None:
        flags = flags.exclude(pk=after.pk)
    return flags.order_by("-severity", "id").first()


# --------------------------------------------------------------------------- review items


@dataclass(frozen=True)
class CandidateView:
    id: int
    letter: str
    model_name: str
    kind: str
    text_html: SafeString
    media_url: str
    score: float | None
    rank: int | None


@dataclass(frozen=True)
class JudgmentView:
    id: int
    evaluator: str
    label: str
    ranking_letters: str
    duration_ms: int | None
    created_at: Any
    weight: float | None
    marked: bool
    task_status: str


@dataclass
class ReviewItem:
    """What a reviewer sees of one prompt."""

    project: Project
    prompt: Prompt
    prompt_html: SafeString
    candidates: list[CandidateView]
    judgments: list[JudgmentView]
    consensus: C.PromptConsensus
    consensus_letters: str
    model_letters: str
    rm_label: str
    decision: PromptDecision | None
    decision_letters: str
    flags: list[Flag]
    evaluators: list[tuple[str, str]]
    letter_of: dict[int, str]

    @property
    def has_videos(self) -> bool:
        return any(c.kind == "video" and c.media_url for c in self.candidates)

    @property
    def has_media(self) -> bool:
        return any(c.media_url for c in self.candidates)


ranking_letters = ranking_text  # ``A > B = C > D`` for tie groups of candidate ids


def candidate_letters(*, prompt_ids: Iterable[int]) -> dict[int, dict[int, str]]:
    """Prompt id -> {candidate id: letter}: the letters every review page shows.

    A, B, C ... in the order the candidates were stored (the import's order), so a letter never
    changes as judgments arrive and names the same candidate on every page.
    """
    letters: dict[int, dict[int, str]] = defaultdict(dict)
    for prompt_id, candidate_id in (
        Candidate.objects.filter(prompt_id__in=list(prompt_ids))
        .order_by("prompt_id", "id")
        .values_list("prompt_id", "id")
    ):
        of_prompt = letters[prompt_id]
        i = len(of_prompt)
        of_prompt[candidate_id] = LETTERS[i] if i < len(LETTERS) else f"C{i + 1}"
    return dict(letters)


def review_item(*, project: Project, prompt: Prompt) -> ReviewItem:
    data = project_data(project=project, prompt_ids=[prompt.pk])
    consensus = prompt_consensus_for(data=data, prompt_id=prompt.pk)
    cands = list(Candidate.objects.filter(prompt=prompt).order_by("id"))
    letter_of = candidate_letters(prompt_ids=[prompt.pk]).get(prompt.pk, {})
    decision = data.decisions.get(prompt.pk)
    final = decision.final_ranking if decision and decision.final_ranking else consensus.ranking
    rank_of = {c: i + 1 for i, group in enumerate(final) for c in group}
    candidates = [
        CandidateView(
            id=c.pk,
            letter=letter_of[c.pk],
            model_name="" if project.blind else c.model_name,
            kind=c.kind,
            text_html=mark_safe(c.text_html),  # sanitised when stored
            media_url=c.media.url if c.media else "",
            score=data.rm_scores.get(c.pk),
            rank=rank_of.get(c.pk),
        )
        for c in cands
    ]
    votes = data.votes_by_prompt().get(prompt.pk, [])
    labels = evaluator_labels({v.evaluator for v in votes})
    judgments = [
        JudgmentView(
            id=v.judgment_id,
            evaluator=v.evaluator,
            label=labels[v.evaluator],
            ranking_letters=_vote_letters(v, letter_of),
            duration_ms=v.duration_ms,
            created_at=v.created_at,
            weight=data.weights.get(v.evaluator),
            marked=v.evaluator in data.marked,
            task_status=data.task_status.get(v.task_id, ""),
        )
        for v in votes
    ]
    model_ranking = C.groups_from_scores(
        {c: s for c, s in data.rm_scores.items() if c in letter_of}
    )
    return ReviewItem(
        project=project,
        prompt=prompt,
        prompt_html=mark_safe(prompt.text_html),
        candidates=candidates,
        judgments=judgments,
        consensus=consensus,
        consensus_letters=ranking_letters(consensus.ranking, letter_of),
        model_letters=ranking_letters(model_ranking, letter_of) if model_ranking else "",
        rm_label=data.rm_label,
        decision=decision,
        decision_letters=ranking_letters(decision.final_ranking, letter_of)
        if decision and decision.final_ranking
        else "",
        flags=list(
            Flag.objects.filter(project=project, prompt=prompt).order_by("status", "-severity")
        ),
        evaluators=sorted(labels.items(), key=lambda kv: kv[1]),
        letter_of=letter_of,
    )


def _vote_letters(vote: C.Vote, letter_of: dict[int, str]) -> str:
    return verdict_text(
        ranking=vote.ranking, pair=vote.pair, outcome=vote.outcome, letter_of=letter_of
    )


def judgments_of_evaluator(*, project: Project, evaluator: str) -> QuerySet[Judgment]:
    """Judgments behind an evaluator id (see `evaluator_id`); none for a malformed id."""
    judgments = Judgment.objects.filter(project=project)
    kind, _, rest = evaluator.partition(":")
    if kind == "user" and rest.isdigit():
        return judgments.filter(annotator_id=int(rest))
    if kind == "ext" and ":" in rest:
        source, _, annotator = rest.partition(":")
        return judgments.filter(
            annotator__isnull=True, source_name=source, external_annotator=annotator
        )
    return judgments.none()


@dataclass
class EvaluatorItem:
    project: Project
    evaluator: str
    label: str
    quality: AnnotatorQuality | None
    flags: list[Flag]
    recent: list[dict[str, Any]]


def evaluator_item(
    *, project: Project, evaluator: str, judgment_ids: Sequence[int] = ()
) -> EvaluatorItem:
    """An annotator's figures and some of their judgments (those named first)."""
    quality = AnnotatorQuality.objects.filter(project=project, evaluator=evaluator).first()
    judgments = judgments_of_evaluator(project=project, evaluator=evaluator).select_related(
        "task__prompt"
    )
    named = list(judgments.filter(pk__in=list(judgment_ids)[:20]))
    recent = named or list(judgments.order_by("-id")[:20])
    prompt_ids = {j.task.prompt_id for j in recent}
    letters = candidate_letters(prompt_ids=prompt_ids)
    if not project.blind:  # away from the candidates' cards: say which model each letter is
        for candidate_id, prompt_id, model in Candidate.objects.filter(
            prompt_id__in=prompt_ids
        ).values_list("id", "prompt_id", "model_name"):
            if model:
                letters[prompt_id][candidate_id] += f" ({model})"
    slots: dict[int, list[int]] = defaultdict(list)
    for task_id, candidate_id in (
        TaskCandidate.objects.filter(task_id__in={j.task_id for j in recent})
        .order_by("task_id", "position")
        .values_list("task_id", "candidate_id")
    ):
        slots[task_id].append(candidate_id)
    return EvaluatorItem(
        project=project,
        evaluator=evaluator,
        label=evaluator_labels([evaluator])[evaluator],
        quality=quality,
        flags=list(
            Flag.objects.filter(project=project, evaluator=evaluator, key__startswith="evaluator:")
        ),
        recent=[
            {
                "id": j.pk,
                "prompt_id": j.task.prompt_id,
                "prompt": j.task.prompt.text[:120] or j.task.prompt.external_id,
                "verdict": verdict_text(
                    ranking=j.ranking or (),
                    pair=tuple(slots[j.task_id][:2]) if j.kind == Judgment.Kind.PAIR else None,
                    outcome=j.outcome,
                    letter_of=letters.get(j.task.prompt_id, {}),
                ),
                "duration_ms": j.duration_ms,
                "created_at": j.created_at,
            }
            for j in recent
        ],
    )


def review_history(*, project: Project) -> QuerySet[ReviewAction]:
    return ReviewAction.objects.filter(project=project).select_related(
        "actor", "undone_by", "prompt", "flag"
    )


@dataclass(frozen=True)
class HistoryEntry:
    """A review action as the history page writes it."""

    action: ReviewAction
    evaluator_label: str
    before: str
    after: str


def history_entries(actions: Sequence[ReviewAction]) -> list[HistoryEntry]:
    """Review actions in words: candidates by their letters, annotators by their names."""
    letters = candidate_letters(prompt_ids={a.prompt_id for a in actions if a.prompt_id})
    labels = evaluator_labels({a.evaluator for a in actions if a.evaluator})
    entries = []
    for a in actions:
        before, after = action_change_text(a.kind, a.before, a.after, letters.get(a.prompt_id, {}))
        entries.append(HistoryEntry(a, labels.get(a.evaluator, ""), before, after))
    return entries


# --------------------------------------------------------------------------- dashboard


@dataclass(frozen=True)
class LeaderboardChart:
    """Leaderboard rows with SVG coordinates for an inline chart with CI whiskers."""

    rows: list[dict[str, Any]]
    width: int
    height: int
    ticks: list[dict[str, Any]]
    stability: G.StabilityReport | None


def project_leaderboard(
    *, data: ProjectData, bootstrap: int | None = None, seed: int = 0, stability: bool = True
) -> tuple[list[G.LeaderboardRow], G.StabilityReport | None]:
    """The Bradley-Terry board; ``bootstrap`` defaults to ``QUORUM_LEADERBOARD_BOOTSTRAP``."""
    if bootstrap is None:
        bootstrap = settings.QUORUM_LEADERBOARD_BOOTSTRAP
    votes = usable_votes(data, data.votes)
    model_of = {c.id: c.model_name for c in data.candidates.values()}
    comparisons = C.model_comparisons(votes, model_of)
    rows = G.bradley_terry_leaderboard(comparisons, bootstrap=bootstrap, seed=seed)
    report = None
    if stability and rows:
        report = G.leaderboard_stability(main_component(rows, comparisons), max_removals=200)
    return rows, report


def main_component(
    rows: Sequence[G.LeaderboardRow], comparisons: Sequence[tuple[str, str, str]]
) -> list[tuple[str, str, str]]:
    """The comparisons among the best-connected group of models (component 0).

    Models no vote links to the rest have scores on another scale: which one "leads" the
    whole board is meaningless, so stability is measured where the top is comparable.
    """
    main = {r.model for r in rows if r.component == 0}
    return [c for c in comparisons if c[0] in main and c[1] in main]


def leaderboard_chart(
    rows: Sequence[G.LeaderboardRow], stability: G.StabilityReport | None = None
) -> LeaderboardChart:
    width, label_w, row_h, pad = 760, 260, 22, 30
    plot_w = width - label_w - pad
    values = [v for r in rows for v in (r.score, r.ci_low, r.ci_high) if not math.isnan(v)]
    low, high = (min(values), max(values)) if values else (900.0, 1100.0)
    if high - low < 1:
        low, high = low - 1, high + 1
    span = high - low

    def x(value: float) -> float:
        return round(label_w + (value - low) / span * plot_w, 1)

    chart_rows = []
    for i, r in enumerate(rows):
        has_ci = not (math.isnan(r.ci_low) or math.isnan(r.ci_high))
        chart_rows.append(
            {
                "row": r,
                "y": pad + i * row_h,
                "x": x(r.score),
                "x_low": x(r.ci_low) if has_ci else x(r.score),
                "x_high": x(r.ci_high) if has_ci else x(r.score),
                "width": round(r.ci_high - r.ci_low, 1) if has_ci else None,
            }
        )
    step = _nice_step(span / 5)
    ticks = []
    value = math.ceil(low / step) * step
    while value <= high:
        ticks.append({"value": round(value), "x": x(value)})
        value += step
    return LeaderboardChart(
        chart_rows, width, pad * 2 + row_h * max(1, len(rows)), ticks, stability
    )


def _nice_step(raw: float) -> float:
    exponent = math.floor(math.log10(raw)) if raw > 0 else 0
    for m in (1, 2, 5, 10):
        if m * 10**exponent >= raw:
            return float(m * 10**exponent)
    return float(10 ** (exponent + 1))


@dataclass(frozen=True)
class LineChart:
    points: str
    dots: list[dict[str, Any]]
    width: int
    height: int
    y_ticks: list[dict[str, Any]]


def agreement_chart(periods: Sequence[C.PeriodAgreement]) -> LineChart:
    width, height, left, pad = 760, 200, 44, 20
    usable = [p for p in periods if p.agreement is not None]
    n = max(1, len(periods) - 1)
    dots = []
    for i, p in enumerate(periods):
        if p.agreement is None:
            continue
        dots.append(
            {
                "x": round(left + i / n * (width - left - pad), 1),
                "y": round(pad + (1 - p.agreement) * (height - 2 * pad), 1),
                "period": p,
            }
        )
    y_ticks = [
        {"value": v, "y": round(pad + (1 - v) * (height - 2 * pad), 1)} for v in (0.0, 0.5, 1.0)
    ]
    return LineChart(
        points=" ".join(f"{d['x']},{d['y']}" for d in dots) if usable else "",
        dots=dots,
        width=width,
        height=height,
        y_ticks=y_ticks,
    )


def annotator_table(*, project: Project) -> list[dict[str, Any]]:
    rows = list(AnnotatorQuality.objects.filter(project=project).order_by("-n_judgments"))
    open_flags = Counter(
        Flag.objects.filter(
            project=project, status=Flag.Status.OPEN, key__startswith="evaluator:"
        ).values_list("evaluator", flat=True)
    )
    return [{"q": q, "open_flags": open_flags.get(q.evaluator, 0)} for q in rows]


def exports_for_project(*, project: Project) -> QuerySet[DatasetExport]:
    return DatasetExport.objects.filter(project=project).select_related("created_by")


def flags_summary(*, project: Project) -> dict[str, int]:
    return Flag.objects.filter(project=project).aggregate(
        open=Count("id", filter=Q(status="open")),
        resolved=Count("id", filter=Q(status="resolved")),
        cleared=Count("id", filter=Q(status="cleared")),
    )


# --------------------------------------------------------------------------- data browser


BROWSE_STATUSES = [
    ("open", "Open (wants judgments)"),
    ("complete", "Complete"),
    ("discarded", "Discarded"),
    ("decided", "Final ranking set"),
]
BROWSE_SORTS = {
    "id": ("external_id", "External id"),
    "newest": ("-id", "Newest first"),
    "judgments": ("-n_judgments", "Most judgments"),
    "flags": ("-open_flags", "Most open flags"),
    "agreement": ("agreement_value", "Lowest agreement first"),
}


@dataclass(frozen=True)
class BrowseFilters:
    """What the data browser shows: a search and filters, each empty for "all"."""

    q: str = ""
    status: str = ""
    flag: str = ""
    evaluator: str = ""
    model: str = ""
    agreement_below: float | None = None
    sort: str = "id"

    @classmethod
    def from_query(cls, params: Any, *, blind: bool) -> BrowseFilters:
        """Filters from a query string; unknown values fall back to "all" (a link never 400s).
        ``blind``: model names are hidden from reviewers, so the model filter is ignored."""
        status = params.get("status", "")
        flag = params.get("flag", "")
        sort = params.get("sort", "id")
        try:
            below = float(params.get("agreement_below", "") or "nan")
        except ValueError:
            below = float("nan")
        return cls(
            q=params.get("q", "").strip()[:200],
            status=status if status in dict(BROWSE_STATUSES) else "",
            flag=flag if flag in Flag.Kind.values or flag == "any" else "",
            evaluator=params.get("evaluator", "")[:255],
            model="" if blind else params.get("model", "")[:200],
            # Agreement is a share in [0, 1]; anything else reads as "no bound".
            agreement_below=below if 0 < below <= 1 else None,
            sort=sort if sort in BROWSE_SORTS else "id",
        )


def prompts_browse(*, project: Project, filters: BrowseFilters) -> QuerySet[Prompt]:
    """A project's prompts, searched, filtered and sorted; each with its counts and state.

    Every figure is a correlated subquery on an indexed foreign key, so a page costs one query
    whatever the project's size (and one more to count the matches).
    """
    tasks = Task.objects.filter(prompt=OuterRef("pk"))
    open_flags = Flag.objects.filter(prompt=OuterRef("pk"), status=Flag.Status.OPEN)
    decided = PromptDecision.objects.filter(prompt=OuterRef("pk"), final_ranking__isnull=False)
    discarded = PromptDecision.objects.filter(prompt=OuterRef("pk"), discarded=True)
    is_open = Exists(tasks.filter(status=Task.Status.OPEN))
    is_live = Exists(tasks.exclude(status=Task.Status.DISCARDED))
    prompts = Prompt.objects.filter(project=project).annotate(
        n_candidates=Subquery(
            Candidate.objects.filter(prompt=OuterRef("pk"))
            .values("prompt")
            .annotate(n=Count("id"))
            .values("n"),
            output_field=IntegerField(),
        ),
        n_judgments=Coalesce(
            Subquery(
                tasks.values("prompt").annotate(n=Sum("judgment_count")).values("n"),
                output_field=IntegerField(),
            ),
            0,
        ),
        open_flags=Coalesce(
            Subquery(
                open_flags.values("prompt").annotate(n=Count("id")).values("n"),
                output_field=IntegerField(),
            ),
            0,
        ),
        # The page's states as "a row's id, or None": a scalar subquery runs for the page's 50
        # rows only, where PostgreSQL turns an EXISTS in the select list into one scan of the
        # whole table (80 ms a page at 100,000 tasks). The filters below use EXISTS.
        has_open=Subquery(tasks.filter(status=Task.Status.OPEN).values("pk")[:1]),
        has_live=Subquery(tasks.exclude(status=Task.Status.DISCARDED).values("pk")[:1]),
        decided=Subquery(decided.values("pk")[:1]),
        discarded=Subquery(discarded.values("pk")[:1]),
        # As the last flags pass computed it (None: no two evaluators compared the same pair).
        agreement_value=Subquery(
            PromptAgreement.objects.filter(prompt=OuterRef("pk")).values("agreement")[:1]
        ),
    )
    if filters.q:
        match = Q(text__icontains=filters.q) | Q(external_id__icontains=filters.q)
        if not project.blind:
            match |= Exists(
                Candidate.objects.filter(prompt=OuterRef("pk"), model_name__icontains=filters.q)
            )
        prompts = prompts.filter(match)
    if filters.status == "open":
        prompts = prompts.filter(is_open, ~Exists(discarded))
    elif filters.status == "complete":
        prompts = prompts.filter(~is_open, is_live, ~Exists(discarded))
    elif filters.status == "discarded":
        prompts = prompts.filter(Exists(discarded) | ~is_live)
    elif filters.status == "decided":
        prompts = prompts.filter(Exists(decided))
    if filters.flag == "any":
        prompts = prompts.filter(Exists(open_flags))
    elif filters.flag:
        prompts = prompts.filter(Exists(open_flags.filter(kind=filters.flag)))
    if filters.evaluator:
        judged = judgments_of_evaluator(project=project, evaluator=filters.evaluator)
        prompts = prompts.filter(Exists(judged.filter(task__prompt=OuterRef("pk"))))
    if filters.model:
        prompts = prompts.filter(
            Exists(Candidate.objects.filter(prompt=OuterRef("pk"), model_name=filters.model))
        )
    if filters.agreement_below is not None:
        prompts = prompts.filter(
            Exists(
                PromptAgreement.objects.filter(
                    prompt=OuterRef("pk"), agreement__lt=filters.agreement_below
                )
            )
        )
    order = BROWSE_SORTS[filters.sort][0]
    if filters.sort == "agreement":  # prompts without a figure last
        return prompts.order_by(F(order).asc(nulls_last=True), "id")
    return prompts.order_by(order, "id")


def model_names(*, project_id: int) -> list[str]:
    """A project's distinct candidate model names, sorted: one probe of the (project,
    model_name) index per name (a loose index scan), where ``DISTINCT`` reads every candidate
    (about 0.1 s per page at 400,000 candidates)."""
    table = Candidate._meta.db_table
    sql = (
        f"WITH RECURSIVE names(name) AS ("
        f" SELECT MIN(model_name) FROM {table} WHERE project_id = %s"
        f" UNION ALL"
        f" SELECT (SELECT MIN(model_name) FROM {table}"
        f"  WHERE project_id = %s AND model_name > names.name)"
        f" FROM names WHERE names.name IS NOT NULL"
        f") SELECT name FROM names WHERE name IS NOT NULL"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [project_id, project_id])
        return sorted(name for (name,) in cursor.fetchall())


def browse_choices(*, project: Project) -> dict[str, list[tuple[str, str]]]:
    """The annotators and (unless the project is blind) models to filter by, named for people."""
    # Not a DISTINCT over the project's judgments (a million rows read per page at 1M
    # judgments): the members who judged here (one indexed EXISTS each), and the evaluators
    # the flags pass knows, which adds former members and imported annotators.
    judged_here = Judgment.objects.filter(project=project, annotator_id=OuterRef("user_id"))
    evaluators = {
        f"user:{user_id}"
        for user_id in Membership.objects.filter(project=project)
        .filter(Exists(judged_here))
        .values_list("user_id", flat=True)
    }
    evaluators |= {
        evaluator
        for evaluator in AnnotatorQuality.objects.filter(project=project).values_list(
            "evaluator", flat=True
        )
        if evaluator.startswith(("user:", "ext:"))
    }
    labels = evaluator_labels(evaluators)
    models = [] if project.blind else model_names(project_id=project.pk)
    return {
        "evaluators": sorted(labels.items(), key=lambda kv: kv[1].lower()),
        "models": [(m, m) for m in models if m],
    }


def prompt_history(*, prompt: Prompt) -> list[HistoryEntry]:
    """Every review action on a prompt, newest first, in words."""
    return history_entries(
        list(ReviewAction.objects.filter(prompt=prompt).select_related("actor", "undone_by"))
    )
