"""DeeDiff: the losses on hand-computed cases, the exported denoiser's blocks against PyTorch, the sampling loop's
per-sample exits, batch-vs-single equality, the ``sample`` mode (CLI, daemon, inspect), the conversion stage."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from _helpers import HEAVY_MODULES

import edge_runtime
from converters.methods.deediff.losses import (
    DDPMSimpleLoss,
    DeeDiffLoss,
    DeeDiffProbeLoss,
    deediff_loss,
    deediff_terms,
)
from converters.methods.deediff.model import deediff_uvit, noised
from converters.methods.deediff.stage import parse_deediff_section
from edge_runtime.errors import ConfigError, InputError
from edge_runtime.methods.deediff import DiffusionSampler, NoiseSchedule, ddim_step, ddim_timesteps, starting_noise
from edge_runtime.methods.deediff.mode import _request_args
from edge_runtime.methods.deediff.quality import choose_threshold, frechet_distance
from edge_runtime.policies import create_policy

TINY = Path(__file__).resolve().parents[1] / "converters" / "recipes" / "deediff_tiny.yaml"


@pytest.fixture(scope="session")
def diffusion_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny DeeDiff bundle converted by ``convert`` from a recipe (a few training steps; quality irrelevant)."""
    from converters import convert

    return convert(TINY, tmp_path_factory.mktemp("deediff") / "tiny", progress=False)


@pytest.fixture(scope="module")
def rt(diffusion_bundle: Path):
    return edge_runtime.load_bundle(diffusion_bundle, threads=1)


# -- losses ---------------------------------------------------------------------------------------------------------

def test_uem_pseudo_label_and_deediff_loss_on_a_hand_computed_case():
    eps = torch.zeros(2, 1, 1, 2)
    g0 = torch.tensor([[1.0, 0.0], [0.5, 0.5]]).reshape(2, 1, 1, 2).requires_grad_()
    u0 = torch.tensor([0.2, 0.6], requires_grad=True)
    final = torch.tensor([[0.1, -0.1], [0.0, 0.0]]).reshape(2, 1, 1, 2)
    terms = deediff_terms([(g0, u0), final], eps)
    uhat = [(math.tanh(1.0) + 0.0) / 2, math.tanh(0.5)]            # mean over pixels of tanh|g - eps|
    assert terms["uhat"][0].tolist() == pytest.approx(uhat)
    assert not terms["uhat"].requires_grad                           # a target: no gradient into it
    assert float(terms["simple"]) == pytest.approx((0.01 + 0.0) / 2)   # per-sample pixel means, then batch mean
    assert terms["mse"][0].tolist() == pytest.approx([0.5, 0.25])
    l_u = ((0.2 - uhat[0]) ** 2 + (0.6 - uhat[1]) ** 2) / 2
    l_ual = ((1 - 0.2) * 0.5 + (1 - 0.6) * 0.25) / 2
    loss = deediff_loss(terms, lam=1.0, beta=1.0)
    assert loss.item() == pytest.approx(0.005 + l_u + l_ual)
    assert deediff_loss(terms, lam=2.0, beta=0.0).item() == pytest.approx(0.005 + 2 * l_u)
    loss.backward()   # L_UAL's gradient reaches u (the paper's loss does not detach it)
    assert u0.grad.tolist() == pytest.approx([(2 * (0.2 - uhat[0]) - 0.5) / 2, (2 * (0.6 - uhat[1]) - 0.25) / 2],
                                             abs=1e-6)  # float32


def test_uem_is_the_patch_mean_of_a_timestep_aware_sigmoid():
    torch.manual_seed(0)
    m = deediff_uvit(dim=16, depth=3, heads=2, temb_dim=4).eval()
    uem = m.heads[0].uem
    h = torch.randn(2, 2 + 16, 16)
    temb = torch.randn(2, 4)
    with torch.no_grad():
        got = uem(h, temb)
        tokens = torch.nn.functional.layer_norm(h[:, 2:], (16,), uem.norm.weight, uem.norm.bias)
        w, b = uem.linear.weight[0], uem.linear.bias[0]
        ref = torch.sigmoid(tokens @ w[:16] + (temb @ w[16:])[:, None] + b).mean(1)
    assert torch.allclose(got, ref, atol=1e-6)


def test_loss_variants_train_the_right_weights():
    m = deediff_uvit(dim=16, depth=3, heads=2)
    backbone, exits = {id(p) for p in m.backbone_parameters()}, {id(p) for p in m.exit_parameters()}
    assert backbone and exits and not backbone & exits and len(backbone | exits) == len(list(m.parameters()))
    assert {id(p) for p in DDPMSimpleLoss(m).trainable_parameters(m)} == backbone
    assert {id(p) for p in DeeDiffProbeLoss(m).trainable_parameters(m)} == exits     # frozen backbone
    assert len(DeeDiffLoss(m).trainable_parameters(m)) == len(list(m.parameters()))  # the paper: all jointly
    x0 = torch.rand(4, 1, 16, 16) * 2 - 1
    loss, logits = DeeDiffLoss(m)(m, x0, torch.arange(4), 0)
    assert loss.ndim == 0 and torch.isfinite(loss) and logits == []


def test_forward_process_and_schedule():
    s = NoiseSchedule("linear", 1000)
    abar = s.alphas_cumprod()
    assert abar[0] == pytest.approx(1 - 1e-4) and np.all(np.diff(abar) < 0) and abar[-1] < 1e-4
    assert NoiseSchedule("cosine", 100).alphas_cumprod()[-1] < 1e-3
    x0, eps = torch.ones(1, 1, 2, 2), torch.full((1, 1, 2, 2), 2.0)
    xt = noised(s, x0, torch.tensor([500]), eps)
    assert torch.allclose(xt, torch.full_like(xt, math.sqrt(abar[500]) + 2 * math.sqrt(1 - abar[500])))
    # DDIM with the true noise recovers x0 in one step
    back = ddim_step(xt.numpy(), eps.numpy(), float(abar[500]), 1.0)
    assert np.allclose(back, 1.0, atol=1e-5)
    assert ddim_timesteps(1000, 3).tolist() == [999, 500, 0]
    with pytest.raises(ConfigError, match="kind"):
        NoiseSchedule("quadratic")


# -- policy and quality -----------------------------------------------------------------------------------------------

def test_uncertainty_policy_decides_per_sample_on_u():
    pol = create_policy("uncertainty", num_exits=3, thresholds=[0.3, 0.1])
    u = {"u": np.array([0.05, 0.1, 0.3, 0.9], np.float32)}
    assert pol.decide(0, u, {}).tolist() == [True, True, False, False]   # strictly below
    assert pol.decide(1, u, {}).tolist() == [True, False, False, False]


def test_frechet_distance_matches_the_closed_form():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 5)) @ rng.normal(size=(5, 5))
    b = rng.normal(size=(200, 5)) @ rng.normal(size=(5, 5)) + 1.0
    ma, mb = a.mean(0), b.mean(0)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    ref = ((ma - mb) ** 2).sum() + np.trace(sa + sb - 2 * scipy_linalg.sqrtm(sa @ sb).real)
    assert frechet_distance(a, b) == pytest.approx(ref, rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)


def test_threshold_choice_uses_fewest_layers_within_the_fid_budget():
    sweep = {"curve": [{"threshold": 0.1, "layer_fraction": 0.9, "fid": 10.2, "fid_ratio": 1.02},
                       {"threshold": 0.2, "layer_fraction": 0.6, "fid": 10.9, "fid_ratio": 1.09},
                       {"threshold": 0.3, "layer_fraction": 0.4, "fid": 13.0, "fid_ratio": 1.30}]}
    assert choose_threshold(sweep, 0.10)["threshold"] == 0.2
    assert choose_threshold(sweep, 0.05)["threshold"] == 0.1
    assert choose_threshold(sweep, 0.01) is None


def test_recipe_section_defaults_and_errors_name_the_key():
    spec = parse_deediff_section(None)
    assert spec["sampler"]["steps"] == 20 and spec["sweep"]["thresholds"] is None and spec["sweep"]["levels"]
    for bad, key in [({"sweep": {"samples": 1}}, "deediff.sweep.samples"),
                     ({"sampler": {"steps": 0}}, "deediff.sampler.steps"),
                     ({"classifier": {"lr": -1}}, "deediff.classifier.lr"),
                     ({"sweep": {"thresholds": []}}, "deediff.sweep.thresholds"),
                     ({"sweep": {"levels": [0.5, 1.0]}}, "deediff.sweep.levels"),
                     ({"sweep": {"nope": 1}}, "deediff.sweep")]:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            parse_deediff_section(bad)


# -- the converted bundle ---------------------------------------------------------------------------------------------

def test_bundle_records_per_block_verification_of_eps_and_u(rt):
    m = rt.manifest
    assert [e.output_kind for e in m.exits] == ["epsilon"] * m.num_exits
    assert [i.name for i in m.inputs] == ["x_t", "t", "y"]
    for e in m.verification.exits[:-1]:   # every block's eps and u, several timesteps
        assert set(e["outputs"]) == {"exit", "u"} and max(e["outputs"].values()) <= 1e-4
    assert m.verification.passed and m.verification.exits[-1]["max_abs_diff"] <= 1e-4
    info = m.parts["deediff"].info
    assert info["schedule"]["train_steps"] == 1000 and info["sweep"]["split"] == "calibration"
    chosen = info["sweep"]["chosen"]
    expected = chosen["threshold"] if chosen else 0.0
    assert list(m.policy.thresholds) == [expected] * (m.num_exits - 1) and m.policy.name == "uncertainty"
    assert m.parts["deediff"].verification["parts"]["classifier"]["max_abs_diff"] <= 1e-4
    assert "sample" in rt.modes()


def _threshold_splitting(rt, sampler, noise, classes):
    """A threshold that lets some samples leave at block 0 and keeps others (random-init u's are near 0.5)."""
    feeds = {"x_t": noise, "t": np.full(len(noise), 999, np.int64), "y": classes}
    u0 = rt.segment_outputs(feeds)[0]["u"]
    return float(np.median(u0)) + 1e-7


def test_sampling_loop_exits_per_sample_at_the_first_confident_block(rt):
    sampler = DiffusionSampler(rt)
    noise = starting_noise(6, sampler.sample_shape, seed=5)
    classes = sampler.classes(6)
    thr = _threshold_splitting(rt, sampler, noise, classes)
    calls = []
    decide = rt.decide

    def spy(feeds, policy, **kw):        # the loop goes through the executor once per step, whole batch
        run = decide(feeds, policy, **kw)
        calls.append((len(feeds["x_t"]), run.segment_batch_size.tolist()))
        return run

    rt.decide = spy
    try:
        res = sampler.run(noise, classes, steps=3, threshold=thr)
    finally:
        del rt.decide
    assert [c[0] for c in calls] == [6, 6, 6]
    assert any(sizes[1] < sizes[0] for _, sizes in calls)          # the batch shrank after a block
    # reference: every block's outputs for every sample, the first block with u < thr answers
    x, abar, ts = noise.copy(), NoiseSchedule().alphas_cumprod(), ddim_timesteps(1000, 3)
    for k, t in enumerate(ts):
        outs = rt.segment_outputs({"x_t": x, "t": np.full(6, t, np.int64), "y": classes})
        exits = [next((i for i, o in enumerate(outs[:-1]) if o["u"][s] < thr), len(outs) - 1) for s in range(6)]
        assert res.layers[k].tolist() == [e + 1 for e in exits]
        eps = np.stack([outs[e]["exit"][s] for s, e in enumerate(exits)])
        x = ddim_step(x, eps, float(abar[t]), float(abar[ts[k + 1]]) if k + 1 < len(ts) else 1.0)
    np.testing.assert_allclose(res.images, (x + 1) / 2, atol=1e-5)
    assert 1 < res.mean_layers < rt.num_exits


def test_a_batch_samples_the_same_images_as_its_samples_one_at_a_time(rt):
    sampler = DiffusionSampler(rt)
    thr = _threshold_splitting(rt, sampler, starting_noise(4, sampler.sample_shape, 3), sampler.classes(4))
    batch = rt.sample(4, steps=4, seed=3, threshold=thr)
    for i in range(4):
        one = sampler.run(starting_noise(1, sampler.sample_shape, 3, start=i), batch.classes[i:i + 1], steps=4,
                          threshold=thr)
        np.testing.assert_allclose(one.images[0], batch.images[i], atol=1e-5)
        assert one.layers[:, 0].tolist() == batch.layers[:, i].tolist()
    again = rt.sample(4, steps=4, seed=3, threshold=thr)
    np.testing.assert_array_equal(again.images, batch.images)


def test_uncertainty_levels_are_quantiles_of_the_lowest_u_along_full_depth_trajectories(rt):
    from edge_runtime.methods.deediff.quality import uncertainty_levels

    sampler = DiffusionSampler(rt)
    noise, classes = starting_noise(5, sampler.sample_shape, 2), sampler.classes(5)
    lowest, x, abar, ts = [], noise.copy(), NoiseSchedule().alphas_cumprod(), ddim_timesteps(1000, 3)
    for k, t in enumerate(ts):
        outs = rt.segment_outputs({"x_t": x, "t": np.full(5, t, np.int64), "y": classes})
        lowest.append(np.min([o["u"] for o in outs[:-1]], axis=0))
        x = ddim_step(x, outs[-1]["exit"], float(abar[t]), float(abar[ts[k + 1]]) if k + 1 < len(ts) else 1.0)
    ref = np.quantile(np.concatenate(lowest), [0.25, 0.75])
    got = uncertainty_levels(rt, [0.25, 0.75], n=5, steps=3, seed=2)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    assert rt.sample(5, steps=3, seed=2, threshold=got[1] + 1e-6).mean_layers < rt.num_exits


def test_full_sampling_runs_every_block_and_matches_no_exit(rt):
    full = rt.sample(3, steps=3, seed=1, mode="full")
    never = rt.sample(3, steps=3, seed=1, threshold=0.0)         # u < 0 never: the last block answers
    assert (full.layers == rt.num_exits).all() and (never.layers == rt.num_exits).all()
    np.testing.assert_allclose(full.images, never.images, atol=1e-5)
    assert full.images.shape == (3, 1, 16, 16) and full.classes.tolist() == [0, 1, 2]
    assert rt.sample(2, steps=2, cls=7).classes.tolist() == [7, 7]
    with pytest.raises(InputError, match="class"):
        rt.sample(1, cls=10)
    with pytest.raises(ConfigError, match="mode"):
        rt.sample(1, mode="half")


def test_infer_in_sample_mode_denoises_the_given_noise(rt):
    sampler = DiffusionSampler(rt)
    noise, classes = starting_noise(3, sampler.sample_shape, 8), np.array([4, 5, 6])
    seen = []
    res = rt.infer({"x_t": noise, "t": np.zeros(3, np.int64), "y": classes}, mode="sample",
                   on_exit=lambda rows, i, out, t: seen.extend(rows.tolist()))
    ref = sampler.run(noise, classes)          # the bundle's steps and chosen threshold
    np.testing.assert_allclose(res.outputs, ref.images, atol=1e-6)
    assert res.predictions.tolist() == [4, 5, 6] and sorted(seen) == [0, 1, 2] and res.mode == "sample"
    assert res.info["mean_layers"] == pytest.approx(ref.mean_layers)


def test_sample_mode_uses_the_given_policy_object_not_only_its_thresholds(rt):
    sampler = DiffusionSampler(rt)
    noise, classes = starting_noise(3, sampler.sample_shape, 8), np.array([4, 5, 6])
    feeds = {"x_t": noise, "t": np.zeros(3, np.int64), "y": classes}
    never = rt.infer(feeds, mode="sample", policy=create_policy("never", rt.num_exits))
    assert (np.array(never.info["layers"]) == rt.num_exits).all()       # nobody leaves: every block, every step
    np.testing.assert_allclose(never.outputs, sampler.run(noise, classes, threshold=0.0).images, atol=1e-6)
    with pytest.raises(ConfigError, match="lambda"):                       # PALBERT's policy: the blocks have no lambda
        rt.infer(feeds, mode="sample", policy=create_policy("q_exit", rt.num_exits, 0.5))


def test_the_default_mode_of_a_diffusion_bundle_is_one_it_can_run(rt):
    assert "early_exit" not in rt.modes() and rt.default_mode == rt.modes()[0] == "sample"
    assert rt.resolve_mode(None) == rt.resolve_mode(None, policy_given=True) == "sample"


def test_sample_refuses_a_classifier_bundle(cnn_bundle):
    with pytest.raises(ConfigError, match="cannot run mode 'sample'.*deediff"):
        edge_runtime.load_bundle(cnn_bundle).sample(2)


def test_sample_command_writes_a_png_grid_and_inspect_shows_the_mode(diffusion_bundle, tmp_path, capsys):
    from edge_runtime.cli import main

    out, js = tmp_path / "grid.png", tmp_path / "res.json"
    assert main(["sample", str(diffusion_bundle), "--n", "4", "--steps", "2", "--out", str(out), "--json", str(js),
                 "--threads", "1"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rec = json.loads(js.read_text())
    assert np.array(rec["images"]).shape == (4, 1, 16, 16) and np.array(rec["layers"]).shape == (2, 4)
    assert "samples, 2 DDIM steps" in capsys.readouterr().out
    assert main(["inspect", str(diffusion_bundle)]) == 0
    assert "deediff (mode 'sample')" in capsys.readouterr().out


def test_request_arguments_are_checked_by_name():
    doc = {"inputs": [{"name": "n", "shape": [1], "datatype": "INT64", "data": [3]},
                      {"name": "seed", "shape": [1], "datatype": "INT64", "data": [9]},
                      {"name": "class", "shape": [1], "datatype": "INT64", "data": [4]}],
           "parameters": {"mode": "sample", "sampling": "full"}}
    assert _request_args(doc) == {"n": 3, "seed": 9, "cls": 4, "mode": "full"}
    for inputs, match in [([{"name": "n", "data": [0]}], "n: expected 1"),
                          ([{"name": "m", "data": [1]}], "unknown name"),
                          ([{"name": "n", "data": [1, 2]}], "one number")]:
        with pytest.raises(InputError, match=match):
            _request_args({"inputs": inputs})
    for inputs, field in [([{"name": "n", "data": [1]}, {"name": "steps", "data": [0]}], "inputs[1].data"),
                          ([{"name": "steps", "data": [-3]}], "inputs[0].data"),
                          ([{"name": "steps", "data": [1001]}], "inputs[0].data"),
                          ([{"name": "seed", "data": [-1]}], "inputs[0].data")]:
        with pytest.raises(InputError, match=r"(steps: expected 1\.\.1000|seed: expected a non-negative)") as exc:
            _request_args({"inputs": inputs}, train_steps=1000)
        assert exc.value.field == field


def test_steps_zero_is_refused_not_the_default(rt):
    sampler = DiffusionSampler(rt)
    with pytest.raises(ConfigError, match="steps must be in 1..1000, got 0"):
        sampler.run(starting_noise(1, sampler.sample_shape, 0), sampler.classes(1), steps=0)
    with pytest.raises(InputError, match="seed"):
        rt.sample(1, steps=1, seed=-1)


def test_daemon_serves_samples_as_kserve_v2(diffusion_bundle):
    from _serve_helpers import Daemon

    d = Daemon([str(diffusion_bundle)])
    try:
        body = {"parameters": {"mode": "sample"}, "inputs": [
            {"name": "n", "shape": [1], "datatype": "INT64", "data": [2]},
            {"name": "seed", "shape": [1], "datatype": "INT64", "data": [4]},
            {"name": "steps", "shape": [1], "datatype": "INT64", "data": [2]},
            {"name": "class", "shape": [1], "datatype": "INT64", "data": [3]}]}
        r = d.client.post("/v2/models/tiny/infer", json=body)
        assert r.status_code == 200, r.text
        outs = {o["name"]: o for o in r.json()["outputs"]}
        assert outs["images"]["shape"] == [2, 1, 16, 16] and outs["class"]["data"] == [3, 3]
        ref = edge_runtime.load_bundle(diffusion_bundle, threads=1).sample(2, steps=2, seed=4, cls=3)
        np.testing.assert_allclose(np.array(outs["images"]["data"]).reshape(2, 1, 16, 16), ref.images, atol=1e-5)
        bad = d.client.post("/v2/models/tiny/infer", json={**body, "inputs": [{"name": "n", "data": [0]}]})
        assert bad.status_code == 422 and "n" in bad.text
        for inputs in ([{"name": "steps", "data": [0]}], [{"name": "steps", "data": [5000]}],
                       [{"name": "seed", "data": [-1]}]):
            bad = d.client.post("/v2/models/tiny/infer", json={**body, "inputs": inputs})
            assert bad.status_code == 422 and bad.json()["field"] == "inputs[0].data", bad.text
    finally:
        d.stop()


def test_sampling_never_imports_torch(diffusion_bundle):
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import json, sys
        import edge_runtime
        rt = edge_runtime.load_bundle({str(diffusion_bundle)!r}, threads=1)
        rt.sample(2, steps=2); rt.sample(2, steps=2, mode="full")
        from edge_runtime.methods.deediff.quality import classify
        classify(rt, rt.sample(2, steps=2).images)
        print(json.dumps({{"mods": {HEAVY_MODULES}}}))
    """)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["mods"] == []


def test_benchmark_script_reports_speed_quality_and_the_segmented_path_on_a_tiny_bundle(diffusion_bundle, tmp_path):
    """benchmarks/deediff_sampling.py end to end at toy sizes: every row timed, the curve and the grids written."""
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, str(root / "benchmarks" / "deediff_sampling.py"), "--bundle",
                           f"tiny={diffusion_bundle}", "--out", str(tmp_path / "rep"), "--steps", "2",
                           "--batch-sizes", "1", "2", "--repeats", "1", "--warmup", "0", "--quality-samples", "6"],
                          capture_output=True, text=True, timeout=300, cwd=root,
                          env={**os.environ, "PYTHONPATH": str(root)})
    assert proc.returncode == 0, proc.stderr
    res = json.loads((tmp_path / "rep" / "results.json").read_text())
    for b in ("1", "2"):
        rows = res["timing"][b]
        assert set(rows) == {"tiny/full", "tiny/early_exit", "tiny/segments"}
        assert rows["tiny/segments"]["mean_layers"] == rows["tiny/full"]["mean_layers"] == res["num_layers"]
        assert rows["tiny/early_exit"]["speedup_vs_full"] > 0 and rows["tiny/segments"]["slowdown_vs_full"] > 0
    assert res["quality"]["tiny"]["curve"]
    for name in ("report.md", "curve.png", "grid_tiny.png"):
        assert (tmp_path / "rep" / name).is_file()


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["deediff_probe", "deediff_paper"])
def test_shipped_recipe_converts_and_samples_with_shortened_training(recipe, tmp_path):
    """The shipped recipes end to end with their training cut to one epoch per stage and a small sweep (about 30 s
    each on 2 cores; the full trainings are benchmarks/deediff_sampling.py's): every stage runs, the segments
    verify per block, the sweep records its curve, and the bundle samples."""
    import yaml

    from converters import convert
    from converters.recipe.core import parse_recipe

    path = TINY.parent / f"{recipe}.yaml"
    data = yaml.safe_load(path.read_text())
    for stage in data["train"]["stages"]:
        stage["epochs"] = 1
    data["deediff"]["classifier"]["epochs"] = 1
    data["deediff"]["sampler"]["steps"] = 3
    data["deediff"]["sweep"].update(samples=12, levels=[0.1, 0.5])
    out = convert(parse_recipe(data, source=path), tmp_path / recipe, progress=False)
    rt = edge_runtime.load_bundle(out, threads=1)
    assert rt.num_exits == data["model"]["kwargs"]["depth"]
    info = rt.manifest.parts["deediff"].info
    sweep = info["sweep"]
    assert len(sweep["curve"]) >= 1 and all(0 < p["layer_fraction"] <= 1.0 for p in sweep["curve"])
    assert all(e["max_abs_diff"] <= float(data["export"]["tolerance"]) for e in rt.manifest.verification.exits)
    res = rt.sample(3, seed=0)
    assert res.images.shape == (3, 1, 16, 16) and res.layers.shape == (3, 3)


@pytest.mark.parametrize("model", [None, {"factory": "mymod:build"}])
def test_the_stage_refuses_a_user_or_python_model_with_a_config_error(model):
    from converters.methods.deediff.stage import DeeDiffStage
    with pytest.raises(ConfigError, match=r"recipe key 'deediff' needs model\.name deediff_uvit, got None"):
        DeeDiffStage().check({"model": model, "seed": 0}, split=object())
