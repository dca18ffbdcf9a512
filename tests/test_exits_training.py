"""Issue 7 (part 1): data split, BranchyNet loss, trainer (resume after interruption), calibration, recipes, convert."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from _helpers import assert_user_modes

from converters.models import MODELS, create_model
from converters.recipe import parse_recipe
from converters.training.losses import create_loss, weighted_exit_loss
from converters.training.trainer import StageConfig, TrainCallback, Trainer
from edge_runtime.calibration import calibrate, evaluate_point, oracle, pareto_front, threshold_candidates
from edge_runtime.datasets import (
    DATASETS,
    apply_preprocessing,
    build_split,
    indices_sha256,
    load_split,
    resize_bilinear,
    stratified_split,
)
from edge_runtime.errors import ConfigError
from edge_runtime.policies import create_policy

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny models train fastest (and least disturbed by other work) on one thread."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# -- data -------------------------------------------------------------------------------------
def test_split_is_deterministic_stratified_and_disjoint():
    y = np.repeat(np.arange(4), [50, 30, 20, 10])
    fr = {"train": 0.6, "calibration": 0.2, "test": 0.2}
    a, b = stratified_split(y, fr, seed=3), stratified_split(y, fr, seed=3)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert indices_sha256(stratified_split(y, fr, seed=4)["test"]) != indices_sha256(a["test"])
    every = np.concatenate(list(a.values()))
    assert len(every) == len(y) == len(np.unique(every))
    for c, n in enumerate([50, 30, 20, 10]):                  # per class, the split follows the fractions
        assert (y[a["test"]] == c).sum() == round(0.2 * n)
        assert (y[a["calibration"]] == c).sum() == round(0.2 * n)


def test_digits_split_recorded_and_rebuilt_with_hash_check(tmp_path):
    sd = build_split({"name": "digits", "kwargs": {"size": 16}})
    sec = sd.manifest_section()
    assert sec["counts"] == {k: len(v) for k, v in sd.indices.items()} and sum(sec["counts"].values()) == 1797
    x, y = load_split(sec, "test")
    assert x.shape == (sec["counts"]["test"], 1, 16, 16) and x.dtype == np.float32 and 0 <= x.min() <= x.max() <= 1
    np.testing.assert_array_equal(y, sd.arrays("test")[1])
    (tmp_path / "manifest.json").write_text(json.dumps({"data": sec}))
    np.testing.assert_array_equal(load_split(str(tmp_path), "test")[0], x)     # from a bundle directory
    with pytest.raises(ConfigError, match="test_indices_sha256"):
        load_split({**sec, "test_indices_sha256": "0" * 64}, "test")
    pre = sd.normalization()
    z = apply_preprocessing(sd.arrays("train")[0], pre)
    assert abs(float(z.mean())) < 1e-3 and abs(float(z.std()) - 1) < 1e-3


def test_resize_bilinear_matches_hand_values_and_torch():
    img = np.array([[[[0.0, 1.0], [2.0, 3.0]]]], dtype=np.float32)
    out = resize_bilinear(img, 4)
    np.testing.assert_allclose(out[0, 0, 0], [0.0, 0.25, 0.75, 1.0])          # half-pixel centres, clamped edges
    ref = torch.nn.functional.interpolate(torch.from_numpy(img), size=4, mode="bilinear", align_corners=False)
    np.testing.assert_allclose(out, ref.numpy(), atol=1e-6)


def test_npz_and_image_folder_datasets(tmp_path):
    from PIL import Image

    x = (np.random.default_rng(0).random((6, 8, 8)) * 255).astype(np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=np.array([0, 1, 0, 1, 0, 1]))
    ds = DATASETS.get("npz")(path=str(tmp_path / "d.npz"))
    assert ds.x.shape == (6, 1, 8, 8) and ds.x.dtype == np.uint8 and ds.labels == ["0", "1"]
    assert ds.scale == 1 / 255 and ds.value_range == (0.0, 255.0)   # raw pixels; preprocessing scales them
    for cls in ("cat", "dog"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(x[i]).save(tmp_path / "imgs" / cls / f"{i}.png")
    ds = DATASETS.get("image_folder")(root=str(tmp_path / "imgs"), size=12)
    assert ds.x.shape == (4, 1, 12, 12) and ds.labels == ["cat", "dog"] and list(ds.y) == [0, 0, 1, 1]


# -- losses -----------------------------------------------------------------------------------
def test_weighted_exit_loss_hand_computed():
    y = torch.tensor([0, 1])
    z0 = torch.zeros(2, 2)                                         # CE = ln 2 per sample
    z1 = torch.tensor([[0.0, 0.0], [0.0, float(np.log(3.0))]])    # CE: ln 2 and -ln(3/4)
    got = weighted_exit_loss([z0, z1], y, [0.5, 2.0])
    want = 0.5 * np.log(2) + 2.0 * (np.log(2) + np.log(4 / 3)) / 2
    assert float(got) == pytest.approx(want, rel=1e-6)
    loss = create_loss("weighted_exits", create_model("tiny_cnn"), weights="depth")
    assert loss.weights == pytest.approx([1 / 6, 2 / 6, 3 / 6])
    with pytest.raises(ConfigError, match="one per exit"):
        create_loss("weighted_exits", create_model("tiny_cnn"), weights=[1.0])


# -- shared augmentation (LGViT's and CBNet's training) --------------------------------------------
@pytest.mark.parametrize("axis_major", [True, False])
def test_shift_augmentation_translates_each_image_within_the_bound(axis_major):
    from converters.training import random_shift

    x = torch.zeros(64, 1, 9, 9)
    x[:, :, 4, 4] = 1.0                                   # one bright pixel in the middle
    out = random_shift(x, 2, torch.Generator().manual_seed(0), axis_major=axis_major)
    assert out.shape == x.shape and torch.equal(out.sum((1, 2, 3)), x.sum((1, 2, 3)))
    pos = out.reshape(64, -1).argmax(1)
    rows, cols = pos // 9, pos % 9
    assert rows.min() >= 2 and rows.max() <= 6 and cols.min() >= 2 and cols.max() <= 6
    assert len(set(zip(rows.tolist(), cols.tolist()))) > 5  # really random
    assert random_shift(x, 0, torch.Generator()) is x
    flat = x[:, 0, 0]
    assert random_shift(flat, 2) is flat                  # no spatial axes: unchanged


def test_shift_draw_orders_use_the_same_draws_differently():
    """Both orders take 2N draws from the generator: image after image (dy, dx), or all dy then all dx."""
    from converters.training import random_shift

    x = torch.zeros(6, 1, 7, 7)
    x[:, :, 3, 3] = 1.0
    draws = torch.randint(0, 5, (12,), generator=torch.Generator().manual_seed(4)) - 2
    for axis_major, (dy, dx) in ((False, draws.view(6, 2).T), (True, draws.view(2, 6))):
        out = random_shift(x, 2, torch.Generator().manual_seed(4), axis_major=axis_major)
        pos = out.reshape(6, -1).argmax(1)
        # content moves opposite to the crop offset: the pixel lands at 3 - d
        assert torch.equal(pos // 7, 3 - dy) and torch.equal(pos % 7, 3 - dx)


# -- trainer: reproducible, resumable -----------------------------------------------------------
def _tiny_data(n: int = 96):
    sd = build_split({"name": "digits", "kwargs": {"size": 16}})
    x, y = sd.arrays("train")
    return apply_preprocessing(x[:n], sd.normalization()), y[:n]


class _Stop(RuntimeError):
    """Stands in for a kill/Ctrl-C in the middle of training."""


class _Interrupt(TrainCallback):
    def __init__(self, at_step: int, epoch: int) -> None:
        self.at_step, self.epoch = at_step, epoch

    def on_batch_end(self, trainer, stage, epoch, step, loss):
        if epoch == self.epoch and step == self.at_step:
            raise _Stop("simulated interruption")


def _train(tmp_path, callbacks=(), resume=False):
    torch.manual_seed(0)
    model = create_model("tiny_cnn", widths=[4, 8, 8, 8])
    stages = [StageConfig(name="a", epochs=2, batch_size=32, lr=3e-3),
              StageConfig(name="b", epochs=2, batch_size=32, lr=1e-3, optimizer={"name": "sgd", "kwargs": {}})]
    x, y = _tiny_data()
    tr = Trainer(model, stages, x, y, seed=0, checkpoint_path=tmp_path / "ckpt.pt", resume=resume,
                 run_id="r1", progress=False, callbacks=callbacks)
    return model, tr


def test_interrupted_training_resumes_to_identical_weights(tmp_path):
    ref, tr = _train(tmp_path / "ref")
    history = tr.fit()
    assert [h["epoch"] for h in history] == [0, 1, 0, 1]
    model, tr = _train(tmp_path / "run", callbacks=[_Interrupt(at_step=4, epoch=1)])   # mid-epoch, stage a
    with pytest.raises(_Stop):
        tr.fit()
    ckpt = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=True)
    assert (ckpt["stage"], ckpt["epoch"]) == (0, 0)              # the last finished epoch
    model, tr = _train(tmp_path / "run", resume=True)
    tr.fit()
    for (k, a), b in zip(ref.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), k
    _, tr = _train(tmp_path / "run", resume=True)
    tr.run_id = "other"
    with pytest.raises(ConfigError, match="different run"):
        tr.fit()


@pytest.mark.parametrize("n, world", [(96, 1), (10, 3), (2, 3), (1, 3)])
def test_epoch_order_is_the_distributed_samplers_shard(n, world):
    """Each rank's order is torch's DistributedSampler split (seed + stage, epoch), padded the same way."""
    from torch.utils.data import DistributedSampler

    from converters.training.dist import DistContext

    for rank in range(world):
        tr = Trainer(torch.nn.Linear(1, 1), [], np.zeros((n, 1)), np.zeros(n), seed=7,
                     dist=DistContext(rank=rank, world_size=world))
        ref = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True, seed=7 + 1)
        ref.set_epoch(3)
        assert tr._epoch_order(1, 3)[0].tolist() == list(ref)


def test_trainer_fits_a_module_without_exits_on_float_targets(tmp_path):
    """A method's part (here a linear map) trains on regression targets: no accuracy, loss falls, resume holds."""
    from converters.training.losses import ExitLoss

    class _MSE(ExitLoss):
        def __call__(self, model, x, y, step):
            return torch.nn.functional.mse_loss(model(x), y), []

    from converters.training.registry import LOSSES

    LOSSES.register("_test_mse", _MSE)
    try:
        x = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
        y = x @ np.array([[1.0], [-2.0], [0.5]], np.float32)
        stage = StageConfig(name="fit", loss={"name": "_test_mse"}, lr=0.05, epochs=4, batch_size=16)

        def run(path, resume=False, callbacks=()):
            torch.manual_seed(0)
            m = torch.nn.Linear(3, 1)
            tr = Trainer(m, [stage], x, y, seed=1, checkpoint_path=path, resume=resume, run_id="lin",
                         progress=False, callbacks=callbacks)
            return m, tr

        ref, tr = run(tmp_path / "a.pt")
        history = tr.fit()
        assert [h["train_accuracy"] for h in history] == [[]] * 4 and history[-1]["loss"] < history[0]["loss"]
        _, tr = run(tmp_path / "b.pt", callbacks=[_Interrupt(at_step=9, epoch=2)])
        with pytest.raises(_Stop):
            tr.fit()
        m, tr = run(tmp_path / "b.pt", resume=True)
        assert [h["loss"] for h in tr.fit()] == [h["loss"] for h in history]
        assert torch.equal(m.weight, ref.weight) and torch.equal(m.bias, ref.bias)
    finally:
        LOSSES._entries.pop("_test_mse", None)


# -- calibration on synthetic exit outputs with a known answer ------------------------------------
def _synthetic(n_easy: int, n_hard: int, hard_confident: bool):
    """Exit 0: right and confident on easy samples; wrong on hard ones (confident or not). Exit 1: always right."""
    n = n_easy + n_hard
    y = np.arange(n) % 5
    z0 = np.zeros((n, 5))
    z0[np.arange(n_easy), y[:n_easy]] = 8.0
    wrong = (y[n_easy:] + 1) % 5
    z0[n_easy + np.arange(n_hard), wrong] = 8.0 if hard_confident else 0.5
    z1 = np.eye(5)[y] * 8.0
    return [z0, z1], y


def test_calibration_finds_the_known_best_threshold():
    outs, y = _synthetic(80, 20, hard_confident=False)
    res = calibrate(outs, y, "entropy", {}, flops=[10, 100], max_accuracy_drop=0.0)
    assert res.chosen.accuracy == 1.0 and res.chosen.mean_flops == pytest.approx(0.8 * 10 + 0.2 * 100)
    assert res.chosen.exit_fractions == pytest.approx([0.8, 0.2])
    assert res.oracle["mean_flops"] == pytest.approx(28.0) and res.oracle["accuracy"] == 1.0
    # the chosen thresholds give the same answer through the device's decision code
    again = evaluate_point(outs, y, "entropy", {}, res.chosen.thresholds, [10, 100])
    assert again == res.chosen
    front = res.front
    assert all(a.mean_flops <= b.mean_flops and a.accuracy < b.accuracy for a, b in zip(front, front[1:]))


def test_calibration_respects_the_budget_when_errors_look_confident():
    outs, y = _synthetic(90, 10, hard_confident=True)
    strict = calibrate(outs, y, "confidence", {}, flops=[10, 100], max_accuracy_drop=0.0)
    assert strict.chosen.accuracy == 1.0 and strict.chosen.exit_fractions == pytest.approx([0.0, 1.0])
    loose = calibrate(outs, y, "confidence", {}, flops=[10, 100], max_accuracy_drop=10.0)
    assert loose.chosen.accuracy == pytest.approx(0.9) and loose.chosen.mean_flops == pytest.approx(10.0)
    assert loose.oracle["exit_fractions"] == pytest.approx([0.9, 0.1]) and loose.oracle["accuracy"] == 1.0
    at_90 = loose.extra["oracle_at_chosen_accuracy"]                       # the oracle needs no exit 1 at 90%
    assert at_90["accuracy"] == pytest.approx(0.9) and at_90["mean_flops"] == pytest.approx(10.0)


def test_oracle_sends_each_sample_to_its_earliest_correct_exit_and_trades_accuracy_for_cost():
    y = np.array([0, 0, 0, 0])
    right, wrong = np.array([5.0, 0.0]), np.array([0.0, 5.0])
    outs = [np.stack([right, wrong, wrong, wrong]), np.stack([right, right, wrong, wrong]),
            np.stack([right, right, right, wrong])]
    o = oracle(outs, y, [1, 10, 100])
    assert o["exit_fractions"] == [0.5, 0.25, 0.25] and o["accuracy"] == 0.75    # sample 3: never right -> exit 0
    assert o["mean_flops"] == pytest.approx((1 + 10 + 100 + 1) / 4)
    half = oracle(outs, y, [1, 10, 100], accuracy=0.5)                          # drop the dearest right sample
    assert half["accuracy"] == 0.5 and half["mean_flops"] == pytest.approx((1 + 10 + 1 + 1) / 4)


def test_per_exit_thresholds_and_latency_cost():
    rng = np.random.default_rng(0)
    n = 400
    y = rng.integers(0, 10, n)

    def exit_logits(acc, margin):
        z = rng.normal(0, 1, (n, 10))
        pred = np.where(rng.random(n) < acc, y, (y + 1) % 10)
        z[np.arange(n), pred] += margin
        return z

    outs = [exit_logits(0.8, 2.0), exit_logits(0.9, 4.0), exit_logits(0.99, 6.0)]
    res = calibrate(outs, y, "entropy", {}, flops=[10, 40, 100], latency=[1e-4, 2e-4, 4e-4], full_latency=6e-4)
    assert res.chosen.accuracy >= res.final_accuracy - 0.01
    assert len(res.chosen.thresholds) == 2 and res.chosen.expected_speedup == pytest.approx(
        6e-4 / res.chosen.mean_latency_s)
    grid_best = min((p for p in res.front if p.accuracy >= res.final_accuracy - 0.01), key=lambda p: p.mean_flops)
    assert res.chosen.mean_flops <= grid_best.mean_flops
    by_latency = calibrate(outs, y, "entropy", {}, flops=[10, 40, 100], latency=[1e-4, 2e-4, 4e-4],
                           full_latency=6e-4, cost="latency")
    assert by_latency.chosen.accuracy >= by_latency.final_accuracy - 0.01
    assert by_latency.chosen.mean_latency_s <= min(p.mean_latency_s for p in res.front
                                                   if p.accuracy >= res.final_accuracy - 0.01) + 1e-12
    with pytest.raises(ConfigError, match="calibrate.cost"):
        calibrate(outs, y, "entropy", {}, flops=[10, 40, 100], cost="energy")
    pol = create_policy("entropy", 3, 0.0)
    c = threshold_candidates(pol, np.array([0.1, 0.2, 0.3]), [0.0, 1.0])
    assert (np.array([0.1, 0.2, 0.3]) < c[0]).sum() == 0 and (np.array([0.1, 0.2, 0.3]) < c[1]).sum() == 3
    assert pareto_front([], cost=lambda p: p.mean_flops, accuracy=lambda p: p.accuracy) == []
    front = pareto_front(res.front + res.front[:1], cost=lambda p: p.mean_flops, accuracy=lambda p: p.accuracy)
    assert [p.mean_flops for p in front] == sorted(p.mean_flops for p in res.front)
    assert oracle(outs, y, [10, 40, 100])["accuracy"] >= res.final_accuracy


# -- recipes --------------------------------------------------------------------------------
def _recipe(**over):
    data = yaml.safe_load((REPO / "converters" / "recipes" / "branchynet_lenet.yaml").read_text())
    data.update(over)
    return data


@pytest.mark.parametrize("patch, key", [
    ({"data": {"name": "nope"}}, "data.name"),
    ({"data": {"name": "digits", "colour": 1}}, "data.'colour'"),
    ({"data": {"name": "digits", "split": {"fractions": {"train": 0.5, "calibration": 0.2, "test": 0.2}}}},
     "data.split.fractions"),
    ({"heads": [{"name": "no_such_head"}]}, "heads[0].name"),
    ({"train": {"stages": [{"lr": -1}]}}, "train.stages[0].lr"),
    ({"train": {"stages": [{"epochs": 1.5}]}}, "train.stages[0].epochs"),
    ({"train": {"stages": [{"loss": {"name": "nope"}}]}}, "train.stages[0].loss.name"),
    ({"train": {"stages": [{"optimiser": {}}]}}, "train.stages[0].'optimiser'"),
    ({"train": {"stages": []}}, "train.stages"),
    ({"calibrate": {"max_accuracy_drop": "one"}}, "calibrate.max_accuracy_drop"),
    ({"calibrate": {"cost": "energy"}}, "calibrate.cost"),
])
def test_recipe_validation_names_the_bad_key(patch, key):
    with pytest.raises(ConfigError) as err:
        parse_recipe(_recipe(**patch))
    assert key in str(err.value)


def test_shipped_branchynet_recipes_parse():
    for name in ("branchynet_lenet", "branchynet_resnet"):
        r = parse_recipe(yaml.safe_load((REPO / "converters" / "recipes" / f"{name}.yaml").read_text()))
        assert r["model"]["name"] in MODELS and r["train"]["stages"][0]["loss"]["name"] == "weighted_exits"


def test_branchynet_models_keep_the_contract():
    for name, n in (("branchynet_lenet", 3), ("branchynet_resnet", 4)):
        m = create_model(name).eval()
        outs = m(torch.zeros(2, *m.input_shape))
        assert len(outs) == n and all(o.shape == (2, 10) for o in outs)


# -- convert end to end ---------------------------------------------------------------------
def test_convert_trains_calibrates_and_inspect_shows_it(tmp_path):
    from converters import convert
    from converters.recipe import load_recipe

    rec = {
        "name": "tiny_trained", "seed": 0,
        "data": {"name": "digits", "kwargs": {"size": 16}},
        "model": {"name": "tiny_cnn", "kwargs": {"widths": [8, 8, 16, 16]}},
        "train": {"threads": 1, "stages": [{"name": "s", "epochs": 2, "batch_size": 64, "lr": 0.01}]},
        "policy": {"name": "entropy", "thresholds": 0.5},
        "calibrate": {"latency_repeats": 5, "levels": 12},
    }
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(rec))
    with pytest.raises(_Stop):                                      # interrupted in the second epoch
        convert(load_recipe(path), tmp_path / "b", progress=False, callbacks=[_Interrupt(at_step=20, epoch=1)])
    assert not (tmp_path / "b").exists() and (tmp_path / "b.train" / "checkpoint.pt").is_file()
    epochs_run = []

    class _Count(TrainCallback):
        def on_epoch_end(self, trainer, stage, epoch, metrics):
            epochs_run.append(epoch)

    out = convert(load_recipe(path), tmp_path / "b", progress=False, resume=True, callbacks=[_Count()])
    assert epochs_run == [1]                                         # resumed after the finished epoch 0
    m = json.loads((out / "manifest.json").read_text())
    cal = m["calibration"]
    assert m["policy"]["thresholds"] == cal["chosen"]["thresholds"]
    assert cal["chosen"]["accuracy"] >= cal["final_exit_accuracy"] - 0.01
    assert all(0 <= e["test_accuracy"] <= 1 for e in m["exits"]) and "oracle" in cal["test"]
    assert m["data"]["counts"]["test"] == 359 and m["inputs"][0]["preprocessing"]["std"][0] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "r.yaml"]      # no checkpoint or staging left
    assert_user_modes(out)                                           # readable by a service account (issue 16)
    shown = subprocess.run([sys.executable, "-m", "edge_runtime", "inspect", str(out)], capture_output=True,
                           text=True, check=True).stdout
    assert "expected speed-up" in shown and "test acc" in shown and "oracle" in shown
