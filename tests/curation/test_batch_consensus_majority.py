"""`curation.batch_consensus.batch_majority` (denoising off, every prompt at once on columns)
equals the per-prompt path it stands for, `consensus.prompt_consensus(denoise=False)` (the
ensemble ranked by Copeland score) + `exporting._pair_rows`, on random prompts: pair
judgments (ties, both_bad, self-pairs, repeats), rankings (partial, with tie groups, one
candidate, none), several annotators with weights that balance to an exact zero or to a net
below the graph's threshold; and a whole denoise-off snapshot built either way, with empty
answers, reviewer decisions, a minimum agreement and the reward model as an evaluator."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from curation import batch_consensus as BC
from curation import consensus as C
from curation import exporting as E
from curation import graph as G
from tests.curation.test_batch_consensus import _source as pair_source
from tests.curation.test_batch_consensus import (
    assert_same_consensus,
    group_by_prompt,
    same_pair_rows,
)
from tests.curation.test_batch_consensus_rankings import _ranking

EVALUATORS = [f"ext:crowd:{i}" for i in range(6)]


def _world(seed: int, n_prompts: int = 60, *, stored: bool = False) -> list[C.Vote]:
    """Random judgments over prompts of 2-7 candidates. ``stored``: only what the database
    holds (no self-pair, no empty ranking), as a snapshot reads."""
    rng = random.Random(seed)
    votes: list[C.Vote] = []
    jid = cid = 0
    for prompt_id in range(1, n_prompts + 1):
        n = rng.randint(2, 7)
        cands = list(range(cid + 1, cid + n + 1))
        cid += n
        style = rng.choice(["pairs", "rankings", "mixed", "mixed"])
        for _ in range(rng.randint(1, 14)):
            jid += 1
            evaluator = rng.choice(EVALUATORS)
            kind = "pair" if style == "pairs" else "ranking" if style == "rankings" else "either"
            if kind == "either":
                kind = rng.choice(["pair", "ranking"])
            if not stored and rng.random() < 0.03:
                votes.append(C.Vote(jid, jid, prompt_id, evaluator, ranking=()))
                continue
            if kind == "ranking":
                ranking = _ranking(rng, cands, tie_rate=0.25)
                votes.append(C.Vote(jid, jid, prompt_id, evaluator, ranking=ranking))
                continue
            if not stored and rng.random() < 0.03:
                a = b = cands[0]
            else:
                a, b = rng.sample(cands, 2)
            outcome = rng.choices(["a", "b", "tie", "both_bad"], [5, 5, 1, 1])[0]
            votes.append(C.Vote(jid, jid, prompt_id, evaluator, pair=(a, b), outcome=outcome))
    rng.shuffle(votes)
    votes.sort(key=lambda v: v.judgment_id)
    return votes


def _source(votes: list[C.Vote], n_prompts: int, *, empty_every: int = 0) -> E.SnapshotInput:
    """Every ``empty_every``-th candidate has an empty answer (no content)."""
    n_cands = max(c for v in votes for c in v.candidates)
    return pair_source(votes, n_prompts, n_cands, empty_every=empty_every)


def _weights(rng: random.Random) -> dict[str, float]:
    # Equal weights give exact zero nets (a pair with no net preference, Copeland ties);
    # 0.1 + 0.2 - 0.3 a net of 5.6e-17 (a row, but no arc: below graph._EPS).
    return {e: rng.choice([1.0, 1.0, 0.1, 0.2, 0.3, rng.random()]) for e in EVALUATORS[:-1]}


def _check_equal(prompt_id, got, ref, prompt_votes, source, seen):
    assert_same_consensus(got, ref)
    assert got.removed_arcs == ref.removed_arcs == ()
    assert got.overruled == []
    options = E.ExportOptions(denoise=False)
    rows_ref, drops_ref = same_pair_rows(source, prompt_id, got, ref, prompt_votes, options)
    seen["pair rows"] += len(rows_ref)
    seen["no net preference"] += drops_ref[BC.NO_NET]
    seen["no content"] += drops_ref[E.NO_CONTENT_PAIR]
    seen["row without arc"] += sum(r.margin == 0 for r in rows_ref)
    seen["tie groups"] += any(len(g) > 1 for g in ref.ranking)
    seen["cyclic"] += G.has_cycle(ref.human)


@pytest.mark.parametrize("seed", range(10))
def test_majority_batch_equals_the_per_prompt_path_on_random_prompts(seed):
    votes = _world(seed)
    rng = random.Random(seed)
    weights = _weights(rng)
    by_prompt = group_by_prompt(votes)
    batch = BC.batch_majority(by_prompt, weights=weights)
    source = _source(votes, len(by_prompt), empty_every=7)
    seen: Counter[str] = Counter()
    for prompt_id, prompt_votes in by_prompt.items():
        ref = C.prompt_consensus(prompt_id, prompt_votes, weights=weights, denoise=False)
        got = batch[prompt_id]  # every prompt: no ranking here names a candidate twice
        _check_equal(prompt_id, got, ref, prompt_votes, source, seen)
    # Every branch was exercised (a row without an arc: `test_copeland_ties_and_balanced_cycles`
    # and most seeds).
    seen.pop("row without arc")
    assert min(seen.values()) > 0 and len(seen) == 5, seen


def test_majority_batch_with_the_reward_model_leaves_its_prompts_out():
    votes = _world(21)
    rng = random.Random(21)
    weights = _weights(rng)
    n_cands = max(c for v in votes for c in v.candidates)
    # Scores for some candidates only: prompts with fewer than two scored candidates have no
    # reward-model arcs and are batched.
    rm_scores = {c: rng.gauss(0, 1) for c in range(1, n_cands + 1) if rng.random() < 0.25}
    by_prompt = group_by_prompt(votes)
    batch = BC.batch_majority(by_prompt, weights=weights, rm_scores=rm_scores, rm_weight=0.4)
    source = _source(votes, len(by_prompt))
    seen: Counter[str] = Counter()
    for prompt_id, prompt_votes in by_prompt.items():
        ref = C.prompt_consensus(
            prompt_id,
            prompt_votes,
            weights=weights,
            rm_scores=rm_scores,
            rm_weight=0.4,
            denoise=False,
        )
        scored = sum(c in rm_scores for c in ref.candidates)
        got = batch.get(prompt_id)
        assert (got is None) == (scored >= 2)
        seen["per prompt" if got is None else "batched"] += 1
        if got is not None:
            _check_equal(prompt_id, got, ref, prompt_votes, source, Counter())
    assert seen["per prompt"] and seen["batched"], seen
    # Without a reward-model weight the scores change nothing: every prompt is batched.
    assert set(BC.batch_majority(by_prompt, weights=weights, rm_scores=rm_scores)) == set(by_prompt)


def test_a_ranking_naming_a_candidate_twice_is_left_to_the_per_prompt_path():
    votes = [
        C.Vote(1, 1, 1, "e1", ranking=((1,), (2,), (1,))),
        C.Vote(2, 2, 2, "e1", ranking=((3,), (4,))),
    ]
    assert set(BC.batch_majority(group_by_prompt(votes), weights={})) == {2}


def test_copeland_ties_and_balanced_cycles():
    # Prompt 1: a > b, b > c, c > a once each (a cycle: every Copeland score 0, one group,
    # ids ascending); d only tied with a (no arc: score 0, in that group too). Prompt 2: two
    # evaluators of equal weight disagree on (5, 6): net 0, no row, 5 and 6 tied; 7 beats
    # both.
    votes = [
        C.Vote(1, 1, 1, "e1", pair=(2, 1), outcome="b"),
        C.Vote(2, 2, 1, "e1", pair=(2, 3), outcome="a"),
        C.Vote(3, 3, 1, "e2", pair=(3, 1), outcome="a"),
        C.Vote(4, 4, 1, "e2", pair=(1, 4), outcome="tie"),
        C.Vote(5, 5, 2, "e1", pair=(5, 6), outcome="a"),
        C.Vote(6, 6, 2, "e2", pair=(5, 6), outcome="b"),
        C.Vote(7, 7, 2, "e1", ranking=((7,), (6, 5))),
        # Prompt 3: 0.1 + 0.2 - 0.3 = 5.6e-17 for 8 over 9: a row (a net preference) of
        # margin 0.0, but no arc (below graph._EPS), so no Copeland point: 8 and 9 tied.
        C.Vote(8, 8, 3, "w1", pair=(8, 9), outcome="a"),
        C.Vote(9, 9, 3, "w2", pair=(9, 8), outcome="b"),
        C.Vote(10, 10, 3, "w3", pair=(8, 9), outcome="b"),
    ]
    weights = {"w1": 0.1, "w2": 0.2, "w3": 0.3}
    by_prompt = group_by_prompt(votes)
    batch = BC.batch_majority(by_prompt, weights=weights)
    ref = C.prompt_consensus(3, by_prompt[3], weights=weights, denoise=False)
    assert 0 < ref.evidence[(8, 9)].net < 1e-9
    assert batch[3].ranking == ref.ranking == [[8, 9]]
    ((better, worse, *_, margin, _ids),) = batch[3].pairs
    assert (better, worse, margin) == (8, 9, 0.0)
    assert batch[3].agreement == ref.agreement == 1 / 3
    assert batch[1].ranking == [[1, 2, 3, 4]]
    assert batch[2].ranking == [[7], [5, 6]]
    assert batch[2].drops == [(BC.NO_NET, 1)]
    assert [(r.better, r.worse) for r in batch[2].pairs] == [(7, 5), (7, 6)]
    assert [(r.better, r.worse, r.votes_for) for r in batch[1].pairs] == [
        (1, 2, 1),
        (2, 3, 1),
        (3, 1, 1),
    ]


@pytest.mark.parametrize("seed", range(4))
def test_denoise_off_snapshot_is_the_same_batched_or_per_prompt(seed):
    votes = _world(seed, n_prompts=50, stored=True)
    source = _source(votes, 50, empty_every=6)
    rng = random.Random(seed)
    prompts = sorted({v.prompt_id for v in votes})
    # A reviewer's final ranking on a few prompts, a discarded one, and (seeds 2, 3) the
    # reward model as an evaluator with scores for some candidates.
    for p in rng.sample(prompts, 4):
        cands = sorted({c for v in votes if v.prompt_id == p for c in v.candidates})
        source.decisions[p] = ([[c] for c in reversed(cands)], False)
    source.decisions[rng.choice(prompts)] = (None, True)
    if seed >= 2:
        n_cands = max(source.candidates)
        source.rm_scores.update(
            {c: rng.gauss(0, 1) for c in range(1, n_cands + 1) if rng.random() < 0.2}
        )
    options = E.ExportOptions(
        denoise=False,
        rm_evaluator=seed >= 2,
        min_agreement=0.3 if seed % 2 else None,
        splits={"train": 0.8, "test": 0.2},
        seed=seed,
    )
    batched = E.build_snapshot(source, options)
    reference = E.build_snapshot(source, options, batched=False)
    assert batched.pairs and batched.rankings
    for name in ("pairs", "rankings", "variants", "overruled", "media"):
        assert getattr(batched, name) == getattr(reference, name), name
    sheet, ref_sheet = dict(batched.datasheet), dict(reference.datasheet)
    sheet.pop("created_at"), ref_sheet.pop("created_at")
    assert json.dumps(sheet, default=str) == json.dumps(ref_sheet, default=str)
