"""TFLite segments and quantized variants: per-exit equivalence on both backends, chunking, per-variant
thresholds, the refused tflite-runtime 2.14 + dynamic-range combination, missing-file errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from _helpers import HEAVY_MODULES, manifest_json

import edge_runtime
from edge_runtime.backends import FORMAT_BACKENDS
from edge_runtime.errors import BundleError, ConfigError
from edge_runtime.executor import GraphRunner

ONNX_VARIANTS = ("onnx/int8", "onnx/int8_dynamic")
TFLITE_VARIANTS = ("tflite/fp16", "tflite/int8", "tflite/int8_dynamic")


def _needs_tflite() -> None:
    for mod in ("litert_torch", "ai_edge_quantizer", "ai_edge_litert"):
        pytest.importorskip(mod)


@pytest.fixture(scope="module")
def tiny():
    import torch

    from converters import create_model

    torch.manual_seed(0)
    return create_model("tiny_cnn", exits_after=[0]).eval()  # 2 segments: keeps the conversions few


def _export(tmp_path_factory, tiny, **kwargs):
    import torch

    from converters import export_bundle

    cal = torch.randn(48, 1, 16, 16, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        ent = edge_runtime.create_policy("entropy", 2, 1.0).score(tiny(cal)[0].numpy())
    return export_bundle(
        tiny, torch.randn(1, 1, 16, 16), tmp_path_factory.mktemp("variants") / "b", name="tiny2",
        policy="entropy", thresholds=[float(np.median(ent))],  # half the samples leave at exit 0
        calibration_inputs=cal.numpy(), **kwargs,
    )


@pytest.fixture(scope="module")
def onnx_bundle(tmp_path_factory, tiny):
    """ONNX fp32 + static and dynamic int8 (needs no TFLite package), thresholds re-calibrated per variant."""
    return _export(tmp_path_factory, tiny, quantize=ONNX_VARIANTS)


@pytest.fixture(scope="module")
def variant_bundle(tmp_path_factory, tiny):
    """ONNX + TFLite (batch-2 files) with every TFLite quantized variant."""
    _needs_tflite()
    return _export(tmp_path_factory, tiny, backends=("onnx", "tflite"), tflite_batch_sizes=(2,),
                   quantize=TFLITE_VARIANTS)


@pytest.fixture()
def bundle_for(request):
    """The bundle holding a backend's files (the TFLite one only where its packages are installed)."""
    return lambda backend: request.getfixturevalue("variant_bundle" if backend == "litert" else "onnx_bundle")


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _x(batch: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 1, 16, 16)).astype(np.float32)


@pytest.mark.parametrize("backend,precision,atol", [
    ("onnxruntime", "fp32", 1e-4), ("litert", "fp32", 1e-4), ("litert", "fp16", 1e-2),
    ("onnxruntime", "int8", 0.05), ("onnxruntime", "int8_dynamic", 0.05), ("litert", "int8", 0.05),
    ("litert", "int8_dynamic", 0.05),
])
def test_every_exit_matches_torch_on_both_backends(bundle_for, tiny, backend, precision, atol):
    import torch

    rt = edge_runtime.load_bundle(bundle_for(backend), backend=backend, precision=precision, threads=1)
    x = _x(5, 1)  # odd: the batch-2 TFLite files run it as 2 + 2 + 1 (padded)
    with torch.no_grad():
        ref = [o.numpy() for o in tiny(torch.from_numpy(x))]
    got = rt.exit_outputs(x)
    for r, g in zip(ref, got):
        np.testing.assert_allclose(g, r, atol=atol, rtol=0)
    full = rt.infer(x, mode="full").outputs
    np.testing.assert_allclose(full, ref[-1], atol=atol, rtol=0)
    recorded = [v for v in rt.manifest.verification.variants
                if (v["format"], v["precision"]) == (rt.backend.file_format, precision)]
    if (backend, precision) != ("onnxruntime", "fp32"):
        assert len(recorded) == 1 and len(recorded[0]["exits"]) == 2
        assert recorded[0]["passed"] is (True if precision in ("fp32", "fp16") else None)


def test_tflite_files_are_fixed_batch_and_chunked(variant_bundle):
    rt = edge_runtime.load_bundle(variant_bundle, backend="litert", threads=1)
    assert [s.batch_size for runner in rt.segments for s in runner._fixed] == [2, 2]
    x = _x(5, 2)
    thr = [float(np.median(edge_runtime.create_policy("entropy", 2, 1.0).score(rt.exit_outputs(x)[0])))]
    batch = rt.infer(x, policy="entropy", thresholds=thr)
    assert 0 < batch.segment_batch_size[1] < 5
    for i in range(5):
        one = rt.infer(x[i:i + 1], policy="entropy", thresholds=thr)
        assert one.exit_index[0] == batch.exit_index[i]
        np.testing.assert_allclose(one.outputs[0], batch.outputs[i], atol=1e-5)


class _Counting:
    """A fixed-batch session that records the batch it ran."""

    def __init__(self, b: int, calls: list[int]) -> None:
        self.batch_size, self.calls = b, calls
        self.input_names, self.output_names = ["input"], ["exit"]

    def run(self, inputs):
        x = inputs["input"]
        assert x.shape[0] == self.batch_size
        self.calls.append(self.batch_size)
        return [x.reshape(len(x), -1).sum(axis=1, keepdims=True)]


@pytest.mark.parametrize("sizes,n,expected", [((2,), 5, [2, 2, 2]), ((1, 4), 5, [4, 1]), ((4, 8), 3, [4]),
                                              ((1, 2, 8), 11, [8, 2, 1])])
def test_chunking_picks_the_best_fitting_file(sizes, n, expected):
    calls: list[int] = []
    runner = GraphRunner([_Counting(b, calls) for b in sizes], "seg")
    x = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
    out = runner.run({"input": x})["exit"]
    assert calls == expected
    np.testing.assert_allclose(out[:, 0], x.sum(axis=1))


@pytest.mark.parametrize("backend,variants", [("onnxruntime", ONNX_VARIANTS), ("litert", TFLITE_VARIANTS)])
def test_thresholds_are_recalibrated_per_variant(bundle_for, backend, variants):
    path = bundle_for(backend)
    m = manifest_json(path)
    assert sorted(m["policy"]["variants"]) == sorted(variants)
    for key, rec in m["policy"]["variants"].items():
        fmt, precision = key.split("/")
        rt = edge_runtime.load_bundle(path, backend=FORMAT_BACKENDS[fmt], precision=precision)
        assert rt.default_policy.thresholds == rec["thresholds"]
        # the variant's calibrated point keeps the fp32 point's exit rates (within one sample of 48)
        assert np.abs(np.subtract(rec["exit_rates"], rec["reference_exit_rates"])).max() <= 1 / 48 + 1e-9
    fp32 = edge_runtime.load_bundle(path, backend=backend)
    assert fp32.default_policy.thresholds == m["policy"]["thresholds"]


@pytest.mark.parametrize("precision", ["int8", "int8_dynamic"])
def test_a_quantized_runtime_decides_on_the_numpy_score_of_its_logits(onnx_bundle, precision):
    """The in-graph score was verified at fp32 only; the variant's thresholds were calibrated on the numpy score."""
    fp32 = edge_runtime.load_bundle(onnx_bundle, threads=1)
    assert fp32.in_graph_score is not None                        # the files do carry the score
    rt = edge_runtime.load_bundle(onnx_bundle, precision=precision, threads=1)
    assert rt.in_graph_score is None and rt.default_policy.reads == ("exit",)
    x = _x(64, 3)
    spec = rt.manifest.policy
    numpy_side = edge_runtime.create_policy(spec.name, rt.num_exits, list(rt.default_policy.thresholds),
                                            **spec.kwargs)
    want = edge_runtime.simulate_exits(rt.exit_outputs(x), numpy_side)
    np.testing.assert_array_equal(rt.infer(x).exit_index, want)


def test_recalibration_restores_exit_rates_when_confidences_shift():
    from converters.export.quantize import recalibrate_thresholds

    rng = np.random.default_rng(0)
    ref = [rng.standard_normal((200, 10)) * s for s in (2.0, 3.0, 4.0)]
    shifted = [o * 0.6 for o in ref]  # flatter softmax: higher entropy, lower confidence everywhere
    for name, thr in (("entropy", [1.2, 1.0]), ("confidence", [0.6, 0.7])):
        spec = {"name": name, "kwargs": {}, "thresholds": thr}
        pol = edge_runtime.create_policy(name, 3, thr)
        stale = np.bincount(edge_runtime.simulate_exits(shifted, pol), minlength=3)
        rec = recalibrate_thresholds(spec, ref, shifted, labels=np.zeros(200, int))
        assert rec["thresholds"] != thr
        want = np.bincount(edge_runtime.simulate_exits(ref, pol), minlength=3)
        got = np.bincount(edge_runtime.simulate_exits(shifted, edge_runtime.create_policy(name, 3, rec["thresholds"])),
                          minlength=3)
        assert np.abs(got - want).max() <= 2 < np.abs(stale - want).max()
        assert rec["exit_rates"] == (got / 200).round(6).tolist() and "accuracy" in rec
    assert recalibrate_thresholds({"name": "patience", "kwargs": {}, "thresholds": []}, ref, shifted) is None


def test_bundle_lists_its_variants(bundle_for, cnn_bundle):
    assert edge_runtime.read_bundle(bundle_for("onnxruntime")).variants() == [
        ("onnx", "fp32", [None]), ("onnx", "int8", [None]), ("onnx", "int8_dynamic", [None])]
    if all(_importable(m) for m in ("litert_torch", "ai_edge_quantizer", "ai_edge_litert")):
        assert edge_runtime.read_bundle(bundle_for("litert")).variants() == [
            ("onnx", "fp32", [None]), ("tflite", "fp32", [2]), ("tflite", "fp16", [2]), ("tflite", "int8", [2]),
            ("tflite", "int8_dynamic", [2])]
    onnx_only = edge_runtime.read_bundle(cnn_bundle)
    assert onnx_only.variants() == [("onnx", "fp32", [None])]
    assert not onnx_only.manifest.policy.variants and not onnx_only.manifest.verification.variants


def test_variant_files_have_user_modes(onnx_bundle, variant_bundle):
    """Quantizers and the TFLite converter write through temporary files; the bundle's files still get the modes
    a service account can read (issue 16, item 5)."""
    from _helpers import assert_user_modes

    assert_user_modes(onnx_bundle)
    assert_user_modes(variant_bundle)


def test_known_bad_combination_is_refused(variant_bundle):
    from ai_edge_litert.interpreter import Interpreter

    from edge_runtime.backends.litert_backend import check_runtime_supports, model_quantization

    m = manifest_json(variant_bundle)
    kinds = {}
    for e in m["segments"][0]["files"]:
        if e["format"] == "tflite":
            kinds[e["precision"]] = model_quantization(Interpreter(model_path=str(variant_bundle / e["path"])))
    assert kinds == {"fp32": "float", "fp16": "fp16_weights", "int8": "int8_static", "int8_dynamic": "dynamic_range"}
    with pytest.raises(BundleError, match="tflite-runtime 2.14.0 computes dynamic-range int8 models wrongly"):
        check_runtime_supports("tflite-runtime", "2.14.0", numpy_version="1.26.4", quantization=kinds["int8_dynamic"])
    with pytest.raises(ConfigError, match="needs numpy<2"):
        check_runtime_supports("tflite-runtime", "2.14.0", numpy_version="2.1.3", quantization=kinds["fp32"])
    for precision in ("fp32", "fp16", "int8"):  # 2.14 runs the other kinds
        check_runtime_supports("tflite-runtime", "2.14.0", numpy_version="1.26.4", quantization=kinds[precision])
    check_runtime_supports("tflite-runtime", "2.16.1", numpy_version="1.26.4", quantization=kinds["int8_dynamic"])
    check_runtime_supports("ai-edge-litert", "2.14.0", numpy_version="2.1.3", quantization=kinds["int8_dynamic"])


def test_missing_variant_is_a_clear_error(onnx_bundle, cnn_bundle):
    with pytest.raises(BundleError, match=r"segments\.0\.files.*no onnx/fp16 file; the bundle has onnx/fp32, "
                                          r"onnx/int8, onnx/int8_dynamic"):
        edge_runtime.load_bundle(onnx_bundle, precision="fp16")
    if _importable("ai_edge_litert") or _importable("tflite_runtime"):
        with pytest.raises(BundleError, match=r"segments\.0\.files.*no tflite/fp32 file; the bundle has onnx/fp32"):
            edge_runtime.load_bundle(cnn_bundle, backend="litert")


def test_missing_tflite_file_is_a_clear_error(variant_bundle, tmp_path):
    with pytest.raises(BundleError, match=r"no tflite/int8 file for batch size 4; it has batch sizes \[2\]"):
        edge_runtime.load_bundle(variant_bundle, backend="litert", precision="int8", batch_sizes=[4])
    assert edge_runtime.load_bundle(variant_bundle, backend="litert", batch_sizes=[2]).segments
    broken = tmp_path / "broken"
    shutil.copytree(variant_bundle, broken)
    (broken / "segments" / "segment_1_b2.int8.tflite").unlink()
    with pytest.raises(BundleError, match=r"segment_1_b2\.int8\.tflite.*file is missing"):
        edge_runtime.load_bundle(broken, backend="litert", precision="int8")


def _cbnet_parts():
    import torch
    from torch import nn

    torch.manual_seed(0)
    ae = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.Sigmoid()).eval()
    clf = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 10)).eval()
    return {"autoencoder": ae, "classifier": clf}


def test_parts_added_after_export_get_tflite_files(variant_bundle, tmp_path):
    """convert's calibrate path adds CBNet's parts after export_bundle: add_part_variants gives them files."""
    import torch

    from converters.export.variants import add_part_variants
    from converters.methods.cbnet.export import CBNetExporter
    from edge_runtime.manifest import write_manifest

    root = tmp_path / "b"
    shutil.copytree(variant_bundle, root)
    m = json.loads((root / "manifest.json").read_text())
    parts, x = _cbnet_parts(), torch.from_numpy(_x(8, 9))
    hook = CBNetExporter(parts, x[:1], real_inputs=x, tolerance=1e-4, batch_sizes=(1, 3), opset=17, seed=0,
                         section={})
    hook(root, m)
    add_part_variants(hook, root, m, {"backends": ("onnx", "tflite"), "tflite_batch_sizes": (2,),
                                      "quantize": ("tflite/int8",), "calibration_inputs": x.numpy(),
                                      "verify_inputs": x})
    write_manifest(root, m)
    records = {(v["format"], v["precision"]): v for v in m["verification"]["variants"]}
    assert sorted(records[("tflite", "fp32")]["graphs"]) == ["parts.cbnet.graphs.autoencoder.files",
                                                             "parts.cbnet.graphs.classifier.files"]
    assert max(records[("tflite", "fp32")]["graphs"].values()) <= 1e-4
    xs = _x(5, 10)
    with torch.no_grad():
        ref = parts["classifier"](parts["autoencoder"](torch.from_numpy(xs))).numpy()
    res = edge_runtime.load_bundle(root, backend="litert").infer(xs, mode="cbnet")
    np.testing.assert_allclose(res.outputs, ref, atol=1e-4, rtol=0)
    int8 = edge_runtime.load_bundle(root, backend="litert", precision="int8").infer(xs, mode="cbnet")
    assert int8.outputs.shape == ref.shape and np.abs(int8.outputs - ref).max() < 0.1


def test_export_option_errors_come_before_any_work(tiny, tmp_path):
    import torch

    from converters import export_bundle

    x = torch.randn(1, 1, 16, 16)
    cases = [({"quantize": ("onnx/int4",)}, "unknown variant 'onnx/int4'"),
             ({"quantize": ("tflite/fp16",)}, "needs backends to include 'tflite'"),
             ({"backends": ("tflite",)}, "includes 'onnx'"),
             ({"backends": ("onnx", "tflite"), "tflite_batch_sizes": (0,)}, "tflite_batch_sizes"),
             ({"quantize": ("onnx/int8",)}, "needs calibration_inputs")]
    for kwargs, message in cases:
        with pytest.raises(ConfigError, match=message):
            export_bundle(tiny, x, tmp_path / "b", name="x", **kwargs)
        assert not (tmp_path / "b").exists()


def test_litert_inference_never_imports_torch(variant_bundle):
    code = f"""
        import json, sys
        import numpy as np
        import edge_runtime
        rt = edge_runtime.load_bundle({str(variant_bundle)!r}, backend="litert", precision="int8")
        rt.infer(np.zeros((3, 1, 16, 16), np.float32)); rt.infer(np.zeros((1, 1, 16, 16), np.float32), mode="full")
        print(json.dumps({HEAVY_MODULES}))
    """
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


def test_profile_precision_is_used_when_the_bundle_holds_it(onnx_bundle, cnn_bundle):
    import dataclasses

    from edge_runtime.profiles import get_profile

    prof = dataclasses.replace(get_profile("generic_x86_64"), backend="onnxruntime", precision="int8", threads=1)
    rt = edge_runtime.load_bundle(onnx_bundle, profile=prof)
    assert (rt.precision, rt.variant) == ("int8", "onnx/int8")
    assert rt.default_policy.thresholds == rt.manifest.policy.variants["onnx/int8"]["thresholds"]
    assert edge_runtime.load_bundle(onnx_bundle, profile=prof, precision="fp32").precision == "fp32"
    assert edge_runtime.load_bundle(cnn_bundle, profile=prof).precision == "fp32"  # not held: the reference


@pytest.mark.slow
def test_transformer_segments_convert_and_match_on_litert(tmp_path):
    """Attention blocks through litert-torch: every exit within 1e-4 (fp32) and 1e-2 (fp16) of PyTorch."""
    _needs_tflite()
    import torch

    from converters import create_model, export_bundle

    torch.manual_seed(0)
    model = create_model("tiny_transformer").eval()
    cal = torch.randn(32, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    path = export_bundle(model, torch.randn(1, 1, 16, 16), tmp_path / "t", name="t", policy="confidence",
                         thresholds=0.15, backends=("onnx", "tflite"), tflite_batch_sizes=(1, 4),
                         quantize=("tflite/fp16", "tflite/int8"), calibration_inputs=cal.numpy())
    x = _x(6, 4)  # 4 + 1 + 1 over the batch-1 and batch-4 files
    with torch.no_grad():
        ref = [o.numpy() for o in model(torch.from_numpy(x))]
    for precision, atol in (("fp32", 1e-4), ("fp16", 1e-2)):
        got = edge_runtime.load_bundle(path, backend="litert", precision=precision).exit_outputs(x)
        for r, g in zip(ref, got):
            np.testing.assert_allclose(g, r, atol=atol, rtol=0)
    assert "tflite/int8" in edge_runtime.read_bundle(path).manifest.policy.variants


@pytest.mark.slow
def test_extra_parts_hooks_get_variants_inside_export_bundle(tiny, tmp_path):
    """An extra_parts hook with graphs() (CBNet's) gets TFLite + quantized files during export_bundle."""
    _needs_tflite()
    import torch

    from converters import export_bundle
    from converters.methods.cbnet.export import CBNetExporter

    parts, x = _cbnet_parts(), torch.from_numpy(_x(16, 12))
    hook = CBNetExporter(parts, x[:1], real_inputs=x, tolerance=1e-4, batch_sizes=(1, 3), opset=17, seed=0,
                         section={})
    path = export_bundle(tiny, x[:1], tmp_path / "b", name="b", policy="never", extra_parts=[hook],
                         backends=("onnx", "tflite"), tflite_batch_sizes=(1,), quantize=("onnx/int8", "tflite/fp16"),
                         calibration_inputs=x.numpy())
    m = manifest_json(path)
    got = {(e["format"], e["precision"]) for e in m["parts"]["cbnet"]["graphs"]["classifier"]["files"]}
    assert got == {("onnx", "fp32"), ("onnx", "int8"), ("tflite", "fp32"), ("tflite", "fp16")}
    with torch.no_grad():
        ref = parts["classifier"](parts["autoencoder"](x[:3])).numpy()
    for backend, precision, atol in (("litert", "fp32", 1e-4), ("litert", "fp16", 1e-2), ("onnxruntime", "int8", 0.1)):
        out = edge_runtime.load_bundle(path, backend=backend, precision=precision).infer(x[:3].numpy(), mode="cbnet")
        np.testing.assert_allclose(out.outputs, ref, atol=atol, rtol=0)
