"""Agreement, annotator reliability and quality checks for preference judgments.

Pure core: no Django, no other Quorum module. The Django layer converts its judgment rows
into the two record types below and stores what comes back (flags, weights, scores).

Records
    `RankingRecord` (task, annotator, ranking, presented_order=(), duration_ms=None):
        one N-way ranking as tie groups, best first; ``presented_order`` lists the
        candidates in the slots they were shown in.
    `PairRecord` (task, annotator, a, b, outcome, presented_order=None, duration_ms=None):
        one pairwise judgment; outcome ``"a"``, ``"b"``, ``"tie"`` or ``"both_bad"``;
        ``presented_order`` is ``(left, right)`` as shown.

Preference relations
    Measures built on pairs compare *relations*: for candidates ``x, y`` of a task (in a
    canonical order, sorted ids), +1 = x preferred, -1 = y preferred, 0 = no preference.
    A shared tie group, ``"tie"`` and ``"both_bad"`` are all 0: both-bad is a quality
    judgment, not a preference. If an annotator judged the same unit twice, the last
    record counts.

Public API
    krippendorff_alpha(records, level=None)      alpha: ordinal on rank positions, nominal on pairs
    pairwise_agreement(records)                  per task: share of annotator pairs that agree
    kendall_tau(r1, r2)                          tau-b between two tie-group rankings
    annotator_reliability(records, gold=None)    agreement, leave-one-out, gold, CROWDLAB weight
    position_bias(records, by_annotator=True)    does a display slot win beyond chance?
    too_fast(records, ratio=0.25)                judgments far quicker than the usual pace
    anomalous_voters(records, alpha=0.05)        Chatbot Arena's anomalous-user test
"""

from __future__ import annotations

import copy as copying
import functools
import itertools
import math
import operator
import statistics
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

if TYPE_CHECKING:
    import numpy as np

# numpy, scipy and krippendorff are imported by the functions that use them: this module is
# imported by every Django process (admin, services), most of which never compute agreement.

OUTCOMES = ("a", "b", "tie", "both_bad")

Candidate = Hashable
Unit = tuple[Hashable, Candidate, Candidate]  # (task, x, y) with x before y canonically


_Result = TypeVar("_Result")


def _memo_last(copy: Callable[[Any], Any] = lambda value: value) -> Callable:
    """Keeps a function's last answer for the next call with the very same record objects
    in the same order and equal keyword arguments (one entry; ``copy`` is applied to what
    each call returns).

    A project's pass calls some functions several times on the same records: the flags pass
    and the export (its weights, then its agreement figures, over the same judgments when
    nothing is dropped) read the votes' cached records (`consensus.Vote.record`). Records
    are frozen, so the same objects give the same answer. The entry holds the records, so
    no id is reused while it is kept. Callers must not change what comes back.
    """

    def decorate(func: Callable[..., _Result]) -> Callable[..., _Result]:
        # (records, kwargs, value) of the last call, replaced and read as one reference: a
        # thread never pairs one call's records with another's value.
        last: list[tuple[tuple[Record, ...], dict[str, Any], Any] | None] = [None]

        @functools.wraps(func)
        def wrapper(records: Iterable[Record], **kwargs: Any) -> _Result:
            records = records if isinstance(records, list | tuple) else list(records)
            entry = last[0]
            if (
                entry is not None
                and len(entry[0]) == len(records)
                and entry[1] == kwargs
                and all(map(operator.is_, entry[0], records))
            ):
                return copy(entry[2])
            value = func(records, **kwargs)
            last[0] = (tuple(records), copying.deepcopy(kwargs), value)
            return copy(value)

        def forget() -> None:
            last[0] = None

        wrapper.forget = forget  # type: ignore[attr-defined]
        return wrapper

    return decorate


@_memo_last()
def _annotator_codes(records: Sequence[Record]) -> tuple[np.ndarray, dict[Hashable, int]]:
    """Each record's annotator as a number, annotators numbered by first appearance (as a
    dict's ``setdefault(key, len(dict))`` numbers them), and that numbering. Kept for the
    same records (`_memo_last`): the flags pass numbers the same 94K pair records for the
    pair table, the speed check and the anomaly test. Read-only: callers change neither."""
    import numpy as np

    index: dict[Hashable, int] = {}
    number = index.setdefault
    codes = np.array(
        [number(annotator, len(index)) for annotator in map(_annotator_of, records)],
        dtype=np.int64,
    )
    codes.setflags(write=False)
    return codes, index


def _only_pair_records(records: Iterable[Record]) -> bool:
    """``all(type(r) is PairRecord for r in records)`` by one C-level map."""
    return set(map(type, records)) <= {PairRecord}


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class RankingRecord:
    """One annotator's N-way ranking of one task.

    Attributes:
        task: Task id.
        annotator: Annotator id (a reward model may appear as one more annotator).
        ranking: Tie groups best -> worst, e.g. ``((3,), (1, 4), (2,))``.
        presented_order: Candidates in display order (slot 0 first); empty if unknown.
        duration_ms: Time spent on the judgment; None if unknown.
    """

    task: Hashable
    annotator: Hashable
    ranking: tuple[tuple[Candidate, ...], ...]
    presented_order: tuple[Candidate, ...] = ()
    duration_ms: int | None = None

    def __post_init__(self) -> None:
        groups = tuple(tuple(group) for group in self.ranking)
        ranked = [c for group in groups for c in group]
        if not groups or any(not group for group in groups):
            raise ValueError(f"task {self.task!r}: ranking has an empty tie group")
        if len(set(ranked)) != len(ranked):
            raise ValueError(f"task {self.task!r}: ranking lists a candidate twice")
        presented = tuple(self.presented_order)
        if presented and (len(presented) != len(ranked) or set(presented) != set(ranked)):
            raise ValueError(
                f"task {self.task!r}: presented_order must list exactly the ranked candidates"
            )
        object.__setattr__(self, "ranking", groups)
        object.__setattr__(self, "presented_order", presented)


@dataclass(frozen=True)
class PairRecord:
    """One annotator's pairwise judgment.

    Attributes:
        task: Task id.
        annotator: Annotator id.
        a: Candidate labelled "a".
        b: Candidate labelled "b".
        outcome: ``"a"`` or ``"b"`` (that one is better), ``"tie"`` or ``"both_bad"``.
        presented_order: ``(left, right)`` as displayed; None if unknown.
        duration_ms: Time spent on the judgment; None if unknown.
    """

    task: Hashable
    annotator: Hashable
    a: Candidate
    b: Candidate
    outcome: str
    presented_order: tuple[Candidate, Candidate] | None = None
    duration_ms: int | None = None

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(
                f"task {self.task!r}: outcome must be one of {OUTCOMES}, got {self.outcome!r}"
            )
        if self.a == self.b:
            raise ValueError(f"task {self.task!r}: a and b are the same candidate")
        if self.presented_order is not None:
            presented = tuple(self.presented_order)
            if len(presented) != 2 or set(presented) != {self.a, self.b}:
                raise ValueError(f"task {self.task!r}: presented_order must be (a, b) or (b, a)")
            object.__setattr__(self, "presented_order", presented)

    @property
    def winner(self) -> Candidate | None:
        """The preferred candidate, or None for a tie or both-bad judgment."""
        return {"a": self.a, "b": self.b}.get(self.outcome)


Record = RankingRecord | PairRecord


# --------------------------------------------------------------------------- relations


def _precedes(x: Candidate, y: Candidate) -> bool:
    """Canonical order of two candidate ids: natural order, else by repr."""
    try:  # not contextlib.suppress: a context manager per call, and this runs per relation
        return bool(x < y)  # type: ignore[operator]
    except TypeError:
        return repr(x) < repr(y)


_PREFERENCE = {"a": 1, "b": -1}


def _relations(record: Record) -> dict[tuple[Candidate, Candidate], int]:
    """Relation per canonically ordered candidate pair of one record."""
    if isinstance(record, PairRecord):
        preference = {"a": 1, "b": -1}.get(record.outcome, 0)
        if _precedes(record.a, record.b):
            return {(record.a, record.b): preference}
        return {(record.b, record.a): -preference}
    position = {c: g for g, group in enumerate(record.ranking) for c in group}
    relations = {}
    for x, y in itertools.combinations(position, 2):
        if not _precedes(x, y):
            x, y = y, x
        difference = position[y] - position[x]
        relations[(x, y)] = (difference > 0) - (difference < 0)
    return relations


def _relation_table(records: Iterable[Record]) -> dict[Unit, dict[Hashable, int]]:
    """``{(task, x, y): {annotator: relation}}``; a later record replaces an earlier one."""
    table: dict[Unit, dict[Hashable, int]] = defaultdict(dict)
    for record in records:
        if type(record) is PairRecord:
            # `_relations` of a pair record, without its one-entry dict.
            preference = _PREFERENCE.get(record.outcome, 0)
            a, b = record.a, record.b
            if _precedes(a, b):
                table[(record.task, a, b)][record.annotator] = preference
            else:
                table[(record.task, b, a)][record.annotator] = -preference
            continue
        for (x, y), relation in _relations(record).items():
            table[(record.task, x, y)][record.annotator] = relation
    return table


def _record_kind(records: Sequence[Record]) -> type:
    kinds = {type(r) for r in records}
    if len(kinds) > 1:
        raise ValueError("pass ranking records and pair records separately")
    return kinds.pop() if kinds else RankingRecord


# --------------------------------------------------------------------------- agreement


def _mid_ranks(ranking: Sequence[Sequence[Candidate]]) -> dict[Candidate, float]:
    """Rank position per candidate, tied candidates sharing the mean of their positions."""
    ranks: dict[Candidate, float] = {}
    start = 1
    for group in ranking:
        for candidate in group:
            ranks[candidate] = start + (len(group) - 1) / 2
        start += len(group)
    return ranks


def krippendorff_alpha(
    records: Sequence[Record],
    *,
    level: Literal["nominal", "ordinal", "interval"] | None = None,
) -> float | None:
    """Krippendorff's alpha over all tasks in ``records``.

    Rankings: units are ``(task, candidate)``, the value is the candidate's rank position
    (tied candidates share the mean position, so a tie sits between the strict orders),
    ordinal by default. Pairs: units are ``(task, x, y)``, the value is the relation
    (+1/0/-1), nominal by default; each unit enters in both orientations so the result
    does not depend on which candidate of a pair is called first.

    Pass one task's records for a per-task alpha.

    Args:
        records: All `RankingRecord` or all `PairRecord`.
        level: Level of measurement; default ordinal for rankings, nominal for pairs.

    Returns:
        Alpha, or None when it is undefined: no unit judged by two annotators, or a single
        value throughout (nothing to tell agreement from chance).

    Raises:
        ValueError: When ranking and pair records are mixed.
    """
    import krippendorff
    import numpy as np

    records = list(records)
    kind = _record_kind(records)
    values: dict[tuple[Hashable, ...], dict[Hashable, float]] = defaultdict(dict)
    if kind is RankingRecord:
        level = level or "ordinal"
        for record in records:
            for candidate, rank in _mid_ranks(record.ranking).items():
                values[(record.task, candidate)][record.annotator] = rank
    else:
        # Columns (`_pair_alpha_matrix`), as the loop below would lay them out.
        matrix = _pair_alpha_matrix(records) if records else None
        if matrix is None:
            return None
        return float(
            krippendorff.alpha(reliability_data=matrix, level_of_measurement=level or "nominal")
        )
    pairable = [unit for unit in values.values() if len(unit) >= 2]
    if len({v for unit in pairable for v in unit.values()}) < 2:
        return None
    annotators = sorted({a for unit in pairable for a in unit}, key=repr)
    row = {a: i for i, a in enumerate(annotators)}
    matrix = np.full((len(annotators), len(pairable)), np.nan)
    for column, unit in enumerate(pairable):
        for annotator, value in unit.items():
            matrix[row[annotator], column] = value
    return float(krippendorff.alpha(reliability_data=matrix, level_of_measurement=level))


@dataclass(frozen=True)
class TaskAgreement:
    """Pairwise agreement within one task.

    Attributes:
        task: Task id.
        agreement: Share of (annotator pair, candidate pair) combinations whose relations
            match; None when no candidate pair was judged by two annotators.
        n_annotators: Annotators with a judgment on the task.
        by_pair: Share of annotator pairs agreeing, per candidate pair ``(x, y)`` judged
            by at least two annotators: the disputed pairs for a review queue.
    """

    task: Hashable
    agreement: float | None
    n_annotators: int
    by_pair: dict[tuple[Candidate, Candidate], float] = field(default_factory=dict)


def pairwise_agreement(records: Iterable[Record]) -> dict[Hashable, TaskAgreement]:
    """Per task, how often two annotators agree on a candidate pair.

    Args:
        records: Ranking or pair records, any number of tasks.

    Returns:
        A `TaskAgreement` per task.
    """
    records = list(records)
    if records and (_only_pair_records(records) or all(isinstance(r, PairRecord) for r in records)):
        return _pairwise_agreement_of_pairs(records)
    return _pairwise_agreement_per_unit(records)


def _pairwise_agreement_per_unit(records: Sequence[Record]) -> dict[Hashable, TaskAgreement]:
    """`pairwise_agreement` one unit at a time: any records, and the reference for pairs."""
    annotators: dict[Hashable, set[Hashable]] = defaultdict(set)
    for record in records:
        annotators[record.task].add(record.annotator)
    agree: Counter[Hashable] = Counter()
    total: Counter[Hashable] = Counter()
    by_pair: dict[Hashable, dict[tuple[Candidate, Candidate], float]] = defaultdict(dict)
    for (task, x, y), by_annotator in _relation_table(records).items():
        relations = list(by_annotator.values())
        pairs = list(itertools.combinations(relations, 2))
        if not pairs:
            continue
        matches = sum(r1 == r2 for r1, r2 in pairs)
        agree[task] += matches
        total[task] += len(pairs)
        by_pair[task][(x, y)] = matches / len(pairs)
    return {
        task: TaskAgreement(
            task=task,
            agreement=agree[task] / total[task] if total[task] else None,
            n_annotators=len(members),
            by_pair=by_pair.get(task, {}),
        )
        for task, members in annotators.items()
    }


def _pairwise_agreement_of_pairs(records: Sequence[PairRecord]) -> dict[Hashable, TaskAgreement]:
    """`pairwise_agreement` of pair records, on columns (`_pair_table`)."""
    import numpy as np

    table = _pair_table(records)
    # Per unit: annotators, and how many gave each relation (-1, 0, +1).
    size = np.bincount(table.unit, minlength=table.n_units)
    same = np.bincount(table.unit * 3 + table.relation + 1, minlength=3 * table.n_units)
    same = same.reshape(-1, 3)
    matches = (same * (same - 1) // 2).sum(axis=1)
    pairs = size * (size - 1) // 2
    first = np.full(table.n_units, len(records), dtype=np.int64)
    np.minimum.at(first, table.unit, table.record)
    annotators: dict[Hashable, set[Hashable]] = defaultdict(set)
    for task, annotator in zip(map(_task_of, records), map(_annotator_of, records), strict=True):
        annotators[task].add(annotator)
    agree: Counter[Hashable] = Counter()
    total: Counter[Hashable] = Counter()
    by_pair: dict[Hashable, dict[tuple[Candidate, Candidate], float]] = defaultdict(dict)
    # Units judged by two or more, as Python values read once (`tolist`: what `int` and
    # `_item` give one at a time).
    units = np.flatnonzero(pairs > 0)
    at = first[units]
    if isinstance(table.x, np.ndarray) and isinstance(table.y, np.ndarray):
        xs, ys = table.x[at].tolist(), table.y[at].tolist()
    else:
        xs = [_item(table.x[i]) for i in at.tolist()]
        ys = [_item(table.y[i]) for i in at.tolist()]
    for i, x, y, m, n in zip(
        at.tolist(), xs, ys, matches[units].tolist(), pairs[units].tolist(), strict=True
    ):
        task = records[i].task
        agree[task] += m
        total[task] += n
        by_pair[task][(x, y)] = m / n
    return {
        task: TaskAgreement(
            task=task,
            agreement=agree[task] / total[task] if total[task] else None,
            n_annotators=len(members),
            by_pair=by_pair.get(task, {}),
        )
        for task, members in annotators.items()
    }


_task_of, _annotator_of = operator.attrgetter("task"), operator.attrgetter("annotator")


def _item(value: Candidate) -> Candidate:
    """A numpy scalar as the Python value it came from."""
    return value.item() if hasattr(value, "item") else value


def kendall_tau(
    ranking_1: Sequence[Sequence[Candidate]], ranking_2: Sequence[Sequence[Candidate]]
) -> float:
    """Kendall tau-b between two rankings given as tie groups, on their common candidates.

    Returns:
        Tau-b in [-1, 1]; NaN with fewer than two common candidates or when either
        ranking ties all of them (tau-b is undefined there).
    """
    from scipy import stats

    first, second = _mid_ranks(ranking_1), _mid_ranks(ranking_2)
    common = [c for c in first if c in second]
    if len(common) < 2:
        return math.nan
    x = [first[c] for c in common]
    y = [second[c] for c in common]
    if len(set(x)) < 2 or len(set(y)) < 2:
        return math.nan
    return float(stats.kendalltau(x, y, variant="b").statistic)


# --------------------------------------------------------------------------- reliability


@dataclass(frozen=True)
class AnnotatorReliability:
    """How far an annotator's judgments can be trusted.

    Attributes:
        annotator: Annotator id.
        n_judgments: Records by the annotator.
        n_relations: Candidate-pair relations those records state.
        agreement: ``A_j``: share of (own relation, another annotator's relation on the same
            pair) combinations that match; None without overlap.
        loo_agreement: Share of own relations equal to the leave-one-out consensus (the
            most common relation of the other annotators; pairs where the others split
            evenly are skipped); None without overlap.
        gold_accuracy: Share of own relations on gold tasks equal to the gold relation;
            None without gold judgments.
        n_gold: Relations compared with gold.
        weight: CROWDLAB weight ``max(1 - (1 - A_j) / e_mlc, eps)``, where ``e_mlc`` is the
            error of always giving the most common relation (counted in both orientations
            of each pair, so 0.5 for strict preferences); annotators without overlap get
            the median weight of the others (1.0 if nobody overlaps).
    """

    annotator: Hashable
    n_judgments: int
    n_relations: int
    agreement: float | None
    loo_agreement: float | None
    gold_accuracy: float | None
    n_gold: int
    weight: float


@_memo_last(copy=dict)
def annotator_reliability(
    records: Iterable[Record],
    *,
    gold: Mapping[Hashable, Sequence[Sequence[Candidate]]] | None = None,
    eps: float = 1e-3,
) -> dict[Hashable, AnnotatorReliability]:
    """Reliability of every annotator: agreement, leave-one-out consensus, gold, weight.

    The weight follows CROWDLAB (the published maths, no cleanlab dependency): an annotator
    who agrees with others no more often than "always say the most common relation" gets
    ``eps``; one who always agrees gets 1. Use it as the evaluator weight in
    `curation.graph.ensemble_graph`. A reward model passed as one more annotator gets a
    weight the same way, from its agreement with the humans.

    Args:
        records: Ranking or pair records (both kinds may be mixed: only relations count).
        gold: Known answer per gold task, as tie groups best -> worst.
        eps: Floor of the weight, so nobody is silenced entirely.

    Returns:
        An `AnnotatorReliability` per annotator.
    """
    records = list(records)
    judgments = Counter(r.annotator for r in records)
    given, agree, compared, loo_agree, loo_total, label_counts, gold_hits, gold_total = (
        _reliability_counts(records, gold)
    )
    n_labels = sum(label_counts.values())
    e_mlc = 1 - max(label_counts.values()) / n_labels if n_labels else 0.0
    weights: dict[Hashable, float] = {}
    for annotator in judgments:
        if compared[annotator]:
            a_j = agree[annotator] / compared[annotator]
            # Everyone gave the same relation: nothing separates annotators, trust all.
            weights[annotator] = max(1 - (1 - a_j) / e_mlc, eps) if e_mlc > 0 else 1.0
    fallback = statistics.median(weights.values()) if weights else 1.0

    def share(hits: Counter[Hashable], totals: Counter[Hashable], key: Hashable) -> float | None:
        return hits[key] / totals[key] if totals[key] else None

    return {
        annotator: AnnotatorReliability(
            annotator=annotator,
            n_judgments=judgments[annotator],
            n_relations=given[annotator],
            agreement=share(agree, compared, annotator),
            loo_agreement=share(loo_agree, loo_total, annotator),
            gold_accuracy=share(gold_hits, gold_total, annotator),
            n_gold=gold_total[annotator],
            weight=weights.get(annotator, fallback),
        )
        for annotator in judgments
    }


_Counts = tuple[Counter, Counter, Counter, Counter, Counter, Counter, Counter, Counter]


def _reliability_counts(
    records: Sequence[Record], gold: Mapping[Hashable, Sequence[Sequence[Candidate]]] | None
) -> _Counts:
    """`annotator_reliability`'s integer tallies per annotator: relations given, agreeing
    and compared (others' relations on the same unit), leave-one-out hits and totals, the
    label counts (both orientations) and gold hits and totals. Pair records only: from the
    columns of `_pair_table` (the table the flags pass builds anyway for the shared-unit
    counts and the anomaly test, and the export for its agreement figures); else from
    `_relation_table`. The same integers either way."""
    if records and _only_pair_records(records):
        return _pair_reliability_counts(records, gold)  # type: ignore[arg-type]
    return _table_reliability_counts(records, gold)


def _pair_reliability_counts(
    records: Sequence[PairRecord], gold: Mapping[Hashable, Sequence[Sequence[Candidate]]] | None
) -> _Counts:
    import numpy as np

    table = _pair_table(records)
    unit, k, relation = table.unit, table.annotator, table.relation
    n_annotators = int(k.max()) + 1
    first = np.full(n_annotators, len(records), dtype=np.int64)
    np.minimum.at(first, k, table.record)
    keys = [records[i].annotator for i in first.tolist()]

    def per_annotator(values: np.ndarray, where: np.ndarray | None = None) -> Counter:
        at = k if where is None else k[where]
        sums = np.bincount(at, weights=values, minlength=n_annotators) if len(at) else None
        if sums is None:
            return Counter()
        return Counter({keys[i]: int(v) for i, v in enumerate(sums.tolist()) if v})

    given = per_annotator(np.ones(len(k)))
    size = np.bincount(unit, minlength=table.n_units)
    column = relation + 1  # -1, 0, +1 -> 0, 1, 2
    by_relation = np.bincount(unit * 3 + column, minlength=3 * table.n_units).reshape(-1, 3)
    multi = size[unit] >= 2
    rows = np.flatnonzero(multi)
    own = column[rows]
    # The other annotators' relations on the row's unit, counted per relation.
    others = by_relation[unit[rows]]
    others[np.arange(len(rows)), own] -= 1
    agree = per_annotator(others[np.arange(len(rows)), own].astype(float), rows)
    compared = per_annotator((size[unit[rows]] - 1).astype(float), rows)
    # Counter.most_common's test: one relation among the others, or a strict favourite.
    ranked = np.sort(others, axis=1)
    decided = ranked[:, 2] > ranked[:, 1]
    favourite = np.argmax(others, axis=1)
    loo_total = per_annotator(decided.astype(float), rows)
    loo_agree = per_annotator((decided & (favourite == own)).astype(float), rows)
    # Both orientations of each relation on units of two or more annotators.
    n_by = np.bincount(own, minlength=3).tolist()
    label_counts: Counter[int] = Counter()
    if len(rows):
        label_counts.update({1: n_by[2] + n_by[0], -1: n_by[0] + n_by[2], 0: 2 * n_by[1]})
        label_counts = +label_counts  # the loop's Counter holds no zero counts
    gold_hits: Counter[Hashable] = Counter()
    gold_total: Counter[Hashable] = Counter()
    if gold:
        gold_relations = {
            task: _relations(RankingRecord(task, None, tuple(map(tuple, ranking))))
            for task, ranking in gold.items()
        }
        for i, record_ix in enumerate(table.record.tolist()):
            expected = gold_relations.get(records[record_ix].task, {}).get(
                (_item(table.x[record_ix]), _item(table.y[record_ix]))
            )
            if expected is None:
                continue
            annotator = keys[int(k[i])]
            gold_total[annotator] += 1
            gold_hits[annotator] += int(relation[i]) == expected
    return given, agree, compared, loo_agree, loo_total, label_counts, gold_hits, gold_total


def _table_reliability_counts(
    records: Sequence[Record], gold: Mapping[Hashable, Sequence[Sequence[Candidate]]] | None
) -> _Counts:
    table = _relation_table(records)
    given: Counter[Hashable] = Counter()
    agree: Counter[Hashable] = Counter()
    compared: Counter[Hashable] = Counter()
    loo_agree: Counter[Hashable] = Counter()
    loo_total: Counter[Hashable] = Counter()
    label_counts: Counter[int] = Counter()
    for by_annotator in table.values():
        for annotator in by_annotator:
            given[annotator] += 1
        if len(by_annotator) < 2:
            continue
        # Both orientations, as in `krippendorff_alpha`: which candidate of a pair is
        # called x is arbitrary, so "+1" must not look like a majority label because of it.
        label_counts.update(by_annotator.values())
        label_counts.update(-r for r in by_annotator.values())
        for annotator, relation in by_annotator.items():
            others = Counter(r for a, r in by_annotator.items() if a != annotator)
            agree[annotator] += others[relation]
            compared[annotator] += sum(others.values())
            ranked = others.most_common()
            if len(ranked) == 1 or ranked[0][1] > ranked[1][1]:
                loo_total[annotator] += 1
                loo_agree[annotator] += relation == ranked[0][0]

    gold_hits: Counter[Hashable] = Counter()
    gold_total: Counter[Hashable] = Counter()
    gold_relations = {
        task: _relations(RankingRecord(task, None, tuple(map(tuple, ranking))))
        for task, ranking in (gold or {}).items()
    }
    for (task, x, y), by_annotator in table.items():
        expected = gold_relations.get(task, {}).get((x, y))
        if expected is None:
            continue
        for annotator, relation in by_annotator.items():
            gold_total[annotator] += 1
            gold_hits[annotator] += relation == expected
    return given, agree, compared, loo_agree, loo_total, label_counts, gold_hits, gold_total


# --------------------------------------------------------------------------- checks


@dataclass(frozen=True)
class PositionBias:
    """Whether judgments favour a display slot.

    Attributes:
        annotator: Annotator id, or None for all annotators together.
        n: Judgments counted (pairs: decisive ones; rankings: a single top candidate).
        counts: Wins per display slot (pairs: left, right; rankings: slot of rank 1).
        expected: Wins per slot expected without bias.
        p_value: Two-sided exact binomial test (pairs) or chi-square goodness of fit
            (rankings; needs about 5 expected wins per slot to be trustworthy).
        favoured_slot: Slot with the largest excess of wins over expectation.
    """

    annotator: Hashable | None
    n: int
    counts: tuple[int, ...]
    expected: tuple[float, ...]
    p_value: float
    favoured_slot: int


# The three tests the flags pass needs, from `scipy.special` alone: importing `scipy.stats`
# costs about 1.3 s of CPU in every fresh process (a worker's first pass, a management
# command), more than the tests themselves. Each equals its `scipy.stats` counterpart bit
# for bit (tests/curation/test_agreement_pvalues.py compares them on a grid).


def binomtest_half(k: int, n: int) -> float:
    """``scipy.stats.binomtest(k, n, 0.5).pvalue`` (two-sided): the same algorithm (the
    other tail found by binary search on the pmf) on the same Boost binomial functions."""
    try:
        from scipy.special import _ufuncs as U

        pmf_f, cdf_f, sf_f = U._binom_pmf, U._binom_cdf, U._binom_sf
    except (ImportError, AttributeError):  # another SciPy layout: the library's own test
        from scipy import stats

        return float(stats.binomtest(k, n, 0.5).pvalue)

    def pmf(x: int) -> float:
        return float(pmf_f(float(x), float(n), 0.5)) if 0 <= x <= n else 0.0

    def cdf(x: int) -> float:
        return 0.0 if x < 0 else 1.0 if x >= n else float(cdf_f(float(x), float(n), 0.5))

    def sf(x: int) -> float:
        return 1.0 if x < 0 else 0.0 if x >= n else float(sf_f(float(x), float(n), 0.5))

    def search(a: Callable[[int], float], d: float, lo: int, hi: int) -> int:
        # scipy.stats._binomtest._binary_search_for_binom_tst
        while lo < hi:
            mid = lo + (hi - lo) // 2
            value = a(mid)
            if value < d:
                lo = mid + 1
            elif value > d:
                hi = mid - 1
            else:
                return mid
        return lo if a(lo) <= d else lo - 1

    d = pmf(k)
    rerr = 1 + 1e-7
    if k == 0.5 * n:
        return 1.0
    if k < 0.5 * n:
        ix = search(lambda x: -pmf(x), -d * rerr, math.ceil(0.5 * n), n)
        y = n - ix + int(d * rerr == pmf(ix))
        p_value = cdf(k) + sf(n - y)
    else:
        ix = search(pmf, d * rerr, 0, math.floor(0.5 * n))
        y = ix + 1
        p_value = cdf(y - 1) + sf(k - 1)
    return min(1.0, p_value)


def chisquare_p_value(observed: np.ndarray, expected: np.ndarray) -> float:
    """``scipy.stats.chisquare(observed, expected).pvalue``: Pearson's statistic, the
    chi-square survival function with ``len - 1`` degrees of freedom."""
    import numpy as np
    from scipy.special import chdtrc

    f = np.asarray(observed, dtype=float)
    statistic = ((f - expected) ** 2 / expected).sum()
    return float(chdtrc(len(f) - 1, statistic))


def chi2_ppf(q: float, df: float) -> float:
    """``scipy.stats.chi2.ppf(q, df)`` for ``0 < q < 1``."""
    from scipy.special import gammaincinv

    return float(2 * gammaincinv(df / 2, q))


def position_bias(
    records: Iterable[Record], *, by_annotator: bool = True
) -> dict[Hashable | None, PositionBias]:
    """Test whether the slot a candidate was shown in predicts that it wins.

    Records without a presented order, ties, both-bad judgments and rankings with a tied
    top group are skipped. Many annotators mean many tests: correct for multiplicity
    (e.g. Holm) before flagging on ``p_value``.

    Args:
        records: All `PairRecord` or all `RankingRecord`.
        by_annotator: One test per annotator; False pools everyone under the key None.

    Returns:
        A `PositionBias` per annotator with at least one usable judgment.
    """
    import numpy as np

    records = list(records)
    kind = _record_kind(records)
    wins: dict[Hashable | None, list[int]] = defaultdict(list)
    slot_counts: dict[Hashable | None, list[int]] = defaultdict(list)
    # Pair records (all of them, `_record_kind`): the loop below with the winner read from
    # the outcome directly (no property and dict per record; a pass tests 94K of them).
    for record in records if kind is PairRecord else ():
        shown = record.presented_order
        outcome = record.outcome
        if shown is None or (outcome != "a" and outcome != "b"):
            continue
        winner = record.a if outcome == "a" else record.b
        if winner is None:
            continue
        key = record.annotator if by_annotator else None
        wins[key].append(shown.index(winner))
        slot_counts[key].append(2)
    for record in records if kind is not PairRecord else ():
        key = record.annotator if by_annotator else None
        if isinstance(record, PairRecord):
            if record.presented_order is None or record.winner is None:
                continue
            wins[key].append(record.presented_order.index(record.winner))
            slot_counts[key].append(2)
        else:
            if not record.presented_order or len(record.ranking[0]) != 1:
                continue
            wins[key].append(record.presented_order.index(record.ranking[0][0]))
            slot_counts[key].append(len(record.presented_order))
    result = {}
    for key, slots in wins.items():
        n_slots = max(slot_counts[key])
        counts = np.bincount(slots, minlength=n_slots)
        expected = np.zeros(n_slots)
        if kind is PairRecord:
            # Every judgment adds 1/2 to both slots; sums of halves are exact, so this is the
            # loop below without a numpy call per judgment.
            expected += 0.5 * len(slots)
        else:
            for size in slot_counts[key]:
                expected[:size] += 1 / size
        if kind is PairRecord:
            p_value = binomtest_half(int(counts[0]), len(slots))
        else:
            p_value = chisquare_p_value(counts, expected)
        result[key] = PositionBias(
            annotator=key,
            n=len(slots),
            counts=tuple(int(c) for c in counts),
            expected=tuple(float(e) for e in expected),
            p_value=float(p_value),
            favoured_slot=int(np.argmax(counts - expected)),
        )
    return result


@dataclass(frozen=True)
class FastJudgment:
    """A judgment made much faster than usual.

    Attributes:
        record: The flagged record (the very object passed in).
        threshold_ms: Duration below which it was flagged.
        reference: Which median set the threshold: ``"annotator"`` or ``"project"``.
    """

    record: Record
    threshold_ms: float
    reference: Literal["annotator", "project"]


def too_fast(
    records: Iterable[Record], *, ratio: float = 0.25, min_history: int = 5
) -> list[FastJudgment]:
    """Flag judgments made in less than ``ratio`` times the usual duration.

    Rule: the usual duration is the larger of the project median (all records passed in)
    and the annotator's own median (used once they have ``min_history`` timed records).
    The project median catches an annotator who always clicks through; the own median
    catches a normally careful annotator who suddenly rushes. Pass one kind of task at a
    time (a 4-video ranking and a text pair take different times). Records without a
    duration are ignored.

    Args:
        records: Ranking and/or pair records of one project and task kind.
        ratio: Fraction of the usual duration below which a judgment is flagged.
        min_history: Timed records an annotator needs before their own median counts.

    Returns:
        The flagged judgments, in input order.
    """
    timed = [r for r in records if r.duration_ms is not None]
    if not timed:
        return []
    fast = _too_fast_columns(timed, ratio=ratio, min_history=min_history)
    if fast is not None:
        return fast
    project = statistics.median(r.duration_ms for r in timed)  # type: ignore[type-var]
    own: dict[Hashable, list[int]] = defaultdict(list)
    for record in timed:
        own[record.annotator].append(record.duration_ms)  # type: ignore[arg-type]
    # One median, threshold and reference per annotator, not per record: recomputing the
    # median per record was O(n^2 log n), the rest a tenth of the check at 94K records.
    rule: dict[Hashable, tuple[float, Literal["annotator", "project"]]] = {}
    for annotator, durations in own.items():
        personal = statistics.median(durations) if len(durations) >= min_history else 0.0
        reference: Literal["annotator", "project"] = (
            "annotator" if personal > project else "project"
        )
        rule[annotator] = (ratio * max(personal, project), reference)
    flagged = []
    for record in timed:
        threshold, reference = rule[record.annotator]
        if record.duration_ms < threshold:  # type: ignore[operator]
            flagged.append(FastJudgment(record, threshold, reference))
    return flagged


def _middle(values: Sequence[int]) -> float | int:
    """``statistics.median`` of sorted ``values``: the middle one, or the mean of the two."""
    n = len(values)
    if n % 2 == 1:
        return values[n // 2]
    return (values[n // 2 - 1] + values[n // 2]) / 2


def _too_fast_columns(
    timed: Sequence[Record], *, ratio: float, min_history: int
) -> list[FastJudgment] | None:
    """`too_fast` of records that all have a duration, on arrays (the medians by one sort
    instead of one ``statistics.median`` per annotator and the project): the same
    judgments, thresholds and references. None where the durations are not integers below
    2**53 (a float, or an integer numpy cannot compare with a threshold exactly): the
    caller then takes the per-record path."""
    import numpy as np

    durations = np.array([r.duration_ms for r in timed])
    if durations.dtype != np.int64 or np.abs(durations).max() >= 2**53:
        return None
    codes, index = _annotator_codes(timed)
    project = _middle(np.sort(durations).tolist())
    order = np.lexsort((durations, codes))
    grouped = durations[order].tolist()
    counts = np.bincount(codes, minlength=len(index)).tolist()
    thresholds: list[float] = []
    references: list[Literal["annotator", "project"]] = []
    start = 0
    for count in counts:
        own = grouped[start : start + count]
        start += count
        personal = _middle(own) if count >= min_history else 0.0
        references.append("annotator" if personal > project else "project")
        thresholds.append(ratio * max(personal, project))
    flagged = np.flatnonzero(durations < np.array(thresholds)[codes]).tolist()
    code_of = codes.tolist()
    return [FastJudgment(timed[i], thresholds[code_of[i]], references[code_of[i]]) for i in flagged]


@dataclass(frozen=True)
class AnomalyCheck:
    """Result of the anomalous-voter test for one annotator.

    Attributes:
        annotator: Annotator id.
        n_votes: Votes tested (pair records).
        flagged: True when any checkpoint statistic exceeded its threshold.
        checkpoints: ``(j, M_j, threshold)`` per checkpoint: Fisher's statistic over the
            first j votes and the chi-square(2j) quantile it was compared with.
    """

    annotator: Hashable
    n_votes: int
    flagged: bool
    checkpoints: tuple[tuple[int, float, float], ...]


@_memo_last()
def _pair_relations(
    records: Sequence[PairRecord],
) -> tuple[np.ndarray, np.ndarray, Sequence[Candidate], Sequence[Candidate]]:
    """Per record: an index of its canonical candidate pair ``(x, y)``, its relation
    (`_relations`), and ``x`` and ``y``. Kept for the same records (`_memo_last`: the pair
    table and the anomaly test of one pass ask for the same); the arrays are read-only.

    Integer candidate ids (every database id) are compared as arrays; anything else goes
    through `_relations` one record at a time.
    """
    import numpy as np

    answer = _pair_relation_columns(records)
    for column in answer:
        if isinstance(column, np.ndarray):
            column.setflags(write=False)
    return answer


def _pair_relation_columns(
    records: Sequence[PairRecord],
) -> tuple[np.ndarray, np.ndarray, Sequence[Candidate], Sequence[Candidate]]:
    import numpy as np

    a_ids = [r.a for r in records]
    b_ids = [r.b for r in records]
    # ``all(type(c) is int for c in ...)`` by one C-level map each.
    if set(map(type, a_ids)) <= {int} and set(map(type, b_ids)) <= {int}:
        a, b = np.array(a_ids, dtype=np.int64), np.array(b_ids, dtype=np.int64)
        preference = np.array([_PREFERENCE.get(r.outcome, 0) for r in records], dtype=np.int64)
        swap = a >= b  # not _precedes(a, b): the pair is (b, a), seen from b
        x, y = np.where(swap, b, a), np.where(swap, a, b)
        low, span = int(x.min()), int(y.max()) - int(x.min()) + 1
        if span < 2**31:
            _, pair = np.unique((x - low) * span + (y - low), return_inverse=True)
        else:
            _, pair = np.unique(np.stack([x, y], axis=1), axis=0, return_inverse=True)
        return pair.reshape(-1), np.where(swap, -preference, preference), x, y
    pair_ix: dict[tuple[Candidate, Candidate], int] = {}
    pairs, relations, xs, ys = [], [], [], []
    for record in records:
        ((x, y), relation), *_ = _relations(record).items()
        pairs.append(pair_ix.setdefault((x, y), len(pair_ix)))
        relations.append(relation)
        xs.append(x)
        ys.append(y)
    return np.array(pairs, dtype=np.int64), np.array(relations, dtype=np.int64), xs, ys


@dataclass(frozen=True)
class _PairTable:
    """`_relation_table` of pair records as columns: one row per (unit, annotator), the
    annotator's last relation on the unit; units numbered in order of first appearance.
    ``record`` is the row's record index (its task and candidates are that record's)."""

    unit: np.ndarray
    annotator: np.ndarray
    relation: np.ndarray
    record: np.ndarray
    x: Sequence[Candidate]
    y: Sequence[Candidate]
    n_units: int


@_memo_last()
def _pair_table(records: Sequence[PairRecord]) -> _PairTable:
    import numpy as np

    n = len(records)
    task_ix: dict[Hashable, int] = {}
    task = np.array([task_ix.setdefault(r.task, len(task_ix)) for r in records], dtype=np.int64)
    annotator, annotator_ix = _annotator_codes(records)
    pair, relation, x, y = _pair_relations(records)
    n_pairs = int(pair.max()) + 1 if n else 1
    keys, first, unit = np.unique(task * n_pairs + pair, return_index=True, return_inverse=True)
    # Renumber units in order of first appearance, as the dict of `_relation_table` is.
    renumber = np.empty(len(keys), dtype=np.int64)
    renumber[np.argsort(first, kind="stable")] = np.arange(len(keys))
    unit = renumber[unit.reshape(-1)]
    # The last record of an annotator on a unit counts: first occurrence in reverse.
    n_annotators = max(len(annotator_ix), 1)
    _, last_reversed = np.unique((unit * n_annotators + annotator)[::-1], return_index=True)
    kept = np.sort(n - 1 - last_reversed)
    columns = [unit[kept], annotator[kept], relation[kept], kept, x, y]
    for column in columns:
        if isinstance(column, np.ndarray):
            column.setflags(write=False)  # shared by the calls on the same records
    return _PairTable(*columns, n_units=len(keys))


def shared_unit_counts(records: Sequence[PairRecord]) -> Counter[Hashable]:
    """Per annotator, the units ``(task, x, y)`` they judged that another annotator judged too."""
    import numpy as np

    if not records:
        return Counter()
    table = _pair_table(records)
    shared = np.bincount(table.unit, minlength=table.n_units)[table.unit] >= 2
    per_annotator = np.bincount(table.annotator[shared], minlength=int(table.annotator.max()) + 1)
    first = np.full(len(per_annotator), len(records), dtype=np.int64)
    np.minimum.at(first, table.annotator, table.record)
    return Counter(
        {
            records[int(first[k])].annotator: int(n)
            for k, n in enumerate(per_annotator.tolist())
            if n
        }
    )


def _pair_alpha_matrix(records: Sequence[PairRecord]) -> np.ndarray | None:
    """Krippendorff's reliability matrix of pair records, as `krippendorff_alpha` lays it
    out (rows: annotators by repr; columns: pairable units in order of first appearance,
    each followed by its reverse); None when alpha is undefined."""
    import numpy as np

    table = _pair_table(records)
    by_unit = np.bincount(table.unit, minlength=table.n_units)
    pairable = by_unit[table.unit] >= 2
    unit, relation = table.unit[pairable], table.relation[pairable]
    # Both orientations of every relation: one value unless some relation is not 0.
    if not (relation != 0).any():
        return None
    annotator_keys = [records[i].annotator for i in table.record[pairable].tolist()]
    annotators = sorted(set(annotator_keys), key=repr)
    row_of = {a: i for i, a in enumerate(annotators)}
    rows = np.array([row_of[a] for a in annotator_keys], dtype=np.int64)
    units = np.flatnonzero(by_unit >= 2)
    column = np.searchsorted(units, unit)
    matrix = np.full((len(annotators), 2 * len(units)), np.nan)
    matrix[rows, 2 * column] = relation
    matrix[rows, 2 * column + 1] = -relation  # integer negation: 0, never -0.0
    return matrix


def anomalous_voters(
    records: Iterable[PairRecord],
    *,
    alpha: float = 0.05,
    n_checkpoints: int = 5,
    seed: int = 0,
) -> dict[Hashable, AnomalyCheck]:
    """Chatbot Arena's anomalous-user test (Chiang et al. 2024).

    For vote i of an annotator, on candidate pair A_i, the history H is every vote of the
    *other* annotators on that pair, and ``p_i = (1 + #{h in H : h >= v_i}) / (|H| + 1)``.
    Votes are valued 1 / 0.5 / 0 for the pair's underdog winning / a tie or both-bad / the
    favourite winning, the underdog being the candidate the others prefer less (by wins
    minus losses; sorted id on a draw). Ordered that way, ``h >= v_i`` is "at least as
    surprising", and backing the others' loser repeatedly gives small p-values. At j in
    ``n_checkpoints`` random checkpoints (seeded per annotator, so a result does not
    depend on who else is checked), ``M_j = -2 sum_{i<=j} log p_i`` is compared with the
    chi-square(2j) quantile at ``1 - alpha / n_checkpoints`` (Bonferroni over checkpoints).

    Args:
        records: Pair records in the order the votes were cast.
        alpha: Family-wise false-positive rate per annotator.
        n_checkpoints: Checkpoints per annotator (fewer if they cast fewer votes).
        seed: Seed of the checkpoint draw.

    Returns:
        An `AnomalyCheck` per annotator.

    All votes at once as columns: counts per pair and per (pair, annotator) by bincount,
    each vote's history from them. Equals `anomalous_voters_reference` (the per-vote
    loop) bit for bit; the tests check it on random votes.
    """
    import numpy as np

    records = list(records)
    if not (
        _only_pair_records(records) or all(isinstance(record, PairRecord) for record in records)
    ):
        raise ValueError("anomalous_voters takes pair records only")
    if not records:
        return {}
    annotator_a, annotator_ix = _annotator_codes(records)
    pair_a, relation, _, _ = _pair_relations(records)
    column = 1 - relation  # +1 -> 0 (x won), 0 -> 1 (tie), -1 -> 2 (y won)
    n_pairs, n_annotators = int(pair_a.max()) + 1, len(annotator_ix)
    totals = np.bincount(pair_a * 3 + column, minlength=n_pairs * 3).reshape(-1, 3)
    # Own tallies per (pair, annotator) that occur, found by sorting the combined keys.
    own_key, own_ix = np.unique(pair_a * n_annotators + annotator_a, return_inverse=True)
    own_ix = own_ix.reshape(-1)
    own = np.bincount(own_ix * 3 + column, minlength=len(own_key) * 3).reshape(-1, 3)
    history = (totals[pair_a] - own[own_ix]).astype(float)
    x_won, y_won = history[:, 0], history[:, 2]
    underdog_is_x = x_won - y_won <= 0
    # Value 1 = the underdog won; counts from the underdog's side, summed up to the vote's.
    value_column = np.where(underdog_is_x, column, 2 - column)
    from_underdog = np.where(underdog_is_x[:, None], history, history[:, ::-1])
    at_least_as_surprising = np.cumsum(from_underdog, axis=1)[np.arange(len(records)), value_column]
    ratio = (1 + at_least_as_surprising) / (history.sum(axis=1) + 1)
    log_p = np.array(list(map(math.log, ratio.tolist())))  # libm's log, as the reference

    threshold: dict[int, float] = {}
    order = np.argsort(annotator_a, kind="stable")
    bounds = np.searchsorted(annotator_a[order], np.arange(n_annotators + 1))
    result = {}
    for annotator, k in annotator_ix.items():
        mine = log_p[order[bounds[k] : bounds[k + 1]]]
        n = len(mine)
        rng = np.random.default_rng([seed, zlib.crc32(repr(annotator).encode())])
        chosen = np.sort(rng.choice(np.arange(1, n + 1), size=min(n_checkpoints, n), replace=False))
        cumulative = -2 * np.cumsum(mine)
        checkpoints = []
        for j in chosen:
            if int(j) not in threshold:
                threshold[int(j)] = chi2_ppf(1 - alpha / n_checkpoints, 2 * j)
            checkpoints.append((int(j), float(cumulative[j - 1]), threshold[int(j)]))
        result[annotator] = AnomalyCheck(
            annotator=annotator,
            n_votes=n,
            flagged=any(m > t for _, m, t in checkpoints),
            checkpoints=tuple(checkpoints),
        )
    return result


def anomalous_voters_reference(
    records: Iterable[PairRecord],
    *,
    alpha: float = 0.05,
    n_checkpoints: int = 5,
    seed: int = 0,
) -> dict[Hashable, AnomalyCheck]:
    """`anomalous_voters` one vote at a time: the readable reference it is tested against."""
    import numpy as np
    from scipy import stats

    records = list(records)
    # Per canonical pair (x, y): votes per annotator as counts of (x won, tie, y won).
    tallies: dict[tuple[Candidate, Candidate], dict[Hashable, np.ndarray]] = defaultdict(
        lambda: defaultdict(lambda: np.zeros(3))
    )
    votes: dict[Hashable, list[tuple[tuple[Candidate, Candidate], int]]] = defaultdict(list)
    for record in records:
        if not isinstance(record, PairRecord):
            raise ValueError("anomalous_voters takes pair records only")
        (pair, relation), *_ = _relations(record).items()
        column = 1 - relation  # +1 -> 0 (x won), 0 -> 1 (tie), -1 -> 2 (y won)
        tallies[pair][record.annotator][column] += 1
        votes[record.annotator].append((pair, column))
    totals = {pair: sum(by.values()) for pair, by in tallies.items()}

    result = {}
    for annotator, cast in votes.items():
        log_p = []
        for pair, column in cast:
            history = totals[pair] - tallies[pair][annotator]
            x_won, tied, y_won = history
            # Value 1 = the underdog won; history counts from the underdog's side.
            from_underdog = history if x_won - y_won <= 0 else history[::-1]
            value_column = column if x_won - y_won <= 0 else 2 - column
            at_least_as_surprising = from_underdog[: value_column + 1].sum()
            log_p.append(math.log((1 + at_least_as_surprising) / (history.sum() + 1)))
        n = len(log_p)
        rng = np.random.default_rng([seed, zlib.crc32(repr(annotator).encode())])
        chosen = np.sort(rng.choice(np.arange(1, n + 1), size=min(n_checkpoints, n), replace=False))
        cumulative = -2 * np.cumsum(log_p)
        checkpoints = tuple(
            (
                int(j),
                float(cumulative[j - 1]),
                float(stats.chi2.ppf(1 - alpha / n_checkpoints, 2 * j)),
            )
            for j in chosen
        )
        result[annotator] = AnomalyCheck(
            annotator=annotator,
            n_votes=n,
            flagged=any(m > threshold for _, m, threshold in checkpoints),
            checkpoints=checkpoints,
        )
    return result
