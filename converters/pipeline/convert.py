"""``convert``: recipe -> model -> train stages -> export + verify -> calibrate on the exported ONNX -> bundle.

With a ``data`` section the data set is split (seeded, stratified) and recorded in the manifest;
with ``train`` the stages run (checkpointed every epoch, ``resume`` continues an interrupted run;
under ``torchrun`` every rank trains and rank 0 alone writes checkpoints and the bundle); with
``calibrate`` the exported segments' outputs on the calibration split choose the policy's
thresholds, and the test split reports per-exit accuracy and the chosen point's accuracy.
A method adds its own step (e.g. training extra parts with the calibrated policy) by registering a
conversion stage (:mod:`converters.pipeline.stages`) that runs when the recipe has its section.
The bundle appears atomically, complete, at ``out_dir``.
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

import edge_runtime
from converters.export.bundle import export_bundle
from converters.export.variants import add_part_variants, recalibrate_variants
from converters.models import MODELS, create_model
from converters.models.contract import EarlyExitModel
from converters.models.user import build_user_model, is_user_model
from converters.pipeline.stages import ConversionStage, PartsHook, StageContext, active_stages
from converters.recipe import Recipe, load_recipe, parse_recipe
from converters.training.dist import init_distributed, shutdown
from converters.training.registry import LOSSES
from converters.training.trainer import StageConfig, Trainer, run_fingerprint
from edge_runtime.bundle import read_bundle
from edge_runtime.calibration import calibrate, evaluate_point, measure_segment_latency, oracle
from edge_runtime.errors import ConfigError, EdgeRuntimeError
from edge_runtime.files import check_output_dir, replace_dir, staging_dir, write_bytes_atomic
from edge_runtime.manifest import MANIFEST_NAME, write_manifest


def seed_everything(seed: int) -> None:
    """Seed torch (and numpy's legacy global generator) for reproducible runs."""
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def checkpoint_path(out_dir: str | Path) -> Path:
    """Where ``convert`` keeps the training checkpoint of a bundle: ``<out>.train/checkpoint.pt``."""
    out = Path(out_dir)
    return out.parent / f"{out.name}.train" / "checkpoint.pt"


def build_model(recipe: Recipe, example: Any = None, *, allow_code: bool = False,
                verbose: bool = False) -> EarlyExitModel:
    """The recipe's model: a registered builder (the ``heads`` section passed as ``exit_heads``), or a user's model
    (``model.factory`` / ``model.exported``) with exits attached on ``example`` (one model-ready input batch).

    The user model's record (factory, weights' sha256, cuts) is kept as ``model.source_record``.
    """
    spec = recipe.get("model")
    if spec is None:
        raise ConfigError("recipe key 'model' is required (or pass the model itself: convert(..., model=...))")
    if is_user_model(spec):
        if example is None:
            raise ConfigError("recipe key model: a user's model needs an example input to attach its exits: give a "
                              "'data' section or input.shape")
        base = recipe.source.parent if recipe.source is not None else None
        return build_user_model(spec, example, base_dir=base, allow_code=allow_code, verbose=verbose)[0]
    kwargs = dict(spec["kwargs"])
    if recipe.get("heads") is not None:
        kwargs["exit_heads"] = recipe["heads"]
    try:
        return create_model(spec["name"], **kwargs)
    except TypeError as exc:
        raise ConfigError(f"recipe key model.kwargs: {MODELS.kind} {spec['name']!r} rejected its arguments "
                          f"({exc})") from None


def convert(recipe: Recipe | str | Path | dict[str, Any], out_dir: str | Path, *, overwrite: bool = False,
            resume: bool = False, progress: bool = True, callbacks: Sequence[Any] = (),
            model: EarlyExitModel | None = None, allow_code: bool = False, trained: str | Path | None = None,
            keep_trained: bool = False) -> Path | None:
    """Run a recipe end to end and write its bundle.

    Args:
        recipe: a :class:`Recipe`, the path of a YAML recipe, or recipe data (a dict).
        out_dir: the bundle directory to write (atomically).
        overwrite: replace an existing bundle.
        resume: continue an interrupted training run from its checkpoint (``<out>.train/``).
        progress: show progress bars.
        callbacks: :class:`converters.training.trainer.TrainCallback` hooks for the training stages.
        model: an early-exit model built in Python (e.g. by :func:`converters.attach_exits`); the recipe's
            ``model`` section is then optional and ignored.
        allow_code: let a recipe's ``model.factory`` import the user's module (it runs their code).
        trained: trained weights to export instead of training (``<out>.train/trained.pt``, kept by a run whose
            export failed, or by ``keep_trained``): the ``train`` section is skipped.
        keep_trained: keep ``<out>.train/trained.pt`` after a successful run too (for ``edge-runtime export``).

    Returns:
        The bundle directory; None on ranks other than 0 under ``torchrun``.

    Example:
        >>> convert("converters/recipes/branchynet_lenet.yaml", "out/lenet")     # doctest: +SKIP
        >>> model = attach_exits(my_net, torch.zeros(1, 1, 28, 28), at=["layer1", "layer2"])   # doctest: +SKIP
        >>> convert({"name": "mine", "data": {"name": "digits"}}, "out/mine", model=model)     # doctest: +SKIP
    """
    if isinstance(recipe, dict):
        recipe = parse_recipe(recipe)
    elif not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    out = check_output_dir(out_dir, overwrite=overwrite)  # before hours of training, not after
    if recipe.get("calibrate") and recipe["input"].get("text"):
        raise ConfigError("recipe key calibrate: not supported with input.text (the calibration runs on "
                          "model-ready arrays, not on texts); remove one of the two")
    if recipe.get("heads") is not None and (model is not None or is_user_model(recipe.get("model"))):
        raise ConfigError("recipe key heads: only a registered model (model.name) takes its exit heads from the "
                          "recipe; a user's model has its exits attached (model.exits, or attach_exits): remove it")
    seed_everything(recipe["seed"])
    split = None
    if recipe.get("data"):
        from edge_runtime.datasets import build_split

        split = build_split(recipe["data"])
    for key in ("train", "calibrate"):
        if recipe.get(key) and split is None:
            what = "what to train on" if key == "train" else "the calibration split"
            raise ConfigError(f"recipe key '{key}' needs a 'data' section ({what})")
    if recipe.get("calibrate") and split is not None and not len(split.indices["test"]):
        raise ConfigError("recipe key data.split.fractions.test: calibrate reports accuracy on the test split, "
                          "which is empty; give it a fraction > 0")
    stages = active_stages(recipe, split)     # a method's stages refuse a recipe they cannot run on, now
    writers = [st for st in stages if st.when == "bundle"]
    if writers:                                # a model family export_bundle does not cover writes its own bundle
        ignored = [n for n, v in (("model", model is not None), ("trained", trained is not None),
                                  ("callbacks", bool(callbacks))) if v]
        if ignored:
            raise ConfigError(f"recipe section {writers[0].section!r} writes the whole bundle itself: it takes no "
                              f"{', '.join(ignored)} argument (its own section says what to build and train)")
        return _write_by_stage(writers, recipe, out, overwrite=overwrite, resume=resume, progress=progress,
                               keep_trained=keep_trained)
    text = recipe["input"].get("text")
    preprocessing = None if text else recipe["input"]["preprocessing"] or (split.normalization() if split else None)
    pre = _input_encoder(recipe, preprocessing)
    if model is None:
        model = build_model(recipe, _example_input(recipe, split, pre), allow_code=allow_code, verbose=progress)
    sections: dict[str, Any] = {"recipe": recipe.resolved()}
    extra: dict[str, Any] = {}
    if model.source_record is not None or model.attach_info is not None:
        extra["model_source"] = model.source_record or {"python": True, "exits": model.attach_info}
    if split is not None:
        sections["data"] = split.manifest_section()
        check_sample_shape(model, split)
        if not split.dataset.labelled:   # self-distillation: the final exit's own answers stand in for labels
            check_unlabelled_training(recipe, split, model)
            partly = bool((split.dataset.y >= 0).any())
            extra["labels"] = (("the data is partly labelled: for samples without a label, accuracy figures are "
                                if partly else "the data has no labels: accuracy figures are ")
                               + "agreement with the final exit's predictions (the model's own answers)")
    trained_path = checkpoint_path(out).parent / TRAINED_NAME
    if trained is not None:
        extra["training"] = load_trained(model, trained, _run_id(recipe))
    elif recipe.get("train"):
        history, is_main = _train(recipe, model, split, pre, out, resume, progress, callbacks)
        if not is_main:
            return None
        extra["training"] = {"epochs": len(history), "final": history[-1] if history else None}
        save_trained(model, trained_path, _run_id(recipe), extra["training"])
    if "labels" in extra:   # trained on the real labels (-1: none); now the trained final exit fills the gaps
        split = pseudo_labelled(split, model, pre)
    if extra:
        sections["extra"] = extra
    if split is not None:  # a model whose inputs are not the data's samples (a denoiser) maps them: data_inputs
        xc, yc = split.arrays("calibration")
        gen = torch.Generator().manual_seed(recipe["seed"])
        example = model.data_inputs(_tensors(pre(xc[:1])), torch.from_numpy(yc[:1]), generator=gen)
        verify = model.data_inputs(_tensors(pre(xc[:64])), torch.from_numpy(yc[:64]), generator=gen)
    else:
        shape = recipe["input"]["shape"] or list(model.input_shape or ())
        example, verify = torch.randn(1, *shape), None
    if split is not None and split.dataset.labels:
        labels: list[str] | None = list(split.dataset.labels)
    else:
        labels = None
    exp, pol = recipe["export"], recipe["policy"]
    kwargs = dict(name=recipe.name, labels=labels, policy=pol["name"], policy_kwargs=pol["kwargs"],
                  thresholds=pol["thresholds"],
                  preprocessing=preprocessing, tolerance=float(exp["tolerance"]),
                  verify_batch_sizes=exp["verify_batch_sizes"], verify_inputs=verify,
                  include_full_model=exp["full_model"], sections=sections, opset=exp["opset"], seed=recipe["seed"],
                  backends=exp["backends"], tflite_batch_sizes=exp["tflite_batch_sizes"], quantize=exp["quantize"],
                  fp16_tolerance=float(exp["fp16_tolerance"]))
    if text:
        kwargs["extra_parts"] = [text_bundle_hook(text)]
    if split is not None and not text:  # static int8 calibrates on it; every quantized variant gets its own thresholds
        xcal, ycal = split.arrays("calibration")
        kwargs.update(calibration_inputs=pre(xcal), calibration_labels=ycal)
    ctx = StageContext(recipe=recipe, model=model, split=split, preprocess=pre, example=example, verify_inputs=verify,
                       export=kwargs, checkpoint_dir=checkpoint_path(out).parent, resume=resume, progress=progress,
                       policy=pol)
    late = [st for st in stages if st.when == "after_calibration"]
    try:
        kwargs["extra_parts"] = kwargs.get("extra_parts", []) + _run_stages(
            [st for st in stages if st.when == "after_training"], ctx)
        if not recipe.get("calibrate"):
            kwargs["extra_parts"] += _run_stages(late, ctx)    # the policy is the recipe's: final already
            result = export_bundle(model, example, out, overwrite=overwrite, **kwargs)
        else:
            result = _export_and_calibrate(model, example, out, overwrite, recipe, split, pre, kwargs, late, ctx)
    except EdgeRuntimeError as exc:
        if trained is None and trained_path.is_file():   # the training is kept: re-export without retraining
            raise type(exc)(f"{exc}\nthe trained weights are kept in {trained_path}; export again without "
                            f"retraining: edge-runtime export RECIPE --trained {trained_path} --out {out} "
                            "(other tolerances/variants with --set export.KEY=VALUE)") from exc
        raise
    ckpt = checkpoint_path(out)
    if ckpt.is_file():
        ckpt.unlink()                                    # the bundle is complete; the checkpoint has served
    if ckpt.parent.is_dir() and not keep_trained and trained is None:
        shutil.rmtree(ckpt.parent, ignore_errors=True)
    return result


def _write_by_stage(writers: Sequence[ConversionStage], recipe: Recipe, out: Path, *, overwrite: bool, resume: bool,
                    progress: bool, keep_trained: bool = False) -> Path | None:
    """Let the one ``bundle`` stage write the whole bundle into a staging directory; check it as the device will
    and move it into place. None when the stage wrote nothing (a rank other than 0 under ``torchrun``).
    ``<out>.train/`` (the stage's checkpoints) is removed then, unless ``keep_trained``."""
    if len(writers) > 1:
        raise ConfigError(f"recipe sections {', '.join(repr(w.section) for w in writers)} each write a whole bundle; "
                          "keep one")
    with staging_dir(out) as root:
        staging = root / "bundle"
        staging.mkdir()
        ctx = StageContext(recipe=recipe, model=None, split=None, preprocess=_normalizer(None), example=None,
                           verify_inputs=None, export=dict(recipe["export"]),
                           checkpoint_dir=checkpoint_path(out).parent, resume=resume, progress=progress,
                           policy=recipe["policy"], staging=staging)
        writers[0].run(ctx)
        if not (staging / MANIFEST_NAME).is_file():
            return None
        read_bundle(staging)  # schema, cross-field rules and hashes, as the device will check them
        replace_dir(staging, out, overwrite=overwrite)
    ckpt = checkpoint_path(out)
    if ckpt.parent.is_dir() and not keep_trained:
        shutil.rmtree(ckpt.parent, ignore_errors=True)
    return out
TRAINED_NAME = "trained.pt"


def _example_input(recipe: Recipe, split: Any, pre: Any) -> Any:
    """One model-ready input batch (two samples) to attach a user's exits on: from the data, else input.shape."""
    if split is not None:
        xc, _ = split.arrays("calibration")
        return _tensors(pre(xc[:2]))
    shape = recipe["input"]["shape"]
    return torch.zeros(2, *shape) if shape else None


def check_unlabelled_training(recipe: Recipe, split: Any, model: Any) -> None:
    """Data with samples without labels trains only with losses that need no labels (``self_distill``), and a
    backbone that is not frozen only when such a loss can train it (some training sample has a label)."""
    _, y = split.arrays("train")
    for i, st in enumerate((recipe.get("train") or {}).get("stages") or []):
        loss = LOSSES.get(st["loss"]["name"])
        if getattr(loss, "needs_labels", True):
            raise ConfigError(f"recipe key train.stages[{i}].loss: {st['loss']['name']!r} needs labels and the data "
                              "has none; use self_distill (the final classifier teaches the exits)")
        why = getattr(loss, "unlabelled_backbone", None)
        if why and not getattr(model, "frozen_backbone", False) and not (y >= 0).any():
            raise ConfigError(f"recipe key train.stages[{i}].loss: {st['loss']['name']!r}: the training split has "
                              f"no labels: {why} (attach_exits(..., freeze_backbone=True))")


def pseudo_labelled(split: Any, model: torch.nn.Module, pre: Any) -> Any:
    """The split with every sample without a label (-1) labelled by the model's final exit; real labels are kept."""
    from dataclasses import replace

    from converters.training.evaluation import exit_logits

    y = split.dataset.y
    missing = y < 0
    final = exit_logits(model, pre(split.dataset.x[missing]))[-1]
    filled = y.astype(np.int64).copy()
    filled[missing] = final.argmax(-1)
    return replace(split, dataset=replace(split.dataset, y=filled,
                                          labels=split.dataset.labels if (~missing).any() else []))


def check_sample_shape(model: torch.nn.Module, split: Any) -> None:
    """The data's sample shape must be the model's input shape (when the model states one; not for texts)."""
    if split.dataset.x.dtype == object:   # texts: the tokenizer makes the model's input shape
        return
    want = getattr(model, "input_shape", None)
    got = tuple(split.dataset.x.shape[1:])
    if want is not None and tuple(want) != got:
        raise ConfigError(f"data {split.spec.name!r}: samples have shape {list(got)} but the model takes "
                          f"{list(want)} (recipe key data, or the model's example input)")


def save_trained(model: torch.nn.Module, path: Path, run_id: str, training: dict[str, Any]) -> None:
    """Keep the trained weights (``<out>.train/trained.pt``) until the bundle is written."""
    buf = io.BytesIO()
    torch.save({"format": "edge-runtime-trained-1", "run_id": run_id, "model": model.state_dict(),
                "training": training}, buf)
    write_bytes_atomic(path, buf.getvalue())


def load_trained(model: torch.nn.Module, path: str | Path, run_id: str) -> dict[str, Any]:
    """Load weights kept by :func:`save_trained` into ``model``; returns the training record.

    Raises:
        ConfigError: not such a file, another run's weights, or weights that do not fit the model.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--trained: {p} is not a file")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise ConfigError(f"{p}: cannot read the trained weights ({exc})") from None
    if not isinstance(state, dict) or state.get("format") != "edge-runtime-trained-1":
        raise ConfigError(f"{p}: not trained weights written by edge-runtime convert")
    if state.get("run_id") != run_id:
        raise ConfigError(f"{p}: the weights were trained from a different recipe, model or data (its training "
                          "settings differ); export with the recipe they were trained with")
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise ConfigError(f"{p}: the weights do not fit the model ({str(exc).splitlines()[0]})") from None
    model.eval()
    return {**dict(state.get("training") or {}), "weights": f"re-exported from {p.name}"}


def _run_stages(stages: Sequence[ConversionStage], ctx: StageContext) -> list[PartsHook]:
    """Run method stages in order; the export hooks of the parts they add."""
    return [hook for stage in stages for hook in stage.run(ctx)]


def _normalizer(preprocessing: dict[str, Any] | None) -> Any:
    from edge_runtime.datasets import apply_preprocessing

    return lambda x: apply_preprocessing(x, preprocessing)


def _input_encoder(recipe: Recipe, preprocessing: dict[str, Any] | None) -> Any:
    """Raw data -> model inputs: the recipe's text tokenizer (strings -> a tuple of int64 arrays in the model's
    input order, the device's own :class:`edge_runtime.text.TextEncoder`), else the normalisation."""
    text = recipe["input"].get("text")
    if not text:
        return _normalizer(preprocessing)
    enc = text_encoder(text)
    return lambda x: tuple(enc.encode(list(x)).feeds[n] for n in enc.names)


def _tensors(x: Any) -> Any:
    return tuple(torch.from_numpy(a) for a in x) if isinstance(x, tuple) else torch.from_numpy(x)


def text_encoder(text: dict[str, Any]) -> Any:
    """The recipe's ``input.text`` tokenizer (``tokenizer``: a path or ``package:<module>/<file>``)."""
    from converters.models.bert import package_dir
    from edge_runtime.text import TextEncoder

    return TextEncoder.from_file(package_dir(text["tokenizer"]), max_length=text["max_length"],
                                 padding=text["padding"])


def text_bundle_hook(text: dict[str, Any]) -> Any:
    """An export hook that copies the recipe's tokenizer into the bundle (``tokenizer.json``) and writes the
    manifest's ``text`` section (file hash checked on load like every model file)."""
    from converters.export.onnx import file_entry
    from converters.models.bert import package_dir

    def hook(root: Path, manifest: dict[str, Any]) -> None:
        dest = root / "tokenizer.json"
        shutil.copyfile(package_dir(text["tokenizer"]), dest)
        entry = {k: v for k, v in file_entry(dest, root, fmt="tokenizer.json").items()
                 if k in ("format", "path", "sha256", "bytes")}
        names = [i["name"] for i in manifest["inputs"]]
        manifest["text"] = {"tokenizer": entry, "max_length": int(text["max_length"]), "padding": text["padding"],
                            "truncation": "longest_first", "input_ids": names[0], "attention_mask": names[1],
                            "description": f"tokenizer from {text['tokenizer']}"}

    return hook


def _run_id(recipe: Recipe) -> str:
    return run_fingerprint({k: recipe.get(k) for k in ("seed", "model", "heads", "data", "train", "input")})


def _train(recipe: Recipe, model: torch.nn.Module, split: Any, pre: Any, out: Path, resume: bool,
           progress: bool, callbacks: Sequence[Any]) -> tuple[list[dict[str, Any]], bool]:
    spec = recipe["train"]
    ctx = init_distributed(spec["device"])
    threads = torch.get_num_threads()
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    try:
        x, y = split.arrays("train")
        xc, yc = split.arrays("calibration")
        has = yc >= 0   # accuracy per exit, on the calibration samples with a label
        trainer = Trainer(model, [StageConfig.from_dict(s) for s in spec["stages"]], pre(x), y,
                          eval_data=(pre(xc[has]), yc[has]) if model.output_kind == "logits" and has.any() else None,
                          seed=recipe["seed"], checkpoint_path=checkpoint_path(out),
                          resume=resume, run_id=_run_id(recipe), progress=progress, callbacks=callbacks, dist=ctx)
        history = trainer.fit()
    finally:
        torch.set_num_threads(threads)
        shutdown(ctx)
    model.to("cpu").eval()
    return history, ctx.is_main


def _guarantee_options(cal_spec: dict[str, Any], recipe: Recipe) -> dict[str, Any]:
    """``calibrate``'s risk-control settings (``confidence: null`` keeps the point estimate)."""
    return {"confidence": cal_spec.get("confidence"), "risk": cal_spec.get("risk", "label_drop"),
            "bound": cal_spec.get("bound", "binomial"), "selection_fraction": cal_spec.get("selection_fraction"),
            "seed": int(recipe["seed"])}


def _recommend(bundle: Path, x: np.ndarray, y: np.ndarray, cal_spec: dict[str, Any]) -> dict[str, Any]:
    """The ``deployment`` record: every mode x backend x precision of the bundle on the calibration split, the
    fastest within ``max_accuracy_drop`` of the one-graph model (measured here, or predicted for ``profile``)."""
    from edge_runtime.calibration.deploy import measure_candidates, recommend

    notes: list[str] = []
    cands = measure_candidates(bundle, x, y, repeats=cal_spec["recommend_repeats"], profile=cal_spec["profile"],
                               notes=notes)
    rec = recommend(cands, budget_pts=cal_spec["max_accuracy_drop"]).to_dict()
    rec["split"] = "calibration"
    rec["notes"] = notes
    return rec


def _export_and_calibrate(model: EarlyExitModel, example: torch.Tensor, out: Path, overwrite: bool,
                          recipe: Recipe, split: Any, pre: Any, kwargs: dict[str, Any],
                          stages: Sequence[ConversionStage] = (), ctx: StageContext | None = None) -> Path:
    """Export into a staging directory, calibrate on its ONNX files, finish the manifest, move into place.

    ``stages`` (``after_calibration`` conversion stages) run once the calibrated policy is in the manifest;
    the parts they return are written into the staging bundle with their TFLite/quantized variants.
    """
    cal_spec = recipe["calibrate"]
    with staging_dir(out) as staging_root:
        staging = staging_root / "bundle"
        export_bundle(model, example, staging, **kwargs)
        rt = edge_runtime.load_bundle(staging, threads=1)
        m = rt.manifest.to_dict()
        xc, yc = split.arrays("calibration")
        xt, yt = split.arrays("test")
        xc, xt = pre(xc), pre(xt)
        outs_c, outs_t = rt.exit_outputs(xc), rt.exit_outputs(xt)
        flops = [int(e["cumulative_flops"]) for e in m["exits"]]
        latency = full_latency = None
        if cal_spec["measure_latency"]:
            latency, full_latency = measure_segment_latency(rt, xc, repeats=cal_spec["latency_repeats"])
        pol = m["policy"]
        full_flops = (m.get("full_model") or {}).get("flops")
        cost = (flops, latency, full_latency, full_flops)
        cal = calibrate(outs_c, yc, pol["name"], pol["kwargs"], flops=flops, latency=latency,
                        full_latency=full_latency, full_flops=full_flops,
                        max_accuracy_drop=cal_spec["max_accuracy_drop"], cost=cal_spec["cost"],
                        levels=cal_spec["levels"], **_guarantee_options(cal_spec, recipe))
        chosen = cal.chosen
        section = cal.to_manifest()
        if latency is not None:
            section["latency"] = {"segment_s": latency, "full_model_s": full_latency, "batch_size": 1, "threads": 1,
                                  "backend": "onnxruntime", "statistic": "median",
                                  "repeats": cal_spec["latency_repeats"],
                                  "source": "measured on the exported files on the converting machine"}
        test_acc = [float((o.argmax(-1) == yt).mean()) for o in outs_t]
        at_chosen = evaluate_point(outs_t, yt, pol["name"], cal.policy_kwargs, chosen.thresholds, *cost)
        section["test"] = {"split": "test", "exit_accuracy": test_acc, "final_exit_accuracy": test_acc[-1],
                           "chosen": at_chosen.to_dict(), "oracle": oracle(outs_t, yt, *cost),
                           "oracle_at_chosen_accuracy": oracle(outs_t, yt, *cost, accuracy=at_chosen.accuracy)}
        m["policy"] = {"name": pol["name"], "kwargs": cal.policy_kwargs, "thresholds": list(chosen.thresholds)}
        m["calibration"] = section
        if stages and ctx is not None:
            ctx.policy, ctx.staging, ctx.manifest = m["policy"], staging, m
            for hook in _run_stages(stages, ctx):
                hook(staging, m)
                add_part_variants(hook, staging, m, kwargs)  # TFLite/quantized files of the parts (issue 6)
        variants = recalibrate_variants(staging, m, xc, yc)  # quantized variants: their own thresholds
        if variants:
            m["policy"]["variants"] = variants
        for e, acc in zip(m["exits"], test_acc):
            e["test_accuracy"] = acc
        write_manifest(staging, m)
        if cal_spec["recommend"]:  # every configuration the bundle holds, compared: the default follows the best
            m["deployment"] = _recommend(staging, xc, yc, cal_spec)
            write_manifest(staging, m)
        read_bundle(staging)  # schema, cross-field rules and hashes, as the device will check them
        replace_dir(staging, out, overwrite=overwrite)
    return out
