"""A tie group's members are ordered by candidate id, whatever the roundoff in their strengths.

Strengths of one tie group are equal only within roundoff; the fit's numerics decide which
of them is a few ulps larger. The consensus (per prompt and batched) and the ranking rows the
export builds from it must not follow that: the same output for every assignment of the
near-equal strengths to the group's members.
"""

from __future__ import annotations

import itertools
import random

from curation import batch_consensus as BC
from curation import consensus as C
from curation import exporting as E

# Within 1e-12 of each other: one tie group at tolerance 1e-9 and 1e-6.
NEAR = (0.75, 0.75 + 3e-13, 0.75 - 4e-13, 0.75 + 9e-13)


def _assignments(members):
    """Every way of giving the near-equal strengths to ``members``."""
    for values in itertools.permutations(NEAR[: len(members)]):
        yield dict(zip(members, values, strict=True))


def test_it_orders_a_tie_group_by_id_in_groups_from_scores():
    outputs = set()
    for tied in _assignments([40, 7, 23, 11]):
        scores = {**tied, 3: 2.0, 90: -1.0}
        for tol in (1e-9, 1e-6):
            outputs.add(str(C.groups_from_scores(scores, tol=tol)))
    assert outputs == {str([[3], [7, 11, 23, 40], [90]])}


def test_it_orders_a_tie_group_by_id_in_the_batched_strength_groups():
    nodes = [3, 7, 11, 23, 40, 90]
    outputs = set()
    for tied in _assignments([40, 7, 23, 11]):
        outputs.add(str(BC._strength_groups(nodes, {**tied, 3: 2.0, 90: -1.0})))
    assert outputs == {str([[3], [7, 11, 23, 40], [90]])}


def _votes(prompt_id: int, best: int, tied: list[int]) -> list[C.Vote]:
    """Rankings putting ``best`` first and ``tied`` in one group: no arc inside the group."""
    group = tuple(sorted(tied))
    return [
        C.Vote(prompt_id * 10 + i, prompt_id * 10 + i, prompt_id, f"e{i}", ranking=((best,), group))
        for i in range(3)
    ]


def test_it_gives_the_same_ranking_and_ranking_row_per_prompt_and_batched():
    prompt_id, best, tied = 5, 101, [130, 104, 117]
    votes = _votes(prompt_id, best, tied)
    rows = set()
    rankings = set()
    for strengths in _assignments(tied):
        scores = {best: 1.5, **strengths}
        ref = C.prompt_consensus(prompt_id, votes, denoise=True, scores=scores)
        batched = BC.batch_consensus(
            {prompt_id: votes}, weights={}, scores={prompt_id: scores}, eta=None
        )
        assert batched[prompt_id].ranking == ref.ranking
        rankings.add(str(ref.ranking))
        row = E._ranking_row(3, None, ref.ranking, "consensus", random.Random(17), "")
        rows.add((tuple(row.order), tuple(row.rankings)))
    assert rankings == {str([[101], [104, 117, 130]])}
    assert len(rows) == 1
