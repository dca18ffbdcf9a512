"""The batch-1 hot path: a policy's single-sample decision equals its batch decision, the one-sample and whole-batch
shortcuts of the executor answer exactly as the shrinking loop, and the cheap input check still refuses every
non-finite value."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edge_runtime
from edge_runtime.errors import InputError
from edge_runtime.executor import decide_exits, simulate_exits
from edge_runtime.manifest import EXIT_OUTPUT, SCORE_OUTPUT
from edge_runtime.policies import POLICIES, ExitPolicy, ScorePolicy, create_policy
from edge_runtime.runtime import _all_finite
from edge_runtime.synthetic import write_synthetic_bundle


def _policy_view(policy: ExitPolicy, outs: dict[str, np.ndarray], rows: slice) -> Any:
    """What the executor hands a policy for these rows: the logits alone, or the outputs it reads by name."""
    reads = tuple(policy.reads)
    return outs[EXIT_OUTPUT][rows] if reads == (EXIT_OUTPUT,) else {k: outs[k][rows] for k in reads}


@pytest.mark.parametrize("name", POLICIES.names())
def test_decide_one_equals_the_batch_decision(name: str) -> None:
    rng = np.random.default_rng(0)
    outs = {EXIT_OUTPUT: rng.standard_normal((64, 5)).astype(np.float32) * 3,
            "lambda": rng.uniform(0.01, 0.99, 64).astype(np.float32)}  # outputs beyond `exit` (PALBERT's lambda)
    for k in create_policy(name, 3).reads:  # any other output the policy reads (DeeDiff's u): one value per sample
        outs.setdefault(k, rng.uniform(0.01, 0.99, 64).astype(np.float32))
    for exit_index in (0, 1):
        # fresh policies for the batch and the one-by-one loop: a sampling policy's draws continue across calls
        policy, one = create_policy(name, 3), create_policy(name, 3)
        batch_state = policy.start(64)
        want = np.asarray(policy.decide(exit_index, _policy_view(policy, outs, slice(None)), batch_state), dtype=bool)
        for i in range(64):
            one_state = {k: v[i:i + 1].copy() for k, v in one.start(64).items()}
            got = one.decide_one(exit_index, _policy_view(one, outs, slice(i, i + 1)), one_state)
            assert type(got) is bool and got == want[i], (name, exit_index, i)


@pytest.mark.parametrize("name", [n for n in POLICIES.names() if issubclass(POLICIES.get(n), ScorePolicy)])
def test_score_policy_reads_a_precomputed_score_alike(name: str) -> None:
    rng = np.random.default_rng(1)
    outs = [rng.standard_normal((200, 5)).astype(np.float32) * 3 for _ in range(3)]
    probe = create_policy(name, 3)
    assert isinstance(probe, ScorePolicy)
    thr = [float(np.quantile(probe.score(o), 0.5)) for o in outs[:-1]]
    by_logits = simulate_exits(outs, create_policy(name, 3, thr))
    scored = [{EXIT_OUTPUT: o, SCORE_OUTPUT: probe.score(o)} for o in outs[:-1]] + [outs[-1]]
    reading = create_policy(name, 3, thr)
    assert isinstance(reading, ScorePolicy)
    by_score = simulate_exits(scored, reading.read_score_output())
    np.testing.assert_array_equal(by_logits, by_score)
    for i in range(20):  # batch 1 through the one-sample path
        one = simulate_exits([{k: v[i:i + 1] for k, v in d.items()} if isinstance(d, dict) else d[i:i + 1]
                              for d in scored], reading)
        assert one[0] == by_logits[i]


def test_executor_shortcuts_answer_like_the_shrinking_loop() -> None:
    rng = np.random.default_rng(2)
    outs = [rng.standard_normal((50, 4)).astype(np.float32) for _ in range(3)]
    seen: list[tuple[list[int], int]] = []

    def run(i: int, feeds: dict, alive: np.ndarray) -> dict:
        return {EXIT_OUTPUT: outs[i][alive]}

    everyone = create_policy("confidence", 3, 0.0)  # the whole batch leaves at exit 0
    res = decide_exits(run, 3, {"x": np.zeros((50, 1))}, everyone, on_exit=lambda r, e, o, t: seen.append((list(r), e)))
    assert res.exit_index.tolist() == [0] * 50 and np.array_equal(res.outputs, outs[0])
    assert seen == [(list(range(50)), 0)] and res.segment_batch_size.tolist() == [50, 0, 0]
    nobody = create_policy("confidence", 3, 2.0)  # nobody leaves early: the whole batch answers at the last exit
    res = decide_exits(run, 3, {"x": np.zeros((50, 1))}, nobody)
    assert res.exit_index.tolist() == [2] * 50 and np.array_equal(res.outputs, outs[2])
    assert res.segment_batch_size.tolist() == [50, 50, 50] and (res.sample_latency_s > 0).all()


@pytest.mark.filterwarnings("ignore:invalid value encountered in dot")
def test_cheap_finiteness_check_finds_every_non_finite_value(tmp_path: Path) -> None:
    rt = edge_runtime.load_bundle(write_synthetic_bundle(tmp_path / "b", num_exits=2), threads=1)
    x = np.random.default_rng(3).standard_normal((5, 8)).astype(np.float32) * 1e30  # huge but finite
    rt.feeds(x)
    for bad in (np.nan, np.inf, -np.inf):
        for row, col in ((0, 0), (2, 5), (4, 7)):
            y = x.copy()
            y[row, col] = bad
            with pytest.raises(InputError, match="NaN or Inf values in 1 sample"):
                rt.feeds(y)
    for dtype in (np.float16, np.float32, np.float64):
        a = np.ones((3, 4), dtype=dtype)
        assert _all_finite(a)
        a[1, 2] = np.nan
        assert not _all_finite(a)
        a[1, 2] = np.inf
        assert not _all_finite(a)
    assert _all_finite(np.full((2, 3), np.finfo(np.float32).max, dtype=np.float32))  # no overflow false alarm
