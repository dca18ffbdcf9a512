"""Every registry's every registered name: it resolves (or, lazy and missing an optional package, says so in a
project error naming the package) and does a minimal job of its kind — a policy decides, a head and a model run
forward, a mode runs on a synthetic bundle, a target gives a verdict, a quantizer writes a file, ...

The registries are found in the source (every module-level ``NAME = Registry(...)``); a registry without a smoke
test below fails :func:`test_every_registry_has_a_smoke_test`. A name added to a registry is covered at once.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _helpers import policy_input

import edge_runtime
from edge_runtime.errors import BundleError, ConfigError, EdgeRuntimeError
from edge_runtime.registry import Registry
from edge_runtime.synthetic import write_synthetic_bundle

REPO = Path(__file__).resolve().parents[1]

#: registry id -> "module:attribute" (what test_every_registry_has_a_smoke_test checks against the source)
REGISTRIES = {
    "policies": "edge_runtime.policies.base:POLICIES",
    "backends": "edge_runtime.backends.base:BACKENDS",
    "meters": "edge_runtime.meters:METERS",
    "profiles": "edge_runtime.profiles:PROFILES",
    "modes": "edge_runtime.modes.base:MODES",
    "bench_config_kinds": "edge_runtime.bench.configs:CONFIG_KINDS",
    "bench_targets": "edge_runtime.bench.targets:TARGETS",
    "datasets": "edge_runtime.datasets:DATASETS",
    "heads": "converters.models.registry:HEADS",
    "models": "converters.models.registry:MODELS",
    "losses": "converters.training.registry:LOSSES",
    "optimizers": "converters.training.registry:OPTIMIZERS",
    "schedules": "converters.training.registry:SCHEDULES",
    "quantizers": "converters.export.quantize:QUANTIZERS",
    "in_graph_scores": "converters.export.scores:SCORE_GRAPHS",
    "recipe_sections": "converters.recipe.sections:SECTIONS",
    "cbnet_autoencoders": "converters.methods.cbnet.autoencoders:AUTOENCODERS",
    "cbnet_exemplar_methods": "converters.methods.cbnet.exemplars:EXEMPLAR_METHODS",
    "conversion_stages": "converters.pipeline.stages:STAGES",
}
#: modules whose import registers the built-in entries of a registry that lives elsewhere
_REGISTERING = ("edge_runtime.policies", "edge_runtime.meters", "edge_runtime.backends", "edge_runtime.bench.run",
                "converters.models", "converters.training", "converters.recipe", "converters.export.quantize",
                "converters.methods.cbnet")


def _registry(rid: str) -> Registry[Any]:
    for module in _REGISTERING:
        importlib.import_module(module)
    module, _, attr = REGISTRIES[rid].partition(":")
    reg = getattr(importlib.import_module(module), attr)
    assert isinstance(reg, Registry)
    return reg


def _cases(*rids: str) -> list[Any]:
    return [pytest.param(name, id=name) for rid in rids for name in _registry(rid).names()]


def _resolve(rid: str, name: str) -> Any:
    """``registry.get(name)``; a lazy entry whose optional package is missing must say so (then the test skips)."""
    try:
        return _registry(rid).get(name)
    except EdgeRuntimeError as exc:
        assert "needs a package that is not installed: " in str(exc) and str(exc).split(": ", 1)[1], str(exc)
        pytest.skip(str(exc))


def _source_registries() -> set[str]:
    """``module:NAME`` of every module-level ``NAME = Registry(...)`` under edge_runtime/ and converters/."""
    found = set()
    for root in ("edge_runtime", "converters"):
        for path in sorted((REPO / root).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in tree.body:
                value = getattr(node, "value", None)
                target = node.target if isinstance(node, ast.AnnAssign) else \
                    node.targets[0] if isinstance(node, ast.Assign) else None
                if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "Registry" \
                        and isinstance(target, ast.Name):
                    module = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
                    found.add(f"{module}:{target.id}")
    return found


def test_every_registry_has_a_smoke_test() -> None:
    assert _source_registries() == set(REGISTRIES.values())
    assert all(len(_registry(rid)) > 0 for rid in REGISTRIES)


# -- shared inputs ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_bundle(tmp_path_factory.mktemp("registries") / "b", num_exits=3, thresholds=[0.9, 0.7])


@pytest.fixture(scope="module")
def runtime(synthetic: Path) -> edge_runtime.Runtime:
    return edge_runtime.load_bundle(synthetic, threads=1)


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((24, 8)).astype(np.float32)


# -- device side --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", _cases("policies"))
def test_policy_decides_on_random_logits(name: str) -> None:
    from edge_runtime.policies import create_policy

    _resolve("policies", name)
    logits = np.random.default_rng(1).standard_normal((16, 5)).astype(np.float32) * 3
    policy = create_policy(name, 3)  # its defaults
    again = create_policy(name, 3, policy.thresholds or None, **policy.config())  # from what a manifest stores
    state, state_again = policy.start(16), again.start(16)
    for i in range(2):
        seen = policy_input(policy, logits, seed=i)  # the outputs beyond `exit` it reads, e.g. PALBERT's lambda
        leave = np.asarray(policy.decide(i, seen, state))
        assert leave.shape == (16,) and leave.dtype == bool
        np.testing.assert_array_equal(leave, again.decide(i, seen, state_again))


@pytest.mark.parametrize("name", _cases("backends"))
def test_backend_runs_a_synthetic_segment_or_names_what_is_missing(name: str, synthetic: Path,
                                                                    batch: np.ndarray) -> None:
    from edge_runtime.backends import create_backend

    _resolve("backends", name)
    try:
        backend = create_backend(name, threads=1)
    except EdgeRuntimeError as exc:  # the runtime library itself is missing here
        pytest.skip(str(exc))
    assert backend.name == name and backend.file_format
    if backend.file_format == "onnx":
        session = backend.load(synthetic / "segments" / "segment_0.onnx")
        outs = session.run({"input": batch})
        assert [o.shape for o in outs] == [(24, 8), (24, 4)]
        rt = edge_runtime.load_bundle(synthetic, backend=name, threads=1)
        assert rt.infer(batch).outputs.shape == (24, 4)
    else:  # the synthetic bundle holds ONNX files only: a clear refusal naming what it has
        with pytest.raises(BundleError, match=rf"no {backend.file_format}/fp32 file; the bundle has onnx/fp32"):
            edge_runtime.load_bundle(synthetic, backend=name, threads=1)


@pytest.mark.parametrize("name", _cases("meters"))
def test_meter_probes_and_refuses_clearly_without_its_hardware(name: str, tmp_path: Path, synthetic: Path,
                                                               batch: np.ndarray) -> None:
    cls = _resolve("meters", name)
    absent = {"powercap": {"root": tmp_path / "powercap"}, "jetson": {"roots": [tmp_path / "hwmon"]},
              "ina219": {"bus": 7, "dev_root": tmp_path}, "ina260": {"bus": 7, "dev_root": tmp_path},
              "powerlog": {"path": tmp_path / "power.csv"}}.get(name, {})
    ok, why = cls.probe(**absent)
    assert isinstance(ok, bool) and isinstance(why, str) and why
    if not cls.measured:  # an estimator: always there; energy for a real window on the synthetic bundle
        rt = edge_runtime.load_bundle(synthetic, threads=1, profile="rpi4", meter=name)
        res = rt.infer(batch)
        rt.close()
        assert ok and res.energy_j is not None and res.energy_j > 0 and res.energy_source == "estimated:rpi4"
        return
    assert not ok, f"meter {name!r} found hardware in an empty directory"
    with pytest.raises(EdgeRuntimeError) as info:
        cls(**absent)
    assert str(info.value) == why  # the same words as the probe


@pytest.mark.parametrize("name", _cases("profiles"))
def test_profile_estimates_and_applies_to_a_synthetic_bundle(name: str, synthetic: Path, batch: np.ndarray) -> None:
    from edge_runtime.estimate import estimate_bundle
    from edge_runtime.profiles import DeviceProfile, get_profile

    load = _resolve("profiles", name)  # a loader: the YAML file is read on first use
    profile = load()
    assert isinstance(profile, DeviceProfile) and get_profile(name) is profile
    assert profile.name == name and profile.cpu.cores >= 1
    est = estimate_bundle(synthetic, name)
    assert est.profile == name and len(est.exits) == 3
    assert all(e.latency_s > 0 and e.energy_j > 0 for e in est.exits)
    assert [e.latency_s for e in est.exits] == sorted(e.latency_s for e in est.exits)
    rt = edge_runtime.load_bundle(synthetic, profile=name, threads=1)
    assert rt.profile is not None and rt.profile.name == name and rt.infer(batch[:2]).outputs.shape == (2, 4)


@pytest.mark.parametrize("name", _cases("modes"))
def test_mode_runs_on_a_synthetic_bundle_or_says_why_not(name: str, runtime: edge_runtime.Runtime,
                                                          batch: np.ndarray) -> None:
    mode = _resolve("modes", name)
    assert mode.name == name and mode.description
    assert all(callable(check) for check in mode.targets().values())
    parser = argparse.ArgumentParser()
    mode.register_commands(parser.add_subparsers())  # its own subcommands, if any, register cleanly
    if not mode.handles_requests:
        with pytest.raises(NotImplementedError):
            mode.serve_request(runtime, {})
    why = mode.unsupported(runtime.manifest)
    if why is not None:
        assert isinstance(why, str) and why and name not in runtime.modes()
        with pytest.raises(ConfigError, match=re.escape(f"cannot run mode {name!r}: {why}")):
            runtime.infer(batch, mode=name)
        return
    seen: list[int] = []
    res = runtime.infer(batch, mode=name, on_exit=lambda rows, i, out, t: seen.extend(rows.tolist()))
    assert res.mode == name and sorted(seen) == list(range(24))
    assert res.predictions.shape == res.exit_index.shape == (24,) and res.outputs.shape == (24, 4)
    assert ((res.exit_index >= 0) & (res.exit_index < 3)).all()
    assert all(isinstance(line, str) for line in mode.describe(runtime.manifest))


@pytest.fixture(scope="module")
def bench_context(runtime: edge_runtime.Runtime, batch: np.ndarray) -> Any:
    from edge_runtime.bench.configs import BenchContext

    return BenchContext(runtimes={("onnxruntime", "fp32"): runtime}, x=batch,
                        y=runtime.infer(batch, mode="full").predictions, sweep_points=2)


@pytest.mark.parametrize("name", _cases("bench_config_kinds"))
def test_bench_config_kind_builds_rows_that_run(name: str, bench_context: Any, batch: np.ndarray) -> None:
    build = _resolve("bench_config_kinds", name)
    rows = build(bench_context)
    assert isinstance(rows, list)
    for row in rows:
        res = row.run(batch[:3])
        assert row.name and row.label and row.backend == "onnxruntime"
        assert np.asarray(res.predictions).shape == (3,) and np.asarray(res.exit_index).shape == (3,)
    if name in ("full", "never", "early_exit", "sweep"):  # the built-ins every bundle has
        assert rows, f"config kind {name!r} built no row for the synthetic bundle"


def _target_cases() -> list[Any]:
    from edge_runtime.modes import MODES

    cases = _cases("bench_targets")
    for mode in MODES.ordered():
        cases += [pytest.param(f"{mode}:{t}", id=f"{mode}:{t}") for t in MODES.get(mode).targets()]
    return cases


def _results(speedup: float, drop: float, mode_vs_early_exit: float) -> dict[str, Any]:
    """A results dict with every kind of row a target may read: the full model, early exit (and a variant of
    it) ``speedup`` times faster than the full model at ``drop`` points of accuracy, and each method mode
    ``mode_vs_early_exit`` times faster again."""
    from edge_runtime.modes import MODES

    def row(name: str, kind: str, s: float, d: float) -> dict[str, Any]:
        return {"name": name, "kind": kind, "speedup_vs_full": s, "accuracy_drop_pts": d,
                "latency_ms": {"mean": 10.0 / s}, "throughput": [{"batch_size": 32, "speedup_vs_full": s}]}

    configs = [row("full", "full", 1.0, 0.0), row("early_exit", "early_exit", speedup, drop),
               row("early_exit@onnxruntime/int8", "early_exit", speedup, drop)]
    configs += [row(m, m, mode_vs_early_exit * speedup, drop) for m in MODES.ordered()
                if m not in ("full", "early_exit")]
    return {"configs": configs}


@pytest.mark.parametrize("name", _target_cases())
def test_target_gives_a_verdict(name: str) -> None:
    from edge_runtime.modes import MODES

    if ":" in name:
        mode, _, target = name.partition(":")
        check = MODES.get(mode).targets()[target]
    else:
        check = _resolve("bench_targets", name)
    verdicts = {what: check(results) for what, results in (("empty", {"configs": []}),
                                                             ("good", _results(4.0, 0.1, 1.5)),
                                                             ("bad", _results(1.05, 3.0, 0.5)))}
    for verdict in verdicts.values():
        assert set(verdict) == {"status", "value", "goal", "detail"}
        assert verdict["status"] in ("PASS", "MISS", "N/A") and verdict["goal"] and verdict["detail"]
    assert verdicts["empty"]["status"] == "N/A" and verdicts["empty"]["value"] is None
    assert verdicts["good"]["status"] == "PASS" and verdicts["bad"]["status"] == "MISS"


@pytest.mark.parametrize("name", _cases("datasets"))
def test_dataset_loads_and_refuses_bad_kwargs(name: str, tmp_path: Path) -> None:
    from edge_runtime.datasets import build_split

    factory = _resolve("datasets", name)
    rng = np.random.default_rng(2)
    kwargs: dict[str, Any] = {"digits": {"size": 8}, "wordnet": {"max_per_class": 12}}.get(name, {})
    if name == "npz":
        np.savez(tmp_path / "d.npz", x=rng.integers(0, 255, (30, 6, 6), dtype=np.uint8), y=np.arange(30) % 3)
        kwargs = {"path": str(tmp_path / "d.npz")}
    elif name == "image_folder":
        image = pytest.importorskip("PIL.Image")
        for c in ("a", "b"):
            (tmp_path / c).mkdir()
            for k in range(6):
                image.fromarray(rng.integers(0, 255, (10, 10), dtype=np.uint8)).save(tmp_path / c / f"{k}.png")
        kwargs = {"root": str(tmp_path), "size": 8}
    elif name == "text_jsonl":
        (tmp_path / "t.jsonl").write_text("".join(f'{{"text": "text {k}", "label": "{"ab"[k % 2]}"}}\n'
                                                  for k in range(12)), encoding="utf-8")
        kwargs = {"path": str(tmp_path / "t.jsonl")}
    elif name == "wordnet" and not Path("/usr/share/wordnet/data.noun").is_file():
        pytest.skip("WordNet is not installed (Debian package wordnet-base; .ci/run installs it)")
    elif name == "digits":
        pytest.importorskip("sklearn")
    elif name == "csv":
        rows = ["a,b,label"] + [f"{k},{k * 2},{'xy'[k % 2]}" for k in range(12)]
        (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
        kwargs = {"path": str(tmp_path / "d.csv")}
    ds = factory(**kwargs)
    if ds.x.dtype == object:  # a text data set: one non-empty string per sample
        assert ds.x.ndim == 1 and all(isinstance(t, str) and t.strip() for t in ds.x)
    else:
        assert ds.x.ndim >= 2 and ds.x.dtype in (np.float32, np.uint8)
        if ds.value_range is not None:  # raw samples lie in the range the loader declares
            assert ds.value_range[0] <= ds.x.min() and ds.x.max() <= ds.value_range[1]
    assert len(ds.x) == len(ds.y)
    assert ds.y.shape == (len(ds.x),) and ds.y.max() < len(ds.labels)
    split = build_split({"name": name, "kwargs": kwargs})
    assert sum(len(i) for i in split.indices.values()) == len(ds.x)
    with pytest.raises(ConfigError, match=rf"data\.kwargs of dataset {name!r}: got an unexpected keyword"):
        build_split({"name": name, "kwargs": {**kwargs, "no_such_option": 1}})


# -- workstation side (torch) -----------------------------------------------------------------------------
torch = pytest.importorskip("torch")


def _head_case(cls: type) -> tuple[dict[str, Any], tuple[int, ...]]:
    """Keyword arguments and an input shape for a head, from the hidden-shape sizes its constructor takes."""
    params = inspect.signature(cls).parameters
    if "channels" in params:  # CNN feature maps (B, C, H, W), or (B, C, L) for a head declaring input_rank 3
        return {"channels": 8}, (2, 8, 8, 8)[:getattr(cls, "input_rank", 4)]
    if "in_features" in params:  # flattened feature maps
        return {"in_features": 16}, (2, 4, 2, 2)
    if "dim" in params:  # token sequences (B, tokens, dim), CLS first
        kw: dict[str, Any] = {"dim": 16}
        if "num_tokens" in params:
            kw["num_tokens"] = 17
        if "attn_heads" in params:
            kw["attn_heads"] = 4
        return kw, (2, 17, 16)
    if all(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):  # no sizes: passes the logits on
        return {}, (2, 5)
    raise AssertionError(f"head {cls.__name__}: no smoke case for constructor arguments {list(params)}")


@pytest.mark.parametrize("name", _cases("heads"))
def test_head_forward_on_a_tiny_input(name: str) -> None:
    from converters.models.contract import as_tuple
    from converters.models.registry import create_head

    kwargs, shape = _head_case(_resolve("heads", name))
    head = create_head(name, num_classes=5, **kwargs).eval()
    assert head.head_type == name
    with torch.no_grad():  # a head may return (exit, *extras): its answer first
        assert tuple(as_tuple(head(torch.randn(*shape)))[0].shape) == (2, 5)


def _model_cases() -> list[Any]:
    known: dict[str, str] = {}  # name -> why it is expected to fail (none today)
    return [pytest.param(p.values[0], id=p.id, marks=pytest.mark.xfail(reason=known[p.values[0]], strict=True))
            if p.values[0] in known else p for p in _cases("models")]


@pytest.mark.parametrize("name", _model_cases())
def test_model_forward_gives_every_exit(name: str) -> None:
    from converters.models.contract import as_tuple
    from converters.models.registry import HEADS, create_model

    _resolve("models", name)
    model = create_model(name).eval()
    assert model.input_shape is not None and model.num_exits >= 2
    with torch.no_grad():
        outs = model(*as_tuple(model.example_inputs(2)))   # a tensor, or a tuple for several inputs
    assert len(outs) == model.num_exits
    answers = [as_tuple(o)[0] for o in outs]   # a head may add outputs after its answer (an uncertainty score)
    assert len({tuple(a.shape) for a in answers}) == 1 and answers[0].shape[0] == 2
    if model.output_kind == "logits":  # the manifest's head types are registered (classifier) exit-head names
        assert set(model.head_types) <= set(HEADS.names())


def _loss_case(name: str) -> tuple[Any, Any]:
    """(model, loss) for a loss: the ViT, else the first registered model the loss accepts (a loss made for one
    model family, e.g. a denoiser's, refuses the others with a ConfigError)."""
    from converters.models.registry import MODELS, create_model
    from converters.training.losses import create_loss

    for model_name in ["lgvit_vit", *MODELS.names()]:
        torch.manual_seed(0)
        model = create_model(model_name)
        try:
            return model, create_loss(name, model)
        except ConfigError:
            continue
    raise AssertionError(f"loss {name!r} accepts no registered model")


def _data_samples(model: Any, n: int) -> Any:
    """``n`` data samples as a recipe's data feeds ``model``: its example inputs when the data are its inputs (images,
    token ids + mask), else image-shaped samples that :meth:`data_inputs` maps to its inputs (a denoiser)."""
    from converters.models.contract import EarlyExitModel

    if type(model).data_inputs is EarlyExitModel.data_inputs:
        return model.example_inputs(n, generator=torch.Generator().manual_seed(n))
    return torch.randn(n, *model.input_shape)


def _cbnet_autoencoder(vit: Any) -> tuple[Any, Any, Any, int]:
    from converters.methods.cbnet.autoencoders import create_autoencoder

    c = vit.input_shape[0]
    x = torch.rand(4, *vit.input_shape)
    return create_autoencoder("dense", tuple(vit.input_shape), ([0.0] * c, [1.0] * c)), x, torch.rand_like(x), 0


def _cbnet_classifier(vit: Any) -> tuple[Any, Any, Any, int]:
    from converters.methods.cbnet import LightweightClassifier

    return LightweightClassifier(vit), torch.randn(4, *vit.input_shape), torch.tensor([0, 1, 2, 3]), 1


def _kangaroo_lm(vit: Any) -> tuple[Any, Any, Any, int]:
    from converters.methods.kangaroo.model import KangarooLM, LMConfig

    ids = torch.randint(0, 64, (4, 9), generator=torch.Generator().manual_seed(0))
    return KangarooLM(LMConfig(vocab_size=64, dim=16, layers=2, heads=2, ffn_dim=32, context=8)), ids[:, :-1], \
        ids[:, 1:], 0


#: losses that train a method's own part rather than an exit model: name -> (module, x, y, logits it returns)
_PART_LOSSES: dict[str, Callable[[Any], tuple[Any, Any, Any, int]]] = {
    "cbnet_reconstruction": _cbnet_autoencoder, "cbnet_classifier": _cbnet_classifier,
    "kangaroo_lm": _kangaroo_lm, "kangaroo_adapter": _kangaroo_lm}


@pytest.mark.parametrize("name", _cases("losses"))
def test_loss_trains_its_parameters_one_step(name: str) -> None:
    from converters.training.losses import create_loss

    _resolve("losses", name)
    if name in _PART_LOSSES:
        module, x, y, n_logits = _PART_LOSSES[name](_loss_case("weighted_exits")[0])
        loss_fn = create_loss(name, module)
    else:
        module, loss_fn = _loss_case(name)
        x, y = _data_samples(module, 4), torch.tensor([0, 1, 2, 1])   # 3 classes or more
        n_logits = module.num_exits if module.output_kind == "logits" else 0
    loss_fn.train_mode(module)
    params = loss_fn.trainable_parameters(module)
    assert params
    module.zero_grad()
    loss, logits = loss_fn(module, x, y, 1)
    assert loss.ndim == 0 and math.isfinite(loss.item()) and len(logits) == n_logits
    loss.backward()
    assert any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in params)


@pytest.mark.parametrize("name", _cases("optimizers"))
def test_optimizer_steps(name: str) -> None:
    layer = torch.nn.Linear(3, 2)
    opt = _resolve("optimizers", name)(layer.parameters(), lr=0.1, weight_decay=0.0)
    before = layer.weight.detach().clone()
    layer(torch.ones(4, 3)).sum().backward()
    opt.step()
    assert not torch.equal(before, layer.weight.detach())


@pytest.mark.parametrize("name", _cases("schedules"))
def test_schedule_factors(name: str) -> None:
    factor = _resolve("schedules", name)()
    values = [factor(step, 10) for step in range(10)]
    assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in values) and values[0] > 0


@pytest.mark.parametrize("name", _cases("in_graph_scores"))
def test_in_graph_score_equals_its_policys_score(name: str) -> None:
    import torch

    from edge_runtime.policies import ScorePolicy, create_policy

    fn = _resolve("in_graph_scores", name)
    policy = create_policy(name, 2)
    assert isinstance(policy, ScorePolicy), f"in-graph score {name!r} names no score policy"
    logits = np.random.default_rng(2).standard_normal((16, 5)).astype(np.float32) * 3
    got = fn(torch.from_numpy(logits), **policy.config()).numpy()
    np.testing.assert_allclose(got, policy.score(logits), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", _cases("quantizers"))
def test_quantizer_writes_a_runnable_file(name: str, synthetic: Path, tmp_path: Path, batch: np.ndarray) -> None:
    from converters.export.quantize import NEEDS_REPRESENTATIVE_DATA, parse_variant
    from edge_runtime.manifest import PRECISIONS

    quantize = _resolve("quantizers", name)
    fmt, precision = parse_variant(name)
    assert precision in PRECISIONS and list(inspect.signature(quantize).parameters) == \
        ["src", "dst", "representative", "input_name"]
    if fmt != "onnx":  # TFLite files come from a torch export (tests/test_tflite_quant.py runs them end to end)
        assert name.startswith("tflite/")
        return
    pytest.importorskip("onnx")
    dst = tmp_path / "q.onnx"
    record = quantize(synthetic / "segments" / "segment_0.onnx", dst, [batch], "input")
    assert record["tool"].startswith("onnxruntime.quantization") and dst.is_file()
    assert ("representative_samples" in record) == (name in NEEDS_REPRESENTATIVE_DATA)
    session = edge_runtime.backends.create_backend("onnxruntime", threads=1).load(dst)
    hidden, exit_out = session.run({"input": batch})
    assert hidden.shape == (24, 8) and exit_out.shape == (24, 4) and np.isfinite(exit_out).all()


@pytest.mark.parametrize("name", _cases("recipe_sections"))
def test_recipe_section_validates_a_shipped_value_and_names_its_key(name: str) -> None:
    import yaml

    required, validate = _resolve("recipe_sections", name)
    assert isinstance(required, bool)
    shipped = [r[name] for p in sorted((REPO / "converters" / "recipes").glob("*.yaml"))
               if name in (r := yaml.safe_load(p.read_text()))]
    for value in shipped[:1] or [{}]:  # a section no shipped recipe uses: its defaults
        validate(value, name)
    with pytest.raises(ConfigError, match=rf"recipe key '?{name}'?"):
        validate(object(), name)


@pytest.mark.parametrize("name", _cases("cbnet_autoencoders"))
def test_cbnet_autoencoder_keeps_the_input_shape(name: str) -> None:
    from converters.methods.cbnet.autoencoders import create_autoencoder

    _resolve("cbnet_autoencoders", name)
    ae = create_autoencoder(name, (1, 8, 8), ([0.0], [1.0]))
    x = torch.rand(3, 1, 8, 8)
    assert tuple(ae(x).shape) == (3, 1, 8, 8)
    with pytest.raises(ConfigError, match=rf"autoencoder {name!r}"):
        create_autoencoder(name, (1, 8, 8), ([0.0], [1.0]), no_such_option=1)


@pytest.mark.parametrize("name", _cases("cbnet_exemplar_methods"))
def test_cbnet_exemplar_method_maps_inputs_into_the_pool(name: str) -> None:
    choose: Callable[[np.ndarray, np.ndarray], np.ndarray] = _resolve("cbnet_exemplar_methods", name)
    x = np.random.default_rng(3).standard_normal((20, 5))
    pool = np.array([2, 5, 7, 11])
    target = choose(x, pool)
    assert target.shape == (20,) and set(target.tolist()) <= set(pool.tolist())


@pytest.mark.parametrize("name", _cases("conversion_stages"))
def test_conversion_stage_names_its_point_and_a_registered_section(name: str) -> None:
    from converters.pipeline.stages import WHEN, ConversionStage
    from converters.recipe.sections import SECTIONS

    cls = _resolve("conversion_stages", name)
    assert issubclass(cls, ConversionStage) and cls.when in WHEN
    assert cls.section in SECTIONS, f"stage {name!r}: its section {cls.section!r} is not a recipe section"
    stage = cls()
    assert stage.applies({cls.section: {}}) and not stage.applies({}) and not stage.applies({cls.section: None})
