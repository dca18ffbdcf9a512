"""CBNet: easy samples and exemplars on crafted sets, autoencoder shape/range, export equivalence of both
parts, the ``cbnet`` mode (and its errors), the recipe section, resume, and a small end-to-end convert."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import edge_runtime
from converters import create_model, export_bundle
from converters.methods.cbnet import (
    AUTOENCODERS,
    EXEMPLAR_METHODS,
    CBNetSettings,
    LightweightClassifier,
    choose_exemplars,
    create_autoencoder,
    find_easy,
    train_cbnet,
)
from converters.recipe import parse_recipe
from edge_runtime import ConfigError, create_policy

# -- easy samples and exemplars ---------------------------------------------------------------------


def _confident(cls: int, n_classes: int = 3, margin: float = 10.0) -> np.ndarray:
    z = np.zeros(n_classes)
    z[cls] = margin
    return z


def test_find_easy_uses_the_policy_and_requires_correct_answers():
    first = np.stack([_confident(0), _confident(1), np.zeros(3), _confident(2)])   # sample 2 is unsure
    outputs = [first, np.zeros((4, 3))]
    y = np.array([0, 1, 0, 1])                                                     # sample 3 is wrong at exit 0
    pol = create_policy("entropy", 2, 0.1)
    assert find_easy(outputs, y, pol).tolist() == [True, True, False, False]
    assert find_easy(outputs, y, pol, require_correct=False).tolist() == [True, True, False, True]
    assert not find_easy(outputs, y, create_policy("never", 2)).any()


def _crafted():
    """Class 0: easy points at 0, 1, 2, 10 (medoid 1 or 2 -> the first, 1) and a hard one at 50;
    class 1: easy points at 100, 104, a hard one at 103 and one at 90."""
    x = np.array([0.0, 1.0, 2.0, 10.0, 50.0, 100.0, 104.0, 103.0, 90.0])[:, None, None]
    y = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1])
    easy = np.array([1, 1, 1, 1, 0, 1, 1, 0, 0], dtype=bool)
    return x, y, easy


def test_medoid_maps_every_input_to_its_class_medoid():
    x, y, easy = _crafted()
    c = choose_exemplars(x, y, easy, "medoid")
    # class 0 totals: 0->13, 1->11, 2->11, 10->27: first minimum is index 1; class 1: 100 and 104 tie -> 5
    assert c.target_index.tolist() == [1, 1, 1, 1, 1, 5, 5, 5, 5]
    assert c.easy_per_class == [4, 2] and c.fallback_classes == [] and c.exemplars_per_class == [1, 1]
    assert c.summary()["indices"] == [1, 5]


def test_nearest_maps_every_input_to_its_nearest_easy_input_of_the_same_class():
    x, y, easy = _crafted()
    c = choose_exemplars(x, y, easy, "nearest")
    # 50 -> 10 (class 0, although 90 is nearer across classes); 103 -> 104; 90 -> 100; easy ones -> themselves
    assert c.target_index.tolist() == [0, 1, 2, 3, 3, 5, 6, 6, 5]
    assert all(y[c.target_index] == y) and all(easy[c.target_index])


def test_medoids_maps_every_input_to_the_nearest_of_a_per_class_set_of_easy_exemplars():
    # class 0: two easy clumps (0, 1, 2) and (10, 11, 12) and a hard input at 30; class 1: easy 100, 101, 102
    x = np.array([0.0, 1.0, 2.0, 10.0, 11.0, 12.0, 30.0, 100.0, 101.0, 102.0, 130.0])[:, None]
    y = np.array([0] * 7 + [1] * 4)
    easy = np.array([1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 0], dtype=bool)
    c = choose_exemplars(x, y, easy, "medoids", method_kwargs={"k": 2})
    # one medoid per clump; the hard input goes to the nearer one (11); a class with one clump: 2 of its own
    assert c.target_index[:7].tolist() == [1, 1, 1, 4, 4, 4, 4]
    assert set(c.target_index[7:].tolist()) <= {7, 8, 9} and c.exemplars_per_class == [2, 2]
    assert all(easy[c.target_index]) and all(y[c.target_index] == y)
    assert c.summary()["indices"] == sorted(set(c.target_index.tolist()))
    # k=1 is the single medoid
    one = choose_exemplars(x, y, easy, "medoids", method_kwargs={"k": 1})
    assert one.target_index.tolist() == choose_exemplars(x, y, easy, "medoid").target_index.tolist()
    with pytest.raises(ConfigError, match="k must be >= 1"):
        choose_exemplars(x, y, easy, "medoids", method_kwargs={"k": 0})


def test_class_without_easy_inputs_falls_back_to_its_most_confident_inputs():
    x, y, easy = _crafted()
    easy[5:] = False
    confidence = np.array([0.9] * 5 + [0.2, 0.3, 0.95, 0.1])
    c = choose_exemplars(x, y, easy, "medoid", confidence=confidence, fallback_count=1)
    assert c.fallback_classes == [1] and c.target_index[5:].tolist() == [7, 7, 7, 7]


def test_unknown_exemplar_method_names_the_known_ones():
    x, y, easy = _crafted()
    with pytest.raises(ConfigError, match="medoid, medoids, nearest"):
        choose_exemplars(x, y, easy, "centroid")
    assert EXEMPLAR_METHODS.names() == ["medoid", "medoids", "nearest"]


# -- autoencoders ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", AUTOENCODERS.names())
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 9, 7)])
def test_autoencoder_output_has_the_input_shape_and_stays_in_the_training_range(name, shape):
    torch.manual_seed(0)
    low, high = [-0.5, -1.0, 0.0][:shape[0]], [2.0, 1.0, 3.0][:shape[0]]
    ae = create_autoencoder(name, shape, (low, high)).eval()
    x = torch.randn(5, *shape) * 10  # far outside the range: the output must still stay inside
    with torch.no_grad():
        out = ae(x)
    assert out.shape == x.shape
    for c in range(shape[0]):
        assert out[:, c].min() >= low[c] and out[:, c].max() <= high[c]


def test_dense_autoencoder_is_the_papers_at_28x28_and_scales_with_the_input():
    ae = create_autoencoder("dense", (1, 28, 28), ([0.0], [1.0]))
    assert ae.widths == [512, 256, 32]
    small = create_autoencoder("dense", (1, 8, 8), ([0.0], [1.0]))
    assert small.widths == [42, 32, 16]
    with pytest.raises(ConfigError, match="bad arguments"):
        create_autoencoder("dense", (1, 8, 8), ([0.0], [1.0]), depth=3)
    pooled = create_autoencoder("dense", (1, 28, 28), ([0.0], [1.0]), pool=2, hidden=[256, 128], scale="none")
    assert pooled.net[0].kernel_size == 2 and pooled.net[2].in_features == 196 and pooled.widths == [256, 128, 32]
    with torch.no_grad():
        out = pooled(torch.randn(3, 1, 28, 28) * 5)
    assert out.shape == (3, 1, 28, 28) and out.min() >= 0.0 and out.max() <= 1.0


def test_dense_autoencoder_exports_without_shape_arithmetic(tmp_path):
    """Its output reshape is one constant-shape Reshape (nn.Unflatten exported a dozen shape ops, each a few
    microseconds at batch 1)."""
    from converters.export.onnx import export_onnx, onnx_op_counts

    ae = create_autoencoder("dense", (1, 28, 28), ([0.0], [1.0]), pool=2, hidden=[256, 128], scale="none").eval()
    path = tmp_path / "ae.onnx"
    export_onnx(ae, torch.zeros(1, 1, 28, 28), path, input_names=["input"], output_names=["converted"], opset=17)
    ops = onnx_op_counts(path)
    assert ops.get("Reshape") == 1 and not {"Shape", "Slice", "Concat", "Mod"} & set(ops), ops
    assert sum(ops.values()) <= 16


# -- training, export, device mode ---------------------------------------------------------------------


def _digits8(n: int | None = None):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    x = (x - 0.3) / 0.4
    return torch.from_numpy(x[:n]), torch.from_numpy(d.target[:n]).long()


@pytest.fixture(scope="module")
def cbnet_bundle(tmp_path_factory):
    """A random-init tiny CNN (the parts' equivalence does not need a trained one) with CBNet parts."""
    torch.manual_seed(0)
    model = create_model("tiny_cnn", image_size=8, widths=[8, 16], exits_after=[0]).eval()
    x, y = _digits8(300)
    res = train_cbnet(model, x, y, create_policy("entropy", 2, 2.0),
                      CBNetSettings(epochs=2, finetune=True, finetune_epochs=1, threads=1), progress=False,
                      checkpoint_dir=tmp_path_factory.mktemp("ckpt"))
    out = export_bundle(model, x[:1], tmp_path_factory.mktemp("cbnet") / "b", name="cbnet_tiny", policy="entropy",
                        thresholds=0.5, extra_parts=[res.exporter(x[:1], real_inputs=x[:16])])
    return model, res, out


def test_both_parts_match_torch_at_batch_1_and_an_odd_batch(cbnet_bundle):
    model, res, path = cbnet_bundle
    rt = edge_runtime.load_bundle(path, threads=1)
    parts = rt.manifest.parts["cbnet"].graphs
    assert sorted(parts) == ["autoencoder", "classifier", "classifier_base"]
    be = edge_runtime.create_backend("onnxruntime", threads=1)
    modules = res.parts()
    for batch in (1, 5):
        x = torch.randn(batch, 1, 8, 8, generator=torch.Generator().manual_seed(batch))
        for name, module in modules.items():
            session = be.load(path / parts[name].files[0].path)
            with torch.no_grad():
                ref = module.eval()(x).numpy()
            np.testing.assert_allclose(session.run({"input": x.numpy()})[0], ref, atol=1e-4, rtol=1e-4)
        res_rt = rt.infer(x.numpy(), mode="cbnet")
        with torch.no_grad():
            ref = modules["classifier"](modules["autoencoder"](x)).numpy()
        np.testing.assert_allclose(res_rt.outputs, ref, atol=1e-4, rtol=1e-4)
        assert (res_rt.exit_index == 0).all() and res_rt.mode == "cbnet"
        assert set(res_rt.part_latency_s) == {"autoencoder", "classifier"}
    ver = rt.manifest.parts["cbnet"].verification
    assert ver["passed"] and 16 in ver["batch_sizes"] and 1 in ver["batch_sizes"]
    assert all(v["max_abs_diff"] <= ver["tolerance"] for v in ver["parts"].values())


def test_lightweight_classifier_shares_the_models_first_segment_and_head(cbnet_bundle):
    model, res, path = cbnet_bundle
    assert res.classifier.segment is model.segments[0] and res.classifier.head is model.heads[0]
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        np.testing.assert_allclose(LightweightClassifier(model)(x).numpy(), model(x)[0].numpy(), atol=1e-6)
    assert res.finetuned is not None and res.finetuned.segment is not model.segments[0]


def test_manifest_reports_cost_and_training_and_other_modes_still_run(cbnet_bundle):
    _, res, path = cbnet_bundle
    rt = edge_runtime.load_bundle(path, threads=1)
    cb = rt.manifest.parts["cbnet"]
    cost = cb.info["cost"]
    assert cb.mode == "cbnet"
    assert cost["autoencoder_flops"] == cb.graphs["autoencoder"].flops > 0
    assert cost["full_model_flops"] == rt.manifest.full_model.flops
    assert cost["saved_flops"] == cost["full_model_flops"] - cost["classifier_flops"]
    assert cb.info["exemplars"]["method"] == "medoid" and len(cb.info["exemplars"]["easy_per_class"]) == 10
    assert len(cb.info["training"]["autoencoder_loss"]) == 2 and "cbnet_finetuned_accuracy" in cb.info["training"]
    assert sorted(rt.modes()) == ["cbnet", "early_exit", "full"]
    x = np.zeros((2, 1, 8, 8), np.float32)
    assert rt.infer(x, mode="early_exit").mode == "early_exit" and rt.infer(x, mode="full").mode == "full"
    base = edge_runtime.methods.cbnet.CBNetRunner(rt, classifier_part="classifier_base").run(x)
    assert base.part_latency_s.keys() == {"autoencoder", "classifier_base"}
    from edge_runtime.cli.inspect import format_bundle

    text = format_bundle(rt.manifest)
    assert "cbnet (mode 'cbnet'): autoencoder" in text and "FLOPs it saves" in text and "cbnet_finetuned" in text


def test_tampered_cbnet_part_is_refused(cbnet_bundle, tmp_path):
    import shutil

    _, _, path = cbnet_bundle
    copy = tmp_path / "b"
    shutil.copytree(path, copy)
    with open(copy / "cbnet" / "autoencoder.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(edge_runtime.BundleError, match="parts.cbnet.graphs.autoencoder.files.0.sha256"):
        edge_runtime.load_bundle(copy)


def test_cbnet_mode_on_a_bundle_without_cbnet_parts_names_the_bundle(cnn_bundle):
    rt = edge_runtime.load_bundle(cnn_bundle, threads=1)
    x = np.zeros((1, 1, 16, 16), np.float32)
    with pytest.raises(ConfigError, match=rf"{cnn_bundle}.*'tiny_cnn' cannot run mode 'cbnet': "
                                          r"it has no CBNet parts.*early_exit, full"):
        rt.infer(x, mode="cbnet")
    assert "cbnet" not in rt.modes()
    with pytest.raises(ConfigError, match="unknown inference mode 'cbnt'"):
        rt.infer(x, mode="cbnt")
    proc = subprocess.run([sys.executable, "-m", "edge_runtime", "run", str(cnn_bundle), "--random", "2",
                           "--mode", "cbnet"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "has no CBNet parts" in proc.stderr and "Traceback" not in proc.stderr


def test_missing_classifier_part_is_a_config_error(cbnet_bundle):
    rt = edge_runtime.load_bundle(cbnet_bundle[2], threads=1)
    with pytest.raises(ConfigError, match="no CBNet part 'classifier_x'"):
        edge_runtime.methods.cbnet.CBNetRunner(rt, classifier_part="classifier_x")


def test_resume_continues_from_the_checkpoint_and_refuses_another_run(tmp_path):
    torch.manual_seed(0)
    model = create_model("tiny_cnn", image_size=8, widths=[8, 16], exits_after=[0]).eval()
    x, y = _digits8(120)
    pol = create_policy("entropy", 2, 2.0)
    full = train_cbnet(model, x, y, pol, CBNetSettings(epochs=3), progress=False, checkpoint_dir=tmp_path / "a")
    train_cbnet(model, x, y, pol, CBNetSettings(epochs=2), progress=False, checkpoint_dir=tmp_path / "b")
    # the epoch-2 checkpoint of a 2-epoch run belongs to different settings: refused
    with pytest.raises(ConfigError, match="different run"):
        train_cbnet(model, x, y, pol, CBNetSettings(epochs=3), progress=False, checkpoint_dir=tmp_path / "b",
                    resume=True)
    # resuming a finished run replays nothing and ends with the same weights
    again = train_cbnet(model, x, y, pol, CBNetSettings(epochs=3), progress=False, checkpoint_dir=tmp_path / "a",
                        resume=True)
    assert again.report["autoencoder_loss"] == full.report["autoencoder_loss"]
    for a, b in zip(again.autoencoder.state_dict().values(), full.autoencoder.state_dict().values()):
        assert torch.equal(a, b)


def test_finetune_with_shift_trains_only_the_classifier_on_inputs_converted_on_the_fly():
    torch.manual_seed(0)
    model = create_model("tiny_cnn", image_size=8, widths=[8, 16], exits_after=[0]).eval()
    x, y = _digits8(120)
    pol = create_policy("entropy", 2, 2.0)
    shared = [p.detach().clone() for p in LightweightClassifier(model).parameters()]
    plain = train_cbnet(model, x, y, pol, CBNetSettings(epochs=2, threads=1), progress=False)
    aug = train_cbnet(model, x, y, pol, CBNetSettings(epochs=2, finetune=True, finetune_shift=1, finetune_epochs=1,
                                                      threads=1), progress=False)
    for a, b in zip(plain.autoencoder.state_dict().values(), aug.autoencoder.state_dict().values()):
        assert torch.equal(a, b)                           # the autoencoder is frozen while the classifier tunes
    assert all(p.requires_grad for p in aug.autoencoder.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(aug.finetuned.parameters(), aug.classifier.parameters()))
    for before, after in zip(shared, LightweightClassifier(model).parameters()):
        assert torch.equal(before, after)                  # the model's own segment 0 + head 0 are untouched
    assert len(aug.report["finetune_loss"]) == 1 and aug.report["settings"]["finetune_shift"] == 1


def test_cbnet_parts_train_through_the_shared_trainer_with_losses_from_its_folder():
    from converters.training import LOSSES, create_loss

    assert {"cbnet_reconstruction", "cbnet_classifier"} <= set(LOSSES.names())
    with pytest.raises(ConfigError, match="cbnet_reconstruction.*no loss"):
        create_loss("cbnet_reconstruction", torch.nn.Linear(2, 2))
    ae = create_autoencoder("dense", (1, 8, 8), ([0.0], [1.0]), hidden=[16], code=4)
    loss = create_loss("cbnet_reconstruction", ae, shift=1)
    x = torch.rand(4, 1, 8, 8)
    value, logits = loss(ae, x, x, 0)                      # no exits: nothing to count accuracy on
    assert logits == [] and value.shape == () and value.requires_grad


# -- recipe ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad, key", [
    ({"epochs": "many"}, "cbnet.epochs"),
    ({"exemplars": "centroid"}, "cbnet.exemplars"),
    ({"exemplars": "medoids", "exemplar_kwargs": {"n": 3}}, "cbnet.exemplar_kwargs.n"),
    ({"exemplar_kwargs": {"k": 3}}, "cbnet.exemplar_kwargs.k"),
    ({"autoencoder": {"name": "vae"}}, "cbnet.autoencoder.name"),
    ({"autoencoder": {"name": "conv", "kwargs": {"hidden": [8]}}}, "cbnet.autoencoder.kwargs.hidden"),
    ({"finetune": "yes"}, "cbnet.finetune"),
    ({"lr": 0}, "cbnet.lr"),
    ({"shift": -1}, "cbnet.shift"),
    ({"finetune_shift": -1}, "cbnet.finetune_shift"),
    ({"threads": 0}, "cbnet.threads"),
    ({"epoch": 3}, "cbnet.'epoch'"),
])
def test_recipe_errors_name_the_key(bad, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        parse_recipe({"name": "x", "model": {"name": "tiny_cnn"}, "cbnet": bad})


def test_recipe_defaults_are_the_papers():
    spec = parse_recipe({"name": "x", "model": {"name": "tiny_cnn"}, "cbnet": None})["cbnet"]
    s = CBNetSettings.from_section(spec)
    assert (s.autoencoder, s.exemplars, s.batch_size, s.epochs, s.finetune) == ("dense", "medoid", 256, 20, False)


# -- convert with a cbnet section --------------------------------------------------------------------------

SMALL_RECIPE = {
    "name": "cbnet_small",
    "seed": 0,
    "data": {"name": "digits", "kwargs": {"size": 8}},
    "model": {"name": "tiny_cnn", "kwargs": {"image_size": 8, "widths": [8, 16], "exits_after": [0]}},
    "train": {"threads": 1, "stages": [{"name": "branchy", "loss": {"name": "weighted_exits"}, "lr": 0.01,
                                        "epochs": 2, "batch_size": 64}]},
    "policy": {"name": "entropy", "thresholds": 0.5},
    "calibrate": {"measure_latency": False, "max_accuracy_drop": 5.0},
    "cbnet": {"autoencoder": {"name": "dense", "kwargs": {"scale": "none", "hidden": [128, 64]}}, "epochs": 30,
              "batch_size": 64, "finetune": True, "finetune_epochs": 2, "threads": 1, "gate": True},
}


def test_convert_with_cbnet_runs_in_all_three_modes(tmp_path):
    from converters import convert
    from edge_runtime.datasets import load_split

    out = convert(parse_recipe(SMALL_RECIPE), tmp_path / "b", progress=False)
    assert not (tmp_path / "b.train").exists()          # checkpoints are removed once the bundle is complete
    rt = edge_runtime.load_bundle(out, threads=1)
    m = rt.manifest
    cb = m.parts["cbnet"]
    assert cb.info["training"]["settings"]["epochs"] == 30 and cb.verification["passed"]
    # easy samples were decided with the calibrated thresholds, the ones the bundle ships
    assert tuple(m.calibration.chosen.thresholds) == m.policy.thresholds
    x_raw, y = load_split(out, "test")
    x = rt.preprocess(x_raw)
    acc = {mode: float((rt.infer(x, mode=mode).predictions == y).mean()) for mode in ("early_exit", "full", "cbnet")}
    ungated = edge_runtime.methods.cbnet.CBNetRunner(rt, gated=False)
    acc["ungated"] = float((ungated.run(x).predictions == y).mean())
    assert acc["ungated"] > 0.5, acc                       # it learned to convert (chance is 0.1)
    res = ungated.run(x[:3])
    assert (res.exit_index == 0).all() and res.segment_batch_size.tolist() == [3, 0]
    # the gate: calibrated on the calibration split against the bundle's calibrated policy, within the budget
    gate = cb.info["gate"]
    xc_raw, yc = load_split(out, "calibration")
    gated_c = rt.infer(rt.preprocess(xc_raw), mode="cbnet")
    assert gate["policy"]["name"] == "confidence" and gate["max_accuracy_drop"] == 5.0
    assert float((gated_c.predictions == yc).mean()) == pytest.approx(gate["accuracy"]["gated"])
    assert gated_c.info["converted_fraction"] == pytest.approx(gate["converted_fraction"])
    assert gate["accuracy"]["gated"] >= gate["accuracy"]["final_exit"] - 0.05 - 1e-9
    proc = subprocess.run([sys.executable, "-m", "edge_runtime", "run", str(out), "--random", "2", "--mode", "cbnet",
                           "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert '"mode": "cbnet"' in proc.stdout and '"part_latency_s"' in proc.stdout


def test_convert_with_risk_control_calibrates_the_gate_with_it(tmp_path):
    from converters import convert
    from edge_runtime.datasets import load_split
    recipe = {**SMALL_RECIPE, "calibrate": {**SMALL_RECIPE["calibrate"], "confidence": 0.9},
              "cbnet": {**SMALL_RECIPE["cbnet"], "finetune": False, "epochs": 10}}
    out = convert(parse_recipe(recipe), tmp_path / "b", progress=False)
    rt = edge_runtime.load_bundle(out, threads=1)
    gate = rt.manifest.parts["cbnet"].info["gate"]
    g = gate["guarantee"]
    assert g["confidence"] == 0.9 and g["relative_to"] == "early-exit chain" and "certified" in g
    assert gate["method"].startswith("risk-controlled")
    xc_raw, yc = load_split(out, "calibration")
    res = rt.infer(rt.preprocess(xc_raw), mode="cbnet")   # the mode reproduces what the record says
    assert res.info["converted_fraction"] == pytest.approx(gate["converted_fraction"])
    assert float((res.predictions == yc).mean()) == pytest.approx(gate["accuracy"]["gated"])
    from edge_runtime.cli.inspect import format_bundle

    assert "gate guarantee:" in format_bundle(rt.manifest) and "confidence 0.9" in format_bundle(rt.manifest)


def test_cbnet_section_needs_data():
    from converters import convert

    recipe = {k: v for k, v in SMALL_RECIPE.items() if k not in ("data", "train", "calibrate")}
    recipe["model"] = {"name": "tiny_cnn", "kwargs": {"image_size": 8}}
    with pytest.raises(ConfigError, match="'cbnet' needs a 'data' section"):
        convert(parse_recipe(recipe), Path("/nonexistent/never-written"), progress=False)


# -- the confidence gate (beyond the paper) ------------------------------------------------------------------


def test_choose_gate_keeps_the_most_converted_samples_within_the_budget_from_the_final_exit():
    from edge_runtime.methods.cbnet import choose_gate

    y = np.arange(10) % 2
    right = np.eye(2)[y] * 9.0
    conf = np.linspace(0.99, 0.55, 10)            # the converted path's confidence, falling with the index
    correct = np.array([1, 1, 1, 1, 1, 0, 1, 0, 1, 1], bool)
    pred = np.where(correct, y, 1 - y)
    cb = np.zeros((10, 2))
    cb[np.arange(10), pred] = np.log(conf / (1 - conf))   # softmax max = conf
    chain = right.copy()
    chain[9] = np.eye(2)[1 - y[9]] * 9.0          # the chain misses sample 9: one point of the budget is spent
    # 10-point budget from the final exit (100%): the chain's own miss uses it all -> only the first five pass
    g = choose_gate(cb, chain, right, y, max_accuracy_drop=10.0)
    assert g["converted_fraction"] == 0.5 and g["accuracy"]["gated"] == 0.9
    assert g["accuracy"]["final_exit"] == 1.0 and g["accuracy"]["early_exit"] == 0.9 and g["accuracy"]["cbnet"] == 0.8
    thr = g["policy"]["threshold"]
    assert conf[5] < thr <= conf[4] and g["policy"]["name"] == "confidence"
    # 15 points: still no room for a second miss; 20 points: everything passes (80%: samples 5 and 7 wrong, and
    # sample 9, which the chain misses, is right on the converted path)
    assert choose_gate(cb, chain, right, y, max_accuracy_drop=15.0)["converted_fraction"] == 0.5
    assert choose_gate(cb, chain, right, y, max_accuracy_drop=20.0)["converted_fraction"] == 1.0
    # entropy reads the same outputs the other way round (lower is confident)
    assert choose_gate(cb, chain, right, y, policy="entropy", max_accuracy_drop=10.0)["converted_fraction"] == 0.5
    with pytest.raises(ConfigError, match="score policy"):
        choose_gate(cb, chain, right, y, policy="patience")


def _gate_scores(conf: np.ndarray, correct: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Two-class logits whose max softmax is ``conf`` and whose argmax is right where ``correct``."""
    pred = np.where(correct, y, 1 - y)
    out = np.zeros((len(y), 2))
    out[np.arange(len(y)), pred] = np.log(conf / (1 - conf))
    return out


def test_choose_gate_with_a_guarantee_certifies_only_what_the_budget_allows():
    from edge_runtime.methods.cbnet import choose_gate

    rng = np.random.default_rng(0)
    n = 2000
    y = rng.integers(0, 2, n)
    right = np.eye(2)[y] * 9.0
    # the converted path is wrong exactly on its unsure tenth (confidence < 0.7): every sure sample converts, and
    # of the unsure ones no more than the budget allows with the guarantee (fewer than the point estimate lets in)
    unsure = rng.random(n) < 0.1
    conf = np.where(unsure, rng.uniform(0.55, 0.69, n), rng.uniform(0.9, 0.999, n))
    cb = _gate_scores(conf, ~unsure, y)
    risk = {"confidence": 0.9, "bound": "binomial"}
    g = choose_gate(cb, right, right, y, max_accuracy_drop=1.0, guarantee=risk)
    assert g["guarantee"]["certified"] and g["guarantee"]["confidence"] == 0.9
    assert g["guarantee"]["relative_to"] == "early-exit chain" and g["guarantee"]["budget_left"] == 1.0
    assert "risk-controlled" in g["method"]
    assert g["policy"]["threshold"] <= 0.9 and g["converted_fraction"] >= 1 - unsure.mean()
    point0 = choose_gate(cb, right, right, y, max_accuracy_drop=1.0)
    assert g["converted_fraction"] <= point0["converted_fraction"] and g["accuracy"]["gated"] >= 0.99
    # wrong at random (5%) whatever its confidence: at most a fifth may convert within 1 point, fewer once certified
    wrong = rng.random(n) < 0.05
    cb2 = _gate_scores(rng.uniform(0.55, 0.999, n), ~wrong, y)
    point = choose_gate(cb2, right, right, y, max_accuracy_drop=1.0)
    sure = choose_gate(cb2, right, right, y, max_accuracy_drop=1.0, guarantee=risk)
    assert "guarantee" not in point and point["method"].startswith("point estimate")
    assert sure["converted_fraction"] <= point["converted_fraction"] <= 0.25
    assert sure["accuracy"]["gated"] >= 0.99
    # the chain alone spends the budget (2 points below the final exit): nothing converts, nothing certified
    chain = right.copy()
    chain[:40] = np.eye(2)[1 - y[:40]] * 9.0
    none = choose_gate(cb, chain, right, y, max_accuracy_drop=1.0, guarantee=risk)
    assert not none["guarantee"]["certified"] and none["converted_fraction"] == 0.0
    assert none["accuracy"]["gated"] == none["accuracy"]["early_exit"] and none["guarantee"]["budget_left"] < 0
    from edge_runtime.methods.cbnet import gate_policy

    pol = gate_policy(none)
    assert not np.asarray(pol.decide(0, cb, pol.start(n))).any()   # the recorded threshold turns everyone away


def test_the_gate_takes_the_recipes_risk_control_keys():
    from converters.methods.cbnet.core import _guarantee

    assert _guarantee(None, 0) is None and _guarantee({"max_accuracy_drop": 1.0, "confidence": None}, 0) is None
    cal = {"max_accuracy_drop": 1.0, "confidence": 0.9, "risk": "label_drop", "bound": "binomial",
           "selection_fraction": None, "cost": "flops"}
    assert _guarantee(cal, 7) == {"confidence": 0.9, "risk": "label_drop", "bound": "binomial", "seed": 7}


@pytest.fixture(scope="module")
def gated_bundle(tmp_path_factory):
    """The tiny CNN with CBNet parts and a gate calibrated on held-out digits (through export_bundle's hook)."""
    from converters.methods.cbnet.core import parse_cbnet_section

    torch.manual_seed(0)
    model = create_model("tiny_cnn", image_size=8, widths=[8, 16], exits_after=[0]).eval()
    x, y = _digits8(420)
    settings = CBNetSettings(epochs=2, threads=1, gate=parse_cbnet_section({"gate": True})["gate"])
    res = train_cbnet(model, x[:300], y[:300], create_policy("entropy", 2, 2.0), settings, progress=False)
    held = (x[300:].numpy(), y[300:].numpy())
    out = export_bundle(model, x[:1], tmp_path_factory.mktemp("gated") / "b", name="cbnet_gated", policy="entropy",
                        thresholds=2.0, extra_parts=[res.exporter(x[:1], gate_data=held, max_accuracy_drop=5.0)])
    return out, held


def _with_threshold(path: Path, tmp: Path, threshold: float) -> Path:
    """A copy of the bundle whose gate has another threshold (the manifest is not hashed; the files are)."""
    import shutil

    from edge_runtime.manifest import read_manifest, write_manifest

    shutil.copytree(path, tmp / "b")
    m = read_manifest(tmp / "b").to_dict()
    m["parts"]["cbnet"]["info"]["gate"]["policy"]["threshold"] = threshold
    write_manifest(tmp / "b", m)
    return tmp / "b"


def _split_threshold(path: Path, x: np.ndarray) -> tuple[float, np.ndarray]:
    """A threshold between the converted path's confidences on ``x`` (so both paths run), and who passes it."""
    from edge_runtime.policies.base import softmax

    rt = edge_runtime.load_bundle(path, threads=1)
    conf = softmax(edge_runtime.methods.cbnet.CBNetRunner(rt, gated=False).run(x).outputs.astype(np.float64)).max(-1)
    thr = float(np.median(conf))
    return thr, conf >= thr


def test_gate_is_recorded_and_reproduced_by_the_mode_on_its_calibration_data(gated_bundle):
    path, (x, y) = gated_bundle
    rt = edge_runtime.load_bundle(path, threads=1)
    gate = rt.manifest.parts["cbnet"].info["gate"]
    assert gate["policy"]["name"] == "confidence" and gate["split"] == "calibration" and gate["samples"] == len(y)
    assert gate["max_accuracy_drop"] == 5.0 and gate["reference"] == "final exit" and "point estimate" in gate["method"]
    res = rt.infer(x, mode="cbnet")
    assert res.info["converted_fraction"] == pytest.approx(gate["converted_fraction"])
    assert float((res.predictions == y).mean()) == pytest.approx(gate["accuracy"]["gated"])
    assert gate["accuracy"]["gated"] >= gate["accuracy"]["final_exit"] - 0.05 - 1e-9
    final = rt.infer(x, mode="full").predictions
    assert gate["accuracy"]["final_exit"] == pytest.approx(float((final == y).mean()))
    from edge_runtime.cli.inspect import format_bundle

    assert "gate: confidence threshold" in format_bundle(rt.manifest)


def test_gated_mode_answers_confident_samples_from_the_converted_path_and_the_rest_from_the_chain(
        gated_bundle, tmp_path):
    path, (x, _) = gated_bundle
    x = x[:40]
    thr, passed = _split_threshold(path, x)
    assert passed.any() and (~passed).any()
    rt = edge_runtime.load_bundle(_with_threshold(path, tmp_path, thr), threads=1)
    seen: list[tuple[np.ndarray, int, np.ndarray]] = []
    res = rt.infer(x, mode="cbnet", on_exit=lambda rows, i, out, t: seen.append((rows.copy(), i, out.copy())))
    ungated = edge_runtime.methods.cbnet.CBNetRunner(rt, gated=False).run(x)
    chain = rt.infer(x[~passed], mode="early_exit")  # the early-exit chain on the ORIGINAL inputs
    assert res.info["converted_rows"] == np.flatnonzero(passed).tolist()
    assert res.info["converted"] == int(passed.sum()) and res.info["converted_fraction"] == passed.mean()
    np.testing.assert_array_equal(res.outputs[passed], ungated.outputs[passed])
    np.testing.assert_allclose(res.outputs[~passed], chain.outputs, atol=1e-6)
    assert (res.exit_index[passed] == 0).all() and (res.exit_index[~passed] == chain.exit_index).all()
    assert res.segment_batch_size[0] == (~passed).sum() and set(res.part_latency_s) == {
        "autoencoder", "classifier", "early_exit"}
    # every sample reported once, with its own row and answer
    rows = np.concatenate([r for r, _, _ in seen])
    assert sorted(rows.tolist()) == list(range(len(x)))
    for r, i, out in seen:
        np.testing.assert_array_equal(out, res.outputs[r])
        assert (res.exit_index[r] == i).all()
    # the chain behind the gate takes the caller's policy: nothing leaves it early -> its last exit answers
    never = rt.infer(x, mode="cbnet", thresholds=[-1.0])
    assert (never.exit_index[~passed] == rt.num_exits - 1).all() and (never.exit_index[passed] == 0).all()


def test_a_gate_open_to_every_score_skips_the_decision_and_answers_like_the_ungated_path(gated_bundle, tmp_path):
    from edge_runtime.methods.cbnet import CBNetRunner, _passes_every_score

    path, (x, _) = gated_bundle
    x = x[:16]
    rt = edge_runtime.load_bundle(_with_threshold(path, tmp_path, -0.5), threads=1)   # max softmax is never < 0
    runner = CBNetRunner(rt)
    assert runner.gate is not None and runner.open and not runner.closed
    res = rt.infer(x, mode="cbnet")
    ungated = CBNetRunner(rt, gated=False).run(x)
    np.testing.assert_array_equal(res.outputs, ungated.outputs)
    assert res.info["converted_fraction"] == 1.0 and (res.exit_index == 0).all()
    # only thresholds below every possible score open the gate
    assert _passes_every_score({"name": "confidence", "threshold": 0.09}, 10)
    assert not _passes_every_score({"name": "confidence", "threshold": 0.1}, 10)
    assert _passes_every_score({"name": "entropy", "threshold": 2.31}, 10)        # ln 10 = 2.3026
    assert not _passes_every_score({"name": "entropy", "threshold": 2.30}, 10)
    assert not _passes_every_score({"name": "entropy", "threshold": 0.99, "kwargs": {"normalized": True}}, 10)
    assert not _passes_every_score({"name": "patience", "threshold": -1.0}, 10)


def test_a_closed_gate_runs_the_chain_alone(gated_bundle, tmp_path):
    from edge_runtime.methods.cbnet import NEVER

    path, (x, _) = gated_bundle
    x = x[:16]
    rt = edge_runtime.load_bundle(_with_threshold(path, tmp_path, NEVER), threads=1)
    seen: list[np.ndarray] = []
    res = rt.infer(x, mode="cbnet", on_exit=lambda rows, i, out, t: seen.append(rows.copy()))
    chain = rt.infer(x, mode="early_exit")
    np.testing.assert_array_equal(res.predictions, chain.predictions)
    np.testing.assert_array_equal(res.exit_index, chain.exit_index)
    np.testing.assert_allclose(res.outputs, chain.outputs, atol=1e-6)
    assert set(res.part_latency_s) == {"early_exit"}      # the converted path is not run at all
    assert res.info == {"converted": 0, "converted_fraction": 0.0, "converted_rows": []}
    assert sorted(np.concatenate(seen).tolist()) == list(range(len(x)))
    one = rt.infer(x[:1], mode="cbnet")
    assert one.predictions[0] == res.predictions[0] and one.exit_index[0] == res.exit_index[0]


def test_gated_mode_gives_each_sample_the_same_answer_in_a_batch_and_alone(gated_bundle, tmp_path):
    path, (x, _) = gated_bundle
    x = x[:24]
    thr, passed = _split_threshold(path, x)
    assert passed.any() and (~passed).any()
    rt = edge_runtime.load_bundle(_with_threshold(path, tmp_path, thr), threads=1)
    batch = rt.infer(x, mode="cbnet")
    for i in range(len(x)):
        one = rt.infer(x[i:i + 1], mode="cbnet")
        assert one.predictions[0] == batch.predictions[i] and one.exit_index[0] == batch.exit_index[i]
        np.testing.assert_allclose(one.outputs[0], batch.outputs[i], atol=1e-5)
        assert one.info["converted_rows"] == ([0] if passed[i] else [])


def test_ungated_mode_and_bench_rows_on_a_gated_bundle(gated_bundle, tmp_path):
    from edge_runtime.bench.configs import CONFIG_KINDS, BenchContext

    path, (x, y) = gated_bundle
    rt = edge_runtime.load_bundle(path, threads=1)
    assert sorted(rt.modes()) == ["cbnet", "cbnet_ungated", "early_exit", "full"]
    ungated = rt.infer(x[:5], mode="cbnet_ungated")
    assert (ungated.exit_index == 0).all() and ungated.info["converted_fraction"] == 1.0
    assert ungated.mode == "cbnet_ungated"
    runner = edge_runtime.methods.cbnet.CBNetRunner(rt, gated=False).run(x[:5])
    np.testing.assert_array_equal(runner.outputs, ungated.outputs)
    rows = CONFIG_KINDS.get("modes")(BenchContext({("onnxruntime", "fp32"): rt}, x, y))
    assert [r.name for r in rows] == ["cbnet", "cbnet_ungated"]
    assert "gated:" in rows[0].label and "ungated" in rows[1].label
    np.testing.assert_array_equal(rows[1].run(x[:5]).outputs, ungated.outputs)
    # a bundle without a gate: 'cbnet' is the ungated one, and there is no second mode
    plain = edge_runtime.load_bundle(_ungated_copy(path, tmp_path), threads=1)
    assert "cbnet_ungated" not in plain.modes()
    with pytest.raises(ConfigError, match="has no gate: mode 'cbnet' is the ungated one"):
        plain.infer(x[:2], mode="cbnet_ungated")


def test_malformed_gate_is_a_bundle_error_naming_the_field(gated_bundle, tmp_path):
    import shutil

    from edge_runtime.manifest import read_manifest, write_manifest

    path, (x, _) = gated_bundle
    shutil.copytree(path, tmp_path / "b")
    m = read_manifest(tmp_path / "b").to_dict()
    m["parts"]["cbnet"]["info"]["gate"]["policy"] = {"name": "confidence"}
    write_manifest(tmp_path / "b", m)
    rt = edge_runtime.load_bundle(tmp_path / "b", threads=1)
    with pytest.raises(edge_runtime.BundleError, match=r"parts\.cbnet\.info\.gate.*threshold"):
        rt.infer(x[:2], mode="cbnet")
    with pytest.raises(ConfigError, match="has no CBNet gate"):
        edge_runtime.methods.cbnet.CBNetRunner(edge_runtime.load_bundle(_ungated_copy(path, tmp_path / "u"),
                                                                        threads=1), gated=True)


def _ungated_copy(path: Path, tmp: Path) -> Path:
    import shutil

    from edge_runtime.manifest import read_manifest, write_manifest

    shutil.copytree(path, tmp / "u")
    m = read_manifest(tmp / "u").to_dict()
    del m["parts"]["cbnet"]["info"]["gate"]
    write_manifest(tmp / "u", m)
    return tmp / "u"


@pytest.mark.parametrize("gate, key", [
    ({"policy": "patience"}, "cbnet.gate.policy"),
    ({"policy": "confidance"}, "cbnet.gate.policy"),
    ({"max_accuracy_drop": -1}, "cbnet.gate.max_accuracy_drop"),
    ({"threshold": 0.9}, "cbnet.gate.'threshold'"),
    ("yes", "cbnet.gate"),
])
def test_gate_recipe_errors_name_the_key(gate, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        parse_recipe({"name": "x", "model": {"name": "tiny_cnn"}, "cbnet": {"gate": gate}})


def test_gate_recipe_forms_and_the_stage_needs_calibration():
    from converters import convert

    spec = parse_recipe({"name": "x", "model": {"name": "tiny_cnn"}, "cbnet": {"gate": True}})["cbnet"]
    assert spec["gate"] == {"policy": "confidence", "kwargs": {}, "max_accuracy_drop": None}
    assert parse_recipe({"name": "x", "model": {"name": "tiny_cnn"}, "cbnet": {"gate": False}})["cbnet"]["gate"] is None
    recipe = {k: v for k, v in SMALL_RECIPE.items() if k != "calibrate"}
    recipe["cbnet"] = {**SMALL_RECIPE["cbnet"], "gate": {"policy": "entropy"}}
    with pytest.raises(ConfigError, match="'cbnet.gate' needs a 'calibrate' section"):
        convert(parse_recipe(recipe), Path("/nonexistent/never-written"), progress=False)
