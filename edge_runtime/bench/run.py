"""``run_bench``: load a bundle (every backend x precision it holds), measure every row interleaved, derive
speed-ups, the oracle, the Pareto front and the targets, and return results.json's content."""

from __future__ import annotations

import hashlib
import inspect
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.bench.configs import BenchConfig, BenchContext, build_configs
from edge_runtime.bench.data import load_bench_data
from edge_runtime.bench.measure import MeasureSettings, latency_stats, measure
from edge_runtime.bench.oracle import ORACLE_METHOD, oracle_row
from edge_runtime.bench.results import RESULTS_FORMAT, RESULTS_VERSION, machine_info, package_versions, validate_results
from edge_runtime.bench.targets import evaluate_targets
from edge_runtime.calibration.bounds import pareto_front
from edge_runtime.calibration.risk import describe_guarantee
from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.manifest import Manifest

METHODS = {
    "latency": "wall time around each Runtime.infer call at batch 1 (input checks, every segment run, exit "
               "decisions), one call per sample, rows interleaved per sample with a rotating order",
    "throughput": "samples / summed wall time of Runtime.infer calls on consecutive full batches of the data "
                  "(the batch shrinks as samples leave), rows interleaved per batch",
    "speedup": "one-graph full model's mean batch-1 latency / the row's (same backend and precision); at larger "
               "batch sizes, the row's throughput / the full model's",
    "accuracy": "from the batch-1 pass over every sample; drop in percentage points against the full model",
    "energy": "the attached meter's energy per Runtime.infer window divided by the samples in it; the source "
              "says measured:<meter> or estimated:<profile>",
    "peak_rss": "resident memory of the whole bench process (every session of every row is loaded), sampled "
                "right after each of the row's calls; the row's maximum",
    "per_segment": "mean wall time per batch-1 call spent in each segment (model run + exit decision); "
                   "0 for a segment a sample did not reach",
    "oracle": ORACLE_METHOD,
}


@dataclass(frozen=True)
class BenchSettings:
    """What to benchmark and how (the CLI's flags).

    Attributes:
        data: ``NAME:SPLIT`` (e.g. ``digits:test``) or a ``.npz`` with ``x`` and ``y``.
        backend: primary backend (None: the profile's, else ``onnxruntime``); the primary runs fp32 files.
        threads: backend threads (None: the profile's / the backend's default).
        profile: device profile name (energy estimator, defaults).
        meter: energy meter name; None auto-selects; ``none`` turns metering off.
        batch_sizes: throughput batch sizes.
        sweep_points: threshold-sweep rows.
        warmup, repeats, min_batches: see :class:`MeasureSettings`.
        max_samples: use only the first N samples.
        variants: also run every other backend x precision the bundle holds.
        preprocess: apply the manifest's preprocessing (None: datasets yes, .npz no).
        torch_checkpoint: a state_dict to run PyTorch eager from (optional row; needs torch).
        progress: show progress bars.
        allow_unverified: benchmark a bundle whose export verification did not pass.
    """

    data: str
    backend: str | None = None
    threads: int | None = None
    profile: str | None = None
    meter: str | None = None
    batch_sizes: tuple[int, ...] = (1, 8, 32)
    sweep_points: int = 8
    warmup: int = 20
    repeats: int = 1
    min_batches: int = 16
    max_samples: int | None = None
    variants: bool = True
    preprocess: bool | None = None
    torch_checkpoint: str | None = None
    progress: bool = True
    allow_unverified: bool = False


def run_bench(bundle: str | Path, settings: BenchSettings) -> dict[str, Any]:
    """Benchmark a bundle; returns the results (validated against the results schema).

    Example:
        >>> res = run_bench("out/tiny_cnn", BenchSettings(data="test.npz"))    # doctest: +SKIP
        >>> [r["name"] for r in res["configs"]][:3]                             # doctest: +SKIP
        ['full', 'never', 'early_exit']
    """
    from edge_runtime.runtime import load_bundle

    notes: list[str] = []
    primary = _load(load_bundle, bundle, settings.backend, settings, "fp32")
    runtimes = {(primary.backend.name, primary.precision): primary}
    if settings.variants:
        runtimes.update(_variants(load_bundle, bundle, settings, primary, notes))
    meter, meter_info = _attach_meter(runtimes, settings, notes)
    data = load_bench_data(settings.data, primary, preprocess=settings.preprocess).head(settings.max_samples)
    ctx = BenchContext(runtimes=runtimes, x=data.x, y=data.y, sweep_points=settings.sweep_points,
                       options={"torch_checkpoint": settings.torch_checkpoint, "bundle": str(bundle),
                                "threads": settings.threads}, notes=notes)
    configs = build_configs(ctx)
    ms = MeasureSettings(batch_sizes=settings.batch_sizes, warmup=settings.warmup, repeats=settings.repeats,
                         min_batches=settings.min_batches, progress=settings.progress)
    try:
        measured = measure(configs, data.x, data.y, ms, len(primary.segments), primary.num_exits)
    finally:
        if meter is not None and hasattr(meter, "stop"):
            meter.stop()
    rows = [_row(c, measured[c.name]) for c in configs]
    never = next((r for r in rows if r["name"] == "never"), None)
    orow = oracle_row(ctx.exit_outputs(), data.y, never, lambda a: latency_stats(a))
    variant_order = {f"@{b}/{p}": i for i, (b, p) in enumerate(runtimes)}
    primary_rows = [r for r in rows if "@" not in r["name"]]
    other = sorted((r for r in rows if "@" in r["name"]),
                   key=lambda r: variant_order.get("@" + r["name"].split("@", 1)[1], 0))  # stable: kind order kept
    rows = primary_rows + [_oracle(orow, ctx)] + other
    _derive(rows, primary.manifest)
    manifest_path = Path(bundle) / "manifest.json"
    results: dict[str, Any] = {
        "format": RESULTS_FORMAT,
        "format_version": RESULTS_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "header": {
            "machine": machine_info(),
            "packages": package_versions(),
            "backend": primary.backend.name,
            "threads": _threads(primary),
            "profile": _profile_name(primary, meter_info, settings),
            "meter": meter_info,
            "variants": [f"{b}/{p}" for b, p in runtimes],
            "bundle": {"path": str(bundle), "name": primary.name,
                       "manifest_sha256": hashlib.sha256(manifest_path.read_bytes()).hexdigest(),
                       "num_segments": len(primary.segments), "num_exits": primary.num_exits,
                       "policy": primary.manifest.policy.to_dict(), "has_full_model": primary.has_full_model,
                       "full_model_flops": primary.manifest.full_model_flops,
                       "guarantee": describe_guarantee(primary.manifest.calibration.other)
                       if primary.manifest.calibration is not None else None},
        },
        "data": {"spec": data.spec, "source": data.source, "n_samples": int(len(data.y)),
                 "split_check": data.split_check, "indices_sha256": data.indices_sha256, "notes": data.notes},
        "settings": {**{k: v for k, v in asdict(ms).items() if k != "progress"},
                     "batch_sizes": sorted(set([1, *settings.batch_sizes])), "sweep_points": settings.sweep_points,
                     "sweep_source": ctx.sweep_source, "max_samples": settings.max_samples},
        "configs": rows,
        "pareto_front": {"latency": _pareto(rows, lambda r: _mean(r)),
                         "energy": _pareto(rows, lambda r: r["energy"]["per_inference_j"])},
        "methods": METHODS,
        "notes": notes,
    }
    results["recommendation"] = recommendation(rows, primary.manifest)
    results["targets"] = evaluate_targets(results)
    validate_results(results)
    return results


def _load(load_bundle: Any, bundle: Any, backend: str | None, settings: BenchSettings, precision: str) -> Any:
    kwargs: dict[str, Any] = {"backend": backend, "threads": settings.threads, "precision": precision}
    if settings.profile and "profile" in inspect.signature(load_bundle).parameters:
        kwargs["profile"] = settings.profile
    if settings.allow_unverified:
        kwargs["allow_unverified"] = True
    return load_bundle(bundle, **kwargs)


def _variants(load_bundle: Any, bundle: Any, settings: BenchSettings, primary: Any,
              notes: list[str]) -> dict[tuple[str, str], Any]:
    """Runtimes for every other (format, precision) the bundle's segments hold, on a backend that runs it."""
    from edge_runtime.backends import BACKENDS

    held = primary.manifest.held_variants()
    out: dict[tuple[str, str], Any] = {}
    for fmt, precision in held:
        for name in BACKENDS.names():
            try:
                cls = BACKENDS.get(name)
            except EdgeRuntimeError as exc:
                notes.append(f"backend {name!r} unavailable here: {exc}")
                continue
            if cls.file_format != fmt or (name, precision) == (primary.backend.name, primary.precision):
                continue
            try:
                out[(name, precision)] = _load(load_bundle, bundle, name, settings, precision)
            except EdgeRuntimeError as exc:
                notes.append(f"variant {name}/{precision} skipped: {exc}")
    return out


def _attach_meter(runtimes: dict[tuple[str, str], Any], settings: BenchSettings,
                  notes: list[str]) -> tuple[Any, dict[str, Any] | None]:
    """One energy meter shared by every runtime (``Runtime.meter``); None when none is available."""
    if settings.meter == "none":
        notes.append("energy not measured (--meter none)")
        return None, None
    try:
        from edge_runtime import meters
    except ImportError:
        notes.append("energy left null: this install has no energy meters (edge_runtime.meters)")
        return None, None
    try:
        meter = meters.create_meter(settings.meter or "auto", profile=settings.profile)
        if hasattr(meter, "start"):
            meter = meter.start() or meter
    except EdgeRuntimeError as exc:
        notes.append(f"energy left null: no meter could be started ({exc})")
        return None, None
    for rt in runtimes.values():
        rt.meter = meter
    info = meter.describe() if hasattr(meter, "describe") else {"name": type(meter).__name__}
    return meter, {"name": info.get("name"), "source": getattr(meter, "source", None), "details": info}


def _profile_name(rt: Any, meter_info: dict[str, Any] | None, settings: BenchSettings) -> str | None:
    """The profile asked for, else the one the runtime or the energy estimator detected."""
    prof = getattr(rt, "profile", None)
    if prof is not None:
        return getattr(prof, "name", str(prof))
    detected = ((meter_info or {}).get("details") or {}).get("profile")
    return settings.profile or (f"{detected} (detected by the estimator)" if detected else None)


def _threads(rt: Any) -> int | None:
    t = getattr(rt.backend, "threads", None)
    return int(t) if t else None


def _row(c: BenchConfig, m: dict[str, Any]) -> dict[str, Any]:
    return {"name": c.name, "kind": c.kind, "label": c.label, "backend": c.backend, "precision": c.precision,
            "policy": c.policy, "thresholds": c.thresholds, "measured": True, "notes": c.notes, **m}


def _oracle(o: dict[str, Any], ctx: BenchContext) -> dict[str, Any]:
    b, p = ctx.primary_key
    return {"name": "oracle", "kind": "oracle", "label": "oracle (earliest correct exit, estimated)", "backend": b,
            "precision": p, "policy": None, "thresholds": None, "measured": False,
            "notes": "bound, not a policy: latency and energy estimated (see methods.oracle)",
            "n_samples": int(len(ctx.y)), "throughput": [], "peak_rss_mb": None, **o}


def _mean(r: dict[str, Any]) -> float | None:
    return (r.get("latency_ms") or {}).get("mean")


def _derive(rows: list[dict[str, Any]], manifest: Manifest) -> None:
    """Speed-ups and accuracy drops against the same variant's full model (else the primary one); mean executed
    FLOPs fraction."""
    fulls = {(r["backend"], r["precision"]): r for r in rows if r["kind"] == "full"}
    primary_full = next((r for r in rows if r["name"] == "full"), None)
    full_flops = manifest.full_model_flops
    cum = manifest.cumulative_flops
    for r in rows:
        base = fulls.get((r["backend"], r["precision"]), primary_full)  # e.g. PyTorch eager vs the primary
        r["baseline"] = base["name"] if base else None
        r["accuracy_drop_pts"] = 100.0 * (base["accuracy"] - r["accuracy"]) if base else None
        bm, rm = (_mean(base) if base else None), _mean(r)
        r["speedup_vs_full"] = bm / rm if bm and rm else None
        base_thr = {t["batch_size"]: t["samples_per_s"] for t in (base or {}).get("throughput", [])}
        for t in r["throughput"]:
            bt = base_thr.get(t["batch_size"])
            t["speedup_vs_full"] = t["samples_per_s"] / bt if bt else None
        hist = np.asarray(r["exit_histogram"], dtype=np.float64)
        segmented = r["kind"] in ("never", "early_exit", "sweep", "oracle")
        if segmented and full_flops and all(c is not None for c in cum) and hist.sum() > 0:
            r["mean_flops_fraction"] = float((hist * np.asarray(cum, dtype=np.float64)).sum() / hist.sum()
                                             / full_flops)
        else:
            r["mean_flops_fraction"] = 1.0 if r["kind"] == "full" else None


def recommendation(rows: list[dict[str, Any]], manifest: Manifest) -> dict[str, Any] | None:
    """What to deploy, from the measured rows (every mode x backend x precision measured; the same rule as
    ``convert``'s ``deployment`` record: the lowest mean batch-1 latency within the calibration budget of the fp32
    one-graph model); None without a one-graph row."""
    from edge_runtime.backends import FORMAT_BACKENDS
    from edge_runtime.calibration.deploy import Candidate, recommend
    from edge_runtime.modes import MODES

    formats = {b: f for f, b in FORMAT_BACKENDS.items()}
    cands = [Candidate(r["kind"], r["backend"], formats.get(r["backend"], r["backend"]), r["precision"],
                       r["thresholds"], float(r["accuracy"]), (_mean(r) or 0.0) / 1e3 if _mean(r) else None,
                       (r.get("energy") or {}).get("per_inference_j"))
             for r in rows if r.get("measured") and r["kind"] in MODES]
    ref = next((c for c in cands if c.name == "full@onnx/fp32"), None) or next(
        (c for c in cands if (c.mode, c.precision) == ("full", "fp32")), None)
    if ref is None:
        return None
    cal = manifest.calibration
    budget = float(cal.max_accuracy_drop) if cal is not None and cal.max_accuracy_drop is not None else 1.0
    rec = recommend(cands, budget, reference=ref).to_dict()
    rec["bundle_default"] = manifest.deployment.to_dict() if manifest.deployment is not None else None
    rec["matches_bundle_default"] = bool(manifest.deployment is not None and
                                         (manifest.deployment.mode, manifest.deployment.variant) ==
                                         (rec["mode"], f"{rec['format']}/{rec['precision']}"))
    return rec


def _pareto(rows: list[dict[str, Any]], cost: Any) -> list[str] | None:
    """Names of the sweep/calibrated rows (primary variant) on the accuracy-vs-``cost`` Pareto front, ordered by
    cost; None when the cost is missing."""
    cands = [r for r in rows if r["kind"] in ("sweep", "early_exit") and "@" not in r["name"]]
    if not cands or any(cost(r) is None for r in cands):
        return None
    return [r["name"] for r in pareto_front(cands, cost, lambda r: r["accuracy"])]
