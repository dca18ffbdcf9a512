"""Fit a device profile to this machine: micro-benchmark the backend and write the profile (``profile fit``).

Measures, in onnxruntime at the given thread count (graphs are built on the device by
:mod:`edge_runtime._onnx_proto`, no onnx package needed):

* per-call overhead and per-node cost (chains of 1..K Relu nodes on a tiny tensor);
* Conv and MatMul/Gemm cost over sizes spanning 10⁴..10⁸ FLOPs, fitted as
  ``t = op_s + flops / rate`` weighted by 1/t (relative error, so small ops count);
* every other node (element-wise, normalising, layout, shape computations): per node and per element,
  solved so that a transformer block and a CNN block, built like exported segments, are predicted
  exactly (isolated chains of such nodes get optimised away by onnxruntime, real graphs do not);
* the executor's own cost per segment (exit decision and bookkeeping), on a synthetic bundle.

With a ``powerlog`` the power model is fitted too: mean power over an idle window and
over a busy window (all threads running matmul), both timestamped on this machine's clock.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from edge_runtime import _profile_fit_graphs as G
from edge_runtime.errors import ConfigError
from edge_runtime.estimate import FREE_OPS, OP_CATEGORY
from edge_runtime.files import write_text_atomic
from edge_runtime.meters.powerlog import PowerLog
from edge_runtime.policies import create_policy
from edge_runtime.profiles import load_profile, resolve_profile
from edge_runtime.runtime import load_bundle
from edge_runtime.synthetic import write_synthetic_bundle


@dataclass(frozen=True)
class FitSettings:
    """How long and at which thread count to measure."""

    threads: int = 1
    seconds_per_graph: float = 0.15
    min_runs: int = 20
    idle_s: float = 3.0
    busy_s: float = 5.0


def _session(model_bytes: bytes, threads: int) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return ort.InferenceSession(model_bytes, sess_options=so, providers=["CPUExecutionProvider"])


def _time(fn: Callable[[], Any], settings: FitSettings) -> float:
    """Median seconds per call, after warm-up, within a time budget."""
    for _ in range(5):
        fn()
    times: list[float] = []
    clock = time.perf_counter
    deadline = clock() + settings.seconds_per_graph
    while len(times) < settings.min_runs or clock() < deadline:
        t0 = clock()
        fn()
        times.append(clock() - t0)
        if len(times) > 20000:
            break
    return float(np.median(times))


def _run_graph(model_bytes: bytes, x: np.ndarray, settings: FitSettings) -> float:
    s = _session(model_bytes, settings.threads)
    feed = {s.get_inputs()[0].name: x}
    return _time(lambda: s.run(None, feed), settings)


def _fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """(op seconds, GFLOP/s) from (flops, seconds) with weights 1/t (least relative error)."""
    f = np.array([p[0] for p in points], dtype=np.float64)
    t = np.array([p[1] for p in points], dtype=np.float64)
    a = np.stack([np.ones_like(f), f], axis=1) / t[:, None]
    (op_s, inv_rate), *_ = np.linalg.lstsq(a, np.ones_like(t), rcond=None)
    inv_rate = max(inv_rate, 1e-15)
    return max(0.0, float(op_s)), float(1.0 / inv_rate / 1e9)


def measure_latency_model(settings: FitSettings = FitSettings(),
                          progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the micro-benchmarks; returns the fitted figures and the raw points."""
    say = progress or (lambda _m: None)
    tiny = np.ones((1, 16), np.float32)
    say("call overhead and per-node cost")
    chain = [(k, _run_graph(G.chain(k), tiny, settings)) for k in (1, 4, 16, 32)]
    ks = np.array([c[0] for c in chain], dtype=np.float64)
    ts = np.array([c[1] for c in chain])
    _, call_s = np.polyfit(ks, ts, 1)
    call_s = max(float(call_s), 0.0)
    points: dict[str, list[tuple[int, float]]] = {"conv": [], "matmul": []}
    say("conv")
    for cin, cout, hw in G.CONV_SIZES:
        m, x, flops = G.conv(cin, cout, hw)
        points["conv"].append((flops, max(_run_graph(m, x, settings) - call_s, 1e-7)))
    say("matmul")
    for rows, k, n in G.MATMUL_SIZES:
        m, x, flops = G.matmul(rows, k, n)
        points["matmul"].append((flops, max(_run_graph(m, x, settings) - call_s, 1e-7)))
    conv_op_s, conv_gflops = _fit(points["conv"])
    mm_op_s, mm_gflops = _fit(points["matmul"])
    say("non-FLOP nodes inside a transformer block and a CNN block")
    other_op_s, other_elem_s, blocks = _fit_other_nodes(call_s, conv_op_s, conv_gflops, mm_op_s, mm_gflops, settings)
    say("executor overhead per segment")
    first_s, decision_s, final_s = _executor_overhead(settings)
    return {
        "call_overhead_s": call_s, "other_op_s": other_op_s, "other_elem_s": other_elem_s,
        "first_s": first_s, "decision_s": decision_s, "final_s": final_s,
        "conv_op_s": conv_op_s, "conv_gflops": conv_gflops, "matmul_op_s": mm_op_s, "matmul_gflops": mm_gflops,
        "points": {"relu_chain": [[int(k), float(t)] for k, t in chain], "blocks": blocks,
                   **{k: [[int(f), float(t)] for f, t in v] for k, v in points.items()}},
    }


def _fit_other_nodes(call_s: float, conv_op_s: float, conv_gflops: float, mm_op_s: float, mm_gflops: float,
                     settings: FitSettings) -> tuple[float, float, dict[str, float]]:
    """(seconds per non-FLOP node, per node and element) so that the predicted time of a transformer
    block and a CNN block (graphs shaped like exported segments) matches their measured time."""
    rows, measured = [], {}
    for name, (model, x, _flops, info) in (("transformer", G.transformer_block()), ("cnn", G.conv_block())):
        t = _run_graph(model, x, settings)
        measured[name] = t
        ops = {op: c for op, c in info["ops"].items() if op not in FREE_OPS}
        n_conv = sum(c for op, c in ops.items() if OP_CATEGORY.get(op) == "conv")
        n_mm = sum(c for op, c in ops.items() if OP_CATEGORY.get(op) == "matmul")
        n_other = sum(ops.values()) - n_conv - n_mm
        fb = info["flops_by_op"]
        known = (call_s + n_conv * conv_op_s + n_mm * mm_op_s + fb.get("conv", 0) / (conv_gflops * 1e9)
                 + fb.get("matmul", 0) / (mm_gflops * 1e9))
        rows.append((n_other, n_other * info["elements"], max(t - known, 0.0)))
    a = np.array([[r[0], r[1]] for r in rows], dtype=np.float64)
    b = np.array([r[2] for r in rows])
    try:
        op_s, elem_s = np.linalg.solve(a, b)
    except np.linalg.LinAlgError:
        op_s, elem_s = -1.0, -1.0
    if op_s < 0 or elem_s < 0:  # not separable on this machine: one per-node figure
        op_s, elem_s = float(b.sum() / a[:, 0].sum()), 0.0
    return float(op_s), float(elem_s), {f"{k}_block_s": v for k, v in measured.items()}


def _executor_overhead(settings: FitSettings) -> tuple[float, float, float]:
    """Seconds the executor adds to the first segment, a middle one and the final one, beyond the graph's run.

    Runs a synthetic 3-segment bundle (:mod:`edge_runtime.synthetic`) through :class:`Runtime` with an
    entropy policy that never exits, and subtracts the same graph's bare session time.
    """
    with tempfile.TemporaryDirectory() as tmp:
        root = write_synthetic_bundle(Path(tmp) / "bundle", num_exits=3, features=16, classes=10)
        rt = load_bundle(root, backend="onnxruntime", threads=settings.threads)
        x = np.ones((1, 16), np.float32)
        pol = create_policy("entropy", 3, [-1.0, -1.0])
        for _ in range(50):
            rt.infer(x, policy=pol)
        lat: list[np.ndarray] = []  # per call: each segment's seconds
        clock = time.perf_counter
        deadline = clock() + 3 * settings.seconds_per_graph
        while len(lat) < 3 * settings.min_runs or clock() < deadline:
            lat.append(rt.infer(x, policy=pol).segment_latency_s)
        med = np.median(np.array(lat), axis=0)
        bare = [_run_graph((root / "segments" / f"segment_{i}.onnx").read_bytes(), x, settings) for i in (0, 1, 2)]
    first, middle, final = (max(0.0, float(m - b)) for m, b in zip(med, bare))
    return first, middle, final


def _busy(threads: int, seconds: float) -> tuple[float, float]:
    """Run matmul on every thread for ``seconds``; returns the (start, end) Unix times."""
    m, x, _ = G.matmul(256, 512, 512)
    s = _session(m, threads)
    xb = np.repeat(x, 8, axis=0)
    start = time.time()
    while time.time() - start < seconds:
        s.run(None, {"x": xb})
    return start, time.time()


def fit_power_model(log: Any, idle: tuple[float, float], busy: tuple[float, float], busy_cores: float,
                    cores: int) -> tuple[float, float]:
    """(idle_w, active_w for all cores busy) from a power log's mean power in two windows.

    Example:
        >>> class Log:
        ...     def mean_power(self, a, b): return 3.0 if a < 10 else 5.0
        >>> fit_power_model(Log(), (0, 5), (10, 15), busy_cores=1, cores=4)
        (3.0, 11.0)
    """
    idle_w = float(log.mean_power(*idle))
    busy_w = float(log.mean_power(*busy))
    active = idle_w + max(0.0, busy_w - idle_w) * cores / max(busy_cores, 1e-9)
    return idle_w, active


def _cpu_type() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def fit_profile(out: str | Path, *, name: str | None = None, base: Any = None,
                      settings: FitSettings = FitSettings(), powerlog: str | Path | None = None,
                      progress: Callable[[str], None] | None = None) -> Path:
    """Micro-benchmark this machine and write a profile YAML (atomically) to ``out``.

    Args:
        out: the profile file to write.
        name: the profile's name (default: the file's stem).
        base: profile whose power model is copied when no powerlog is given (default: detected).
        settings: thread count and time budget.
        powerlog: a CSV power log being written while this runs; fits the power model.

    Example:
        >>> fit_profile("my.yaml", settings=FitSettings(threads=1))   # doctest: +SKIP
    """
    import onnxruntime
    import psutil

    out = Path(out)
    if out.suffix not in (".yaml", ".yml"):
        raise ConfigError(f"--out {out}: a profile file must end in .yaml")
    base_profile = resolve_profile(base)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    how = (f"measured: edge-runtime profile fit on {platform.node() or 'this machine'} at {when}, "
           f"onnxruntime {onnxruntime.__version__}, {settings.threads} thread(s)")
    fig = measure_latency_model(settings, progress)
    cores = os.cpu_count() or 1
    if powerlog is not None:
        if progress:
            progress(f"power: {settings.idle_s:g} s idle, {settings.busy_s:g} s busy")
        t0 = time.time()
        time.sleep(settings.idle_s)
        idle_win = (t0, time.time())
        busy_win = _busy(cores, settings.busy_s)
        log = PowerLog(powerlog)
        log.refresh()
        if not log.covers(idle_win[0], busy_win[1]):
            raise ConfigError(f"{powerlog}: the log does not cover the fitting run "
                              f"({idle_win[0]:.1f}..{busy_win[1]:.1f}); is the logger running?")
        idle_w, active_w = fit_power_model(log, idle_win, busy_win, cores, cores)
        power_src = {"idle_w": f"measured: mean of {powerlog} over {settings.idle_s:g} s idle ({when})",
                     "active_w": f"measured: mean of {powerlog} over {settings.busy_s:g} s with {cores} busy "
                                 f"threads ({when})"}
    else:
        idle_w, active_w = base_profile.power.idle_w, base_profile.power.active_w
        power_src = {k: f"copied from profile {base_profile.name!r}: {v}"
                     for k, v in base_profile.power.sources.items()}
    lat_keys = ("call_overhead_s", "other_op_s", "other_elem_s", "first_s", "decision_s", "final_s", "conv_op_s",
                "conv_gflops", "matmul_op_s", "matmul_gflops")
    data = {
        "name": name or out.stem,
        "description": f"fitted on {platform.node() or 'this machine'} ({_cpu_type()}) at {when}",
        "cpu": {"cores": cores, "type": _cpu_type(), "arch": platform.machine()},
        "memory_gb": {"value": round(psutil.virtual_memory().total / 2**30, 2),
                      "source": "measured: psutil.virtual_memory().total"},
        "accelerator": None,
        "preferred": {"backend": "onnxruntime", "threads": settings.threads, "precision": "fp32"},
        "power": {"idle_w": {"value": round(idle_w, 3), "source": power_src["idle_w"]},
                  "active_w": {"value": round(active_w, 3), "source": power_src["active_w"]}},
        "latency": {"threads": settings.threads,
                    **{k: {"value": float(f"{fig[k]:.6g}"), "source": how} for k in lat_keys}},
        "detect": {},
        "measured": {"points": fig["points"]},
    }
    write_text_atomic(out, yaml.safe_dump(data, sort_keys=False))
    load_profile(out)  # what we wrote must load
    return out
