"""The executor: shrinking batch, batch-vs-single equality, modes, overrides."""

import numpy as np
import pytest

import edge_runtime
from edge_runtime.calibration import threshold_candidates
from edge_runtime.errors import ConfigError


@pytest.fixture(scope="module")
def rt(bundles):
    return edge_runtime.load_bundle(bundles["tiny_cnn"], threads=1)


def _mixed_thresholds(rt, x):
    """Per-exit entropy thresholds near the median entropy, so some samples leave at each exit; halfway between
    neighbouring scores (as calibration places them), so no sample sits within float error of a threshold."""
    pol = edge_runtime.create_policy("entropy", rt.num_exits, 1.0)
    outs = rt.exit_outputs(x)
    return [threshold_candidates(pol, pol.score(o), [0.5])[0] for o in outs[:-1]]


@pytest.mark.parametrize("name", ["tiny_cnn", "tiny_transformer"])
def test_batch_equals_each_sample_alone(bundles, name):
    rt = edge_runtime.load_bundle(bundles[name], threads=1)
    x = np.random.default_rng(3).standard_normal((9, 1, 16, 16)).astype(np.float32)
    thr = _mixed_thresholds(rt, x)
    batch = rt.infer(x, policy="entropy", thresholds=thr)
    assert len(set(batch.exit_index.tolist())) > 1, "thresholds should spread samples over exits"
    for i in range(len(x)):
        one = rt.infer(x[i:i + 1], policy="entropy", thresholds=thr)
        assert one.exit_index[0] == batch.exit_index[i]
        assert one.predictions[0] == batch.predictions[i]
        np.testing.assert_allclose(one.outputs[0], batch.outputs[i], atol=1e-5, rtol=1e-5)


def test_batch_shrinks_as_samples_leave(rt):
    x = np.random.default_rng(4).standard_normal((16, 1, 16, 16)).astype(np.float32)
    thr = _mixed_thresholds(rt, x)
    res = rt.infer(x, policy="entropy", thresholds=thr)
    counts = np.bincount(res.exit_index, minlength=rt.num_exits)
    expected_entering = [16 - counts[:i].sum() for i in range(rt.num_exits)]
    assert res.segment_batch_size.tolist() == expected_entering
    assert expected_entering[-1] < 16


def test_answering_output_matches_that_exit(rt):
    x = np.random.default_rng(5).standard_normal((8, 1, 16, 16)).astype(np.float32)
    thr = _mixed_thresholds(rt, x)
    res = rt.infer(x, policy="entropy", thresholds=thr)
    all_outs = rt.exit_outputs(x)
    for i in range(8):
        np.testing.assert_allclose(res.outputs[i], all_outs[res.exit_index[i]][i], atol=1e-5)
        assert res.predictions[i] == all_outs[res.exit_index[i]][i].argmax()


def test_all_leave_at_first_exit_skips_later_segments(rt):
    x = np.random.default_rng(6).standard_normal((4, 1, 16, 16)).astype(np.float32)
    res = rt.infer(x, policy="entropy", thresholds=100.0)  # every entropy is below 100
    assert res.exit_index.tolist() == [0, 0, 0, 0]
    assert res.segment_batch_size.tolist() == [4, 0, 0]
    assert res.segment_latency_s[1:].tolist() == [0.0, 0.0]


def test_never_and_full_agree(rt):
    x = np.random.default_rng(7).standard_normal((6, 1, 16, 16)).astype(np.float32)
    never = rt.infer(x, policy="never")
    full = rt.infer(x, mode="full")
    assert rt.has_full_model
    assert never.exit_index.tolist() == [rt.num_exits - 1] * 6
    np.testing.assert_allclose(never.outputs, full.outputs, atol=1e-5)
    assert full.mode == "full"


def test_sample_latency_is_monotone_in_exit_index(rt):
    x = np.random.default_rng(8).standard_normal((32, 1, 16, 16)).astype(np.float32)
    res = rt.infer(x, policy="entropy", thresholds=_mixed_thresholds(rt, x))
    for a in range(rt.num_exits - 1):
        ea, eb = res.sample_latency_s[res.exit_index == a], res.sample_latency_s[res.exit_index == a + 1]
        if ea.size and eb.size:
            assert ea.max() <= eb.min()
    assert res.latency_s >= res.sample_latency_s.max()


def test_unknown_mode_and_policy_are_config_errors(rt):
    x = np.zeros((1, 1, 16, 16), np.float32)
    with pytest.raises(ConfigError, match="unknown inference mode 'warp'"):
        rt.infer(x, mode="warp")
    with pytest.raises(ConfigError, match="unknown exit policy"):
        rt.infer(x, policy="nope")


def test_result_to_dict_is_json_ready(rt):
    import json

    res = rt.infer(np.zeros((2, 1, 16, 16), np.float32))
    d = json.loads(json.dumps(res.to_dict()))
    assert len(d["samples"]) == 2 and {"prediction", "exit_index", "output", "latency_s"} <= set(d["samples"][0])
