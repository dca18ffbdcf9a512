"""Quantized variants of a bundle's files (ONNX int8 static/dynamic, TFLite fp16/int8) and their thresholds.

Variants are named ``format/precision`` and registered in :data:`QUANTIZERS`:

==========================  ====================================================================
``onnx/int8``               onnxruntime static quantization, QDQ, int8 weights (per channel) and
                            activations, MinMax ranges from representative data (the recipe's calibration split)
``onnx/int8_dynamic``       onnxruntime dynamic quantization (uint8 weights: ConvInteger needs them)
``tflite/fp16``             ai-edge-quantizer weight-only float16 (compute stays float32)
``tflite/int8``             ai-edge-quantizer static int8 (``static_wi8_ai8``), representative
                            dataset from the calibration split
``tflite/int8_dynamic``     ai-edge-quantizer dynamic range (``dynamic_wi8_afp32``)
==========================  ====================================================================

Between segments the hidden state travels as float32: ONNX QDQ files keep float inputs/outputs, and
the int8 TFLite files (whose inputs/outputs ai-edge-quantizer makes int8) are quantized/dequantized at
their boundary by the device's LiteRT session with each tensor's own scale and zero point. This costs
one extra rounding per segment boundary and keeps every file runnable, verifiable and chunkable alone.

Quantization shifts exit confidences, so each variant's thresholds are re-calibrated
(:func:`recalibrate_thresholds`) and stored in the manifest under ``policy.variants``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.errors import ConfigError, ExportError
from edge_runtime.policies import ScorePolicy, create_policy
from edge_runtime.registry import Registry
from edge_runtime.runtime import simulate_exits

#: ``(src, dst, representative batches, input name) -> quantization record`` per ``format/precision``
Quantizer = Callable[[Path, Path, Sequence[np.ndarray], str], dict[str, Any]]
QUANTIZERS: Registry[Quantizer] = Registry("quantization variant")

#: variants that need representative data (static quantization: activation ranges)
NEEDS_REPRESENTATIVE_DATA = frozenset({"onnx/int8", "tflite/int8"})


def parse_variant(name: str) -> tuple[str, str]:
    """Split and check ``format/precision``.

    Raises:
        ConfigError: not a registered variant (the message lists them).
    """
    if name not in QUANTIZERS:
        raise ConfigError(f"quantize: unknown variant {name!r}; known: {', '.join(QUANTIZERS.names())}")
    fmt, _, precision = name.partition("/")
    return fmt, precision


def representative_batches(x: np.ndarray, batch_size: int | None, *, max_batches: int = 64) -> list[np.ndarray]:
    """Cut representative inputs into batches of a file's fixed batch size (or of 32 for a dynamic batch)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    b = batch_size or min(32, len(x))
    if len(x) < b:  # too few samples for one fixed batch: repeat them
        x = np.concatenate([x] * (b // len(x) + 1))
    usable = (len(x) // b) * b
    return [x[i:i + b] for i in range(0, usable, b)][:max_batches]


# -- ONNX ---------------------------------------------------------------------------------------------
class _Reader:
    """onnxruntime's ``CalibrationDataReader`` over a list of batches."""

    def __init__(self, name: str, batches: Sequence[np.ndarray]) -> None:
        self._it = iter([{name: b} for b in batches])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:  # not needed by MinMax
        pass


def _preprocessed(src: Path, tmp: Path) -> Path:
    """onnxruntime's recommended pre-processing (shape inference, BN folding) before quantization."""
    from onnxruntime.quantization import quant_pre_process

    out = tmp / "pre.onnx"
    try:
        quant_pre_process(str(src), str(out), skip_symbolic_shape=True)
    except Exception:  # pre-processing is an optimisation; quantize the original when it fails
        return src
    return out


@QUANTIZERS.register("onnx/int8")
def quantize_onnx_static(src: Path, dst: Path, representative: Sequence[np.ndarray], input_name: str) -> dict[str, Any]:
    """Static int8 (QDQ, per-channel int8 weights, int8 activations, MinMax over ``representative``)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    with tempfile.TemporaryDirectory() as tmp:
        quantize_static(str(_preprocessed(src, Path(tmp))), str(dst), _Reader(input_name, representative),
                        quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
    return {"tool": "onnxruntime.quantization.quantize_static", "format": "QDQ", "weights": "int8 per channel",
            "activations": "int8", "range_method": "MinMax", "representative_samples": _count(representative),
            "io": "float32"}


@QUANTIZERS.register("onnx/int8_dynamic")
def quantize_onnx_dynamic(src: Path, dst: Path, representative: Sequence[np.ndarray],
                          input_name: str) -> dict[str, Any]:
    """Dynamic int8: weights quantized ahead (uint8, per tensor), activations at run time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        quantize_dynamic(str(_preprocessed(src, Path(tmp))), str(dst), weight_type=QuantType.QUInt8)
    return {"tool": "onnxruntime.quantization.quantize_dynamic", "weights": "uint8 per tensor",
            "activations": "dynamic uint8", "io": "float32"}


# -- TFLite (ai-edge-quantizer) -------------------------------------------------------------------------
def _aeq(src: Path, dst: Path, recipe: Any, representative: Sequence[np.ndarray] | None, input_name: str) -> None:
    import contextlib
    import io
    import warnings

    try:
        from ai_edge_quantizer import quantizer
    except ImportError as exc:
        raise ConfigError(f"TFLite quantization needs ai-edge-quantizer: pip install 'edge-runtime[tflite]' "
                          f"({exc})") from None
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):  # its per-file progress bars
        warnings.simplefilter("ignore")
        q = quantizer.Quantizer(str(src), recipe)
        result = None
        if representative is not None:
            signature = "serving_default"
            result = q.calibrate({signature: [{input_name: b} for b in representative]}, num_threads=1)
        dst.write_bytes(bytes(q.quantize(result, enable_progress_report=False).quantized_model))


@QUANTIZERS.register("tflite/fp16")
def quantize_tflite_fp16(src: Path, dst: Path, representative: Sequence[np.ndarray], input_name: str) -> dict[str, Any]:
    """Weight-only float16 (ai-edge-quantizer FLOAT_CASTING): half the weight bytes, float32 compute."""
    from ai_edge_quantizer import qtyping, recipe_manager
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    rm = recipe_manager.RecipeManager()
    rm.add_weight_only_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, num_bits=16,
                              algorithm_key=AlgorithmName.FLOAT_CASTING)
    _aeq(src, dst, rm.get_quantization_recipe(), None, input_name)
    return {"tool": "ai-edge-quantizer", "recipe": "weight_only float16", "io": "float32"}


@QUANTIZERS.register("tflite/int8")
def quantize_tflite_int8(src: Path, dst: Path, representative: Sequence[np.ndarray], input_name: str) -> dict[str, Any]:
    """Static int8 (ai-edge-quantizer ``static_wi8_ai8``); int8 I/O, converted to float by the runtime."""
    from ai_edge_quantizer import recipe

    _aeq(src, dst, recipe.static_wi8_ai8(), representative, input_name)
    return {"tool": "ai-edge-quantizer", "recipe": "static_wi8_ai8", "weights": "int8 per channel",
            "activations": "int8", "representative_samples": _count(representative),
            "io": "int8 (the LiteRT session quantizes inputs and dequantizes outputs)"}


@QUANTIZERS.register("tflite/int8_dynamic")
def quantize_tflite_dynamic(src: Path, dst: Path, representative: Sequence[np.ndarray],
                            input_name: str) -> dict[str, Any]:
    """Dynamic range (ai-edge-quantizer ``dynamic_wi8_afp32``): int8 weights, float activations."""
    from ai_edge_quantizer import recipe

    _aeq(src, dst, recipe.dynamic_wi8_afp32(), None, input_name)
    return {"tool": "ai-edge-quantizer", "recipe": "dynamic_wi8_afp32", "weights": "int8 per channel",
            "activations": "float32 (quantized at run time)", "io": "float32"}


def quantize_file(variant: str, src: Path, dst: Path, representative: Sequence[np.ndarray],
                  input_name: str) -> dict[str, Any]:
    """Write the ``variant`` (e.g. ``tflite/int8``) of the fp32 file ``src`` to ``dst``.

    Returns:
        The ``quantization`` record for the file's manifest entry.

    Raises:
        ExportError: the quantizer failed; names the file.

    Example:
        >>> quantize_file("onnx/int8", Path("s0.onnx"), Path("s0.int8.onnx"), batches, "input")  # doctest: +SKIP
    """
    fn = QUANTIZERS.get(variant)
    if variant in NEEDS_REPRESENTATIVE_DATA and not representative:
        raise ConfigError(f"quantize {variant!r} needs representative data (the recipe's calibration split)")
    try:
        return fn(src, dst, representative, input_name)
    except (ConfigError, ExportError):
        raise
    except Exception as exc:  # the quantizers raise many types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"{dst.name}: {variant} quantization failed: {first}") from exc


def _count(batches: Sequence[np.ndarray]) -> int:
    return int(sum(len(b) for b in batches))


# -- thresholds per variant ---------------------------------------------------------------------------
def recalibrate_thresholds(policy_spec: dict[str, Any], reference_outputs: Sequence[np.ndarray],
                           variant_outputs: Sequence[np.ndarray],
                           labels: np.ndarray | None = None) -> dict[str, Any] | None:
    """Thresholds for a quantized variant that keep the fp32 operating point's exit rates.

    For a score policy (entropy, confidence), exit i's threshold is moved through the quantiles: if a
    fraction q of the calibration samples pass the fp32 threshold on fp32 scores, the variant's
    threshold passes the same fraction q of the variant's scores (moved as little as possible: the
    fp32 threshold is kept when it already passes that fraction). The resulting exit distribution is
    checked with :func:`edge_runtime.simulate_exits` (the device's code path) and recorded.

    Args:
        policy_spec: the manifest's ``policy`` (``name``, ``kwargs``, ``thresholds``).
        reference_outputs: per exit, the fp32 outputs on the calibration inputs.
        variant_outputs: per exit, the variant's outputs on the same inputs.
        labels: calibration labels, to record accuracy at both points (optional).

    Returns:
        The ``policy.variants`` record (``thresholds``, ``method``, exit rates, accuracies), or None for
        a policy without thresholds (nothing to re-calibrate).

    Example:
        >>> rec = recalibrate_thresholds(manifest["policy"], fp32_outs, int8_outs)   # doctest: +SKIP
        >>> rec["thresholds"]                                                        # doctest: +SKIP
    """
    num_exits = len(reference_outputs)
    ref_policy = create_policy(policy_spec["name"], num_exits, policy_spec["thresholds"] or None,
                               **policy_spec["kwargs"])
    if not isinstance(ref_policy, ScorePolicy) or not ref_policy.thresholds:
        return None
    thresholds = []
    for i in range(num_exits - 1):
        ref_scores = ref_policy.score(reference_outputs[i])
        var_scores = np.sort(ref_policy.score(variant_outputs[i]))
        passed = ref_policy.decide(i, reference_outputs[i], ref_policy.start(len(ref_scores)))
        k = int(round(float(np.mean(passed)) * len(var_scores)))  # how many must pass on the variant
        if not ref_policy.lower_is_confident:
            var_scores = var_scores[::-1]  # most confident first
        edge_in = var_scores[k - 1] if k > 0 else None   # least confident sample that passes
        edge_out = var_scores[k] if k < len(var_scores) else None  # most confident sample that stays
        lo, hi = (edge_in, edge_out) if ref_policy.lower_is_confident else (edge_out, edge_in)
        t = _between(float(ref_policy.thresholds[i]), lo, hi)
        thresholds.append(float(t))
    var_policy = create_policy(policy_spec["name"], num_exits, thresholds, **policy_spec["kwargs"])
    ref_exits = simulate_exits(list(reference_outputs), ref_policy)
    var_exits = simulate_exits(list(variant_outputs), var_policy)
    record: dict[str, Any] = {
        "thresholds": thresholds,
        "method": "per-exit score quantiles matched to the fp32 thresholds' pass rates on the calibration inputs",
        "calibration_samples": int(len(ref_exits)),
        "exit_rates": _rates(var_exits, num_exits),
        "reference_exit_rates": _rates(ref_exits, num_exits),
    }
    if labels is not None:
        labels = np.asarray(labels)
        record["accuracy"] = _accuracy(variant_outputs, var_exits, labels)
        record["reference_accuracy"] = _accuracy(reference_outputs, ref_exits, labels)
    return record


def _between(t: float, lo: float | None, hi: float | None) -> float:
    """``t`` moved as little as possible into the open gap (lo, hi) (keeps the fp32 threshold when it fits)."""
    if lo is not None and hi is not None:
        d = (hi - lo) / 4
        return float(lo) if d <= 0 else float(np.clip(t, lo + d, hi - d))
    if hi is not None:
        return float(min(t, hi - 1e-6 * max(1.0, abs(hi))))
    if lo is not None:
        return float(max(t, lo + 1e-6 * max(1.0, abs(lo))))
    return t


def _rates(exit_index: np.ndarray, num_exits: int) -> list[float]:
    return (np.bincount(exit_index, minlength=num_exits) / max(len(exit_index), 1)).round(6).tolist()


def _accuracy(outputs: Sequence[np.ndarray], exit_index: np.ndarray, labels: np.ndarray) -> float:
    stacked = np.stack([o.argmax(axis=-1) for o in outputs])  # (exits, N)
    pred = stacked[exit_index, np.arange(len(exit_index))]
    return float(np.mean(pred == labels))
