"""Every policy's decisions on crafted logits, with hand-computed expectations."""

import math

import numpy as np
import pytest
from _helpers import policy_input

from edge_runtime import POLICIES, create_policy, simulate_exits
from edge_runtime.errors import ConfigError


def logits_with_max_prob(p: float, classes: int = 4, winner: int = 0) -> np.ndarray:
    """Logits whose softmax gives ``p`` to ``winner`` and (1-p)/(C-1) to each other class."""
    rest = (1 - p) / (classes - 1)
    probs = np.full(classes, rest)
    probs[winner] = p
    return np.log(probs)


def entropy_of(p: float, classes: int = 4) -> float:
    rest = (1 - p) / (classes - 1)
    return -(p * math.log(p) + (classes - 1) * rest * math.log(rest))


def test_confidence_thresholds_per_exit():
    pol = create_policy("confidence", num_exits=3, thresholds=[0.9, 0.6])
    out = np.stack([logits_with_max_prob(p) for p in (0.95, 0.85, 0.5)]).astype(np.float32)
    assert pol.decide(0, out, {}).tolist() == [True, False, False]
    assert pol.decide(1, out, {}).tolist() == [True, True, False]


def test_entropy_against_hand_computed_values():
    pol = create_policy("entropy", num_exits=2, thresholds=entropy_of(0.8) + 1e-6)
    out = np.stack([logits_with_max_prob(p) for p in (0.9, 0.8, 0.7)])
    np.testing.assert_allclose(pol.score(out), [entropy_of(0.9), entropy_of(0.8), entropy_of(0.7)], rtol=1e-9)
    assert pol.decide(0, out, {}).tolist() == [True, True, False]


def test_entropy_normalized_in_unit_interval():
    pol = create_policy("entropy", num_exits=2, thresholds=0.5, normalized=True)
    uniform = np.zeros((1, 8))
    assert pol.score(uniform)[0] == pytest.approx(1.0)
    assert not pol.decide(0, uniform, {})[0]


def test_patience_counts_consecutive_agreement():
    pol = create_policy("patience", num_exits=5, patience=2)
    # sample 0 predicts 1,1,1 -> leaves at exit 2; sample 1 alternates -> never leaves early;
    # sample 2 predicts 0,1,1,1 -> leaves at exit 3
    preds = [[1, 0, 0], [1, 1, 1], [1, 0, 1], [1, 1, 1], [0, 0, 0]]
    outs = [np.eye(3)[p] * 5 for p in preds]
    assert simulate_exits(outs, pol).tolist() == [2, 4, 3]


def test_never_runs_to_the_end():
    pol = create_policy("never", num_exits=3)
    outs = [np.eye(3)[[0, 1]] * 100] * 3
    assert simulate_exits(outs, pol).tolist() == [2, 2]


def test_simulate_with_thresholds_matches_first_confident_exit():
    pol = create_policy("confidence", num_exits=3, thresholds=0.8)
    outs = [
        np.stack([logits_with_max_prob(p) for p in (0.9, 0.5, 0.5)]),
        np.stack([logits_with_max_prob(p) for p in (0.5, 0.85, 0.5)]),
        np.stack([logits_with_max_prob(p) for p in (0.5, 0.5, 0.5)]),
    ]
    assert simulate_exits(outs, pol).tolist() == [0, 1, 2]


@pytest.mark.parametrize("name", POLICIES.names())
def test_every_policy_returns_one_decision_per_sample(name):
    pol = create_policy(name, num_exits=3)
    out = np.random.default_rng(0).standard_normal((7, 5)).astype(np.float32)
    state = pol.start(7)
    mask = pol.decide(0, policy_input(pol, out), state)  # with the outputs beyond `exit` the policy reads
    assert mask.shape == (7,) and mask.dtype == bool
    for v in state.values():
        assert v.shape[0] == 7


def test_bad_threshold_count_names_expected():
    with pytest.raises(ConfigError, match="expected 2 value"):
        create_policy("entropy", num_exits=3, thresholds=[0.1, 0.2, 0.3, 0.4])


def test_unknown_policy_lists_known():
    with pytest.raises(ConfigError, match="known: confidence, entropy"):
        create_policy("nope", num_exits=2)


def test_unknown_kwarg_rejected():
    with pytest.raises(ConfigError, match="unknown argument"):
        create_policy("confidence", num_exits=2, temperature=2)
