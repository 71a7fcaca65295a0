"""The tables' statistics against scipy on fixed inputs: t quantiles, intervals of a mean, paired differences."""

import math

import numpy as np
import pytest

from adatosk import stats

scipy_stats = pytest.importorskip("scipy.stats", reason="scipy (the test extra) checks the statistics")

UARS = [64.29, 70.00, 65.71, 58.57, 72.14]          # five runs of one variant (%)
OTHER = [63.57, 67.86, 66.43, 57.86, 70.71]         # another variant on the same five (fold, seed)


@pytest.mark.parametrize("df", [1, 2, 3, 4, 5, 6, 9, 14, 29, 60, 120])
@pytest.mark.parametrize("confidence", [0.8, 0.95, 0.99])
def test_t_quantile_matches_scipy(df, confidence):
    assert stats.t_quantile(confidence, df) == pytest.approx(scipy_stats.t.ppf(0.5 + confidence / 2, df), rel=1e-9)


@pytest.mark.parametrize("df", [1, 2, 3, 7, 8, 40])
@pytest.mark.parametrize("t", [0.0, 0.3, 1.7, 4.2, 30.0])
def test_t_two_sided_probability_matches_scipy(df, t):
    expected = scipy_stats.t.cdf(t, df) - scipy_stats.t.cdf(-t, df)
    assert stats.t_two_sided(t, df) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("values", [UARS, UARS[:2], [50.0, 50.0, 50.0], [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]])
def test_estimate_matches_scipy_t_interval(values):
    est = stats.estimate(values)
    low, high = scipy_stats.t.interval(0.95, len(values) - 1, loc=scipy_stats.tmean(values),
                                       scale=scipy_stats.sem(values)) if len(set(values)) > 1 else (50.0, 50.0)
    assert est.n == len(values)
    assert est.mean == pytest.approx(sum(values) / len(values))
    assert est.std == pytest.approx(scipy_stats.tstd(values))
    assert (est.low, est.high) == (pytest.approx(low), pytest.approx(high))


def test_one_value_has_no_interval():
    est = stats.estimate([66.0])
    assert (est.mean, est.std, est.low, est.high, est.n) == (66.0, None, None, None, 1)
    assert stats.reproduction(est, 66.0) == stats.TOO_FEW
    with pytest.raises(ValueError, match="no values"):
        stats.estimate([])


def test_paired_difference_matches_scipy_paired_t():
    a = {(1, seed): v for seed, v in enumerate(UARS)}
    b = {(1, seed): v for seed, v in enumerate(OTHER)}
    b[(2, 0)] = 99.0                                   # a run of one variant only: not a pair
    diff = stats.paired_difference(a, b)
    differences = [x - y for x, y in zip(UARS, OTHER)]
    assert diff.n == 5
    assert diff.mean == pytest.approx(sum(differences) / 5)
    test = scipy_stats.ttest_rel(UARS, OTHER)
    low, high = test.confidence_interval(0.95)
    assert (diff.low, diff.high) == (pytest.approx(low), pytest.approx(high))
    # the interval excludes 0 exactly when the paired t test rejects at 5%
    assert stats.significance(diff) == (stats.SIGNIFICANT if test.pvalue < 0.05 else stats.NOT_SIGNIFICANT)


def test_pairing_removes_the_spread_folds_share():
    """Two variants whose runs move together: unpaired intervals overlap, the paired one excludes 0."""
    a = {k: v for k, v in enumerate(UARS)}
    b = {k: v - 1.0 + 0.1 * (k % 2) for k, v in enumerate(UARS)}
    ea, eb = stats.estimate(list(a.values())), stats.estimate(list(b.values()))
    assert ea.low < eb.high                                                     # unpaired: overlapping
    diff = stats.paired_difference(a, b)
    assert stats.significance(diff) == stats.SIGNIFICANT and diff.low > 0
    assert stats.significance(stats.paired_difference(a, a)) == stats.NOT_SIGNIFICANT
    assert stats.significance(stats.paired_difference({0: 1.0}, {0: 0.5})) == stats.TOO_FEW
    assert stats.paired_difference({0: 1.0}, {1: 0.5}) is None


def test_reproduction_verdict_asks_whether_the_quoted_value_lies_inside():
    est = stats.estimate(UARS)
    assert stats.reproduction(est, est.mean) == stats.REPRODUCED
    assert stats.reproduction(est, est.high + 0.01) == stats.NOT_REPRODUCED
    assert stats.reproduction(est, est.low - 0.01) == stats.NOT_REPRODUCED
    assert math.isclose(est.high - est.mean, est.mean - est.low)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="degree of freedom"):
        stats.t_two_sided(1.0, 0)
    with pytest.raises(ValueError, match="confidence"):
        stats.t_quantile(1.0, 3)


def test_prediction_interval_matches_scipy_and_covers_new_runs():
    """mean ± t * std * sqrt(1/k + 1/n): scipy's t interval at that scale; about 95% of new normal runs inside."""
    low, high = stats.prediction_interval(60.0, 4.0, n=6, k=2)
    expected = scipy_stats.t.interval(0.95, 5, loc=60.0, scale=4.0 * math.sqrt(1 / 2 + 1 / 6))
    assert (low, high) == (pytest.approx(expected[0]), pytest.approx(expected[1]))
    rng = np.random.default_rng(0)
    reference = rng.normal(60.0, 4.0, size=(4000, 6))
    intervals = [stats.prediction_interval(r.mean(), r.std(ddof=1), 6) for r in reference]
    inside = [low <= x <= high for (low, high), x in zip(intervals, rng.normal(60.0, 4.0, size=4000))]
    assert 0.93 < np.mean(inside) < 0.97
    with pytest.raises(ValueError, match="n >= 2"):
        stats.prediction_interval(60.0, 4.0, n=1)
