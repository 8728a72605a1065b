"""The human arcs an export's consensus overrules, listed for review.

Pure: no Django. An export's ranking per prompt is acyclic (a sequence of tie groups); where
the humans' net preferences form a cycle, or the joint model's strengths (and the opt-in
model prior) order a pair against its votes, some human arc is overruled. Each one becomes a
row of the export's ``overruled_arcs.jsonl`` and of the export's "Overruled arcs" page, with
the votes on both sides and whether the arc was a *strong* consensus (`curation.prior`'s
rule: at least two reliable annotators agreeing, none against), so a reviewer can check the
ones that matter first.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from curation import consensus as C
from curation import prior as MP


@dataclass(frozen=True)
class OverruledArc:
    """One human preference ``preferred > over`` on a prompt that the export reverses.

    Attributes:
        prompt_id: The prompt (database id).
        preferred / over: Candidates (database ids): the humans' net preference is
            ``preferred`` over ``over``; the export ranks ``over`` at least as high.
        net_weight: Reliability-weighted net human preference for ``preferred``.
        evaluators_for / evaluators_against: Distinct evaluators voting each way.
        reliable_for / reliable_against: Of those, evaluators with ``eta >= RELIABLE_ETA``
            in the joint annotator model (None when the model was not fitted).
        strong: A strong consensus (`curation.prior.strong_arcs`' rule).
    """

    prompt_id: int
    preferred: int
    over: int
    net_weight: float
    evaluators_for: int
    evaluators_against: int
    reliable_for: int | None
    reliable_against: int | None
    strong: bool


def overruled_arcs(
    consensus: C.PromptConsensus,
    votes: Sequence[C.Vote],
    eta: Mapping[str, float] | None,
) -> list[OverruledArc]:
    """The human arcs of one prompt that ``consensus.ranking`` reverses, heaviest first.

    Args:
        consensus: The prompt's consensus (its ``human`` graph and ``ranking``).
        votes: The prompt's judgments the consensus was built from.
        eta: Joint annotator model reliability per evaluator (None: not fitted; then no arc
            counts as strong, since reliability is unknown).
    """
    position = {c: g for g, group in enumerate(consensus.ranking) for c in group}
    reversed_arcs = [
        (u, v, float(w))
        for u, v, w in consensus.human.edges(data="weight", default=1.0)
        if u in position and v in position and position[v] <= position[u]
    ]
    if not reversed_arcs:
        return []
    wanted = {frozenset((u, v)) for u, v, _ in reversed_arcs}
    said: dict[tuple[int, int], set[str]] = {}
    for vote in votes:
        groups = vote.as_ranking()
        for i, j in itertools.combinations(range(len(groups)), 2):
            for x in groups[i]:
                for y in groups[j]:
                    if frozenset((x, y)) in wanted:
                        said.setdefault((x, y), set()).add(vote.evaluator)
    out = []
    for u, v, w in reversed_arcs:
        pro, con = said.get((u, v), set()), said.get((v, u), set())
        if eta is None:
            rel_pro = rel_con = None
            strong = False
        else:
            rel_pro = sum(eta.get(e, 0.0) >= MP.RELIABLE_ETA for e in pro)
            rel_con = sum(eta.get(e, 0.0) >= MP.RELIABLE_ETA for e in con)
            strong = rel_pro >= MP.STRONG_MIN_VOTES and rel_con == 0
        out.append(
            OverruledArc(
                prompt_id=consensus.prompt_id,
                preferred=u,
                over=v,
                net_weight=w,
                evaluators_for=len(pro),
                evaluators_against=len(con),
                reliable_for=rel_pro,
                reliable_against=rel_con,
                strong=strong,
            )
        )
    return sorted(out, key=lambda a: (not a.strong, -a.net_weight, a.preferred, a.over))
