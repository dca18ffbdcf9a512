"""PALBERT's exit policies on the device (numpy only): the Q-exit decides per sample from its own running product,
so the shrinking-batch executor gives exactly the batch-1 loop's exits; the sampling exit; the missing-output error."""

from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.errors import ConfigError
from edge_runtime.executor import decide_exits, simulate_exits
from edge_runtime.policies import POLICIES, create_policy


def _outputs(n: int, exits: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"exit": rng.standard_normal((n, 4)).astype(np.float32),
             "lambda": rng.uniform(0.0, 0.6, n).astype(np.float32)} for _ in range(exits)]


def _batch1(outs: list[dict[str, np.ndarray]], row: int, q: float) -> int:
    """The reference loop for one sample (``lambdas.item()``): CDF = 1 - prod(1 - lambda), leave when > q."""
    survive = 1.0
    for i, o in enumerate(outs):
        survive *= 1.0 - float(o["lambda"][row])
        if 1.0 - survive > q:
            return i
    return len(outs) - 1


@pytest.mark.parametrize("q", [0.1, 0.5, 0.9])
def test_batched_q_exit_equals_the_batch_1_loop(q: float) -> None:
    outs = _outputs(257, 6, seed=int(q * 10))
    seen: list[np.ndarray] = []

    def run_segment(i, feeds, alive):
        seen.append(alive.copy())
        return {k: v[alive] for k, v in outs[i].items()}

    run = decide_exits(run_segment, 6, {"x": np.zeros((257, 1))}, create_policy("q_exit", 6, q), carry=[()] * 6,
                       keep=("lambda",))
    want = np.array([_batch1(outs, r, q) for r in range(257)])
    np.testing.assert_array_equal(run.exit_index, want)
    for r in range(257):
        np.testing.assert_array_equal(run.outputs[r], outs[want[r]]["exit"][r])
    assert [len(a) for a in seen] == run.segment_batch_size[:len(seen)].tolist()   # the batch shrank
    assert len(seen[-1]) < 257
    for r in range(0, 257, 17):   # the same sample alone through the same loop
        alone = simulate_exits([{k: v[r:r + 1] for k, v in o.items()} for o in outs], create_policy("q_exit", 6, q))
        assert int(alone[0]) == want[r]


def test_q_exit_default_is_the_papers_half_and_reads_lambda() -> None:
    pol = create_policy("q_exit", 4)
    assert pol.thresholds == [0.5, 0.5, 0.5] and pol.reads == ("exit", "lambda")
    with pytest.raises(ConfigError, match="'lambda' output"):
        pol.decide(0, {"exit": np.zeros((2, 3))}, pol.start(2))


def test_ponder_sample_leaves_with_probability_lambda() -> None:
    assert "ponder_sample" in POLICIES
    n = 4000
    outs = [{"exit": np.zeros((n, 2)), "lambda": np.full(n, 0.3)} for _ in range(3)]
    idx = simulate_exits(outs, create_policy("ponder_sample", 3, seed=1))
    frac = np.bincount(idx, minlength=3) / n
    assert frac[0] == pytest.approx(0.3, abs=0.03) and frac[1] == pytest.approx(0.21, abs=0.03)
    again = simulate_exits(outs, create_policy("ponder_sample", 3, seed=1))
    np.testing.assert_array_equal(idx, again)
    with pytest.raises(ConfigError, match="no thresholds"):
        create_policy("ponder_sample", 3, 0.5)
