"""Tests for curation.crowd_bt: the joint annotator model. Pure, no database."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import expit

from curation import consensus as C
from curation import crowd_bt as CB
from curation import graph as G


@pytest.fixture(autouse=True)
def _media_root():
    """Shadows the suite-wide media fixture, which needs Django: these tests are pure."""


def crowd_votes(
    seed: int,
    *,
    prompts: int = 150,
    candidates: int = 8,
    per_prompt: int = 14,
    flips: dict[int, float],
    left_clickers: tuple[int, ...] = (),
) -> tuple[list[tuple], dict[tuple[int, int], float]]:
    """Pairwise votes on random prompts: annotator k flips a share ``flips[k]`` (0.5 =
    random); a left clicker always picks the candidate shown first."""
    rng = np.random.default_rng(seed)
    annotators = list(flips) + list(left_clickers)
    quality = {}
    votes = []
    for p in range(prompts):
        q = rng.normal(size=candidates)
        quality.update({(p, c): float(q[c]) for c in range(candidates)})
        for _ in range(per_prompt):
            a, b = (int(x) for x in rng.choice(candidates, 2, replace=False))
            k = annotators[int(rng.integers(len(annotators)))]
            a_wins = k in left_clickers or (q[a] > q[b]) != (rng.random() < flips[k])
            winner, loser = ((p, a), (p, b)) if a_wins else ((p, b), (p, a))
            votes.append((p, winner, loser, k, (p, a)))
    return votes, quality


def pairwise_accuracy(indexed: CB.Indexed, theta: np.ndarray, quality) -> float:
    hits = []
    for p, cands in enumerate(indexed.candidates):
        for i, x in enumerate(cands):
            for j, y in enumerate(cands[:i]):
                truth = np.sign(quality[x] - quality[y])
                pred = np.sign(theta[p, i] - theta[p, j])
                hits.append(0.5 if pred == 0 else float(pred == truth))
    return float(np.mean(hits))


def test_it_fits_every_prompt_as_the_per_prompt_reference_does():
    rng = np.random.default_rng(3)
    wins = rng.integers(0, 3, size=(25, 7, 7)).astype(float) * rng.random((25, 7, 7))
    wins[:, np.arange(7), np.arange(7)] = 0
    wins[4] = 0  # a prompt without votes
    wins[5, :, 3] = 0  # a candidate that never lost
    wins[5, 3, :] = 0
    wins[5, 3, 1] = 4.0
    batched = CB.batched_bradley_terry(wins, 0.1)
    for p in range(wins.shape[0]):
        reference = G._fit_bradley_terry(wins[p], 0.1)
        np.testing.assert_allclose(batched[p], reference, atol=1e-7)


@st.composite
def prompt_batches(draw):
    """Random prompts of 1-8 candidates with fractional wins, padded into one batch."""
    sizes = draw(st.lists(st.integers(1, 8), min_size=1, max_size=6))
    width = max(sizes)
    wins = np.zeros((len(sizes), width, width))
    for p, n in enumerate(sizes):
        for i in range(n):
            for j in range(n):
                if i != j and draw(st.booleans()):
                    wins[p, i, j] = draw(st.floats(0.05, 5.0))
    return sizes, wins


@settings(max_examples=150, deadline=None)
@given(prompt_batches(), st.sampled_from(CB.FINAL_ALPHAS))
def test_it_fits_random_batches_as_the_per_prompt_reference_does(batch, alpha):
    sizes, wins = batch
    theta = CB.batched_bradley_terry(wins, alpha)
    for p, n in enumerate(sizes):
        reference = G._fit_bradley_terry(wins[p, :n, :n], alpha)
        np.testing.assert_allclose(theta[p, :n], reference, atol=1e-6)
        assert np.all(theta[p, n:] == 0)


def test_it_matches_bradley_terry_scores_on_graphs_with_padding():
    graphs = [
        [("a", "b", 2.0), ("b", "c", 1.0), ("c", "a", 0.5)],
        [("x", "y", 1.0)],
        [("p", "q", 3.0), ("q", "r", 1.5), ("p", "r", 0.5), ("r", "s", 2.0), ("s", "p", 1.0)],
    ]
    width = 4
    wins = np.zeros((len(graphs), width, width))
    names = []
    for p, arcs in enumerate(graphs):
        nodes = sorted({n for u, v, _ in arcs for n in (u, v)})
        names.append(nodes)
        for u, v, w in arcs:
            wins[p, nodes.index(u), nodes.index(v)] += w
    theta = CB.batched_bradley_terry(wins, 0.1)
    for p, arcs in enumerate(graphs):
        graph = nx.DiGraph()
        for u, v, w in arcs:
            graph.add_edge(u, v, weight=w)
        expected = G.bradley_terry_scores(graph, alpha=0.1)
        for i, node in enumerate(names[p]):
            assert theta[p, i] == pytest.approx(expected[node], abs=1e-7)
        assert np.all(theta[p, len(names[p]) :] == 0)


def test_it_computes_leave_one_out_margins_close_to_refitting_without_the_vote():
    votes, _ = crowd_votes(0, prompts=20, flips={0: 0.1, 1: 0.3})
    c = CB.index_comparisons(votes).comparisons
    weight = np.where(c.annotator == 0, 0.9, 0.6)
    theta = CB.batched_bradley_terry(CB.win_matrices(c, weight), 0.3)
    approx = CB.loo_margins(c, theta, weight, 0.3)
    exact = []
    for i in range(len(c)):
        w = weight.copy()
        w[i] = 0
        refit = CB.batched_bradley_terry(CB.win_matrices(c, w), 0.3)
        exact.append(refit[c.prompt[i], c.winner[i]] - refit[c.prompt[i], c.loser[i]])
    exact = np.array(exact)
    in_sample = theta[c.prompt, c.winner] - theta[c.prompt, c.loser]
    assert np.mean(np.abs(approx - exact)) < 0.02
    # Leaving a vote out always lowers its winner's margin, and by a visible amount.
    assert np.all(approx < in_sample)
    assert np.mean(np.abs(in_sample - exact)) > 10 * np.mean(np.abs(approx - exact))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_it_computes_leave_one_out_margins_as_the_dense_formula(seed):
    """The flat gathers (indices kept per `Comparisons`) equal Sherman-Morrison read off
    the whole ``[P, N, N]`` inverse, twice in a row (the second call reuses the indices).
    Within 1e-12, no longer bit for bit: the margins read the inverse Cholesky factor
    (`CB.InverseHessian`, h17c), not the explicit inverse (measured: about 1e-15)."""
    votes, _ = crowd_votes(seed, prompts=30, candidates=int(5 + seed), flips={0: 0.1, 1: 0.4})
    c = CB.index_comparisons(votes).comparisons
    for weight in (np.where(c.annotator == 0, 0.9, 0.6), np.where(c.annotator == 0, 0.2, 1.0)):
        theta = CB.batched_bradley_terry(CB.win_matrices(c, weight), 0.3)
        _, hess = CB._gradient_hessian(theta, CB._cells(CB.win_matrices(c, weight)), 0.3)
        inverse = np.linalg.inv(hess)
        a, b, p = c.winner, c.loser, c.prompt
        h = inverse[p, a, a] + inverse[p, b, b] - 2 * inverse[p, a, b]
        d = theta[p, a] - theta[p, b]
        from scipy.special import expit

        prob = expit(d)
        curvature = weight * prob * (1 - prob)
        expected = d - weight * (1 - prob) * h / np.maximum(1 - curvature * h, 1e-9)
        got = CB.loo_margins(c, theta, weight, 0.3)
        assert np.max(np.abs(got - expected)) < 1e-12


def test_it_tells_careful_annotators_from_spammers():
    flips = {k: 0.05 for k in range(8)} | {k: 0.5 for k in range(8, 16)}
    votes, _ = crowd_votes(1, flips=flips)
    indexed = CB.index_comparisons(votes)
    fit = CB.fit_crowd_bt(indexed.comparisons)
    eta = {a: fit.eta[i] for i, a in enumerate(indexed.annotators)}
    careful = [eta[k] for k in range(8)]
    spam = [eta[k] for k in range(8, 16)]
    assert min(careful) > max(spam)
    assert np.mean(careful) > 0.75 and np.mean(spam) < 0.3
    loo = {a: fit.loo_agreement[i] for i, a in enumerate(indexed.annotators)}
    assert np.mean([loo[k] for k in range(8, 16)]) < 0.56 < np.mean([loo[k] for k in range(8)])


def test_it_finds_an_annotator_who_clicks_the_first_answer():
    flips = {k: 0.1 for k in range(6)}
    votes, _ = crowd_votes(2, flips=flips, left_clickers=(99,))
    indexed = CB.index_comparisons(votes)
    fit = CB.fit_crowd_bt(indexed.comparisons)
    clicker = indexed.annotators.index(99)
    others = [i for i in range(len(indexed.annotators)) if i != clicker]
    assert fit.pi[clicker] > 0.9
    assert fit.eta[clicker] < 0.5
    assert np.all(np.abs(fit.pi[others] - 0.5) < 0.15)


def plain_em_step(c: CB.Comparisons, theta, eta, pi):
    """One step of the EM as the module states it, written out here: the E-step on the
    leave-one-out margins of ``theta`` (fitted with weights ``eta``), counting M-step."""
    k = c.annotator
    size = c.n_annotators
    margin = CB.loo_margins(c, theta, eta[k])
    known = c.winner_first >= 0
    first = c.winner_first == 1
    real = eta[k] / (1 + np.exp(-margin))
    noise = (1 - eta[k]) * np.where(known, np.where(first, pi[k], 1 - pi[k]), 0.5)
    r = real / (real + noise)
    a, b = CB.ETA_PRIOR
    new_eta = (np.bincount(k, r, size) + a) / (np.bincount(k, minlength=size) + a + b)
    noise_votes = (1 - r) * known
    new_pi = (np.bincount(k, noise_votes * first, size) + CB.PI_PRIOR) / (
        np.bincount(k, noise_votes, size) + 2 * CB.PI_PRIOR
    )
    return new_eta, new_pi


def test_the_em_stops_at_its_fixed_point():
    flips = {k: 0.05 for k in range(6)} | {k: 0.5 for k in range(6, 10)}
    votes, _ = crowd_votes(6, flips=flips, left_clickers=(98, 99))
    c = CB.index_comparisons(votes).comparisons
    em = CB.crowd_bt_em(c)
    assert em.iterations < CB.EM_MAX_ITER  # stopped on its tolerance, not on the cap
    # The strengths are (nearly) the finished fit for the fitted eta ...
    theta = CB.batched_bradley_terry(CB.win_cells(c, em.eta[c.annotator]), initial=em.theta)
    assert np.max(np.abs(theta - em.theta)) < 1e-4
    # ... and one more plain EM step from there moves no eta or pi beyond the tolerance.
    new_eta, new_pi = plain_em_step(c, theta, em.eta, em.pi)
    assert np.max(np.abs(new_eta - em.eta)) < CB.EM_TOL
    assert np.max(np.abs(new_pi - em.pi)) < CB.EM_TOL
    # Where plain EM is after 30 steps from the start (the old cap), it is still moving.
    eta = np.full(c.n_annotators, 0.5)
    pi = np.full(c.n_annotators, 0.5)
    theta = CB.batched_bradley_terry(CB.win_cells(c))
    for _ in range(30):
        theta = CB.batched_bradley_terry(CB.win_cells(c, eta[c.annotator]), initial=theta)
        eta, pi = plain_em_step(c, theta, eta, pi)
    moved = np.max(np.abs(plain_em_step(c, theta, eta, pi)[0] - eta))
    assert moved > 10 * CB.EM_TOL


def test_it_recovers_known_reliabilities():
    # Flip rate f means eta = 1 - 2 f: careful 0.96, sloppy 0.7, spammers 0, a left clicker 0.
    flips = {k: 0.02 for k in range(6)} | {k: 0.15 for k in range(6, 12)}
    flips |= {k: 0.5 for k in range(12, 18)}
    votes, _ = crowd_votes(7, flips=flips, per_prompt=30, left_clickers=(99,))
    indexed = CB.index_comparisons(votes)
    fit = CB.fit_crowd_bt(indexed.comparisons)
    eta = np.array([fit.eta[indexed.annotators.index(k)] for k in [*range(18), 99]])
    careful, sloppy, spam, clicker = eta[:6], eta[6:12], eta[12:18], eta[18]
    assert careful.min() > 0.93 and abs(careful.mean() - 0.96) < 0.03
    assert abs(sloppy.mean() - 0.7) < 0.15
    assert careful.min() > sloppy.max() and sloppy.min() > spam.max()
    assert spam.max() < 0.3 and spam.mean() < 0.2
    assert clicker < 0.1
    assert fit.pi[indexed.annotators.index(99)] > 0.95


def test_it_recovers_the_order_better_than_plain_bradley_terry_with_spammers():
    flips = {k: 0.1 for k in range(5)} | {k: 0.5 for k in range(5, 15)}
    votes, quality = crowd_votes(4, flips=flips, per_prompt=16)
    indexed = CB.index_comparisons(votes)
    c = indexed.comparisons
    plain = CB.batched_bradley_terry(CB.win_matrices(c), 0.1)
    fit = CB.fit_crowd_bt(c)
    assert (
        pairwise_accuracy(indexed, fit.theta, quality)
        > pairwise_accuracy(indexed, plain, quality) + 0.01
    )


def test_it_uses_an_informative_reward_model_and_ignores_a_random_one():
    flips = {k: 0.1 for k in range(6)}
    votes, quality = crowd_votes(5, flips=flips, per_prompt=10)
    indexed = CB.index_comparisons(votes)
    fit = CB.fit_crowd_bt(indexed.comparisons)
    rng = np.random.default_rng(0)
    informative = {c: q + 0.5 * rng.normal() for c, q in quality.items()}
    random_scores = {c: float(rng.normal()) for c in quality}
    good = CB.with_score_prior(indexed.comparisons, fit, CB.scores_matrix(indexed, informative))
    noise = CB.with_score_prior(indexed.comparisons, fit, CB.scores_matrix(indexed, random_scores))
    assert good.used and good.beta > 0.5
    assert pairwise_accuracy(indexed, good.theta, quality) > (
        pairwise_accuracy(indexed, fit.theta, quality) + 0.03
    )
    assert good.agreement > 0.6
    assert noise.beta < 0.1
    assert (
        abs(
            pairwise_accuracy(indexed, noise.theta, quality)
            - pairwise_accuracy(indexed, fit.theta, quality)
        )
        < 0.01
    )


def test_it_builds_joint_estimates_from_votes_and_skips_ties():
    votes = []
    n = 0
    for prompt in range(30):
        base = 100 * prompt
        for evaluator, outcome in (("user:1", "a"), ("user:2", "a"), ("user:3", "tie")):
            for a, b in ((base, base + 1), (base + 1, base + 2)):
                n += 1
                shown = (a, b) if n % 2 else (b, a)  # no slot pattern to explain them by
                votes.append(
                    C.Vote(
                        n,
                        n,
                        prompt,
                        evaluator,
                        pair=(a, b),
                        outcome=outcome,
                        presented_order=shown,
                    )
                )
        n += 1
        votes.append(C.Vote(n, n, prompt, "user:4", ranking=((base + 2,), (base,), (base + 1,))))
    joint = C.joint_estimates(votes)
    assert joint is not None
    assert set(joint.evaluators) == {"user:1", "user:2", "user:4"}
    assert joint.evaluators["user:1"].n_votes == 60
    assert joint.evaluators["user:1"].n_positioned == 60
    assert joint.evaluators["user:4"].n_positioned == 0
    assert joint.evaluators["user:4"].n_votes == 90
    # Two concordant annotators outweigh the one who disagrees with them on every prompt.
    assert joint.evaluators["user:1"].eta > joint.evaluators["user:4"].eta
    scores = joint.scores[0]
    assert scores[0] > scores[1] > scores[2]


def test_it_ranks_by_the_given_strengths_and_lists_the_arcs_it_overrules():
    votes = [
        C.Vote(1, 1, 7, "user:1", pair=(1, 2), outcome="a"),
        C.Vote(2, 2, 7, "user:1", pair=(2, 3), outcome="a"),
        C.Vote(3, 3, 7, "user:2", pair=(3, 1), outcome="b"),
    ]
    consensus = C.prompt_consensus(7, votes, scores={1: 0.2, 2: 0.9, 3: -1.0})
    assert consensus.ranking == [[2], [1], [3]]
    assert [(u, v) for u, v, _ in consensus.removed_arcs] == [(1, 2)]
    assert consensus.exact is False
    agreeing = C.prompt_consensus(7, votes, scores={1: 2.0, 2: 1.0, 3: 0.0})
    assert agreeing.ranking == [[1], [2], [3]]
    assert agreeing.removed_arcs == ()
    assert agreeing.exact is True


def test_it_breaks_a_balanced_cycle_by_the_feedback_arc_set():
    votes = [
        C.Vote(1, 1, 7, "user:1", pair=(1, 2), outcome="a"),
        C.Vote(2, 2, 7, "user:2", pair=(2, 3), outcome="a"),
        C.Vote(3, 3, 7, "user:3", pair=(3, 1), outcome="a"),
    ]
    consensus = C.prompt_consensus(7, votes, scores={1: 0.0, 2: 0.0, 3: 0.0})
    assert [len(group) for group in consensus.ranking] == [1, 1, 1]
    assert len(consensus.removed_arcs) == 1


def pair_votes(votes: list[tuple]) -> list[C.Vote]:
    """`crowd_votes` tuples as curation votes (candidate ids made integers)."""
    out = []
    for n, (prompt, winner, loser, annotator, left) in enumerate(votes):
        a, b = (winner, loser) if left == winner else (loser, winner)
        ids = (a[0] * 100 + a[1], b[0] * 100 + b[1])
        out.append(
            C.Vote(
                n,
                n,
                prompt,
                f"user:{annotator}",
                pair=ids,
                outcome="a" if winner == a else "b",
                presented_order=ids,
            )
        )
    return out


def test_it_flags_spammers_as_unreliable_through_the_joint_model():
    flips = {k: 0.05 for k in range(8)} | {k: 0.5 for k in range(8, 12)}
    votes, _ = crowd_votes(6, flips=flips)
    quality = C.evaluator_quality(pair_votes(votes), anomaly_test=False)
    flags = C.evaluator_flags(quality)
    noise = {
        f.evaluator
        for f in flags
        if f.kind == "unreliable_annotator"
        and "most votes read as noise by the joint annotator model" in f.details["reasons"]
    }
    assert noise == {f"user:{k}" for k in range(8, 12)}
    assert quality["user:0"].eta > 0.7 and quality["user:0"].n_strict > 100


def test_it_reports_which_slot_a_left_clicker_picks():
    votes, _ = crowd_votes(7, flips={k: 0.1 for k in range(6)}, left_clickers=(99,))
    quality = C.evaluator_quality(pair_votes(votes), anomaly_test=False)
    flags = C.evaluator_flags(quality)
    bias = [f for f in flags if f.kind == "position_bias"]
    assert [f.evaluator for f in bias] == ["user:99"]
    assert bias[0].details["shown_first_when_noise"] > 0.9


def test_it_does_not_fit_the_joint_model_when_padding_would_cost_too_much(monkeypatch):
    votes = [
        C.Vote(1, 1, 1, "user:1", pair=(1, 2), outcome="a"),
        C.Vote(2, 2, 2, "user:1", ranking=tuple((c,) for c in range(10, 30))),
    ]
    assert C.joint_estimates(votes) is not None
    monkeypatch.setattr(C, "JOINT_MAX_CELLS", 2 * 20 * 20 - 1)
    assert C.joint_estimates(votes) is None


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    prompts=st.integers(1, 6),
    candidates=st.integers(2, 6),
    votes=st.integers(0, 40),
)
def test_it_finds_the_same_win_cells_as_the_dense_matrices(seed, prompts, candidates, votes):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, candidates, size=votes)
    b = (a + rng.integers(1, candidates, size=votes)) % candidates
    c = CB.Comparisons(
        prompt=rng.integers(0, prompts, size=votes),
        winner=a,
        loser=b,
        annotator=np.zeros(votes, dtype=np.int64),
        winner_first=np.full(votes, -1),
        n_prompts=prompts,
        n_candidates=candidates,
        n_annotators=1,
    )
    # Weights with exact zeros: a cell whose votes all weigh 0 is no cell at all.
    weight = rng.choice([0.0, 0.25, 1.0, 1.7], size=votes)
    dense = CB.win_matrices(c, weight)
    cells = CB.win_cells(c, weight)
    p, i, j = np.nonzero(dense)
    assert cells.shape == dense.shape
    np.testing.assert_array_equal(cells.prompt, p)
    np.testing.assert_array_equal(cells.winner, i)
    np.testing.assert_array_equal(cells.loser, j)
    np.testing.assert_array_equal(cells.wins, dense[p, i, j])  # equal sums, not close ones
    np.testing.assert_array_equal(
        CB.batched_bradley_terry(cells, 0.3), CB.batched_bradley_terry(dense, 0.3)
    )


# --------------------------------------------------------------------------- fit cache


def _fits_equal(one: CB.CrowdBTFit, other: CB.CrowdBTFit) -> None:
    for name in CB.CrowdBTFit.__dataclass_fields__:
        np.testing.assert_array_equal(getattr(one, name), getattr(other, name), err_msg=name)


@pytest.fixture
def cache_votes():
    votes, _ = crowd_votes(8, prompts=30, flips={0: 0.1, 1: 0.3, 2: 0.5}, left_clickers=(9,))
    return votes


def _no_fitting(monkeypatch):
    def refuse(*_args, **_kwargs):
        raise AssertionError("fitted although the cache holds this fit")

    monkeypatch.setattr(CB, "crowd_bt_em", refuse)
    monkeypatch.setattr(CB, "best_alpha", refuse)


def test_it_reuses_a_cached_fit_without_fitting(tmp_path, cache_votes, monkeypatch):
    indexed = CB.index_comparisons(cache_votes)
    cache = tmp_path / "fits" / "project-1.npz"
    first, how = CB.fit_crowd_bt_cached(indexed, cache)
    assert how == "miss" and cache.exists()
    _no_fitting(monkeypatch)
    again, how = CB.fit_crowd_bt_cached(CB.index_comparisons(cache_votes), cache)
    assert how == "hit"
    _fits_equal(again, first)


def test_it_equals_a_fresh_fit_whether_cached_or_not(tmp_path, cache_votes):
    indexed = CB.index_comparisons(cache_votes)
    fresh = CB.fit_crowd_bt(indexed.comparisons)
    cache = tmp_path / "fit.npz"
    # The flags pass keeps the EM's prior; the export then chooses its prior on the same EM.
    flags_fit, how = CB.fit_crowd_bt_cached(indexed, cache, final_alphas=())
    assert how == "miss"
    _fits_equal(flags_fit, CB.fit_crowd_bt(indexed.comparisons, final_alphas=()))
    export_fit, how = CB.fit_crowd_bt_cached(indexed, cache)
    assert how == "em-hit"
    _fits_equal(export_fit, fresh)
    # Both finals stay: neither pass refits after the other.
    assert CB.fit_crowd_bt_cached(indexed, cache, final_alphas=())[1] == "hit"
    assert CB.fit_crowd_bt_cached(indexed, cache)[1] == "hit"


@pytest.mark.parametrize("change", ["winner", "shown first", "new vote", "gone vote", "annotator"])
def test_it_refits_when_any_vote_changes(tmp_path, cache_votes, change):
    cache = tmp_path / "fit.npz"
    CB.fit_crowd_bt_cached(CB.index_comparisons(cache_votes), cache)
    votes = list(cache_votes)
    p, winner, loser, annotator, first = votes[5]
    if change == "winner":
        votes[5] = (p, loser, winner, annotator, first)
    elif change == "shown first":
        votes[5] = (p, winner, loser, annotator, loser if first == winner else winner)
    elif change == "new vote":
        votes.append(votes[5])
    elif change == "gone vote":
        del votes[5]
    else:
        votes[5] = (p, winner, loser, "someone else", first)
    indexed = CB.index_comparisons(votes)
    refit, how = CB.fit_crowd_bt_cached(indexed, cache)
    assert how == "miss"
    _fits_equal(refit, CB.fit_crowd_bt(indexed.comparisons))


def test_it_refits_when_the_candidates_behind_the_indices_change(tmp_path):
    # Same index columns, other candidate ids: the strengths would land on the wrong rows.
    cache = tmp_path / "fit.npz"
    one = CB.index_comparisons([(1, 10, 11, "a", None), (1, 11, 12, "b", None)])
    other = CB.index_comparisons([(1, 10, 11, "a", None), (1, 11, 13, "b", None)])
    np.testing.assert_array_equal(one.comparisons.loser, other.comparisons.loser)
    assert CB.fit_crowd_bt_cached(one, cache)[1] == "miss"
    assert CB.fit_crowd_bt_cached(other, cache)[1] == "miss"


def test_it_treats_a_damaged_cache_file_as_a_miss(tmp_path, cache_votes):
    indexed = CB.index_comparisons(cache_votes)
    cache = tmp_path / "fit.npz"
    cache.write_bytes(b"PK\x03\x04 not a zip")
    fit, how = CB.fit_crowd_bt_cached(indexed, cache)
    assert how == "miss"
    _fits_equal(fit, CB.fit_crowd_bt(indexed.comparisons))
    assert CB.fit_crowd_bt_cached(indexed, cache)[1] == "hit"


def test_it_still_fits_when_the_cache_cannot_be_written(tmp_path, cache_votes):
    indexed = CB.index_comparisons(cache_votes)
    (tmp_path / "a-file").write_text("")
    fit, how = CB.fit_crowd_bt_cached(indexed, tmp_path / "a-file" / "fit.npz")
    assert how == "miss"
    _fits_equal(fit, CB.fit_crowd_bt(indexed.comparisons))


def test_one_prompt_refitted_with_the_kept_reliabilities_equals_the_projects_fit(
    tmp_path, cache_votes
):
    """`cached_reliability` + `fit_prompt_strengths` (the review page) give each prompt the
    export's strengths; a fit kept with other final alphas, or without the annotators'
    keys (an older file), gives None."""
    cache = tmp_path / "fit.npz"
    indexed = CB.index_comparisons(cache_votes)
    fit, _ = CB.fit_crowd_bt_cached(indexed, cache)
    kept = CB.cached_reliability(cache)
    assert kept is not None and kept.alpha == fit.alpha
    assert kept.eta == {str(a): float(e) for a, e in zip(indexed.annotators, fit.eta, strict=True)}
    for p in (0, 7, 29):
        alone = CB.index_comparisons([v for v in cache_votes if v[0] == p])
        theta = CB.fit_prompt_strengths(alone, kept)
        local = {key: i for i, key in enumerate(indexed.candidates[p])}
        for i, key in enumerate(alone.candidates[0]):
            assert theta[0, i] == pytest.approx(fit.theta[p, local[key]], abs=1e-8)
    assert CB.cached_reliability(cache, final_alphas=(0.1, 0.5)) is None
    stored = dict(np.load(cache, allow_pickle=False))
    del stored["em_annotators"]
    np.savez(cache, **stored)
    assert CB.cached_reliability(cache) is None


def shown_in_one_order_votes(prompts: int = 10) -> list[C.Vote]:
    """Rankings of four candidates, true order 0 > 1 > 2 > 3. ``user:0`` is always shown
    them in that order and ranks them right: each of their votes picks the candidate shown
    first. Users 1-3 rank them right too, ``user:4`` at random; they are shown shuffles."""
    rng = np.random.default_rng(11)
    votes = []
    for p in range(prompts):
        base = 10 * p
        truth = tuple(base + i for i in range(4))
        for k in range(5):
            shown = truth if k == 0 else tuple(int(x) for x in rng.permutation(truth))
            ranked = tuple(int(x) for x in rng.permutation(truth)) if k == 4 else truth
            n = len(votes)
            votes.append(
                C.Vote(
                    n, n, p, f"user:{k}", ranking=tuple((c,) for c in ranked), presented_order=shown
                )
            )
    return votes


def test_it_does_not_call_a_careful_annotator_noise_when_the_consensus_was_always_shown_first():
    # "Careful" and "always clicks the first candidate" fit user:0's votes alike: EM reads
    # them as slot habit (a low eta, shown first when noise near 1). That reading rests on no
    # vote that could tell the two apart, so it must not raise the unreliable flag.
    quality = C.evaluator_quality(shown_in_one_order_votes(), anomaly_test=False)
    careful = quality["user:0"]
    assert careful.n_strict == 60 and careful.n_separable < 10
    assert careful.eta < 0.3 and careful.shown_first > 0.9  # the model's reading stands
    assert all(quality[f"user:{k}"].n_separable >= 10 for k in range(1, 5))
    noise = {
        f.evaluator: f.details
        for f in C.evaluator_flags(quality)
        if f.kind == "unreliable_annotator"
        and "most votes read as noise by the joint annotator model" in f.details["reasons"]
    }
    assert "user:0" not in noise
    assert set(noise) == {"user:4"}
    assert noise["user:4"]["eta_separable_votes"] == quality["user:4"].n_separable


def test_it_counts_the_votes_that_separate_a_real_judgment_from_a_slot_habit():
    # Prompt 0: a > b by the others' votes; annotator 0 prefers the first slot.
    votes = [
        (0, "a", "b", 1, None),
        (0, "a", "b", 2, None),
        (0, "a", "b", 0, "a"),  # consensus shown first, the habit's slot: not separable
        # Consensus shown first again: both readings expect "a" whatever was picked.
        (0, "b", "a", 0, "a"),
        (0, "a", "b", 0, "b"),  # consensus shown second: separable
        (0, "a", "b", 0, None),  # order unknown: separable
    ]
    c = CB.index_comparisons(votes).comparisons
    margin = np.array([1.0, 1.0, 1.0, -1.0, 1.0, 1.0])
    assert CB.separable_votes(c, np.array([0.5, 0.9, 0.9]), margin)[2] == 2
    # Annotator 0 (index 2) favouring the second slot: the two votes with the consensus
    # shown first separate instead; with no slot habit every vote does; a zero margin never.
    assert CB.separable_votes(c, np.array([0.5, 0.5, 0.2]), margin)[2] == 3
    assert CB.separable_votes(c, np.array([0.5, 0.5, 0.5]), margin)[2] == 4
    zero = margin.copy()
    zero[2] = 0.0
    assert CB.separable_votes(c, np.array([0.5, 0.5, 0.2]), zero)[2] == 2
    assert CB.separable_votes(c, np.array([0.5, 0.5, 0.9]), zero)[2] == 2


def _reference_prior_choice(c, weight, alphas, initial, prior_mean=None):
    """`best_alpha` as it was: each prior fitted from ``initial``, the margins from the
    inverse Hessian at the fitted strengths (`loo_margins`)."""
    fits = []
    for alpha in alphas:
        theta = CB.batched_bradley_terry(
            CB.win_cells(c, weight), alpha, initial=initial, prior_mean=prior_mean
        )
        margin = CB.loo_margins(c, theta, weight, alpha)
        fits.append((alpha, theta, margin, float(np.sum(weight * np.log(expit(margin))))))
    return fits


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("alphas", [CB.FINAL_ALPHAS, CB.FINAL_ALPHAS[::-1], (0.05, 10.0, 0.2)])
def test_each_prior_in_the_choice_equals_a_fit_from_the_start(seed, alphas, monkeypatch):
    """`best_alpha` starts each prior from the previous one's fit moved along the path and
    reads the margins off the inverse of the last Newton step: every prior's strengths and
    margins equal the reference's (fits from ``initial``, inverse at the fitted strengths)."""
    rng = np.random.default_rng(seed)
    votes, _ = crowd_votes(
        seed, prompts=40, candidates=int(rng.integers(3, 10)), flips={0: 0.05, 1: 0.3, 2: 0.5}
    )
    c = CB.index_comparisons(votes).comparisons
    weight = rng.uniform(0.05, 1.0, size=c.n_annotators)[c.annotator]
    initial = rng.normal(scale=0.5, size=(c.n_prompts, c.n_candidates))
    prior_mean = rng.normal(size=initial.shape) if seed % 2 else None
    seen = []
    original = CB._loo_from_inverse

    def recording(comparisons, theta, weight_, inverse):
        margin = original(comparisons, theta, weight_, inverse)
        seen.append((theta, margin))
        return margin

    monkeypatch.setattr(CB, "_loo_from_inverse", recording)
    chosen, theta, margin, score = CB.best_alpha(c, weight, alphas, initial, prior_mean)
    monkeypatch.undo()
    reference = _reference_prior_choice(c, weight, alphas, initial, prior_mean)
    assert len(seen) == len(reference)
    for (got_theta, got_margin), (_, ref_theta, ref_margin, _) in zip(seen, reference, strict=True):
        assert np.max(np.abs(got_theta - ref_theta)) < 1e-9
        assert np.max(np.abs(got_margin - ref_margin)) < 1e-8
    best = max(reference, key=lambda fit: fit[3])
    assert chosen == best[0]
    assert score == pytest.approx(best[3], abs=1e-8)


def test_each_later_prior_starts_closer_than_the_first(monkeypatch):
    """The path's predictor saves Newton steps: every prior after the first needs fewer
    Hessians than the same fit from the EM's strengths."""
    votes, _ = crowd_votes(5, prompts=60, flips={0: 0.05, 1: 0.2, 2: 0.5})
    c = CB.index_comparisons(votes).comparisons
    em = CB.crowd_bt_em(c)
    weight = em.eta[c.annotator]
    calls = []
    original = CB._gradient_hessian

    def counting(*args, **kwargs):
        calls.append(args[2])
        return original(*args, **kwargs)

    monkeypatch.setattr(CB, "_gradient_hessian", counting)
    CB.best_alpha(c, weight, CB.FINAL_ALPHAS, em.theta)
    chained = {alpha: calls.count(alpha) for alpha in CB.FINAL_ALPHAS}
    for alpha in CB.FINAL_ALPHAS[1:]:
        calls.clear()
        CB.best_alpha(c, weight, (alpha,), em.theta)
        assert chained[alpha] < len(calls), (alpha, chained[alpha], len(calls))


@pytest.mark.parametrize("near", [CB._NEAR, 1.0])
@pytest.mark.parametrize("tol", [1e-10, 1e-13])
def test_the_kept_inverse_is_the_hessians_at_the_fitted_strengths(tol, near, monkeypatch):
    """`_newton`'s kept inverse is the inverse Hessian at the strengths it returns (to the
    step's size), however many steps were taken with an inverse (``near`` 1: all but the
    first)."""
    monkeypatch.setattr(CB, "_NEAR", near)
    votes, _ = crowd_votes(7, prompts=30, flips={0: 0.1, 1: 0.4})
    c = CB.index_comparisons(votes).comparisons
    cells = CB._cells(CB.win_cells(c))
    optimum = CB.batched_bradley_terry(CB.win_cells(c), 0.3)
    start = optimum + np.random.default_rng(0).normal(scale=1e-3, size=optimum.shape)
    theta, inverse = CB._newton(start, cells, 0.3, 0.0, max_iter=100, tol=tol, keep_inverse=True)
    assert inverse is not None
    assert np.max(np.abs(theta - optimum)) < 1e-9
    # The kept inverse is an `InverseHessian` (its Cholesky factor's inverse, h17c).
    assert np.max(np.abs(inverse.dense() - np.linalg.inv(CB._hessian(theta, cells, 0.3)))) < 1e-9


def test_a_hessian_written_into_a_reused_buffer_equals_a_fresh_one_bit_for_bit():
    """`_newton` writes each step's Hessian into one buffer: for any strengths and prior in
    any order (padding candidates' diagonal included), the floats of a fresh Hessian."""
    votes, _ = crowd_votes(11, prompts=25, candidates=6, flips={0: 0.1, 1: 0.4})
    # One prompt with more candidates: the others have padding rows.
    votes += [(99, (99, a), (99, a + 1), 0, (99, a)) for a in range(8)]
    c = CB.index_comparisons(votes).comparisons
    cells = CB._cells(CB.win_cells(c, np.where(c.annotator == 0, 0.9, 0.3)))
    rng = np.random.default_rng(1)
    buffer = np.zeros((c.n_prompts, c.n_candidates, c.n_candidates))
    assert c.n_candidates == 9
    for alpha in (0.3, 3.0, 0.1):
        theta = rng.normal(size=(c.n_prompts, c.n_candidates))
        grad, hess = CB._gradient_hessian(theta, cells, alpha)
        grad_into, hess_into = CB._gradient_hessian(theta, cells, alpha, out=buffer)
        assert hess_into is buffer
        assert np.array_equal(grad_into, grad)
        assert np.array_equal(hess_into, hess)


def _reference_em(c: CB.Comparisons, alpha: float = CB.DEFAULT_ALPHA) -> CB.EMState:
    """`crowd_bt_em` as it was before its Hessians shared one buffer: each step through
    `loo_margins` and `batched_bradley_terry`, every Hessian a fresh array."""
    k = c.annotator
    eta = np.full(c.n_annotators, 0.5)
    pi = np.full(c.n_annotators, 0.5)
    weight = np.ones(len(c))
    theta = CB.batched_bradley_terry(CB.win_cells(c, weight), alpha, max_iter=3)
    for iterations in range(1, CB.EM_MAX_ITER + 1):  # noqa: B007 - returned
        margin = CB.loo_margins(c, theta, weight, alpha)
        new_eta, new_pi = CB._annotator_map(c, expit(margin), eta, pi, CB.ETA_PRIOR, CB.PI_PRIOR)
        moved = max(np.max(np.abs(new_eta - eta)), np.max(np.abs(new_pi - pi)))
        eta, pi = new_eta, new_pi
        weight = eta[k]
        theta = CB.batched_bradley_terry(CB.win_cells(c, weight), alpha, initial=theta, max_iter=1)
        if moved < CB.EM_TOL:
            break
    return CB.EMState(
        theta=theta, eta=eta, pi=pi, responsibility=np.zeros(0), iterations=iterations
    )


@pytest.mark.parametrize("seed", range(4))
def test_the_em_with_one_hessian_buffer_equals_fresh_hessians_bit_for_bit(seed, monkeypatch):
    """`crowd_bt_em` writes the margins' and the Newton steps' Hessians into one buffer
    (`HessianBuffer`); its estimates are the floats of fresh Hessians. With seed 3 one
    annotator's eta is driven to exactly 0 after the first step, so their cells weigh 0
    and drop out: the buffer must be cleared for the other cells."""
    votes, _ = crowd_votes(seed, prompts=30, candidates=7, flips={0: 0.1, 1: 0.3, 2: 0.5})
    votes += [(99, (99, a), (99, a + 1), 9, (99, a)) for a in range(9)]  # padding elsewhere
    c = CB.index_comparisons(votes).comparisons
    if seed == 3:
        real = CB._annotator_map

        def zero_for_the_last(*args, **kwargs):
            eta, pi = real(*args, **kwargs)
            eta = eta.copy()
            eta[-1] = 0.0
            return eta, pi

        monkeypatch.setattr(CB, "_annotator_map", zero_for_the_last)
    expected = _reference_em(c)
    # The reference stops on EM_TOL only; the extrapolated stop is tested against a tight
    # fit below (`test_the_extrapolated_stop_lands_where_a_tight_em_does`).
    got = CB.crowd_bt_em(c, extrapolate=False)
    assert got.iterations == expected.iterations
    assert np.array_equal(got.theta, expected.theta)
    assert np.array_equal(got.eta, expected.eta) and np.array_equal(got.pi, expected.pi)


def test_a_hessian_buffer_is_cleared_for_other_cells():
    votes, _ = crowd_votes(5, prompts=8, candidates=5, flips={0: 0.1, 1: 0.4})
    c = CB.index_comparisons(votes).comparisons
    theta = np.random.default_rng(0).normal(size=(c.n_prompts, c.n_candidates))
    workspace = CB.HessianBuffer((c.n_prompts, c.n_candidates))
    every = CB._cells(CB.win_cells(c, np.ones(len(c))))
    some = CB._cells(CB.win_cells(c, np.where(c.annotator == 0, 1.0, 0.0)))
    for cells in (every, some, every):
        assert np.array_equal(
            CB._hessian(theta, cells, 0.3, workspace), CB._hessian(theta, cells, 0.3)
        )


def _orders(theta: np.ndarray) -> np.ndarray:
    return np.argsort(-np.round(theta, 9), axis=1, kind="stable")


@pytest.mark.parametrize("seed", range(6))
def test_the_extrapolated_stop_lands_where_a_tight_em_does(seed):
    """`crowd_bt_em` stops on agreeing Aitken estimates of its fixed point (within
    `EM_TOL`) and answers the estimate: within the plain stop's error (twice it, or 2e-6)
    of the EM run to 1e-10 without extrapolation, in no more steps than the plain stop
    (fewer on some of these crowds).
    Crowds with careful, sloppy and spamming annotators and left clickers; the final
    strengths and their held-out margins stay as close as eta does."""
    rng = np.random.default_rng(seed)
    flips = {k: float(rng.choice([0.02, 0.1, 0.25, 0.5])) for k in range(int(rng.integers(4, 14)))}
    votes, _ = crowd_votes(
        seed + 40,
        prompts=40,
        flips=flips,
        per_prompt=int(rng.integers(8, 20)),
        left_clickers=tuple(range(90, 90 + seed % 3)),
    )
    c = CB.index_comparisons(votes).comparisons
    tight = CB.crowd_bt_em(c, tol=1e-10, extrapolate=False)
    plain = CB.crowd_bt_em(c, extrapolate=False)
    got = CB.crowd_bt_em(c)
    assert got.iterations <= plain.iterations < CB.EM_MAX_ITER
    plain_error = max(np.max(np.abs(plain.eta - tight.eta)), np.max(np.abs(plain.pi - tight.pi)))
    error = max(np.max(np.abs(got.eta - tight.eta)), np.max(np.abs(got.pi - tight.pi)))
    assert error < max(2 * plain_error, 2e-6)
    assert error < CB.EM_TOL
    if got.iterations < plain.iterations:
        # The estimate is closer to the fixed point than the plain EM after as many steps.
        same_steps = CB.crowd_bt_em(c, max_iter=got.iterations, extrapolate=False)
        same_error = max(
            np.max(np.abs(same_steps.eta - tight.eta)), np.max(np.abs(same_steps.pi - tight.pi))
        )
        assert error < same_error / 2
    final_tight = CB.crowd_bt_final(c, tight)
    final = CB.crowd_bt_final(c, got)
    assert final.alpha == final_tight.alpha
    assert np.max(np.abs(final.theta - final_tight.theta)) < 1e-4
    assert np.max(np.abs(final.loo_margin - final_tight.loo_margin)) < 1e-4


def test_aitken_finds_the_fixed_point_of_a_steady_contraction():
    """On an iteration that contracts by one ratio (either sign), the estimate from two
    steps is its fixed point; steps that do not contract steadily give no estimate."""
    fixed = np.array([0.3, 0.9, 0.5])
    for ratio in (-0.4, 0.25):
        x0 = fixed + np.array([0.1, -0.05, 0.02])
        x1 = fixed + ratio * (x0 - fixed)
        x2 = fixed + ratio * (x1 - fixed)
        assert np.allclose(CB._aitken(x2, x2 - x1, x1 - x0), fixed, atol=1e-14)
    x0, x1 = fixed + 0.1, fixed + 0.09
    assert CB._aitken(fixed + 0.081, (fixed + 0.081) - x1, x1 - x0) is None  # ratio 0.9
    assert CB._aitken(x1, x1 - x0, None) is None
