"""Risk-controlled calibration (edge_runtime/calibration/risk.py) on synthetic scores with a known answer."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge_runtime.calibration import calibrate, evaluate_point
from edge_runtime.calibration.risk import (
    BOUNDS,
    binomial_cdf,
    exit_losses,
    fixed_sequence,
    guaranteed_threshold,
    pvalue,
    split_indices,
    upper_bound,
)
from edge_runtime.errors import ConfigError


@pytest.mark.parametrize("k,n,p", [(0, 10, 0.1), (3, 100, 0.05), (7, 40, 0.3), (40, 40, 0.5), (-1, 5, 0.2)])
def test_binomial_cdf_equals_the_exact_sum(k, n, p):
    exact = sum(math.comb(n, j) * p ** j * (1 - p) ** (n - j) for j in range(0, max(k, -1) + 1))
    assert binomial_cdf(k, n, p) == pytest.approx(exact, rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("bound", BOUNDS)
def test_pvalues_are_valid_at_the_null_boundary(bound):
    """Losses whose mean is exactly eps: P(p <= delta) must not exceed delta (Monte Carlo, 2,000 draws)."""
    rng = np.random.default_rng(1)
    eps, delta, n = 0.05, 0.1, 300
    rejected = sum(pvalue((rng.random(n) < eps).astype(float), eps, bound, delta=delta) <= delta for _ in range(2000))
    # the exact rate is <= 0.1; 2,000 draws put 0.1 + 3 sd at ~0.12
    assert rejected / 2000 <= 0.12


@pytest.mark.parametrize("bound", BOUNDS)
def test_pvalues_reject_a_clearly_small_risk(bound):
    losses = np.zeros(2000)
    losses[:10] = 1.0  # 0.5% against a 5% budget
    assert pvalue(losses, 0.05, bound, delta=0.1) < 1e-6


def test_wsr_takes_signed_losses_and_the_positive_part_bound_is_never_below_it():
    rng = np.random.default_rng(2)
    ell = rng.choice([-1.0, 0.0, 1.0], p=[0.03, 0.94, 0.03], size=1000)  # drop 0: early exits fix as many as they break
    assert pvalue(ell, 0.02, "wsr", lo=-1.0, hi=1.0) <= 0.1
    ub_pos = upper_bound(np.maximum(ell, 0.0), "binomial", 0.9)
    assert ub_pos >= np.maximum(ell, 0.0).mean()
    assert upper_bound(ell, "wsr", 0.9, lo=-1.0, hi=1.0) >= ell.mean()


def test_fixed_sequence_stops_at_the_first_failure():
    assert fixed_sequence([0.01, 0.05, 0.2, 0.01], 0.1) == 2
    assert fixed_sequence([0.3], 0.1) == 0
    assert fixed_sequence([], 0.1) == 0


def test_exit_losses():
    preds, final, y = np.array([0, 1, 2, 3]), np.array([0, 2, 2, 0]), np.array([0, 2, 1, 3])
    drop, lo, hi = exit_losses(preds, final, y, "label_drop")
    assert drop.tolist() == [0.0, 1.0, 0.0, -1.0] and (lo, hi) == (-1.0, 1.0)
    dis, lo, hi = exit_losses(preds, final, None, "disagreement")
    assert dis.tolist() == [0.0, 1.0, 0.0, 1.0] and (lo, hi) == (0.0, 1.0)
    with pytest.raises(ConfigError, match="labels"):
        exit_losses(preds, final, None, "label_drop")
    with pytest.raises(ConfigError, match="unknown risk"):
        exit_losses(preds, final, y, "mystery")


def test_split_indices_cover_every_sample_once():
    sel, test = split_indices(101, 0.3, seed=4)
    assert len(sel) == 30 and len(test) == 71
    assert sorted(np.concatenate([sel, test]).tolist()) == list(range(101))
    assert np.array_equal(split_indices(101, 0.3, seed=4)[0], sel)


# -- the one-score form: a gate with a known risk curve ------------------------------------------------------
def _gate_draw(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores uniform on [0, 1]; an accepted sample is wrong with probability 0.3 (1 - s): the risk of accepting
    every score >= t is R(t) = integral_t^1 0.3 (1 - s) ds = 0.15 (1 - t)^2."""
    s = rng.random(n)
    return s, (rng.random(n) < 0.3 * (1.0 - s)).astype(float)


def _gate_risk(t: float) -> float:
    return 0.15 * (1.0 - min(max(t, 0.0), 1.0)) ** 2


def test_guaranteed_threshold_holds_with_the_stated_probability():
    rng = np.random.default_rng(0)
    eps, conf = 0.02, 0.9
    violations = 0
    for _ in range(200):
        s, loss = _gate_draw(rng, 1000)
        g = guaranteed_threshold(s, loss, max_risk=eps, confidence=conf)
        violations += _gate_risk(g.threshold) > eps
    # exact rate <= 10%; P(Bin(200, 0.1) > 30) < 0.5%
    assert violations <= 30


def test_guaranteed_threshold_approaches_the_oracle_with_many_samples():
    t_star = 1.0 - math.sqrt(0.02 / 0.15)  # R(t*) = 0.02
    s, loss = _gate_draw(np.random.default_rng(3), 200_000)
    g = guaranteed_threshold(s, loss, max_risk=0.02, confidence=0.9)
    assert g.certified and g.threshold >= t_star
    assert g.threshold - t_star < 0.02
    assert g.upper_bound <= 0.02 and g.empirical_risk <= g.upper_bound


def test_guaranteed_threshold_without_enough_samples_accepts_nothing():
    s, loss = _gate_draw(np.random.default_rng(5), 20)  # 20 samples cannot certify 1%: (0.99)^20 > 0.1
    g = guaranteed_threshold(s, loss, max_risk=0.01, confidence=0.9)
    assert not g.certified and g.threshold > s.max() and g.empirical_risk == 0.0


def test_guaranteed_threshold_lower_is_confident():
    s, loss = _gate_draw(np.random.default_rng(6), 5000)
    up = guaranteed_threshold(s, loss, max_risk=0.02, confidence=0.9)
    down = guaranteed_threshold(-s, loss, max_risk=0.02, confidence=0.9, higher_is_confident=False)
    assert down.threshold == pytest.approx(-up.threshold)


def test_guaranteed_threshold_refuses_bad_settings():
    with pytest.raises(ConfigError, match="confidence"):
        guaranteed_threshold(np.zeros(3), np.zeros(3), max_risk=0.1, confidence=1.0)
    with pytest.raises(ConfigError, match="3 scores but 2 losses"):
        guaranteed_threshold(np.zeros(3), np.zeros(2), max_risk=0.1, confidence=0.9)


# -- the many-threshold form: early exits with a known accuracy drop ---------------------------------------------
C = 5


def _exits_draw(rng: np.random.Generator, n: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Two exits: the final one right 98% of the time; the early one right where the sample is easy, and confident
    about as much as it is right (its logit margin grows with ease), so some confident answers are wrong."""
    y = rng.integers(0, C, n)
    ease = rng.random(n)
    final = rng.normal(size=(n, C))
    final[np.arange(n), np.where(rng.random(n) < 0.98, y, (y + 1) % C)] += 6.0
    early = rng.normal(size=(n, C))
    right = rng.random(n) < 0.55 + 0.45 * ease
    early[np.arange(n), np.where(right, y, (y + 1 + rng.integers(0, C - 1, n)) % C)] += 1.0 + 5.0 * ease
    return [early.astype(np.float32), final.astype(np.float32)], y


def test_calibrate_with_confidence_holds_the_budget_on_new_data():
    """20 calibration draws of 600 samples: the guaranteed choice's drop on 40,000 fresh samples exceeds the budget
    in at most ~10% of draws; the point estimate (cheapest point within the budget on the calibration draw) in
    many more: the winner's curse the guarantee removes."""
    rng = np.random.default_rng(7)
    fresh, y_fresh = _exits_draw(np.random.default_rng(99), 40_000)
    final_acc = float((fresh[1].argmax(-1) == y_fresh).mean())
    budget = 2.0
    viol = {"point": 0, "guarantee": 0}
    for _ in range(20):
        outs, y = _exits_draw(rng, 600)
        for label, conf in (("point", None), ("guarantee", 0.9)):
            cal = calibrate(outs, y, "confidence", {}, flops=[1, 4], max_accuracy_drop=budget, confidence=conf,
                            levels=60, refine_rounds=1)
            acc = evaluate_point(fresh, y_fresh, "confidence", {}, cal.chosen.thresholds, [1, 4]).accuracy
            viol[label] += 100.0 * (final_acc - acc) > budget
    print(viol)
    assert viol["guarantee"] <= 5  # P(Bin(20, 0.1) > 5) ~ 1%
    assert viol["point"] >= 6


def test_calibrate_with_confidence_records_the_guarantee():
    outs, y = _exits_draw(np.random.default_rng(8), 2000)
    cal = calibrate(outs, y, "confidence", {}, flops=[1, 4], max_accuracy_drop=2.0, confidence=0.9, levels=100)
    g = cal.to_manifest()["guarantee"]
    assert g["certified"] and g["upper_bound"] <= 0.02 and g["confidence"] == 0.9
    assert g["n_selection"] + g["n_test"] == 2000 and g["risk"] == "label_drop" and g["bound"] == "binomial"
    assert cal.to_manifest()["confidence"] == 0.9
    assert cal.chosen.exit_fractions[0] > 0.1  # the guarantee still lets easy samples leave
    point = calibrate(outs, y, "confidence", {}, flops=[1, 4], max_accuracy_drop=2.0, levels=100)
    assert point.to_manifest()["confidence"] is None and "guarantee" not in point.to_manifest()


def test_calibrate_with_too_few_samples_lets_nobody_leave():
    outs, y = _exits_draw(np.random.default_rng(9), 60)
    cal = calibrate(outs, y, "confidence", {}, flops=[1, 4], max_accuracy_drop=1.0, confidence=0.9, levels=20)
    assert not cal.extra["guarantee"]["certified"]
    assert cal.chosen.exit_fractions[0] == 0.0


def test_calibrate_disagreement_risk_needs_no_more_than_agreement():
    outs, y = _exits_draw(np.random.default_rng(10), 3000)
    cal = calibrate(outs, y, "confidence", {}, flops=[1, 4], max_accuracy_drop=3.0, confidence=0.9,
                    risk="disagreement", levels=100)
    assert cal.extra["guarantee"]["certified"] and cal.chosen.agreement is not None
    assert 1.0 - cal.chosen.agreement <= 0.03 + 0.01


def test_calibrate_refuses_unknown_risk_and_bound():
    outs, y = _exits_draw(np.random.default_rng(11), 50)
    with pytest.raises(ConfigError, match="risk"):
        calibrate(outs, y, "confidence", {}, flops=[1, 4], confidence=0.9, risk="mystery")
    with pytest.raises(ConfigError, match="bound"):
        calibrate(outs, y, "confidence", {}, flops=[1, 4], confidence=0.9, bound="mystery")


def test_holdout_size_is_the_smallest_size_for_the_most_errors_that_fit() -> None:
    from edge_runtime.calibration.risk import binomial_cdf, holdout_size

    assert binomial_cdf(0, 230, 0.01) <= 0.1 < binomial_cdf(0, 229, 0.01)  # zero errors certify from 230 on
    assert holdout_size(359, 0.01, 0.9) == 230
    n1 = holdout_size(600, 0.01, 0.9)  # one error fits in 480 samples
    assert binomial_cdf(1, n1, 0.01) <= 0.1 < binomial_cdf(1, n1 - 1, 0.01)
    assert holdout_size(100, 0.01, 0.9) == 80  # nothing can certify: 80% of the samples test anyway
    sel, test = split_indices(359, None, seed=0, max_risk=0.01, confidence=0.9)
    assert len(test) == 230 and len(sel) == 129
