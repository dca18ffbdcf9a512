"""Thresholds with a guarantee: a risk (e.g. the accuracy drop) that stays within a budget on new data with a stated
probability over the calibration draw.

Learn-then-Test (Angelopoulos, Bates, Candès, Jordan, Lei 2021) as CALM (Schuster et al., NeurIPS 2022) applies it
to early exits: every candidate configuration gets a p-value for the null hypothesis "its risk is above the budget
ε"; the candidates are tested in an order fixed *before* looking at the test samples (fixed-sequence testing, which
controls the family-wise error at δ without a multiplicity correction), stopping at the first that is not rejected;
every rejected one is certified, and the cheapest certified one is chosen. Then, with probability >= 1 - δ over the
calibration samples, the chosen configuration's risk on new data from the same distribution is <= ε.

Per-exit thresholds are many numbers, so their order comes from a separate part of the calibration data (Pareto
Testing, Laufer-Goldshtein et al., ICLR 2023): the candidates are the accuracy-vs-cost Pareto front found on a
*selection* part, ordered from the safest to the cheapest; only the other part (*test*) feeds the p-values.

The p-values (all valid for n i.i.d. samples, none asymptotic):

- ``binomial``: exact binomial tail for losses in {0, 1}, P(Bin(n, ε) <= k). A loss in {-1, 0, 1} (the label drop
  of one sample) is bounded above by its positive part, which is in {0, 1}.
- ``hoeffding_bentkus``: for losses in [0, 1] (Bates et al. 2021).
- ``wsr``: Waudby-Smith & Ramdas' betting test for losses in any bounded range; adapts to a small variance, so a
  drop that early exits make up with samples only they get right still certifies.

:func:`guaranteed_threshold` is the one-score form (a confidence gate, one exit): it works on any score array.

Example:
    >>> rng = np.random.default_rng(0)
    >>> scores = rng.random(2000)                       # confidence per sample
    >>> wrong = rng.random(2000) < 0.2 * (1 - scores)   # cheap path wrong mostly where unconfident
    >>> g = guaranteed_threshold(scores, wrong.astype(float), max_risk=0.05, confidence=0.9)
    >>> g.certified, g.upper_bound <= 0.05
    (True, True)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edge_runtime.errors import ConfigError

#: p-value methods by name: ``fn(losses (n,), eps, lo, hi, delta) -> p``
BOUNDS = ("binomial", "hoeffding_bentkus", "wsr")
#: what a guarantee can be about (see :func:`exit_losses`)
RISKS = ("label_drop", "disagreement")


# -- p-values --------------------------------------------------------------------------------------------
def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(Bin(n, p) <= k), exact (log-space sum of the probability mass; numpy only).

    Example:
        >>> round(binomial_cdf(0, 10, 0.1), 6) == round(0.9 ** 10, 6)
        True
    """
    if k < 0:
        return 0.0
    if k >= n or p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    j = np.arange(k + 1, dtype=np.float64)
    # log C(n, j) = sum_{i<j} log((n - i) / (i + 1))
    steps = np.log(n - j[:-1]) - np.log(j[:-1] + 1.0) if k > 0 else np.zeros(0)
    log_choose = np.concatenate([[0.0], np.cumsum(steps)])
    logpmf = log_choose + j * math.log(p) + (n - j) * math.log1p(-p)
    top = float(logpmf.max())
    return float(min(1.0, math.exp(top) * np.exp(logpmf - top).sum()))


def binomial_pvalue(losses: np.ndarray, eps: float) -> float:
    """p-value of H0 "mean loss > eps" for losses in {0, 1} (any value > 0 counts as 1): P(Bin(n, eps) <= k)."""
    losses = np.asarray(losses)
    return binomial_cdf(int((losses > 0).sum()), int(losses.size), float(eps))


def hoeffding_bentkus_pvalue(losses: np.ndarray, eps: float) -> float:
    """p-value of H0 "mean loss > eps" for losses in [0, 1] (Hoeffding-Bentkus, as in Learn-then-Test)."""
    losses = np.asarray(losses, dtype=np.float64)
    n = losses.size
    mean = float(losses.mean()) if n else 1.0
    if mean >= eps or n == 0:
        return 1.0
    if eps >= 1.0:
        return 0.0
    m = max(mean, 1e-300)
    kl = m * math.log(m / eps) + (1 - m) * math.log((1 - m) / (1 - eps))
    hoeffding = math.exp(-n * kl)
    bentkus = math.e * binomial_cdf(int(math.ceil(n * mean)), n, eps)
    return float(min(1.0, hoeffding, bentkus))


def wsr_pvalue(losses: np.ndarray, eps: float, *, lo: float = 0.0, hi: float = 1.0, delta: float = 0.1) -> float:
    """p-value of H0 "mean loss > eps" for losses in [lo, hi] by betting (Waudby-Smith & Ramdas 2023; the WSR bound
    of Bates et al. 2021): the capital K_t = prod (1 - nu_i (z_i - r)) of rescaled losses z in [0, 1] against the
    null mean r is a nonnegative supermartingale under H0, so 1 / max_t K_t is a p-value (Ville's inequality).
    The bets nu_i are predictable (from earlier samples only) and sized for level ``delta``.
    """
    x = np.asarray(losses, dtype=np.float64)
    if hi <= lo:
        raise ConfigError(f"wsr_pvalue: need lo < hi, got [{lo}, {hi}]")
    n = x.size
    if n == 0:
        return 1.0
    z = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    r = (float(eps) - lo) / (hi - lo)
    if r >= 1.0:
        return 0.0
    if r <= 0.0:
        return 1.0
    t = np.arange(1, n + 1, dtype=np.float64)
    mu = (0.5 + np.cumsum(z)) / (t + 1)
    sigma2 = (0.25 + np.cumsum((z - mu) ** 2)) / (t + 1)
    prev = np.concatenate([[0.25], sigma2[:-1]])
    nu = np.minimum(1.0, np.sqrt(2.0 * math.log(1.0 / delta) / (n * prev)))
    factors = 1.0 - nu * (z - r)
    log_k = np.cumsum(np.log(np.maximum(factors, 1e-300)))
    return float(min(1.0, math.exp(-float(log_k.max()))))


def pvalue(losses: np.ndarray, eps: float, bound: str, *, lo: float = 0.0, hi: float = 1.0,
           delta: float = 0.1) -> float:
    """p-value of H0 "mean loss > eps" with a named bound (:data:`BOUNDS`).

    ``binomial`` and ``hoeffding_bentkus`` need losses in [0, 1]; for a signed loss (lo < 0) they bound its
    positive part, which is never below it, so the p-value stays valid.
    """
    losses = np.asarray(losses, dtype=np.float64)
    if bound == "wsr":
        return wsr_pvalue(losses, eps, lo=lo, hi=hi, delta=delta)
    pos = np.maximum(losses, 0.0)
    if bound == "binomial":
        return binomial_pvalue(pos, eps)
    if bound == "hoeffding_bentkus":
        return hoeffding_bentkus_pvalue(np.minimum(pos, 1.0), eps)
    raise ConfigError(f"unknown risk bound {bound!r}; known: {', '.join(BOUNDS)}")


def upper_bound(losses: np.ndarray, bound: str, confidence: float, *, lo: float = 0.0, hi: float = 1.0) -> float:
    """Upper confidence bound on the mean loss at ``confidence``: the smallest eps the test rejects at level
    1 - confidence (bisection; the p-values are monotone in eps)."""
    delta = 1.0 - confidence
    a, b = lo, hi
    if pvalue(losses, b, bound, lo=lo, hi=hi, delta=delta) > delta:
        return float(hi)
    for _ in range(50):
        mid = 0.5 * (a + b)
        if pvalue(losses, mid, bound, lo=lo, hi=hi, delta=delta) <= delta:
            b = mid
        else:
            a = mid
    return float(b)


def fixed_sequence(pvalues: Sequence[float], delta: float) -> int:
    """Fixed-sequence testing: how many leading hypotheses are rejected at level ``delta`` (the first p > delta
    stops the sequence). The order must not depend on the data the p-values come from."""
    for i, p in enumerate(pvalues):
        if p > delta:
            return i
    return len(pvalues)


# -- losses ----------------------------------------------------------------------------------------------
def exit_losses(predictions: np.ndarray, final_predictions: np.ndarray, y: np.ndarray | None, risk: str
                ) -> tuple[np.ndarray, float, float]:
    """Per-sample losses of answering with ``predictions`` instead of the final exit, and their range.

    - ``label_drop``: 1[wrong] - 1[final wrong], in {-1, 0, 1}; its mean is the accuracy drop (a fraction) against
      the final exit's accuracy on labelled data.
    - ``disagreement``: 1[prediction != final prediction], in {0, 1}; needs no labels, bounds the drop from above,
      and is what a device can watch live (the accuracy monitor).
    """
    if risk == "label_drop":
        if y is None:
            raise ConfigError("risk 'label_drop' needs labels")
        return (predictions != y).astype(np.float64) - (final_predictions != y).astype(np.float64), -1.0, 1.0
    if risk == "disagreement":
        return (predictions != final_predictions).astype(np.float64), 0.0, 1.0
    raise ConfigError(f"unknown risk {risk!r}; known: {', '.join(RISKS)}")


# -- the one-score form ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Guarantee:
    """What a risk-controlled choice certifies (JSON-ready via :meth:`to_dict`).

    Attributes:
        certified: whether the chosen setting passed the test (else it is the safe fallback, risk 0 by construction).
        max_risk: the budget ε (a fraction: 0.01 = one accuracy point).
        confidence: 1 - δ.
        upper_bound: the risk's upper confidence bound at ``confidence`` on the test samples (chosen setting).
        empirical_risk: the chosen setting's mean loss on the test samples.
        p_value: the chosen setting's p-value.
        bound: the p-value method; method: the procedure, in words.
        n_test: samples the p-values came from; n_selection: samples that ordered the candidates (0: none).
        tested, rejected: candidates tested in sequence, and how many were certified.
        threshold: the chosen threshold (one-score form) or None.
    """

    certified: bool
    max_risk: float
    confidence: float
    upper_bound: float
    empirical_risk: float
    p_value: float
    bound: str
    method: str
    n_test: int
    n_selection: int
    tested: int
    rejected: int
    threshold: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def guaranteed_threshold(scores: np.ndarray, loss: np.ndarray, *, max_risk: float, confidence: float,
                         higher_is_confident: bool = True, bound: str = "binomial", lo: float | None = None,
                         hi: float = 1.0) -> Guarantee:
    """The loosest threshold on a score whose risk is <= ``max_risk`` with probability >= ``confidence``.

    A sample is *accepted* (answered by the cheap path) when ``score >= t`` (``higher_is_confident``) or
    ``score <= t``; it then costs ``loss[i]`` (e.g. 1 where the cheap path is wrong and the full model right), and
    nothing otherwise, so the risk of t is mean(loss * accepted). Thresholds are tested from the strictest (accept
    none) to the loosest over every distinct score (fixed-sequence testing; with losses >= 0 the risk only grows
    as t loosens, which makes the data's own scores a valid grid, as in RCPS, Bates et al. 2021, and lets the
    stopping point be found by bisection: O(n log n) for ``binomial``/``hoeffding_bentkus``, O(n^2) for ``wsr``).

    Args:
        scores: one confidence score per calibration sample, (n,).
        loss: per-sample loss when accepted, (n,); in [0, 1] for ``binomial``/``hoeffding_bentkus``, in [lo, hi]
            for ``wsr``.
        max_risk: the budget ε (a fraction).
        confidence: 1 - δ, e.g. 0.9.
        bound: p-value method (:data:`BOUNDS`).
        lo, hi: the loss range (``lo`` defaults to min(0, loss.min())).

    Returns:
        A :class:`Guarantee` whose ``threshold`` accepts nothing when no threshold is certified.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    ell = np.asarray(loss, dtype=np.float64).reshape(-1)
    if s.shape != ell.shape:
        raise ConfigError(f"guaranteed_threshold: {s.size} scores but {ell.size} losses")
    _check_level(max_risk, confidence)
    low = float(min(0.0, ell.min(initial=0.0))) if lo is None else float(lo)
    delta = 1.0 - confidence
    order = np.argsort(-s if higher_is_confident else s, kind="stable")
    ss, ll = s[order], ell[order]
    distinct = np.flatnonzero(np.r_[ss[1:] != ss[:-1], True])  # last index of each run of equal scores
    never = float(ss[0] + 1.0) if higher_is_confident else float(ss[0] - 1.0)
    if not s.size:
        never = math.inf if higher_is_confident else -math.inf
    chosen, p_chosen, tested, rejected = never, 0.0, 0, 0

    def p_at(j: int) -> float:  # p-value of accepting the scores up to the j-th distinct one
        accepted_loss = np.zeros(s.size)
        accepted_loss[:distinct[j] + 1] = ll[:distinct[j] + 1]
        return pvalue(accepted_loss, max_risk, bound, lo=low, hi=hi, delta=delta)

    if bound != "wsr" and low >= 0.0:
        # nonnegative losses: the p-value only grows as the threshold loosens, so the sequence's stopping point
        # is found by bisection (the same answer as testing every threshold in turn)
        a, b = -1, len(distinct)  # p_at(a) <= delta (a = -1: accept nothing), p_at(b) > delta (b = len: beyond)
        while b - a > 1:
            mid = (a + b) // 2
            if p_at(mid) <= delta:
                a = mid
            else:
                b = mid
        rejected, tested = a + 1, min(a + 2, len(distinct))
        if rejected:
            chosen, p_chosen = float(ss[distinct[a]]), p_at(a)
    else:
        for j in range(len(distinct)):
            p = p_at(j)
            tested += 1
            if p > delta:
                break
            rejected += 1
            chosen, p_chosen = float(ss[distinct[j]]), p
    accepted = (s >= chosen) if higher_is_confident else (s <= chosen)
    risk_vec = np.where(accepted, ell, 0.0)
    return Guarantee(
        certified=rejected > 0, max_risk=float(max_risk), confidence=float(confidence),
        upper_bound=upper_bound(risk_vec, bound, confidence, lo=low, hi=hi) if rejected else 0.0,
        empirical_risk=float(risk_vec.mean()) if s.size else 0.0, p_value=float(p_chosen), bound=bound,
        method="fixed-sequence test over thresholds from strictest to loosest (Learn-then-Test / RCPS)",
        n_test=int(s.size), n_selection=0, tested=tested, rejected=rejected, threshold=chosen)


def _check_level(max_risk: float, confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence}")
    if max_risk < 0.0:
        raise ConfigError(f"the risk budget must be >= 0, got {max_risk}")


# -- the many-threshold form (Pareto Testing) ------------------------------------------------------------
def holdout_size(n: int, max_risk: float, confidence: float, *, max_share: float = 0.8) -> int:
    """How many of ``n`` calibration samples should test (the rest select), for {0, 1} losses and the binomial test.

    A setting certifies only with at most k errors on n_test samples, where k grows in steps: n_k, the smallest
    test size that certifies k errors at all, is the best size for that k (more samples at the same k only make
    k errors likelier). The largest n_k within ``max_share`` of the samples is returned (``max_share`` of them when
    even n_0 does not fit: nothing can certify then).

    Example:
        >>> holdout_size(359, 0.01, 0.9)   # zero errors certify from 230 samples on; one error needs 389
        230
    """
    delta, best, k = 1.0 - confidence, None, 0
    limit = int(max_share * n)
    while limit >= 1 and binomial_cdf(k, limit, max_risk) <= delta:  # k errors can certify within the limit
        lo, hi = k, limit  # the smallest size certifying k errors (the tail only shrinks as the size grows)
        while lo < hi:
            mid = (lo + hi) // 2
            if binomial_cdf(k, mid, max_risk) <= delta:
                hi = mid
            else:
                lo = mid + 1
        best, k = lo, k + 1
    return best if best is not None else max(limit, 1)


def split_indices(n: int, selection_fraction: float | None, seed: int, *, max_risk: float = 0.01,
                  confidence: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random split of ``n`` calibration samples into (selection, test) index arrays; with
    ``selection_fraction=None`` the test part has :func:`holdout_size` samples."""
    if selection_fraction is None:
        selection_fraction = 1.0 - holdout_size(n, max_risk, confidence) / n
    if not 0.0 < selection_fraction < 1.0:
        raise ConfigError(f"selection_fraction must be in (0, 1), got {selection_fraction}")
    perm = np.random.default_rng(seed).permutation(n)
    k = int(round(selection_fraction * n))
    k = min(max(k, 1), n - 1)
    return np.sort(perm[:k]), np.sort(perm[k:])


def certify_sequence(candidates: Sequence[Any], losses: Callable[[Any], np.ndarray], *, max_risk: float,
                     confidence: float, bound: str, lo: float, hi: float, safe: Callable[[Any], bool] | None = None,
                     ) -> tuple[list[int], list[float]]:
    """Fixed-sequence testing over ``candidates`` in the given order (safest first).

    Args:
        candidates: configurations, ordered without looking at the test samples.
        losses: ``candidate -> per-sample losses on the test samples``.
        safe: ``candidate -> True`` when its risk is 0 by construction (nobody leaves early): certified without a
            test, and it does not stop the sequence.

    Returns:
        (indices of the certified candidates, p-value of each tested candidate in order).
    """
    _check_level(max_risk, confidence)
    delta = 1.0 - confidence
    certified: list[int] = []
    pvals: list[float] = []
    for i, cand in enumerate(candidates):
        if safe is not None and safe(cand):
            certified.append(i)
            pvals.append(0.0)
            continue
        p = pvalue(losses(cand), max_risk, bound, lo=lo, hi=hi, delta=delta)
        pvals.append(p)
        if p > delta:
            break
        certified.append(i)
    return certified, pvals


def describe_guarantee(calibration: Mapping[str, Any]) -> str:
    """One line on what a bundle's thresholds promise on new data (``calibration`` is the manifest's section): the
    risk-controlled guarantee, or that they are a point estimate."""
    g = calibration.get("guarantee")
    if not g:
        return ("guarantee: none (calibrate.confidence: null): the cheapest point within the budget on the "
                "calibration split; on new data the drop can exceed the budget")
    if not g.get("certified"):
        return (f"guarantee: no setting certified at confidence {g['confidence']:g} on {g['n_test']} held-out "
                "calibration samples: no sample leaves early (risk 0)")
    return (f"guarantee: {g['statement']}; upper bound {100 * g['upper_bound']:.2f} point(s) "
            f"({g['bound']} on {g['n_test']} held-out calibration samples, {g['rejected']} of {g['tested']} settings "
            f"certified; {g['method']})")
