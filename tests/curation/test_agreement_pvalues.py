"""The flags pass's tests without `scipy.stats` (its import costs more than the tests): each
equals its `scipy.stats` counterpart bit for bit."""

from __future__ import annotations

import numpy as np
from scipy import stats

from curation import agreement as A


def test_the_binomial_test_equals_scipys_on_a_grid():
    pairs = [(k, n) for n in range(1, 160) for k in range(n + 1)]
    pairs += [(k, n) for n in (501, 1000, 2999) for k in range(0, n + 1, 13)]
    mismatches = [
        (k, n) for k, n in pairs if A.binomtest_half(k, n) != stats.binomtest(k, n, 0.5).pvalue
    ]
    assert mismatches == []


def test_the_chi_square_tests_equal_scipys():
    rng = np.random.default_rng(3)
    for _ in range(500):
        slots = int(rng.integers(2, 12))
        sizes = rng.integers(2, slots + 1, size=int(rng.integers(1, 200)))
        sizes[0] = slots
        counts = np.bincount([rng.integers(0, s) for s in sizes], minlength=slots)
        expected = np.zeros(slots)
        for size in sizes:
            expected[:size] += 1 / size
        assert A.chisquare_p_value(counts, expected) == stats.chisquare(counts, expected).pvalue
    for j in range(1, 300):
        for q in (1 - 0.05 / 10, 1 - 0.01 / 7, 0.5):
            assert A.chi2_ppf(q, 2 * j) == stats.chi2.ppf(q, 2 * j)


def test_the_flags_pass_tests_do_not_import_scipy_stats():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from curation import agreement as A\n"
        "records = [A.PairRecord(task=t, annotator='x', a=1, b=2, outcome='a', "
        "presented_order=(1, 2)) for t in range(30)]\n"
        "A.position_bias(records)\n"
        "A.anomalous_voters(records)\n"
        "print('scipy.stats' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
