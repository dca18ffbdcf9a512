"""In-graph exit scores (converters/export/scores.py): each equals its policy's numpy score, the exported segments
output it, and the device decides from it exactly as from the logits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import edge_runtime
from converters.export.scores import SCORE_GRAPHS, score_graph
from edge_runtime.manifest import SCORE_OUTPUT
from edge_runtime.policies import ScorePolicy, create_policy

KWARGS = {"entropy": [{"normalized": False}, {"normalized": True}], "confidence": [{}]}


@pytest.mark.parametrize("name", SCORE_GRAPHS.names())
def test_in_graph_score_equals_the_policys_numpy_score(name: str) -> None:
    logits = np.random.default_rng(0).standard_normal((64, 7)).astype(np.float32) * 4
    logits[0] = 0.0  # a uniform row
    logits[1, 0] = 80.0  # a saturated one
    for kwargs in KWARGS.get(name, [{}]):
        policy = create_policy(name, 2, None, **kwargs)
        assert isinstance(policy, ScorePolicy)
        got = score_graph(name, kwargs)(torch.from_numpy(logits)).numpy().astype(np.float64)
        np.testing.assert_allclose(got, policy.score(logits), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["tiny_cnn", "tiny_transformer"])
def test_exported_segments_output_the_score_and_the_device_uses_it(bundles: dict[str, Path], name: str) -> None:
    rt = edge_runtime.load_bundle(bundles[name], threads=1)
    m = rt.manifest
    spec = m.policy
    for seg in m.segments[:-1]:
        assert SCORE_OUTPUT in seg.output_names
        assert seg.extra["score"] == {"policy": spec.name, "kwargs": spec.kwargs}
    assert SCORE_OUTPUT not in m.segments[-1].output_names
    for ex in m.verification.exits[:-1]:
        assert ex["score_max_abs_diff"] <= m.verification.tolerance
    assert rt.in_graph_score == (spec.name, spec.kwargs)
    assert rt.default_policy.reads == (SCORE_OUTPUT,)
    x = np.random.default_rng(1).standard_normal((200, *rt.input_spec.shape[1:])).astype(np.float32)
    # the graphs' scores equal the numpy scores of their own exit outputs
    feeds = rt.feeds(x)
    for i, runner in enumerate(rt.segments[:-1]):
        outs = runner.run(feeds)
        np.testing.assert_allclose(outs[SCORE_OUTPUT], rt.default_policy.score(outs["exit"]), rtol=1e-5, atol=1e-6)
        feeds = {**feeds, **{k: v for k, v in outs.items() if k in rt.segments[i + 1].input_names}}
    # deciding from the in-graph score = deciding from the logits (thresholds halfway between neighbouring scores,
    # as calibration places them, in the widest gap of the middle half: the float32 score cannot cross them)
    pol = rt.default_policy
    assert isinstance(pol, ScorePolicy)
    scores = [_mid_gap(pol.score(o)) for o in rt.exit_outputs(x)[:-1]]
    bound = rt.make_policy(None, scores)
    numpy_side = create_policy(spec.name, rt.num_exits, scores, **spec.kwargs)
    assert bound.reads == (SCORE_OUTPUT,) and numpy_side.reads == ("exit",)
    a, b = rt.infer(x, policy=bound), rt.infer(x, policy=numpy_side)
    assert len(set(a.exit_index.tolist())) > 1
    np.testing.assert_array_equal(a.exit_index, b.exit_index)
    np.testing.assert_array_equal(a.outputs, b.outputs)


def test_another_policy_ignores_the_in_graph_score(cnn_bundle: Path) -> None:
    rt = edge_runtime.load_bundle(cnn_bundle, threads=1)
    assert rt.make_policy("confidence", 0.5).reads == ("exit",)  # the graphs score entropy
    assert rt.make_policy(None, None, normalized=True).reads == ("exit",)  # other kwargs: another score


def _mid_gap(scores: np.ndarray) -> float:
    s = np.unique(scores)
    lo, hi = len(s) // 4, 3 * len(s) // 4
    k = lo + int(np.argmax(np.diff(s[lo:hi + 1])))
    assert s[k + 1] - s[k] > 8 * np.finfo(np.float32).eps * max(1.0, abs(s[k]))  # well above float32 rounding
    return float((s[k] + s[k + 1]) / 2)
