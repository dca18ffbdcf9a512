"""CBNet (2024) on the device: the ``cbnet`` mode — converting autoencoder, then the lightweight classifier.

A bundle converted with a recipe ``cbnet`` section holds the method's graphs under ``parts.cbnet``:
``autoencoder`` (model-ready input -> converted input of the same shape) and ``classifier`` (the
BranchyNet's first segment + first exit head -> logits). ``Runtime.infer(x, mode="cbnet")`` runs them in
sequence; every sample is answered at exit 0 — the paper's method.

Beyond the paper, a **confidence gate** (``parts.cbnet.info.gate``, written by the converter when the recipe
asks for one): the classifier's answer on the converted input stands only when its score passes a threshold
calibrated on held-out data like the exit thresholds (:func:`calibrate_gate`, through
:func:`edge_runtime.calibration.calibrate`); every other sample continues through the BranchyNet chain on
its *original* input, per sample, with the shrinking batch (:meth:`Runtime.decide`, the one decision loop).
The mode uses the gate when the bundle has one; ``InferenceResult.info`` says how many samples the converted
path answered.

The parts' sessions are opened on the first call and kept with the runtime (:meth:`Runtime.mode_state`).
This module also adds CBNet's ``inspect`` lines, its bench rows and its report targets. Nothing here
imports torch.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from edge_runtime.bench.configs import BenchConfig, BenchContext, infer_fn, variant_suffix
from edge_runtime.calibration import calibrate
from edge_runtime.errors import BundleError, ConfigError
from edge_runtime.executor import GraphRunner, OnExit, Tensors
from edge_runtime.manifest import Manifest
from edge_runtime.modes import InferenceResult, Mode, TargetCheck, register_mode
from edge_runtime.policies import ExitPolicy, ScorePolicy, create_policy

METHOD = "cbnet"
#: the key of ``parts.cbnet.info`` that holds the confidence gate
GATE = "gate"
#: the mode that runs a gated bundle's CBNet without its gate (the paper's)
UNGATED = "cbnet_ungated"
#: the speed-up over the full model the ``cbnet_speedup`` report target asks for (issue 19)
SPEEDUP_GOAL = 4.0
#: a gate threshold this far out is one no score meets (the gate turns every sample away)
NEVER = 1e30


def _fmt(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(int(n))


class CBNetRunner:
    """Runs a bundle's CBNet parts: ``autoencoder`` then a classifier part.

    Args:
        runtime: a loaded bundle with ``parts.cbnet``.
        classifier_part: which classifier part answers (``classifier``, the one ``mode="cbnet"``
            uses; ``classifier_base``, the shared-weight one, where the bundle kept it).
        gated: use the bundle's confidence gate (``parts.cbnet.info.gate``): None (default) when the bundle
            has one, False never (the paper's CBNet: every sample answered by the converted path).
        mode: the mode name its results carry.

    Raises:
        ConfigError: the bundle has no CBNet parts, or not the one asked for; ``gated=True`` without a gate.
        BundleError: the gate record is malformed (names the field).

    Example:
        >>> rt = edge_runtime.load_bundle("out/branchynet_resnet")   # doctest: +SKIP
        >>> CBNetRunner(rt).run(x).predictions                        # doctest: +SKIP
    """

    def __init__(self, runtime: Any, classifier_part: str = "classifier", gated: bool | None = None,
                 mode: str = METHOD) -> None:
        parts = runtime.manifest.parts.get(METHOD)
        if parts is None:
            raise ConfigError(f"{runtime.bundle.root}: bundle {runtime.name!r} has no CBNet parts; "
                              "convert with a recipe 'cbnet' section to add them")
        if classifier_part not in parts.graphs:
            raise ConfigError(f"{runtime.bundle.root}: bundle {runtime.name!r} has no CBNet part "
                              f"{classifier_part!r}; it has {', '.join(sorted(parts.graphs))}")
        self.runtime = runtime
        self.mode = mode
        self.part_names = ("autoencoder", classifier_part)
        self.runners: list[GraphRunner] = [
            runtime.open_graph(parts.graphs[name], f"parts.{METHOD}.graphs.{name}") for name in self.part_names]
        out_shape = list(parts.graphs["autoencoder"].outputs[0].shape[1:])
        if out_shape != list(runtime.input_spec.shape[1:]):
            raise BundleError(f"autoencoder output shape {out_shape} differs from the input shape "
                              f"{list(runtime.input_spec.shape[1:])}", path=runtime.bundle.manifest_path,
                              field=f"parts.{METHOD}.graphs.autoencoder.outputs")
        record = parts.info.get(GATE)
        if gated and record is None:
            raise ConfigError(f"{runtime.bundle.root}: bundle {runtime.name!r} has no CBNet gate; convert with a "
                              "recipe 'cbnet.gate' section to add one")
        self.gate: ExitPolicy | None = None
        self.gate_record: dict[str, Any] | None = None
        if record is not None and gated is not False:
            self.gate = gate_policy(record, runtime.bundle.manifest_path)
            self.gate_record = record
        #: the gate turns every sample away (e.g. a guarantee that certified nothing): the chain alone answers,
        #: without paying for the converted path first
        self.closed = self.gate_record is not None and abs(float(self.gate_record["policy"]["threshold"])) >= NEVER
        #: the gate lets every sample through (a threshold below any score its policy can give, as when the
        #: point estimate opens it on the calibration split): the decision is known, so it is not computed
        self.open = self.gate_record is not None and _passes_every_score(
            self.gate_record["policy"], int(parts.graphs[classifier_part].outputs[0].shape[-1]))

    def convert(self, x: np.ndarray) -> np.ndarray:
        """The autoencoder's converted inputs (model-ready, same shape as ``x``)."""
        return self.runners[0].run_one(x)

    def run(self, x: np.ndarray, on_exit: OnExit | None = None, policy: ExitPolicy | None = None) -> InferenceResult:
        """Autoencoder -> classifier on a checked batch (use ``Runtime.infer(x, mode="cbnet")``); with a gate,
        the samples it turns away run the early-exit chain on their original input with ``policy`` (default:
        the bundle's calibrated policy)."""
        clock = time.perf_counter
        start = clock()
        if self.closed:
            return self._chain_only(x, start, on_exit, policy)
        converted = self.runners[0].run_one(x)
        t1 = clock()
        logits = self.runners[1].run_one(converted)
        t2 = clock()
        n = x.shape[0]
        parts = {self.part_names[0]: t1 - start, self.part_names[1]: t2 - t1}
        if self.gate is None or self.open:
            return self._converted(logits, n, t2 - start, parts, on_exit)
        passed = np.asarray(self.gate.decide(0, logits, self.gate.start(n)), dtype=bool)
        if passed.all():      # the common case: the gate lets every sample through
            return self._converted(logits, n, clock() - start, parts, on_exit)
        return self._gated(x, logits, passed, start, parts, on_exit, policy)

    def _converted(self, logits: np.ndarray, n: int, seconds: float, parts: dict[str, float],
                   on_exit: OnExit | None) -> InferenceResult:
        """Every sample answered by the converted path (at exit 0)."""
        rt = self.runtime
        rows = np.arange(n)
        if on_exit is not None:
            on_exit(rows, 0, logits, seconds)
        seg_latency = np.zeros(rt.num_exits)
        seg_latency[0] = seconds
        seg_batch = np.zeros(rt.num_exits, dtype=np.int64)
        seg_batch[0] = n
        return InferenceResult(
            predictions=logits.argmax(axis=-1), exit_index=np.zeros(n, dtype=np.int64), outputs=logits,
            segment_latency_s=seg_latency, segment_batch_size=seg_batch, sample_latency_s=np.full(n, seconds),
            latency_s=seconds, mode=self.mode, labels=rt.labels, part_latency_s=parts,
            info={"converted": n, "converted_fraction": 1.0, "converted_rows": rows.tolist()})

    def _chain_only(self, x: np.ndarray, start: float, on_exit: OnExit | None,
                    policy: ExitPolicy | None) -> InferenceResult:
        """A closed gate: every sample through :meth:`Runtime.decide` on its original input."""
        rt = self.runtime
        run = rt.decide({rt.input_spec.name: x}, policy or rt.default_policy, on_exit=on_exit)
        return InferenceResult(
            predictions=run.outputs.argmax(axis=-1), exit_index=run.exit_index, outputs=run.outputs,
            segment_latency_s=run.segment_latency_s, segment_batch_size=run.segment_batch_size,
            sample_latency_s=run.sample_latency_s, latency_s=time.perf_counter() - start, mode=self.mode,
            labels=rt.labels, part_latency_s={"early_exit": run.latency_s},
            info={"converted": 0, "converted_fraction": 0.0, "converted_rows": []})

    def _gated(self, x: np.ndarray, logits: np.ndarray, passed: np.ndarray, start: float, parts: dict[str, float],
               on_exit: OnExit | None, policy: ExitPolicy | None) -> InferenceResult:
        """Samples the gate turned away continue through :meth:`Runtime.decide` on their original input."""
        rt = self.runtime
        clock = time.perf_counter
        n = x.shape[0]
        kept, rest = np.flatnonzero(passed), np.flatnonzero(~passed)
        t_gate = clock() - start
        if kept.size and on_exit is not None:
            on_exit(kept, 0, logits[kept], t_gate)
        relay = None if on_exit is None else (
            lambda rows, i, out, t: on_exit(rest[rows], i, out, t_gate + t))
        run = rt.decide({rt.input_spec.name: x[rest]}, policy or rt.default_policy, on_exit=relay)
        outputs = logits.copy()
        outputs[rest] = run.outputs
        exit_index = np.zeros(n, dtype=np.int64)
        exit_index[rest] = run.exit_index
        sample_latency = np.full(n, t_gate)
        sample_latency[rest] = t_gate + run.sample_latency_s
        return InferenceResult(
            predictions=outputs.argmax(axis=-1), exit_index=exit_index, outputs=outputs,
            segment_latency_s=run.segment_latency_s, segment_batch_size=run.segment_batch_size,
            sample_latency_s=sample_latency, latency_s=clock() - start, mode=self.mode, labels=rt.labels,
            part_latency_s={**parts, "early_exit": run.latency_s},
            info={"converted": int(kept.size), "converted_fraction": float(kept.size) / n,
                  "converted_rows": kept.tolist()})


def _passes_every_score(spec: dict[str, Any], classes: int) -> bool:
    """Whether a gate's threshold passes every score its policy can give (with a 1e-6 margin for rounding): max
    softmax is >= 1/classes (``confidence``), entropy <= ln(classes), or 1 normalized (``entropy``); False for
    other policies or unknown class counts."""
    t = float(spec["threshold"])
    if classes <= 0:
        return False
    if spec["name"] == "confidence":
        return t <= 1.0 / classes - 1e-6
    if spec["name"] == "entropy":
        top = 1.0 if dict(spec.get("kwargs") or {}).get("normalized") else float(np.log(classes))
        return t >= top + 1e-6
    return False


def gate_policy(record: dict[str, Any], where: Any = None) -> ExitPolicy:
    """The gate's decision rule from its manifest record: a score policy over one early "exit" (the converted
    path) with the calibrated threshold.

    Raises:
        BundleError: the record is malformed (names ``parts.cbnet.info.gate``).
    """
    field = f"parts.{METHOD}.info.{GATE}"
    try:
        spec = record["policy"]
        pol = create_policy(spec["name"], 2, [float(spec["threshold"])], **dict(spec.get("kwargs") or {}))
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise BundleError(f"malformed CBNet gate ({exc})", path=where, field=field) from None
    return pol


def cbnet_runner(runtime: Any) -> CBNetRunner:
    """The runtime's CBNet runner, created (sessions opened) on first use and kept with the runtime."""
    return runtime.mode_state(METHOD, lambda: CBNetRunner(runtime))


def calibrate_gate(runtime: Any, x: np.ndarray, y: np.ndarray, *, policy: str = "confidence",
                   policy_kwargs: dict[str, Any] | None = None, max_accuracy_drop: float = 1.0,
                   levels: int | None = None, chunk: int = 256,
                   guarantee: dict[str, Any] | None = None) -> dict[str, Any]:
    """Calibrate CBNet's confidence gate on held-out data with the bundle's own graphs; returns the
    ``parts.cbnet.info.gate`` record (see :func:`choose_gate`).

    Runs, on ``x``: the ungated CBNet parts, the early-exit chain at the bundle's calibrated policy, and the
    final exit; the classifier part is the one ``mode="cbnet"`` runs.

    Args:
        runtime: a loaded bundle with CBNet parts (its gate, if any, is ignored: the ungated path is measured).
        x, y: model-ready held-out inputs (the calibration split) and labels.
        policy, policy_kwargs, max_accuracy_drop, levels, guarantee: see :func:`choose_gate`.
        chunk: batch size the parts and segments run at.
    """
    runner = CBNetRunner(runtime, gated=False)
    cb, chain, final, chain_exit = [], [], [], []
    for i in range(0, len(x), chunk):
        xb = runtime.check_input(x[i:i + chunk])
        cb.append(runner.run(xb).outputs)
        res = runtime.infer(xb, mode="early_exit")
        chain.append(res.outputs)
        chain_exit.append(res.exit_index)
        final.append(runtime.exit_outputs(xb)[-1])
    m = runtime.manifest
    graphs = m.parts[METHOD].graphs
    cum = np.asarray([e.cumulative_flops for e in m.exits], dtype=np.float64)
    return choose_gate(np.concatenate(cb), np.concatenate(chain), np.concatenate(final), np.asarray(y),
                       policy=policy, policy_kwargs=policy_kwargs, max_accuracy_drop=max_accuracy_drop,
                       flops=(float(graphs["autoencoder"].flops + graphs[runner.part_names[1]].flops),
                              float(cum[np.concatenate(chain_exit)].mean())), levels=levels, guarantee=guarantee)


def choose_gate(converted: np.ndarray, chain: np.ndarray, final: np.ndarray, y: np.ndarray, *,
                policy: str = "confidence", policy_kwargs: dict[str, Any] | None = None,
                max_accuracy_drop: float = 1.0, flops: tuple[float, float] = (1.0, 1.0),
                levels: int | None = None, guarantee: dict[str, Any] | None = None) -> dict[str, Any]:
    """The gate's threshold from held-out outputs; returns the ``parts.cbnet.info.gate`` record.

    The gate is an exit in front of the BranchyNet chain: its "exit 0" is the lightweight classifier on the
    converted input, its "final exit" the chain at the bundle's calibrated policy (what a turned-away sample
    gets). :func:`edge_runtime.calibration.calibrate` sweeps the gate's threshold on these two outputs with the
    device's decision loop and keeps the cheapest point — the most samples answered by the converted path —
    whose accuracy is at most ``max_accuracy_drop`` points below the **final exit's** (the full model's): the
    budget the exit thresholds are held to, from the same reference, so the chain's own drop counts against
    it. Without ``guarantee``, a point estimate on these samples (no probability that it holds on new data).

    With ``guarantee`` (the recipe's ``calibrate`` keys ``confidence``, ``risk``, ``bound``,
    ``selection_fraction``: the exit thresholds' risk control), calibrate certifies the gate's threshold the same
    way (Learn-then-Test): with probability >= ``confidence`` over the calibration draw, the gated answers lose
    at most the budget left after the chain's drop on these samples, **relative to the chain** (what a
    turned-away sample gets). The chain's own drop from the final exit is the exit thresholds' guarantee; the
    two together hold with probability >= 2 x confidence - 1 (union bound). When the chain alone spends the
    budget, nothing converts (``guarantee.certified`` false).

    Args:
        converted: the classifier's outputs on the converted inputs, (N, classes).
        chain: the early-exit chain's answers on the original inputs, (N, classes).
        final: the final exit's outputs, (N, classes) (the reference accuracy).
        y: labels, (N,).
        policy: a registered score policy (``confidence``: max softmax; ``entropy``).
        policy_kwargs: its arguments.
        max_accuracy_drop: budget in accuracy points below the final exit.
        flops: (CBNet's parts, the chain's mean per sample): the cost calibrate minimises.
        levels: calibrate's grid levels (default: its own).
        guarantee: None (the point estimate) or calibrate's risk-control keywords (``confidence`` and,
            optionally, ``risk``, ``bound``, ``selection_fraction``, ``seed``); ``confidence`` None is the point
            estimate.

    Raises:
        ConfigError: ``policy`` is not a score policy.

    Example:
        >>> y = np.array([0, 1, 1, 0])
        >>> cb = np.array([[9., 0.], [0., 9.], [1., 0.], [9., 0.]])   # sample 2: unsure and wrong
        >>> right = np.eye(2)[y] * 9
        >>> g = choose_gate(cb, right, right, y, max_accuracy_drop=0.0)
        >>> g["converted_fraction"], g["accuracy"]["gated"]
        (0.75, 1.0)
    """
    kwargs = dict(policy_kwargs or {})
    if not isinstance(create_policy(policy, 2, None, **kwargs), ScorePolicy):
        raise ConfigError(f"CBNet gate policy {policy!r}: expected a score policy (confidence, entropy)")
    acc = {k: float((np.asarray(v).argmax(-1) == y).mean()) for k, v in
           (("final_exit", final), ("early_exit", chain), ("cbnet", converted))}
    # calibrate's budget counts from its last "exit" (the chain): what is left of ours once the chain's drop is
    # paid; negative when the chain alone is below the floor: then no threshold qualifies and nothing converts
    left = float(max_accuracy_drop) - 100.0 * (acc["final_exit"] - acc["early_exit"])
    risk = {k: v for k, v in (guarantee or {}).items() if v is not None}
    if risk.get("confidence") is None:
        risk = {}
    certify = bool(risk) and left > 0.0   # a budget of zero or less certifies nothing: nothing converts
    cal = calibrate([converted, chain], y, policy, kwargs, flops=[flops[0], flops[0] + flops[1]],
                    max_accuracy_drop=left, levels=levels, **(risk if certify else {}))
    c = cal.chosen
    threshold, gated, converted_share, mean_flops = (float(c.thresholds[0]), float(c.accuracy),
                                                     float(c.exit_fractions[0]), float(c.mean_flops))
    record: dict[str, Any] = {}
    if risk:
        g = cal.extra.get("guarantee") if certify else None
        record["guarantee"] = {**(g or {"certified": False, "confidence": float(risk["confidence"]),
                                       "statement": "nothing converts: the early-exit chain alone spends the "
                                                    "budget on the calibration split"}),
                               "budget_left": left, "relative_to": "early-exit chain"}
        if not certify:   # no budget left to certify: a threshold no score meets, the chain for every sample
            probe = create_policy(policy, 2, None, **kwargs)
            threshold = -NEVER if getattr(probe, "lower_is_confident", True) else NEVER
            gated, converted_share, mean_flops = acc["early_exit"], 0.0, float(flops[0] + flops[1])
    method = ("risk-controlled (Learn-then-Test) on the calibration split, relative to the early-exit chain"
              if risk else "point estimate on the calibration split")
    return {
        "policy": {"name": policy, "kwargs": cal.policy_kwargs, "threshold": threshold},
        "method": method, **record,
        "split": "calibration", "samples": int(len(y)), "max_accuracy_drop": float(max_accuracy_drop),
        "reference": "final exit",
        "accuracy": {**acc, "gated": gated},
        "converted_fraction": converted_share,
        "mean_flops": mean_flops,
        "curve": [{"threshold": float(p.thresholds[0]), "accuracy": p.accuracy,
                   "converted_fraction": p.exit_fractions[0], "mean_flops": p.mean_flops} for p in cal.front],
    }


@register_mode
class CBNetMode(Mode):
    """CBNet's converting autoencoder + lightweight classifier (every sample answered at exit 0)."""

    name = METHOD
    description = ("CBNet: converting autoencoder, then the lightweight classifier (first exit); with the "
                   "bundle's gate, unsure samples continue through the early-exit chain")
    uses_policy = True  # the early-exit chain behind the gate

    def unsupported(self, manifest: Manifest) -> str | None:
        return None if METHOD in manifest.parts else "it has no CBNet parts (convert with a recipe 'cbnet' section)"

    def run(self, runtime: Any, feeds: Tensors, policy: ExitPolicy | None, *,
            on_exit: OnExit | None = None) -> InferenceResult:
        return cbnet_runner(runtime).run(feeds[runtime.input_spec.name], on_exit, policy)

    def describe(self, manifest: Manifest) -> list[str]:
        parts = manifest.parts[METHOD]
        lines = ["cbnet (mode 'cbnet'): " + ", ".join(f"{k} {_fmt(g.flops)} FLOPs"
                                                        for k, g in sorted(parts.graphs.items()))]
        cost, train = parts.info.get("cost") or {}, parts.info.get("training") or {}
        if cost:
            ratio = cost["flops_ratio_full_vs_cbnet"]
            times = f"{ratio:.1f}x fewer" if ratio >= 1 else f"{1 / ratio:.1f}x more"
            lines.append(f"  autoencoder + classifier {_fmt(cost['cbnet_flops'])} FLOPs vs full "
                         f"{_fmt(cost['full_model_flops'])} ({times}); autoencoder "
                         f"{'cheaper' if cost['cheaper_than_saved'] else 'NOT cheaper'} than the "
                         f"{_fmt(cost['saved_flops'])} FLOPs it saves")
        accs = {k: v for k, v in train.items() if k.endswith("_accuracy") and isinstance(v, float)}
        if accs:
            lines.append(f"  {train.get('evaluated_on', '')} accuracy: " + ", ".join(
                f"{k.removesuffix('_accuracy')} {100 * v:.2f}%" for k, v in accs.items()))
        gate = parts.info.get(GATE)
        if gate:
            pol, acc = gate["policy"], gate["accuracy"]
            lines.append(f"  gate: {pol['name']} threshold {pol['threshold']:.4g} ({gate['method']}, "
                         f"{gate['max_accuracy_drop']:g} pt budget vs the {gate['reference']}): "
                         f"{100 * gate['converted_fraction']:.1f}% answered by the converted path; "
                         f"{gate['split']} accuracy gated {100 * acc['gated']:.2f}%, "
                         f"ungated {100 * acc['cbnet']:.2f}%, "
                         f"early exit {100 * acc['early_exit']:.2f}%, final exit {100 * acc['final_exit']:.2f}%")
            g = gate.get("guarantee")
            if g:
                lines.append(f"  gate guarantee: {'certified' if g.get('certified') else 'NOT certified'} at "
                             f"confidence {g['confidence']:g}, relative to the {g['relative_to']} "
                             f"({g['budget_left']:.2f} pt left of the budget): {g.get('statement', '')}")
        return lines

    def bench_rows(self, ctx: BenchContext) -> list[BenchConfig]:
        rows = []
        for key, rt in ctx.runtimes.items():
            if METHOD not in rt.modes():
                continue
            suffix = variant_suffix(key, ctx.primary_key)
            gated = GATE in rt.manifest.parts[METHOD].info
            rows.append(BenchConfig(
                name=METHOD + suffix, kind=METHOD,
                label="CBNet (autoencoder + lightweight classifier), gated: unsure samples continue through early "
                      "exit" if gated else "CBNet (autoencoder + lightweight classifier)",
                run=infer_fn(rt, mode=METHOD), backend=key[0], precision=key[1]))
        return rows

    def targets(self) -> dict[str, TargetCheck]:
        return {"cbnet_accuracy": _accuracy_target, "cbnet_speedup": _speedup_target,
                "cbnet_vs_branchynet": _vs_early_exit_target}


@register_mode
class CBNetUngatedMode(Mode):
    """The paper's CBNet on a bundle whose ``cbnet`` mode is gated: every sample answered by the converted path
    (a bundle without a gate runs this as ``cbnet`` itself)."""

    name = UNGATED
    description = "CBNet as in the paper on a gated bundle: every sample answered by the converted path"

    def unsupported(self, manifest: Manifest) -> str | None:
        parts = manifest.parts.get(METHOD)
        if parts is None:
            return "it has no CBNet parts (convert with a recipe 'cbnet' section)"
        return None if GATE in parts.info else f"its CBNet has no gate: mode {METHOD!r} is the ungated one"

    def run(self, runtime: Any, feeds: Tensors, policy: ExitPolicy | None, *,
            on_exit: OnExit | None = None) -> InferenceResult:
        runner = runtime.mode_state(UNGATED, lambda: CBNetRunner(runtime, gated=False, mode=UNGATED))
        return runner.run(feeds[runtime.input_spec.name], on_exit)

    def bench_rows(self, ctx: BenchContext) -> list[BenchConfig]:
        return [BenchConfig(name=UNGATED + variant_suffix(key, ctx.primary_key), kind=UNGATED,
                            label="CBNet (autoencoder + lightweight classifier), ungated (the paper's)",
                            run=infer_fn(rt, mode=UNGATED), backend=key[0], precision=key[1])
                for key, rt in ctx.runtimes.items() if UNGATED in rt.modes()]


def _row(results: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((r for r in results["configs"] if r["name"] == name), None)


def _na(goal: str, why: str) -> dict[str, Any]:
    return {"status": "N/A", "value": None, "goal": goal, "detail": why}


def _verdict(ok: bool, value: float, goal: str, detail: str) -> dict[str, Any]:
    return {"status": "PASS" if ok else "MISS", "value": value, "goal": goal, "detail": detail}


def _accuracy_target(results: dict[str, Any]) -> dict[str, Any]:
    goal = "CBNet accuracy within 1.0 point of the full model"
    cb = _row(results, METHOD)
    if not cb or cb.get("accuracy_drop_pts") is None:
        return _na(goal, "the bundle has no CBNet parts")
    drop = cb["accuracy_drop_pts"]
    return _verdict(drop <= 1.0, drop, goal, f"accuracy drop {drop:.2f} points")


def _speedup_target(results: dict[str, Any]) -> dict[str, Any]:
    goal = f"CBNet mean batch-1 latency >= {SPEEDUP_GOAL:g}x lower than the full model's"
    cb = _row(results, METHOD)
    if not cb or not cb.get("speedup_vs_full"):
        return _na(goal, "the bundle has no CBNet parts")
    s = cb["speedup_vs_full"]
    return _verdict(s >= SPEEDUP_GOAL, s, goal, f"speed-up {s:.2f}x")


def _vs_early_exit_target(results: dict[str, Any]) -> dict[str, Any]:
    goal = "CBNet mean batch-1 latency lower than BranchyNet early exit's at its calibrated point"
    cb, ee = _row(results, METHOD), _row(results, "early_exit")
    if not cb or not ee or not cb.get("latency_ms") or not ee.get("latency_ms"):
        return _na(goal, "the bundle has no CBNet parts")
    ratio = ee["latency_ms"]["mean"] / cb["latency_ms"]["mean"]
    return _verdict(ratio > 1.0, ratio, goal, f"early exit / CBNet mean latency = {ratio:.2f}x")
