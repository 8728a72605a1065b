"""Tests for curation.agreement: pure functions, no database."""

from __future__ import annotations

import math
from collections import Counter

import krippendorff
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from curation.agreement import (
    PairRecord,
    RankingRecord,
    annotator_reliability,
    anomalous_voters,
    anomalous_voters_reference,
    kendall_tau,
    krippendorff_alpha,
    pairwise_agreement,
    position_bias,
    shared_unit_counts,
    too_fast,
)


@pytest.fixture(autouse=True)
def _media_root():
    """Shadows the suite-wide media fixture, which needs Django: these tests are pure."""


def ranking(task, annotator, *groups, presented=(), duration=None):
    return RankingRecord(task, annotator, tuple(map(tuple, groups)), presented, duration)


def pair(task, annotator, a, b, outcome, presented=None, duration=None):
    return PairRecord(task, annotator, a, b, outcome, presented, duration)


# --------------------------------------------------------------------------- records


def test_it_stores_a_ranking_as_hashable_tuples():
    record = RankingRecord("t", "u", [[1], [2, 3]], [3, 1, 2])
    assert record.ranking == ((1,), (2, 3))
    assert record.presented_order == (3, 1, 2)
    assert hash(record) == hash(ranking("t", "u", [1], [2, 3], presented=(3, 1, 2)))


def test_it_rejects_a_presented_order_other_than_the_ranked_candidates():
    with pytest.raises(ValueError, match="presented_order"):
        ranking("t", "u", [1], [2], presented=(1, 3))


def test_it_rejects_a_ranking_with_a_repeated_candidate():
    with pytest.raises(ValueError, match="twice"):
        ranking("t", "u", [1], [1, 2])


def test_it_rejects_an_unknown_pair_outcome():
    with pytest.raises(ValueError, match="outcome"):
        pair("t", "u", 1, 2, "left")


def test_it_rejects_a_pair_presented_with_another_candidate():
    with pytest.raises(ValueError, match="presented_order"):
        pair("t", "u", 1, 2, "a", presented=(1, 3))


# --------------------------------------------------------------------------- alpha


def test_it_gives_alpha_one_when_rankings_are_identical():
    records = [ranking(t, u, [1], [2], [3]) for t in "xy" for u in ("u1", "u2")]
    assert krippendorff_alpha(records) == pytest.approx(1.0)


def test_it_uses_mean_positions_of_tied_candidates_as_ordinal_values():
    records = [ranking("t", "u1", [1], [2, 3], [4]), ranking("t", "u2", [1], [2], [3], [4])]
    expected = krippendorff.alpha(
        reliability_data=[[1, 2.5, 2.5, 4], [1, 2, 3, 4]], level_of_measurement="ordinal"
    )
    assert krippendorff_alpha(records) == pytest.approx(expected)


def test_it_scores_reversed_rankings_below_zero():
    records = [ranking(t, "u1", [1], [2], [3]) for t in "xy"]
    records += [ranking(t, "u2", [3], [2], [1]) for t in "xy"]
    assert krippendorff_alpha(records) < 0


def test_it_gives_alpha_one_when_pair_judgments_all_agree():
    # Every relation is "+1" in one orientation: alpha must not collapse to undefined.
    records = [pair(t, u, 1, 2, "a") for t in range(4) for u in ("u1", "u2", "u3")]
    assert krippendorff_alpha(records) == pytest.approx(1.0)


def test_it_does_not_depend_on_which_candidate_is_called_a():
    judgments = [("t1", "u1", "a"), ("t1", "u2", "a"), ("t2", "u1", "b"), ("t2", "u2", "tie")]
    as_given = [pair(t, u, 1, 2, o) for t, u, o in judgments]
    swapped = [pair(t, u, 2, 1, {"a": "b", "b": "a"}.get(o, o)) for t, u, o in judgments]
    assert krippendorff_alpha(as_given) == pytest.approx(krippendorff_alpha(swapped))


def test_it_treats_both_bad_as_no_preference():
    records = [pair("t", "u1", 1, 2, "tie"), pair("t", "u2", 1, 2, "both_bad")]
    records += [pair("s", "u1", 1, 2, "a"), pair("s", "u2", 1, 2, "a")]
    assert krippendorff_alpha(records) == pytest.approx(1.0)


def test_it_returns_no_alpha_without_a_unit_judged_twice():
    records = [pair("t", "u1", 1, 2, "a"), pair("s", "u2", 1, 2, "b")]
    assert krippendorff_alpha(records) is None


def test_it_refuses_to_mix_rankings_and_pairs_in_alpha():
    with pytest.raises(ValueError, match="separately"):
        krippendorff_alpha([ranking("t", "u", [1], [2]), pair("t", "v", 1, 2, "a")])


# --------------------------------------------------------------------------- pairwise agreement


def test_it_shares_agreeing_annotator_pairs_per_candidate_pair():
    records = [
        ranking("t", "u1", [1], [2], [3]),
        ranking("t", "u2", [1], [2], [3]),
        ranking("t", "u3", [2], [1], [3]),
    ]
    result = pairwise_agreement(records)["t"]
    assert result.by_pair == {(1, 2): pytest.approx(1 / 3), (1, 3): 1.0, (2, 3): 1.0}
    assert result.agreement == pytest.approx(7 / 9)
    assert result.n_annotators == 3


def test_it_counts_a_tie_group_as_disagreeing_with_a_strict_order():
    records = [ranking("t", "u1", [1, 2]), ranking("t", "u2", [1], [2])]
    assert pairwise_agreement(records)["t"].agreement == 0.0


def test_it_reports_no_agreement_for_a_task_with_one_annotator():
    result = pairwise_agreement([pair("t", "u1", 1, 2, "a")])["t"]
    assert result.agreement is None
    assert result.by_pair == {}


# --------------------------------------------------------------------------- kendall tau


def test_it_gives_tau_one_for_equal_and_minus_one_for_reversed_rankings():
    assert kendall_tau([[1], [2], [3]], [[1], [2], [3]]) == pytest.approx(1.0)
    assert kendall_tau([[1], [2], [3]], [[3], [2], [1]]) == pytest.approx(-1.0)


def test_it_computes_tau_b_with_ties():
    expected = stats.kendalltau([1, 2.5, 2.5, 4], [1, 2, 3, 4]).statistic
    assert kendall_tau([[1], [2, 3], [4]], [[1], [2], [3], [4]]) == pytest.approx(expected)


def test_it_compares_only_the_candidates_both_rankings_hold():
    assert kendall_tau([[1], [2], [9], [3]], [[1], [2], [3], [7]]) == pytest.approx(1.0)


def test_it_returns_nan_when_tau_is_undefined():
    assert math.isnan(kendall_tau([[1, 2, 3]], [[1], [2], [3]]))
    assert math.isnan(kendall_tau([[1]], [[1]]))


# --------------------------------------------------------------------------- reliability


def test_it_applies_the_crowdlab_weight_formula():
    # Pair (1, 2) on three tasks: u1 and u2 always agree, u3 dissents on task t3.
    records = [pair(t, u, 1, 2, "a") for t in ("t1", "t2", "t3") for u in ("u1", "u2")]
    records += [pair("t1", "u3", 1, 2, "a"), pair("t2", "u3", 1, 2, "a")]
    records += [pair("t3", "u3", 1, 2, "b")]
    result = annotator_reliability(records)
    # Each relation is counted with its mirror image, so e_mlc = 0.5.
    assert result["u3"].agreement == pytest.approx(4 / 6)
    assert result["u3"].weight == pytest.approx(1 - (1 - 4 / 6) / 0.5)
    assert result["u1"].agreement == pytest.approx(5 / 6)
    assert result["u1"].weight == pytest.approx(1 - (1 - 5 / 6) / 0.5)


def test_it_weights_a_random_annotator_far_below_careful_ones():
    rng = np.random.default_rng(0)
    records = []
    careful = ("careful1", "careful2", "careful3", "careful4")
    for task in range(400):
        for annotator in careful:
            records.append(pair(task, annotator, 1, 2, "a" if rng.random() > 0.02 else "b"))
        records.append(pair(task, "random", 1, 2, "a" if rng.random() < 0.5 else "b"))
    result = annotator_reliability(records)
    assert result["random"].weight < 0.15
    assert min(result[name].weight for name in careful) > 0.5


def test_it_floors_the_weight_of_a_contrarian_at_eps():
    records = [pair(t, u, 1, 2, "a") for t in range(5) for u in ("u1", "u2")]
    records += [pair(t, "contrarian", 1, 2, "b") for t in range(5)]
    assert annotator_reliability(records, eps=0.01)["contrarian"].weight == 0.01


def test_it_measures_agreement_with_the_leave_one_out_majority():
    records = [pair("t", "u1", 1, 2, "a"), pair("t", "u2", 1, 2, "a"), pair("t", "u3", 1, 2, "b")]
    result = annotator_reliability(records)
    assert result["u3"].loo_agreement == 0.0
    # For u1 the others split 1-1: no consensus, nothing to compare.
    assert result["u1"].loo_agreement is None


def test_it_scores_accuracy_on_gold_tasks():
    records = [ranking("gold", "u1", [1], [2], [3]), ranking("gold", "u2", [1], [3], [2])]
    records.append(ranking("plain", "u1", [3], [2], [1]))
    result = annotator_reliability(records, gold={"gold": [[1], [2], [3]]})
    assert (result["u1"].gold_accuracy, result["u1"].n_gold) == (1.0, 3)
    assert result["u2"].gold_accuracy == pytest.approx(2 / 3)


def test_it_gives_an_annotator_without_overlap_the_median_weight():
    records = [pair(t, u, 1, 2, "a") for t in range(3) for u in ("u1", "u2")]
    records.append(pair("t9", "u3", 1, 2, "a"))
    result = annotator_reliability(records)
    assert result["u3"].agreement is None
    assert result["u3"].weight == pytest.approx(result["u1"].weight)


# --------------------------------------------------------------------------- position bias


def test_it_flags_an_annotator_who_always_picks_the_left_candidate():
    records = [
        pair(t, "lefty", 1, 2, "a" if t % 2 else "b", presented=(1, 2) if t % 2 else (2, 1))
        for t in range(20)
    ]
    result = position_bias(records)["lefty"]
    assert result.counts == (20, 0)
    assert result.favoured_slot == 0
    assert result.p_value == pytest.approx(stats.binomtest(20, 20, 0.5).pvalue)
    assert result.p_value < 1e-5


def test_it_does_not_flag_an_annotator_who_follows_quality_not_slot():
    records = [pair(t, "fair", 1, 2, "a", presented=(1, 2) if t % 2 else (2, 1)) for t in range(20)]
    result = position_bias(records)["fair"]
    assert result.counts == (10, 10)
    assert result.p_value == 1.0


def test_it_skips_ties_and_judgments_without_a_display_order():
    records = [pair("t1", "u", 1, 2, "tie", presented=(1, 2)), pair("t2", "u", 1, 2, "a")]
    records.append(pair("t3", "u", 1, 2, "a", presented=(2, 1)))
    assert position_bias(records)["u"].n == 1


def test_it_tests_ranking_slots_with_a_chi_square():
    records = [
        ranking(t, "u", [c], *[[o] for o in range(4) if o != c], presented=(0, 1, 2, 3))
        for t, c in enumerate([2] * 30 + [0, 1, 3] * 2)
    ]
    result = position_bias(records)["u"]
    assert result.counts == (2, 2, 30, 2)
    assert result.expected == (9.0, 9.0, 9.0, 9.0)
    assert result.favoured_slot == 2
    assert result.p_value == pytest.approx(stats.chisquare([2, 2, 30, 2]).pvalue)


def test_it_pools_annotators_when_asked():
    records = [pair(t, u, 1, 2, "a", presented=(1, 2)) for t in range(3) for u in ("u1", "u2")]
    pooled = position_bias(records, by_annotator=False)
    assert list(pooled) == [None]
    assert pooled[None].n == 6


# --------------------------------------------------------------------------- too fast


def test_it_flags_a_judgment_far_below_the_project_median():
    records = [pair(t, "u1", 1, 2, "a", duration=10_000) for t in range(10)]
    records.append(pair("quick", "u2", 1, 2, "a", duration=2_000))
    flagged = too_fast(records)
    assert [(f.record.task, f.threshold_ms, f.reference) for f in flagged] == [
        ("quick", 2_500.0, "project")
    ]


def test_it_flags_a_rushed_judgment_of_a_slow_annotator():
    records = [pair(t, "fast", 1, 2, "a", duration=4_000) for t in range(20)]
    records += [pair(t, "slow", 1, 2, "a", duration=40_000) for t in range(6)]
    records.append(pair("rushed", "slow", 1, 2, "a", duration=5_000))
    flagged = too_fast(records)
    assert [(f.record.task, f.reference) for f in flagged] == [("rushed", "annotator")]


def test_it_waits_for_enough_history_before_using_an_annotator_median():
    records = [pair(t, "fast", 1, 2, "a", duration=4_000) for t in range(20)]
    records += [pair(t, "new", 1, 2, "a", duration=40_000) for t in range(3)]
    records.append(pair("rushed", "new", 1, 2, "a", duration=5_000))
    assert too_fast(records, min_history=5) == []


def test_it_ignores_judgments_without_a_duration():
    records = [pair("t", "u", 1, 2, "a"), pair("s", "u", 1, 2, "a", duration=1)]
    assert too_fast(records) == []


# --------------------------------------------------------------------------- anomalous voters


def test_it_computes_arena_p_values_against_the_other_voters_history():
    history = [pair(k, f"h{k}", 1, 2, "a") for k in range(3)] + [pair(3, "h3", 1, 2, "tie")]
    # Candidate 2 is the others' underdog (0 wins, 1 tie, 3 losses); backing it is rare.
    votes = [pair(9, "voter", 1, 2, "b")]
    check = anomalous_voters(history + votes)["voter"]
    (j, m, threshold), *_ = check.checkpoints
    assert j == 1
    assert m == pytest.approx(-2 * math.log((1 + 0) / (4 + 1)))
    assert threshold == pytest.approx(stats.chi2.ppf(1 - 0.05 / 5, 2))


def test_it_counts_ties_as_at_least_as_surprising_as_a_tie():
    history = [pair(k, f"h{k}", 1, 2, "a") for k in range(3)] + [pair(3, "h3", 1, 2, "tie")]
    check = anomalous_voters([*history, pair(9, "voter", 1, 2, "both_bad")])["voter"]
    assert check.checkpoints[0][1] == pytest.approx(-2 * math.log((1 + 1) / (4 + 1)))


def test_it_flags_a_voter_who_keeps_backing_the_crowds_loser():
    rng = np.random.default_rng(1)
    records = []
    pairs = [(x, y) for x in range(6) for y in range(x + 1, 6)]  # lower id is better
    for voter in range(40):
        for k in range(15):
            x, y = pairs[rng.integers(len(pairs))]
            outcome = "a" if rng.random() < 0.95 else "b"
            records.append(pair(f"{voter}-{k}", f"honest{voter}", x, y, outcome))
    for k in range(15):
        x, y = pairs[k]
        records.append(pair(f"bad-{k}", "saboteur", x, y, "b"))
    result = anomalous_voters(records)
    assert result["saboteur"].flagged
    assert sum(check.flagged for check in result.values()) == 1


def test_it_draws_the_same_checkpoints_for_a_seed_whoever_else_is_checked():
    records = [pair(k, "u", 1, 2, "a") for k in range(30)]
    others = [pair(k, f"o{k}", 1, 2, "b") for k in range(30)]
    alone = anomalous_voters(records, seed=3)["u"].checkpoints
    together = anomalous_voters(records + others, seed=3)["u"].checkpoints
    assert [j for j, _, _ in alone] == [j for j, _, _ in together]
    assert len(alone) == 5
    assert [j for j, _, _ in alone] != [
        j for j, _, _ in anomalous_voters(records, seed=4)["u"].checkpoints
    ]


def test_it_checks_every_vote_of_a_voter_with_fewer_votes_than_checkpoints():
    records = [pair(k, "u", 1, 2, "a") for k in range(3)]
    assert [j for j, _, _ in anomalous_voters(records)["u"].checkpoints] == [1, 2, 3]


@settings(max_examples=150, deadline=None)
@given(
    votes=st.lists(
        st.tuples(
            st.integers(0, 5),  # annotator
            st.integers(0, 4),  # candidate a
            st.integers(1, 4),  # candidate b = a + this, modulo 5
            st.sampled_from(["a", "b", "tie", "both_bad"]),
        ),
        max_size=60,
    ),
    labels=st.sampled_from(["ints", "strings"]),
    n_checkpoints=st.integers(1, 6),
)
def test_it_tests_voters_at_once_exactly_as_one_vote_at_a_time(votes, labels, n_checkpoints):
    """The vectorised test equals the per-vote reference bit for bit, on integer ids (the
    array path) and on other labels (the per-record path)."""
    name = (lambda c: c) if labels == "ints" else (lambda c: f"c{c}")
    records = [
        pair(k, f"u{u}", name(a), name((a + step) % 5), outcome)
        for k, (u, a, step, outcome) in enumerate(votes)
    ]
    fast = anomalous_voters(records, n_checkpoints=n_checkpoints)
    reference = anomalous_voters_reference(records, n_checkpoints=n_checkpoints)
    assert list(fast) == list(reference)
    assert fast == reference


def _alpha_one_unit_at_a_time(records, level):
    """Krippendorff's alpha of pair records laid out one unit at a time: the reference."""
    from curation.agreement import _relation_table

    values: dict = {}
    for (task, x, y), by_annotator in _relation_table(records).items():
        for annotator, relation in by_annotator.items():
            values.setdefault((task, x, y), {})[annotator] = float(relation)
            values.setdefault((task, y, x), {})[annotator] = float(-relation)
    pairable = [unit for unit in values.values() if len(unit) >= 2]
    if len({v for unit in pairable for v in unit.values()}) < 2:
        return None
    annotators = sorted({a for unit in pairable for a in unit}, key=repr)
    matrix = np.full((len(annotators), len(pairable)), np.nan)
    for column, unit in enumerate(pairable):
        for annotator, value in unit.items():
            matrix[annotators.index(annotator), column] = value
    return float(krippendorff.alpha(reliability_data=matrix, level_of_measurement=level))


pair_votes = st.lists(
    st.tuples(
        st.integers(0, 3),  # task (a prompt)
        st.integers(0, 4),  # annotator; the same one may judge a unit twice (the last counts)
        st.integers(0, 4),  # candidate a
        st.integers(1, 4),  # candidate b = a + this, modulo 5
        st.sampled_from(["a", "b", "tie", "both_bad"]),
    ),
    min_size=1,
    max_size=50,
)


@settings(max_examples=150, deadline=None)
@given(votes=pair_votes, labels=st.sampled_from(["ints", "strings"]))
def test_it_measures_agreement_of_pairs_on_columns_as_one_unit_at_a_time(votes, labels):
    name = (lambda c: c) if labels == "ints" else (lambda c: f"c{c}")
    records = [
        pair(f"p{t}", f"u{u}", name(a), name((a + step) % 5), outcome)
        for t, u, a, step, outcome in votes
    ]
    from curation.agreement import _pairwise_agreement_per_unit

    fast, reference = pairwise_agreement(records), _pairwise_agreement_per_unit(records)
    assert fast == reference
    assert list(fast) == list(reference)
    for task in fast:
        assert list(fast[task].by_pair) == list(reference[task].by_pair)
    for level in ("nominal", "ordinal"):
        assert krippendorff_alpha(records, level=level) == _alpha_one_unit_at_a_time(records, level)
    judged_by: dict = {}
    for r in records:
        judged_by.setdefault((r.task, *sorted((r.a, r.b))), set()).add(r.annotator)
    shared = Counter(a for who in judged_by.values() if len(who) >= 2 for a in who)
    assert shared_unit_counts(records) == shared


def test_it_runs_the_anomaly_test_on_pairs_only():
    with pytest.raises(ValueError, match="pair records"):
        anomalous_voters([ranking("t", "u", [1], [2])])  # type: ignore[list-item]
