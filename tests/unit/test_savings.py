"""The savings claim's statistics, without a database or an app: the interval's coverage by
simulation, the figures against numpy, determinism, the claims refused, the words, and a speed
figure."""

from __future__ import annotations

import itertools
import math
import time
from collections import Counter

import numpy as np
import pytest

from flowpilot_analytics import savings as sv

BASELINE_MEDIAN, PRODUCT_MEDIAN = 720.0, 240.0  # seconds: 12 min by stopwatch, 4 min in the product


def lognormal(rng: np.random.Generator, median: float, sigma: float, n: int) -> list[float]:
    return [float(value) for value in rng.lognormal(math.log(median), sigma, n)]


# -- coverage --------------------------------------------------------------------------------------


@pytest.mark.parametrize("baseline_sigma", [0.6, 1.0])
def test_the_intervals_cover_the_true_differences(baseline_sigma: float) -> None:
    """400 trials from known lognormal populations: 20-40 baseline samples, 50-500 in-product
    handoffs."""
    product_sigma, trials = 1.0, 400
    true_median = BASELINE_MEDIAN - PRODUCT_MEDIAN
    true_mean = BASELINE_MEDIAN * math.exp(baseline_sigma**2 / 2) - PRODUCT_MEDIAN * math.exp(
        product_sigma**2 / 2
    )
    rng = np.random.default_rng(2026)
    estimates: dict[str, list[float]] = {"median": [], "mean": []}
    widths: dict[str, list[float]] = {"median": [], "mean": []}
    covered: Counter[str] = Counter()
    for _ in range(trials):
        baseline = lognormal(rng, BASELINE_MEDIAN, baseline_sigma, int(rng.integers(20, 41)))
        in_product = lognormal(rng, PRODUCT_MEDIAN, product_sigma, int(rng.integers(50, 501)))
        difference = sv.savings(baseline, in_product).difference
        assert difference is not None
        for name, point, (low, high), truth in (
            ("median", difference.median_seconds, difference.median_interval, true_median),
            ("mean", difference.mean_seconds, difference.mean_interval, true_mean),
        ):
            estimates[name].append(point)
            widths[name].append(high - low)
            covered[name] += low <= truth <= high
    for name, widest in (("median", 1.5), ("mean", 2.0)):
        coverage = covered[name] / trials
        # the width a 95 % interval needs if the estimate were normal with its true (simulated)
        # spread
        needed = 2 * 1.96 * float(np.std(estimates[name]))
        ratio = float(np.mean(widths[name])) / needed
        print(
            f"sigma {baseline_sigma}: {name} coverage {coverage:.3f}, "
            f"mean width {ratio:.2f} x needed"
        )
        assert 0.90 <= coverage <= 0.99, (name, coverage)
        assert 0.5 < ratio < widest, (name, ratio)


def test_bootstrap_medians_follow_the_exact_resampling_distribution() -> None:
    """Every resample of 3 and of 4 values enumerated: the order-statistics draws match its
    probabilities."""
    rng = np.random.default_rng(1)
    for values in ([10.0, 20.0, 40.0], [10.0, 20.0, 40.0, 80.0]):
        resamples = list(itertools.product(values, repeat=len(values)))
        exact = Counter(float(np.median(resample)) for resample in resamples)
        drawn = Counter(sv.bootstrap_medians(np.array(values), 200_000, rng).tolist())
        assert set(drawn) <= set(exact)
        for median, count in exact.items():
            assert drawn[median] / 200_000 == pytest.approx(count / len(resamples), abs=0.005), (
                median
            )


def test_the_normal_limit_of_a_large_in_product_mean_matches_resampling(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(5)
    baseline, in_product = (
        lognormal(rng, BASELINE_MEDIAN, 0.7, 30),
        lognormal(rng, PRODUCT_MEDIAN, 1.0, 5_000),
    )
    limit = sv.savings(baseline, in_product).difference
    monkeypatch.setattr(sv, "EXACT_MEAN_LIMIT", 10_000)
    resampled = sv.savings(baseline, in_product).difference
    assert limit is not None and resampled is not None
    assert "normal limit" in limit.method and "normal limit" not in resampled.method
    assert limit.mean_interval == pytest.approx(resampled.mean_interval, rel=0.05)


# -- figures ---------------------------------------------------------------------------------------


def test_figures_match_a_numpy_reference() -> None:
    rng = np.random.default_rng(11)
    baseline, in_product = (
        lognormal(rng, BASELINE_MEDIAN, 0.7, 24),
        lognormal(rng, PRODUCT_MEDIAN, 1.0, 301),
    )
    result = sv.savings(baseline, in_product)
    b, p = np.array(baseline), np.array(in_product)
    for sample, values in ((result.baseline, b), (result.in_product, p)):
        assert sample.n == values.size
        assert sample.median_seconds == pytest.approx(np.median(values))
        assert sample.mean_seconds == pytest.approx(values.mean())
    difference, extrapolated = result.difference, result.extrapolated
    assert difference is not None and extrapolated is not None
    assert difference.median_seconds == pytest.approx(np.median(b) - np.median(p))
    assert difference.mean_seconds == pytest.approx(b.mean() - p.mean())
    assert difference.confidence == 0.95
    assert "percentile bootstrap" in difference.method and "2,000 resamples" in difference.method
    for point, (low, high) in (
        (difference.median_seconds, difference.median_interval),
        (difference.mean_seconds, difference.mean_interval),
    ):
        assert low < point < high
    assert extrapolated.handoffs == 301
    assert extrapolated.total_seconds == pytest.approx((b.mean() - p.mean()) * 301)
    assert extrapolated.total_interval == pytest.approx(
        tuple(end * 301 for end in difference.mean_interval)
    )
    as_dict = result.as_dict()
    assert as_dict["difference"]["median_interval"] == list(difference.median_interval)
    assert as_dict["extrapolated"]["total_interval"] == list(extrapolated.total_interval)
    assert as_dict["claim"] == result.claim and as_dict["reason"] is None


def test_medians_interpolate_like_percentile_cont() -> None:
    result = sv.savings([float(s) for s in range(1, 21)], [30.0, 90.0, 600.0, 1000.0])
    assert result.baseline.median_seconds == 10.5
    assert result.in_product.median_seconds == 345.0
    assert result.in_product.mean_seconds == 430.0


def test_a_wider_confidence_gives_a_wider_interval() -> None:
    rng = np.random.default_rng(3)
    baseline, in_product = (
        lognormal(rng, BASELINE_MEDIAN, 0.7, 30),
        lognormal(rng, PRODUCT_MEDIAN, 1.0, 200),
    )
    narrow = sv.savings(baseline, in_product, confidence=0.9).difference
    wide = sv.savings(baseline, in_product, confidence=0.99).difference
    assert narrow is not None and wide is not None
    assert (
        wide.median_interval[0]
        <= narrow.median_interval[0]
        < narrow.median_interval[1]
        <= wide.median_interval[1]
    )
    assert (
        wide.mean_interval[0]
        < narrow.mean_interval[0]
        < narrow.mean_interval[1]
        < wide.mean_interval[1]
    )
    assert "90 % interval" in (sv.savings(baseline, in_product, confidence=0.9).claim or "")


# -- determinism -----------------------------------------------------------------------------------


def test_the_same_data_gives_the_same_interval_in_any_order() -> None:
    rng = np.random.default_rng(8)
    baseline, in_product = (
        lognormal(rng, BASELINE_MEDIAN, 0.7, 25),
        lognormal(rng, PRODUCT_MEDIAN, 1.0, 3_000),
    )
    first = sv.savings(baseline, in_product)
    assert sv.savings(baseline, in_product) == first
    assert sv.savings(baseline[::-1], rng.permutation(in_product).tolist()) == first


# -- claims refused --------------------------------------------------------------------------------


def test_no_difference_below_the_minimum_and_the_reason_names_both_numbers() -> None:
    rng = np.random.default_rng(4)
    in_product = lognormal(rng, PRODUCT_MEDIAN, 1.0, 100)
    result = sv.savings(lognormal(rng, BASELINE_MEDIAN, 0.7, 7), in_product)
    assert (result.difference, result.extrapolated, result.claim) == (None, None, None)
    assert result.reason == "needs at least 20 baseline samples; has 7"
    assert result.baseline.n == 7 and result.baseline.median_seconds is not None
    assert result.in_product.n == 100
    custom = sv.savings(lognormal(rng, BASELINE_MEDIAN, 0.7, 25), in_product, min_samples=30)
    assert (
        custom.reason == "needs at least 30 baseline samples; has 25" and custom.difference is None
    )
    empty = sv.savings([], in_product)
    assert empty.baseline == sv.Sample(0, None, None)
    assert empty.reason == "needs at least 20 baseline samples; has 0"


def test_no_difference_without_an_in_product_handoff() -> None:
    baseline = lognormal(np.random.default_rng(4), BASELINE_MEDIAN, 0.7, 25)
    result = sv.savings(baseline, [])
    assert result.in_product == sv.Sample(0, None, None)
    assert (result.difference, result.extrapolated, result.claim) == (None, None, None)
    assert result.reason == "no handoff with a first action in this window"
    both = sv.savings(baseline[:3], [])
    assert both.reason == (
        "needs at least 20 baseline samples; has 3; no handoff with a first action in this window"
    )


@pytest.mark.parametrize("seed", range(3))
def test_no_claim_when_the_interval_includes_zero(seed: int) -> None:
    rng = np.random.default_rng(seed)
    same = lognormal(rng, BASELINE_MEDIAN, 0.7, 30)
    for baseline, in_product in ((same, same), (same, lognormal(rng, BASELINE_MEDIAN, 0.7, 200))):
        result = sv.savings(baseline, in_product)
        assert result.difference is not None and result.extrapolated is not None
        low, high = result.difference.median_interval
        assert low <= 0 <= high
        assert result.claim is None
        assert result.reason is not None and result.reason.startswith(
            "the 95 % interval of the difference in medians includes 0"
        )


def test_a_claim_states_both_medians_sizes_and_interval_and_labels_the_total_extrapolated() -> None:
    rng = np.random.default_rng(12)
    baseline, in_product = (
        lognormal(rng, BASELINE_MEDIAN, 0.7, 25),
        lognormal(rng, PRODUCT_MEDIAN, 1.0, 1_234),
    )
    result = sv.savings(baseline, in_product)
    claim = result.claim
    assert claim is not None and result.reason is None
    assert sv.duration(np.median(baseline)) in claim and sv.duration(np.median(in_product)) in claim
    assert "(25 samples)" in claim and "(1,234 handoffs)" in claim
    assert "95 % interval" in claim and "shorter" in claim
    assert "extrapolated" in claim and "not measured" in claim
    assert "recovered" not in claim.lower()
    assert claim.endswith(".") and ". " not in claim  # one sentence


def test_a_slower_product_is_claimed_as_longer() -> None:
    rng = np.random.default_rng(13)
    result = sv.savings(
        lognormal(rng, PRODUCT_MEDIAN, 0.5, 30), lognormal(rng, BASELINE_MEDIAN, 0.5, 300)
    )
    assert result.difference is not None and result.difference.median_interval[1] < 0
    assert (
        result.claim is not None
        and "longer" in result.claim
        and "recovered" not in result.claim.lower()
    )


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="finite"):
        sv.savings([600.0] * 19 + [math.nan], [60.0])
    with pytest.raises(ValueError, match="finite"):
        sv.savings([600.0] * 20, [math.inf])
    with pytest.raises(ValueError, match="min_samples"):
        sv.savings([600.0] * 20, [60.0], min_samples=1)
    with pytest.raises(ValueError, match="confidence"):
        sv.savings([600.0] * 20, [60.0], confidence=1.0)


def test_tied_samples_give_finite_intervals() -> None:
    result = sv.savings([600.0] * 18 + [660.0, 900.0], [120.0])
    assert result.difference is not None
    assert all(
        math.isfinite(end)
        for end in (*result.difference.median_interval, *result.difference.mean_interval)
    )


# -- words -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (0.0, "0 s"),
        (0.4, "0.4 s"),
        (42.4, "42 s"),
        (59.6, "1 min"),
        (870.0, "14 min 30 s"),
        (-870.0, "14 min 30 s"),
        (3600.0, "1 h"),
        (45_000.0, "12 h 30 min"),
        (10_808_000.0, "3,002 h"),
    ],
)
def test_durations_read_like_a_person_wrote_them(seconds: float, words: str) -> None:
    assert sv.duration(seconds) == words


# -- speed -----------------------------------------------------------------------------------------


def test_speed_with_20000_handoffs_and_1000_samples() -> None:
    """A figure to read (pytest -s), not a timed test: the bound only catches a hang."""
    rng = np.random.default_rng(0)
    baseline, in_product = (
        lognormal(rng, BASELINE_MEDIAN, 0.7, 1_000),
        lognormal(rng, PRODUCT_MEDIAN, 1.0, 20_000),
    )
    started = time.perf_counter()
    result = sv.savings(baseline, in_product)
    elapsed = time.perf_counter() - started
    print(f"savings() with 1,000 baseline samples and 20,000 handoffs: {elapsed * 1000:.1f} ms")
    assert result.claim is not None
    assert elapsed < 10


def test_samples_without_spread_give_a_degenerate_interval_not_nan() -> None:
    """All baseline samples equal and one handoff: every resample is the data, so each interval is
    the point itself (no 0 / 0)."""
    found = sv.savings([900.0] * 20, [60.0])
    assert found.difference is not None
    assert found.difference.median_interval == (840.0, 840.0)
    assert found.difference.mean_interval == (840.0, 840.0)
    assert found.claim is not None and "14 min shorter" in found.claim
    same = sv.savings([900.0] * 25, [900.0])
    assert same.claim is None and same.reason is not None and "includes 0" in same.reason


def test_the_median_is_computed_as_percentile_cont_computes_it() -> None:
    """``low + (high - low) * 0.5``, as PostgreSQL and the escalation report compute it: the
    average ``(low + high) / 2`` differs in the last bit for these two delays."""
    low, high = 13980.415036, 80335.473887
    assert (low + high) / 2 != low + (high - low) * 0.5
    assert sv.savings([low, high], [low, high], min_samples=2).in_product.median_seconds == (
        low + (high - low) * 0.5
    )
