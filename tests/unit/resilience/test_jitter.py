"""The AWS jitter formulas, checked statistically with a seeded RNG."""

from __future__ import annotations

import random

import pytest

from hacontrol.resilience import Backoff, jittered

N = 20_000


def chi_square_uniform(samples: list[float], lo: float, hi: float, bins: int = 10) -> float:
    counts = [0] * bins
    width = (hi - lo) / bins
    for x in samples:
        counts[min(bins - 1, int((x - lo) / width))] += 1
    expected = len(samples) / bins
    return sum((c - expected) ** 2 / expected for c in counts)


# 99.9th percentile of chi-square with 9 degrees of freedom.
CHI2_9_999 = 27.88


@pytest.mark.parametrize("n", [0, 3, 6])
def test_full_jitter_is_uniform_on_zero_to_capped_delay(n: int) -> None:
    backoff = Backoff.exponential(0.1, cap=5.0)
    v = min(5.0, 0.1 * 2**n)
    rng = random.Random(1)
    xs = [jittered("full", backoff, n, 0.1, rng) for _ in range(N)]
    assert all(0.0 <= x <= v for x in xs)
    mean = sum(xs) / N
    var = sum((x - mean) ** 2 for x in xs) / N
    assert mean == pytest.approx(v / 2, rel=0.03)
    assert var == pytest.approx(v * v / 12, rel=0.05)
    assert chi_square_uniform(xs, 0.0, v) < CHI2_9_999


@pytest.mark.parametrize("n", [0, 4, 9])
def test_equal_jitter_is_half_plus_uniform_half(n: int) -> None:
    backoff = Backoff.exponential(0.1, cap=20.0)
    v = min(20.0, 0.1 * 2**n)
    rng = random.Random(2)
    xs = [jittered("equal", backoff, n, 0.1, rng) for _ in range(N)]
    assert all(v / 2 <= x <= v for x in xs)
    assert sum(xs) / N == pytest.approx(0.75 * v, rel=0.02)
    assert chi_square_uniform(xs, v / 2, v) < CHI2_9_999


def test_decorrelated_jitter_is_uniform_base_to_three_prev() -> None:
    backoff = Backoff.exponential(0.1, cap=100.0)
    rng = random.Random(3)
    prev = 2.0
    xs = [jittered("decorrelated", backoff, 0, prev, rng) for _ in range(N)]
    assert all(0.1 <= x <= 6.0 for x in xs)
    assert sum(xs) / N == pytest.approx((0.1 + 6.0) / 2, rel=0.02)
    assert chi_square_uniform(xs, 0.1, 6.0) < CHI2_9_999


def test_decorrelated_jitter_is_capped() -> None:
    backoff = Backoff.exponential(0.1, cap=3.0)
    rng = random.Random(4)
    prev = 2.0  # U(0.1, 6.0) capped at 3.0: P(capped) = 3.0 / 5.9
    xs = [jittered("decorrelated", backoff, 0, prev, rng) for _ in range(N)]
    assert max(xs) == 3.0
    capped = sum(x == 3.0 for x in xs) / N
    assert capped == pytest.approx(3.0 / 5.9, abs=0.02)


def test_decorrelated_sequence_feeds_on_previous_sleep() -> None:
    backoff = Backoff.exponential(0.5, cap=60.0)
    rng = random.Random(5)
    prev = backoff.base
    for _ in range(200):
        x = jittered("decorrelated", backoff, 0, prev, rng)
        assert backoff.base <= x <= min(60.0, 3 * prev)
        prev = x


def test_no_jitter_is_the_backoff() -> None:
    backoff = Backoff.exponential(0.1, cap=1.0)
    rng = random.Random(6)
    assert [jittered("none", backoff, n, 0.1, rng) for n in range(5)] == pytest.approx(
        [0.1, 0.2, 0.4, 0.8, 1.0]
    )


def test_unknown_jitter_rejected() -> None:
    with pytest.raises(ValueError):
        jittered("wild", Backoff(), 0, 0.1, random.Random())  # type: ignore[arg-type]
