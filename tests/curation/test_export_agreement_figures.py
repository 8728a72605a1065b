"""The datasheet's agreement figures (`exporting._agreement_figures`) are the agreement module's
figures over every judgment: mean per-prompt pairwise agreement (`agreement.pairwise_agreement`)
and Krippendorff's alpha per record kind (`agreement.krippendorff_alpha`), whatever mix of
prompts judged once, prompts judged by several annotators, repeats and kinds."""

from __future__ import annotations

import math
import random

import pytest

from curation import agreement as A
from curation import consensus as C
from curation import exporting as E


def _votes(seed: int, kinds: str) -> list[C.Vote]:
    rng = random.Random(seed)
    votes, jid = [], 0
    for prompt_id in range(1, 60):
        cands = [prompt_id * 10 + i for i in range(rng.choice((2, 3, 4)))]
        kind = rng.choice(kinds)
        # Most prompts judged once (as the peer benchmark's), some by several annotators,
        # some by the same annotator twice.
        n = rng.choice((1, 1, 1, 2, 3, 4))
        for _ in range(n):
            jid += 1
            evaluator = f"e{rng.randrange(5)}"
            if kind == "r":
                order = cands[:]
                rng.shuffle(order)
                groups, at = [], 0
                while at < len(order):
                    size = rng.choice((1, 1, 2))
                    groups.append(tuple(order[at : at + size]))
                    at += size
                votes.append(C.Vote(jid, jid, prompt_id, evaluator, ranking=tuple(groups)))
            else:
                a, b = rng.sample(cands, 2)
                outcome = rng.choice(("a", "b", "tie", "both_bad"))
                votes.append(C.Vote(jid, jid, prompt_id, evaluator, pair=(a, b), outcome=outcome))
    return votes


def _reference(votes: list[C.Vote]) -> dict:
    records = [v.record() for v in votes]
    per_prompt = [
        a.agreement for a in A.pairwise_agreement(records).values() if a.agreement is not None
    ]
    alpha = {}
    for label, kind in (("pairs", A.PairRecord), ("rankings", A.RankingRecord)):
        subset = [r for r in records if isinstance(r, kind)]
        if subset:
            alpha[label] = {}
            for level in ("nominal", "ordinal"):
                try:
                    value = A.krippendorff_alpha(subset, level=level)
                except (ValueError, ZeroDivisionError):
                    value = None
                ok = value is not None and not math.isnan(value)
                alpha[label][level] = round(value, 4) if ok else None
    return {
        "judgments": len(records),
        "prompts": len({v.prompt_id for v in votes}),
        "prompts_with_overlap": len(per_prompt),
        "mean_prompt_agreement": round(sum(per_prompt) / len(per_prompt), 4)
        if per_prompt
        else None,
        "krippendorff_alpha": alpha,
    }


@pytest.mark.parametrize("kinds", ["r", "p", "rp"])
@pytest.mark.parametrize("seed", range(6))
def test_the_figures_are_those_of_every_judgment(seed, kinds):
    votes = _votes(seed, kinds)
    got = E._agreement_figures(votes)
    assert got == _reference(votes)
    # Not vacuous: prompts judged once and prompts with overlap, and a figure to compare.
    assert 0 < got["prompts_with_overlap"] < got["prompts"]
    assert got["mean_prompt_agreement"] is not None


def test_prompts_judged_once_only_give_no_overlap():
    votes = _votes(1, "rp")
    seen, once = set(), []
    for v in votes:
        if v.prompt_id not in seen:
            seen.add(v.prompt_id)
            once.append(v)
    got = E._agreement_figures(once)
    assert got == _reference(once)
    assert got["prompts_with_overlap"] == 0 and got["judgments"] == len(once)
    assert set(got["krippendorff_alpha"]) == {"pairs", "rankings"}
    assert E._agreement_figures([]) == _reference([])
