"""`curation.batch_consensus` (all prompts on columns) equals the per-prompt path it stands
for: `consensus.prompt_consensus` + `exporting._pair_rows` + `overruled.overruled_arcs`, and
a whole snapshot built either way (issue 10 item 6)."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest

from curation import batch_consensus as BC
from curation import consensus as C
from curation import exporting as E
from curation.overruled import overruled_arcs

EVALUATORS = [f"ext:crowd:{i}" for i in range(7)]


def _world(seed: int, n_prompts: int = 60) -> tuple[list[C.Vote], dict[int, dict[int, float]]]:
    """Random pair votes (ties, both_bad, repeats, missing pairs, cycles, now and then a
    self-pair and a ranking judgment) over prompts of 2-9 candidates, and strengths with
    exact ties and candidates missing."""
    rng = random.Random(seed)
    votes: list[C.Vote] = []
    scores: dict[int, dict[int, float]] = {}
    jid = cid = 0
    for prompt_id in range(1, n_prompts + 1):
        n = rng.randint(2, 9)
        cands = list(range(cid + 1, cid + n + 1))
        cid += n
        pairs = [(a, b) for a in cands for b in cands if a != b]
        for _ in range(rng.randint(1, 25)):
            jid += 1
            evaluator = rng.choice(EVALUATORS)
            if rng.random() < 0.01:
                votes.append(
                    C.Vote(jid, jid, prompt_id, evaluator, ranking=((cands[0],), (cands[1],)))
                )
                continue
            a, b = rng.choice(pairs) if rng.random() > 0.01 else (cands[0], cands[0])
            outcome = rng.choices(["a", "b", "tie", "both_bad"], [5, 5, 1, 1])[0]
            votes.append(C.Vote(jid, jid, prompt_id, evaluator, pair=(a, b), outcome=outcome))
        grid = rng.choice([0.5, 1e-3, None])  # 0.5: many exact ties
        scores[prompt_id] = {
            c: (round(rng.gauss(0, 1) / grid) * grid if grid else rng.gauss(0, 1))
            for c in cands
            if rng.random() > 0.1
        }
    rng.shuffle(votes)  # judgments of different prompts interleave, as in a project
    votes.sort(key=lambda v: v.judgment_id)
    return votes, scores


def _source(
    votes: list[C.Vote], n_prompts: int, n_cands: int, *, empty_every: int = 0
) -> E.SnapshotInput:
    """Every ``empty_every``-th candidate has an empty answer (no content)."""
    return E.SnapshotInput(
        project_name="p",
        project_id=1,
        version=1,
        votes=votes,
        discarded_tasks=set(),
        gold={},
        prompts={
            p: E.SnapshotPrompt(p, f"prompt-{p}", f"text {p}", "", "")
            for p in range(1, n_prompts + 1)
        },
        candidates={
            c: E.SnapshotCandidate(
                c,
                f"cand-{c}",
                f"model-{c % 5}",
                "text",
                "  " if empty_every and c % empty_every == 0 else f"answer {c}",
                "",
            )
            for c in range(1, n_cands + 1)
        },
        rm_scores={},
        rm_label="",
        marked=set(),
        decisions={},
        media_root=Path("/nonexistent"),
        leaderboard_bootstrap=0,
    )


def group_by_prompt(votes: list[C.Vote]) -> dict[int, list[C.Vote]]:
    out: dict[int, list[C.Vote]] = {}
    for v in votes:
        out.setdefault(v.prompt_id, []).append(v)
    return out


def random_weights(
    rng: random.Random, evaluators: list[str]
) -> tuple[dict[str, float], dict[str, float]]:
    """Weights of all ``evaluators`` but the last, reliabilities (eta) of all but the last two.
    Equal weights give balanced (zero) nets and cycles of equal weight, 0.1 + 0.2 - 0.3 a net
    of 5.6e-17 (no arc in the graph: below graph._EPS); others random."""
    weights = {e: rng.choice([0.5, 1.0, 0.1, 0.2, 0.3, rng.random()]) for e in evaluators[:-1]}
    eta = {e: rng.random() for e in evaluators[:-2]}
    return weights, eta


def denoised_or_left_out(batch, prompt_id, prompt_votes, weights, scores):
    """The per-prompt denoised consensus of a prompt and the batch's (None where the batch
    left it out): left out exactly where a tie group of equal strength is joined by an arc
    (split by a feedback arc set there); a tie group without one is batched."""
    ref = C.prompt_consensus(
        prompt_id, prompt_votes, weights=weights, denoise=True, scores=scores[prompt_id]
    )
    got = batch.get(prompt_id)
    by_strength = C.groups_from_scores(
        {c: scores[prompt_id].get(c, 0.0) for c in ref.candidates}, tol=1e-6
    )
    left_out = any(ref.ensemble.subgraph(g).number_of_edges() for g in by_strength)
    assert (got is None) == left_out
    return ref, got


def assert_same_consensus(got, ref) -> None:
    assert got.ranking == ref.ranking
    assert (got.agreement, got.comparisons, got.n_votes) == (
        ref.agreement,
        ref.comparisons,
        ref.n_votes,
    )


def same_pair_rows(source, prompt_id, got, ref, prompt_votes, options):
    """The batch's pair rows and dropped pairs equal the per-prompt path's (the drops in order
    too: the datasheet lists them so); returns the per-prompt rows and drops."""
    drops_ref: Counter[str] = Counter()
    drops_got: Counter[str] = Counter()
    rows_ref = E._pair_rows(
        source, ref, prompt_votes, ref.ranking, "consensus", options, False, drops_ref, {}
    )
    rows_got = E._batched_pair_rows(source, prompt_id, got, options, False, drops_got, {})
    assert rows_got == rows_ref
    assert list(drops_got.items()) == list(drops_ref.items())
    return rows_ref, drops_ref


@pytest.mark.parametrize("seed", range(8))
def test_batch_equals_the_per_prompt_path_on_random_prompts(seed):
    votes, scores = _world(seed)
    weights, eta = random_weights(random.Random(seed), EVALUATORS)
    by_prompt = group_by_prompt(votes)
    batch = BC.batch_consensus(by_prompt, weights=weights, scores=scores, eta=eta)
    source = _source(votes, len(by_prompt), max(c for v in votes for c in v.candidates))
    options = E.ExportOptions()
    seen = Counter()
    for prompt_id, prompt_votes in by_prompt.items():
        ref, got = denoised_or_left_out(batch, prompt_id, prompt_votes, weights, scores)
        if got is None:
            seen["per prompt"] += 1
            continue
        seen["batched"] += 1
        seen["batched with a tie group"] += any(len(g) > 1 for g in got.ranking)
        seen["with removed arcs"] += bool(ref.removed_arcs)
        assert_same_consensus(got, ref)
        assert got.removed_arcs == ref.removed_arcs  # same arcs, weights, order
        assert got.overruled == overruled_arcs(ref, prompt_votes, eta)
        rows_ref, drops_ref = same_pair_rows(source, prompt_id, got, ref, prompt_votes, options)
        seen["pair rows"] += len(rows_ref)
        seen["dropped pairs"] += sum(drops_ref.values())
    # Every branch was exercised: both paths, tie groups, reversed arcs, rows and drops.
    assert min(seen.values()) > 0 and len(seen) == 6, seen


def test_eta_unknown_means_no_reliable_counts():
    votes, scores = _world(3, n_prompts=20)
    by_prompt = group_by_prompt(votes)
    batch = BC.batch_consensus(by_prompt, weights={}, scores=scores, eta=None)
    arcs = [a for b in batch.values() for a in b.overruled]
    assert arcs
    for prompt_id, got in batch.items():
        ref = C.prompt_consensus(
            prompt_id, by_prompt[prompt_id], denoise=True, scores=scores[prompt_id]
        )
        assert got.overruled == overruled_arcs(ref, by_prompt[prompt_id], None)


@pytest.mark.parametrize("seed", range(3))
def test_snapshot_is_the_same_batched_or_per_prompt(seed):
    votes, _ = _world(seed, n_prompts=40)
    # A stored pair judgment never names one candidate twice (agreement records refuse it).
    votes = [v for v in votes if v.pair is None or v.pair[0] != v.pair[1]]
    n_cands = max(c for v in votes for c in v.candidates)
    source = _source(votes, 40, n_cands)
    options = E.ExportOptions(splits={"train": 0.8, "test": 0.2}, seed=seed)
    batched = E.build_snapshot(source, options)
    reference = E.build_snapshot(source, options, batched=False)
    assert batched.pairs and batched.overruled
    for name in ("pairs", "rankings", "variants", "overruled", "media"):
        assert getattr(batched, name) == getattr(reference, name), name
    sheet, ref_sheet = dict(batched.datasheet), dict(reference.datasheet)
    sheet.pop("created_at"), ref_sheet.pop("created_at")
    assert json.dumps(sheet, default=str) == json.dumps(ref_sheet, default=str)


def test_a_net_below_the_graph_threshold_is_no_arc():
    # 0.1 + 0.2 - 0.3 = 5.6e-17: a positive net the human graph leaves out (graph._EPS), so
    # ranking the other way overrules no arc.
    weights = {"e1": 0.1, "e2": 0.2, "e3": 0.3}
    votes = [
        C.Vote(1, 1, 1, "e1", pair=(1, 2), outcome="a"),
        C.Vote(2, 1, 1, "e2", pair=(1, 2), outcome="a"),
        C.Vote(3, 1, 1, "e3", pair=(1, 2), outcome="b"),
    ]
    scores = {1: {1: 0.0, 2: 1.0}}
    ref = C.prompt_consensus(1, votes, weights=weights, denoise=True, scores=scores[1])
    (got,) = BC.batch_consensus({1: votes}, weights=weights, scores=scores, eta=None).values()
    assert 0 < ref.evidence[(1, 2)].net < 1e-9
    assert got.removed_arcs == ref.removed_arcs == ()
    assert got.overruled == overruled_arcs(ref, votes, None) == []
    assert got.drops == [(BC.OVERRULED, 1)]


@pytest.mark.parametrize("seed", range(6))
def test_batch_prompt_flags_equal_the_per_prompt_flags(seed):
    from curation import graph as G

    votes, _ = _world(seed, n_prompts=80)
    rng = random.Random(seed)
    weights = {e: rng.choice([0.5, 1.0, 0.1, 0.2, 0.3, rng.random()]) for e in EVALUATORS[:-1]}
    n_cands = max(c for v in votes for c in v.candidates)
    rm_scores = {c: rng.gauss(0, 2) for c in range(1, n_cands + 1) if rng.random() > 0.1}
    by_prompt = group_by_prompt(votes)
    batch = BC.batch_prompt_flags(by_prompt, weights=weights, rm_scores=rm_scores, rm_label="rm")
    seen = Counter()
    for prompt_id, prompt_votes in by_prompt.items():
        ref = C.prompt_consensus(prompt_id, prompt_votes, weights=weights, denoise=False)
        expected = C.prompt_flags(ref, rm_scores=rm_scores, rm_label="rm")
        got = batch.get(prompt_id)
        left_out = any(not v.is_pair for v in prompt_votes) or G.has_cycle(ref.human)
        assert (got is None) == left_out
        if got is None:
            seen["cyclic"] += G.has_cycle(ref.human)
            continue
        assert got == (expected, ref.agreement, ref.comparisons)
        seen.update(f.kind for f in expected)
    assert {"cyclic", "low_agreement", "rm_disagreement"} <= set(seen), seen


def test_batch_prompt_flags_without_reward_model():
    votes, _ = _world(11, n_prompts=40)
    by_prompt = group_by_prompt(votes)
    batch = BC.batch_prompt_flags(by_prompt, weights={})
    assert batch
    for prompt_id, (flags, agreement, comparisons) in batch.items():
        ref = C.prompt_consensus(prompt_id, by_prompt[prompt_id], denoise=False)
        assert flags == C.prompt_flags(ref)
        assert (agreement, comparisons) == (ref.agreement, ref.comparisons)
