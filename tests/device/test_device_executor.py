"""The executor on the device against numpy: per-sample exits for every registered policy, batch = single, named
hidden tensors carried across cuts, model inputs read by a later segment, fixed-batch files, and the ``full`` mode."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edge_runtime
from edge_runtime.errors import BundleError, ConfigError, InputError
from edge_runtime.policies import POLICIES, ExitPolicy, PatiencePolicy, ScorePolicy, create_policy, softmax
from edge_runtime.runtime import Runtime
from edge_runtime.synthetic import AUX, INPUT, reference_exits, synthetic_weights

EXITS, FEATURES, CLASSES = 4, 8, 4
ATOL = 1e-5


def _inputs(rng: np.random.Generator, n: int, aux: bool = False, skip: bool = False) -> Any:
    """``n`` random inputs (an array, or named inputs with ``aux``) whose argmax at every exit is not within float
    error of a tie (exact ties, from a dead hidden state's all-zero logits, are exact on both sides and kept), so
    onnxruntime and numpy must agree on every decision."""
    x = (2.0 * rng.standard_normal((4 * n, FEATURES))).astype(np.float32)
    named = {INPUT: x, AUX: rng.standard_normal((4 * n, FEATURES)).astype(np.float32)} if aux else {INPUT: x}
    top2 = np.sort(np.stack(_reference(named, skip=skip)), axis=-1)[..., -2:]
    margin = top2[..., 1] - top2[..., 0]
    keep = np.flatnonzero(~((margin > 0) & (margin < 1e-4)).any(axis=0))[:n]
    assert len(keep) == n
    return {k: v[keep] for k, v in named.items()} if aux else x[keep]


def _reference(inputs: np.ndarray | Mapping[str, np.ndarray], **options: Any) -> list[np.ndarray]:
    return reference_exits(inputs, synthetic_weights(EXITS, FEATURES, CLASSES, skip=options.get("skip", False)))


def _spread_policy(name: str, ref: list[np.ndarray]) -> ExitPolicy:
    """The registered policy ``name``; a score policy gets per-exit thresholds in the widest gap of its scores near
    the median, so samples leave at every exit and none sits within float error of a threshold."""
    probe = create_policy(name, EXITS) if not POLICIES.get(name).uses_thresholds else \
        create_policy(name, EXITS, [0.0] * (EXITS - 1))
    if not isinstance(probe, ScorePolicy):
        return probe
    thresholds = []
    for out in ref[:-1]:
        s = np.sort(probe.score(out))
        lo, hi = len(s) // 4, 3 * len(s) // 4
        k = lo + int(np.argmax(np.diff(s[lo:hi + 1])))
        assert s[k + 1] - s[k] > 1e-4, "scores too close for a float-safe threshold; change the seed"
        thresholds.append(float((s[k] + s[k + 1]) / 2))
    return create_policy(name, EXITS, thresholds)


def _reads_more_than_exit(policy: ExitPolicy) -> bool:
    """A policy reading a method's extra head output (DeeDiff's ``u``): the synthetic bundle has none; its
    per-sample decisions are tested on its method's bundle."""
    return bool(set(policy.reads) - {"exit"})


def _per_sample_exits(policy: ExitPolicy, ref: list[np.ndarray]) -> np.ndarray:
    """Each sample alone through the policy, exit by exit (no shrinking batch, no executor): where it leaves."""
    n = ref[0].shape[0]
    out = np.full(n, EXITS - 1)
    for j in range(n):
        state = policy.start(1)
        for i in range(EXITS - 1):
            if bool(policy.decide(i, ref[i][j:j + 1], state)[0]):
                out[j] = i
                break
    return out


def _rule_exits(name: str, policy: ExitPolicy, ref: list[np.ndarray]) -> np.ndarray | None:
    """The built-in policies' rules written out in numpy (None for a policy this file does not know)."""
    n = ref[0].shape[0]
    out = np.full(n, EXITS - 1)
    left = np.zeros(n, bool)
    prev, count = np.full(n, -1), np.zeros(n, int)
    for i in range(EXITS - 1):
        p = softmax(ref[i].astype(np.float64))
        if name == "entropy":
            leave = -(p * np.log(np.clip(p, 1e-30, None))).sum(-1) < policy.thresholds[i]
        elif name == "confidence":
            leave = p.max(-1) >= policy.thresholds[i]
        elif name == "never":
            leave = np.zeros(n, bool)
        elif name == "patience":
            assert isinstance(policy, PatiencePolicy)
            pred = ref[i].argmax(-1)
            count = np.where(pred == prev, count + 1, 0)
            prev = pred
            leave = count >= policy.patience
        else:
            return None
        out[leave & ~left] = i
        left |= leave
    return out


@pytest.fixture(scope="module")
def runtime(make_bundle: Callable[..., Path]) -> Runtime:
    return edge_runtime.load_bundle(make_bundle(num_exits=EXITS), threads=1)


def test_every_exit_output_equals_numpy(runtime: Runtime, rng: np.random.Generator) -> None:
    x = _inputs(rng, 32)
    for got, want in zip(runtime.exit_outputs(x), _reference(x), strict=True):
        np.testing.assert_allclose(got, want, atol=ATOL, rtol=1e-5)


@pytest.mark.parametrize("name", POLICIES.names())
def test_per_sample_exits_match_numpy_for_every_policy(runtime: Runtime, rng: np.random.Generator,
                                                       name: str) -> None:
    x = _inputs(rng, 64)
    ref = _reference(x)
    policy = _spread_policy(name, ref)
    if _reads_more_than_exit(policy):
        with pytest.raises(ConfigError, match=r"reads output\(s\) \["):   # the synthetic bundle answers `exit` only
            runtime.infer(x, policy=policy)
        return
    res = runtime.infer(x, policy=policy)
    expected = _per_sample_exits(policy, ref)
    np.testing.assert_array_equal(res.exit_index, expected)
    rule = _rule_exits(name, policy, ref)
    if rule is not None:
        np.testing.assert_array_equal(res.exit_index, rule)
    answered = np.stack([ref[e][j] for j, e in enumerate(res.exit_index)])
    np.testing.assert_allclose(res.outputs, answered, atol=ATOL, rtol=1e-5)
    np.testing.assert_array_equal(res.predictions, answered.argmax(-1))
    assert res.segment_batch_size.tolist() == [int((res.exit_index >= i).sum()) for i in range(EXITS)]
    if name in ("entropy", "confidence"):  # the spread thresholds send samples out at every exit
        assert set(res.exit_index.tolist()) == set(range(EXITS))


@pytest.mark.parametrize("name", POLICIES.names())
def test_a_batch_answers_like_its_samples_one_by_one(runtime: Runtime, rng: np.random.Generator, name: str) -> None:
    x = _inputs(rng, 12)
    policy = _spread_policy(name, _reference(_inputs(np.random.default_rng(0), 64)))
    if _reads_more_than_exit(policy):
        with pytest.raises(ConfigError, match=r"reads output\(s\) \["):   # the synthetic bundle answers `exit` only
            runtime.infer(x, policy=policy)
        return
    batch = runtime.infer(x, policy=policy)
    singles = [runtime.infer(x[j:j + 1], policy=policy) for j in range(len(x))]
    np.testing.assert_array_equal(batch.exit_index, [int(s.exit_index[0]) for s in singles])
    np.testing.assert_allclose(batch.outputs, np.concatenate([s.outputs for s in singles]), atol=1e-6)


def test_two_tensors_cross_each_cut_and_a_later_segment_reads_a_model_input(make_bundle: Callable[..., Path],
                                                                            rng: np.random.Generator) -> None:
    rt = edge_runtime.load_bundle(make_bundle(num_exits=EXITS, skip=True, aux_input=True), threads=1)
    m = rt.manifest
    assert [s.name for s in m.inputs] == [INPUT, AUX]
    assert m.segments[0].input_names == [INPUT]                        # aux is not read until the end ...
    assert m.segments[0].hidden_names == ["hidden_0", "skip_0"]        # ... and two tensors cross every cut
    assert m.segments[1].input_names == ["hidden_0", "skip_0"]
    assert m.segments[-1].input_names == ["hidden_2", "skip_2", AUX]   # ... the final segment reads aux directly
    inputs = _inputs(rng, 48, aux=True, skip=True)
    assert isinstance(inputs, dict)
    ref = _reference(inputs, skip=True)
    for got, want in zip(rt.exit_outputs(inputs), ref, strict=True):
        np.testing.assert_allclose(got, want, atol=ATOL, rtol=1e-5)
    policy = _spread_policy("entropy", ref)
    res = rt.infer(inputs, policy=policy)
    np.testing.assert_array_equal(res.exit_index, _per_sample_exits(policy, ref))
    assert set(res.exit_index.tolist()) == set(range(EXITS))  # the batch shrank at every cut, aux rows with it
    np.testing.assert_allclose(res.outputs, np.stack([ref[e][j] for j, e in enumerate(res.exit_index)]), atol=ATOL)
    full = rt.infer(inputs, mode="full")
    np.testing.assert_allclose(full.outputs, ref[-1], atol=ATOL, rtol=1e-5)


def test_several_inputs_are_checked_by_name(make_bundle: Callable[..., Path], rng: np.random.Generator) -> None:
    rt = edge_runtime.load_bundle(make_bundle(num_exits=EXITS, skip=True, aux_input=True), threads=1)
    inputs = _inputs(rng, 3, aux=True)
    assert isinstance(inputs, dict)
    with pytest.raises(InputError, match=r"takes 2 inputs \['input', 'aux'\]; pass a mapping"):
        rt.infer(inputs[INPUT])
    with pytest.raises(InputError, match=r"missing \['aux'\]"):
        rt.infer({INPUT: inputs[INPUT]})
    with pytest.raises(InputError, match=r"input 'aux' has batch size 2; 'input' has 3"):
        rt.infer({INPUT: inputs[INPUT], AUX: inputs[AUX][:2]})
    with pytest.raises(InputError, match=r"input 'aux' dtype is float64; expected float32"):
        rt.infer({INPUT: inputs[INPUT], AUX: inputs[AUX].astype(np.float64)})


@pytest.mark.parametrize("n", [1, 3, 7])
def test_fixed_batch_files_run_a_batch_in_chunks(make_bundle: Callable[..., Path], rng: np.random.Generator,
                                                 n: int) -> None:
    root = make_bundle(num_exits=EXITS, skip=True, batch_sizes=(1, 4), dynamic_batch=False)
    x = _inputs(rng, n, skip=True)
    ref = _reference(x, skip=True)
    rt = edge_runtime.load_bundle(root, threads=1)
    policy = _spread_policy("entropy", _reference(_inputs(np.random.default_rng(0), 64, skip=True), skip=True))
    res = rt.infer(x, policy=policy)  # 7 = 4 + 1 + 1 + 1, shrinking at each cut
    np.testing.assert_array_equal(res.exit_index, _per_sample_exits(policy, ref))
    np.testing.assert_allclose(res.outputs, np.stack([ref[e][j] for j, e in enumerate(res.exit_index)]), atol=ATOL)
    padded = edge_runtime.load_bundle(root, threads=1, batch_sizes=[4])  # only the 4s: short chunks are padded
    np.testing.assert_allclose(padded.infer(x, mode="full").outputs, ref[-1], atol=ATOL, rtol=1e-5)
    with pytest.raises(BundleError, match=r"no onnx/fp32 file for batch size 2; it has batch sizes \[1, 4\]"):
        edge_runtime.load_bundle(root, batch_sizes=[2])


def test_full_mode_is_the_one_graph_model(runtime: Runtime, rng: np.random.Generator) -> None:
    x = _inputs(rng, 16)
    res = runtime.infer(x, mode="full")
    assert runtime.has_full_model and res.mode == "full"
    np.testing.assert_allclose(res.outputs, _reference(x)[-1], atol=ATOL, rtol=1e-5)
    assert res.exit_index.tolist() == [EXITS - 1] * 16
    assert res.segment_batch_size.tolist() == [16] * EXITS


def test_full_mode_without_a_one_graph_file_runs_every_segment(make_bundle: Callable[..., Path],
                                                              rng: np.random.Generator) -> None:
    rt = edge_runtime.load_bundle(make_bundle(num_exits=EXITS, full_model=False), threads=1)
    x = _inputs(rng, 5)
    res = rt.infer(x, mode="full")
    assert not rt.has_full_model and res.mode == "full"
    np.testing.assert_allclose(res.outputs, _reference(x)[-1], atol=ATOL, rtol=1e-5)
    assert res.segment_batch_size.tolist() == [5] * EXITS


def test_on_exit_reports_each_sample_once(runtime: Runtime, rng: np.random.Generator) -> None:
    x = _inputs(rng, 20)
    policy = _spread_policy("confidence", _reference(x))
    seen: list[tuple[int, int]] = []
    res = runtime.infer(x, policy=policy, on_exit=lambda rows, i, out, t: seen.extend((int(r), i) for r in rows))
    assert sorted(seen) == [(j, int(e)) for j, e in enumerate(res.exit_index)]


def test_unknown_or_unsupported_mode_names_the_bundle(runtime: Runtime) -> None:
    x = np.zeros((1, FEATURES), np.float32)
    with pytest.raises(ConfigError, match=r"unknown inference mode 'fast'; known: .*early_exit.*full"):
        runtime.infer(x, mode="fast")
    if "cbnet" in edge_runtime.MODES:  # a method's mode on a bundle without its parts
        with pytest.raises(ConfigError, match=r"'synthetic' cannot run mode 'cbnet'.*its modes: early_exit, full"):
            runtime.infer(x, mode="cbnet")


@pytest.mark.parametrize(("x", "message"), [
    (np.zeros((2, 7), np.float32), r"shape \(2, 7\) does not match \(N, 8\) at axis 1"),
    (np.zeros((2, 8), np.float64), r"dtype is float64; expected float32"),
    (np.full((2, 8), np.nan, np.float32), r"NaN or Inf values in 2 sample"),
    (np.zeros((0, 8), np.float32), r"batch is empty"),
    ([[0.0] * 8], r"must be a numpy array"),
])
def test_bad_inputs_are_refused(runtime: Runtime, x: Any, message: str) -> None:
    with pytest.raises(InputError, match=message):
        runtime.infer(x)
