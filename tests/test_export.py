"""Export equivalence for every registered model builder, graph structure, and failed-export cleanup."""


import numpy as np
import onnx
import pytest
import torch
from _helpers import manifest_json

import edge_runtime
from converters import MODELS, create_model, export_bundle
from converters.export.verify import verify_bundle_dir, verify_exit_outputs
from converters.models.contract import as_tuple
from edge_runtime.errors import ConfigError, ExportError


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    out = {}
    for name in MODELS.names():
        torch.manual_seed(0)
        model = create_model(name).eval()
        example = model.example_inputs(1, generator=torch.Generator().manual_seed(0))
        out[name] = (model, export_bundle(model, example, root / name, name=name, policy="never"))
    return out


@pytest.mark.parametrize("name", MODELS.names())
def test_every_exit_matches_torch_at_batch_1_and_odd_batch(exported, name):
    model, path = exported[name]
    rt = edge_runtime.load_bundle(path, threads=1)
    for batch in (1, 5):
        x = as_tuple(model.example_inputs(batch, generator=torch.Generator().manual_seed(batch)))
        with torch.no_grad():
            ref = model(*x)
        got = rt.segment_outputs({spec.name: t.numpy() for spec, t in zip(rt.manifest.inputs, x)})
        assert len(got) == len(ref) == model.num_exits
        for i, (r, g) in enumerate(zip(ref, got)):
            for out_name, t in zip(model.exit_names(i, r), as_tuple(r)):   # exit (and a head's extra outputs)
                np.testing.assert_allclose(g[out_name], t.numpy(), atol=1e-4, rtol=1e-4)
    recorded = rt.manifest.verification
    assert recorded.passed and len(recorded.exits) == model.num_exits
    assert all(e["max_abs_diff"] <= recorded.tolerance for e in recorded.exits)
    assert 1 in recorded.batch_sizes and any(b % 2 == 1 and b > 1 for b in recorded.batch_sizes)


@pytest.mark.parametrize("name", MODELS.names())
def test_verifier_reports_every_named_output_and_the_exit_outputs_scale_and_agreement(exported, name):
    """One verifier for both uses: per named output (a head's extras too) and the scale/agreement a reduced-precision
    variant is judged by, computed on each exit's ``exit`` output."""
    model, path = exported[name]
    inputs = [model.example_inputs(3, generator=torch.Generator().manual_seed(7))]
    stats: dict = {}
    per_output, _ = verify_exit_outputs(model, path, manifest_json(path), inputs, stats=stats)
    worst, _ = verify_bundle_dir(model, path, manifest_json(path), inputs)
    with torch.no_grad():
        ref = model(*as_tuple(inputs[0]))
    for i, r in enumerate(ref):
        assert sorted(per_output[i]) == sorted(model.exit_names(i, r))
        assert worst[i] == max(per_output[i].values())
        assert stats["scale"][i] == pytest.approx(float(as_tuple(r)[0].abs().max()))
    assert len(stats["agreement"]) == model.num_exits
    for r, a in zip(ref, stats["agreement"]):   # defined for class scores, None for other outputs (a denoiser's)
        assert a == (1.0 if as_tuple(r)[0].ndim == 2 else None)


@pytest.mark.parametrize("name", MODELS.names())
def test_segment_graph_structure(exported, name):
    model, path = exported[name]
    manifest = manifest_json(path)
    n = model.num_exits
    example = model.example_inputs(1)
    with torch.no_grad():
        outs, hidden = model.forward_with_hidden(*as_tuple(example))
    for i, seg in enumerate(manifest["segments"]):
        g = onnx.load(str(path / seg["files"][0]["path"])).graph
        exit_names = model.exit_names(i, outs[i])
        assert [o.name for o in g.output] == (exit_names if i == n - 1 else
                                              [*model.hidden_names(i, hidden[i]), *exit_names])
        assert exit_names[0] == "exit"
        ins = model.input_names(example) if i == 0 else model.hidden_names(i - 1, hidden[i - 1])
        assert [x.name for x in g.input] == [k for k in ins if k in {x.name for x in g.input}]
        assert [o.name for o in g.output] == [t["name"] for t in seg["outputs"]]
        assert [x.name for x in g.input] == [t["name"] for t in seg["inputs"]]
        # dynamic batch axis on the input
        assert g.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
        assert seg["op_counts"] == {k: v for k, v in seg["op_counts"].items() if v > 0}
        assert sum(seg["op_counts"].values()) == len(g.node)
        assert seg["flops"] > 0 and seg["params"] > 0
    full = manifest["full_model"]
    assert full["flops"] <= sum(s["flops"] for s in manifest["segments"])


def test_full_model_flops_equal_backbone_plus_final_head(exported):
    _, path = exported["tiny_cnn"]
    m = manifest_json(path)
    backbone = sum(s["backbone_flops"] for s in m["segments"])
    assert m["full_model"]["flops"] == backbone + m["segments"][-1]["head_flops"]
    cum = [e["cumulative_flops"] for e in m["exits"]]
    assert cum == sorted(cum) and cum[-1] == sum(s["flops"] for s in m["segments"])


class _Noisy(torch.nn.Module):
    """A head whose eval output differs between calls: verification must catch it."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, h):
        return self.inner(h) + torch.rand(1) * 10


def test_failed_verification_leaves_nothing_behind(tmp_path):
    torch.manual_seed(0)
    model = create_model("tiny_cnn")
    model.heads[1] = _Noisy(model.heads[1])
    out = tmp_path / "bundle"
    with pytest.raises(ExportError, match="verification failed"):
        export_bundle(model, torch.randn(1, 1, 16, 16), out, name="bad")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_overwrite(tmp_path):
    model = create_model("tiny_cnn")
    out = tmp_path / "b"
    export_bundle(model, torch.randn(1, 1, 16, 16), out, name="x")
    with pytest.raises(ConfigError, match="exists"):
        export_bundle(model, torch.randn(1, 1, 16, 16), out, name="x")
    export_bundle(model, torch.randn(1, 1, 16, 16), out, name="y", overwrite=True)
    assert edge_runtime.read_bundle(out).name == "y"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_labels_must_match_classes(tmp_path):
    with pytest.raises(ConfigError, match="labels"):
        export_bundle(create_model("tiny_cnn"), torch.randn(1, 1, 16, 16), tmp_path / "b", name="x", labels=["a"])


def test_transformer_encoder_helper_accepts_torch_encoder_layers(tmp_path):
    """The helper works on any block list, e.g. torch's own TransformerEncoderLayer."""
    from converters import from_transformer_encoder
    from converters.models import create_head
    from converters.models.vit import PatchEmbed

    torch.manual_seed(0)
    blocks = [torch.nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True) for _ in range(3)]
    model = from_transformer_encoder(
        PatchEmbed(1, 8, 4, 16), blocks, [0, 1],
        lambda i: create_head("cls_linear", dim=16, num_classes=3),
        create_head("cls_linear", dim=16, num_classes=3), input_shape=(1, 8, 8),
    )
    path = export_bundle(model, torch.randn(1, 1, 8, 8), tmp_path / "enc", name="enc", policy="never")
    assert edge_runtime.load_bundle(path).num_exits == 3


class _NanInEagerOnly(torch.nn.Module):
    """A head that is NaN wherever its linear output is negative in PyTorch, but not in the exported graph."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, h):
        y = self.inner(h)
        return y if torch.onnx.is_in_onnx_export() else torch.where(y < 0, torch.full_like(y, float("nan")), y)


def test_an_output_nan_on_one_side_only_fails_verification_naming_the_exit(tmp_path):
    torch.manual_seed(0)
    model = create_model("tiny_cnn")
    model.heads[0] = _NanInEagerOnly(model.heads[0])
    out = tmp_path / "bundle"
    with pytest.raises(ExportError, match=r"verification failed.*exit 0: inf"):
        export_bundle(model, torch.randn(1, 1, 16, 16), out, name="nan", policy="never")
    assert not out.exists()


def test_max_abs_diff_counts_a_non_finite_value_unmatched_on_the_other_side_as_infinite():
    from converters.export.verify import max_abs_diff
    nan, inf = float("nan"), float("inf")
    a = np.array([[1.0, nan, inf]])
    assert max_abs_diff(a, np.array([[1.5, nan, inf]])) == 0.5        # same non-finite values, same places
    assert max_abs_diff(a, np.array([[1.0, 0.0, inf]])) == inf        # NaN on one side only
    assert max_abs_diff(np.array([[1.0, 0.0, inf]]), a) == inf        # either side
    assert max_abs_diff(a, np.array([[1.0, nan, -inf]])) == inf       # opposite infinities
    assert max_abs_diff(a, np.array([[1.0, inf, inf]])) == inf        # NaN against inf
    assert max_abs_diff(np.zeros((0, 3)), np.zeros((0, 3))) == 0.0


def test_variant_recalibration_uses_the_recorded_calibrate_levels(monkeypatch):
    import converters.export.variants as variants
    from edge_runtime.calibration import calibrate
    rs = np.random.RandomState(0)
    outs = [rs.randn(60, 3).astype(np.float32) for _ in range(2)]
    y = rs.randint(0, 3, 60)
    section = calibrate(outs, y, "confidence", {}, flops=[1, 2], max_accuracy_drop=5.0, levels=3).to_manifest()
    assert section["levels"] == 3                                     # the bundle says how it was calibrated
    manifest = {"policy": {"name": "confidence", "kwargs": {}, "thresholds": [0.5]},
                "exits": [{"cumulative_flops": 1}, {"cumulative_flops": 2}]}
    seen = {}
    real = variants.calibrate
    monkeypatch.setattr(variants, "calibrate", lambda *a, **k: (seen.update(k), real(*a, **k))[1])
    variants._calibrate_like_fp32(None, manifest, section, outs, np.zeros((60, 1)), y, outs)
    assert seen["levels"] == 3


def test_part_variants_get_the_export_options_fp16_tolerance_too(monkeypatch):
    import converters.export.variants as variants

    class Hook:
        def graphs(self, manifest):
            return []

    seen = {}
    monkeypatch.setattr(variants, "variant_exporters", lambda *a, **k: (seen.update(k), [])[1])
    variants.add_part_variants(Hook(), None, {}, {"verify_inputs": torch.zeros(2, 3), "quantize": ["onnx/fp16"],
                                                  "tolerance": 1e-4, "fp16_tolerance": 0.25})
    assert seen["fp16_tolerance"] == 0.25 and seen["tolerance"] == 1e-4
