"""Estimate a bundle's per-segment and per-exit latency and energy on a device from its profile (no run needed).

Per segment (batch b), from the manifest's FLOPs by op kind and ONNX op counts and the
profile's latency model (see :class:`edge_runtime.profiles.LatencyModel`):

    t = call_overhead + Σ_kind nodes_kind · op_s[kind] + b · Σ_kind flops_kind / gflops[kind]
        + decision (non-final segments)

Energy = t · the profile's power with ``threads`` cores busy. At the bundle's calibrated
operating point (``calibration.chosen.exit_fractions``) the expected figures are the
exit-fraction-weighted means; without one, the expectation is stated as the upper bound
where every sample runs to the final exit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_runtime.backends import BACKEND_FORMATS
from edge_runtime.bundle import read_bundle
from edge_runtime.errors import ConfigError
from edge_runtime.manifest import GraphSpec, Manifest, TensorSpec
from edge_runtime.profiles import DeviceProfile, resolve_profile

#: ONNX op types by cost category (data, not branches); unlisted ops cost ``other`` (the profile's
#: generic per-node figure). Constant and Identity are removed by onnxruntime's graph optimisation.
OP_CATEGORY = {
    **dict.fromkeys(["Conv", "ConvTranspose"], "conv"),
    **dict.fromkeys(["MatMul", "Gemm", "Einsum"], "matmul"),
    **dict.fromkeys(["Add", "Sub", "Mul", "Div", "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Erf", "Gelu", "Sqrt",
                     "Pow", "Neg", "Clip", "HardSigmoid", "HardSwish", "Exp", "Log", "Abs"], "elementwise"),
    **dict.fromkeys(["Softmax", "LayerNormalization", "BatchNormalization", "ReduceMean", "ReduceSum",
                     "GlobalAveragePool", "GlobalMaxPool", "MaxPool", "AveragePool"], "normalize"),
    **dict.fromkeys(["Transpose", "Reshape", "Flatten", "Squeeze", "Split", "Expand", "Tile"], "layout"),
    **dict.fromkeys(["Shape", "Gather", "Unsqueeze", "Concat", "Slice", "Cast", "Equal", "Where",
                     "ConstantOfShape", "Range"], "shape"),
}
FREE_OPS = {"Constant", "Identity"}
#: categories that also cost per element of the segment's largest tensor (conv/matmul cost per FLOP instead)
PER_ELEMENT = ("elementwise", "normalize", "layout", "other")


@dataclass(frozen=True)
class SegmentEstimate:
    index: int
    flops: int
    flops_by_kind: Mapping[str, float]
    nodes_by_kind: Mapping[str, int]
    latency_s: float
    energy_j: float
    op_mix_source: str


@dataclass(frozen=True)
class ExitEstimate:
    index: int
    latency_s: float
    energy_j: float
    cumulative_flops: int


@dataclass(frozen=True)
class CostEstimate:
    """What :func:`estimate_bundle` returns."""

    bundle: str
    profile: str
    batch_size: int
    threads: int
    power_w: float
    segments: list[SegmentEstimate]
    exits: list[ExitEstimate]
    expected_latency_s: float
    expected_energy_j: float
    operating_point: str
    exit_fractions: list[float]
    notes: list[str] = field(default_factory=list)
    #: the one-graph model (every sample to the end, no exit decisions), when the bundle has it
    full_model_latency_s: float | None = None
    full_model_energy_j: float | None = None
    #: the file variant (``format/precision``) whose operating point the expectation uses
    variant: str = "onnx/fp32"

    @property
    def speedup(self) -> float | None:
        """One-graph latency / expected early-exit latency."""
        if self.full_model_latency_s is None or self.expected_latency_s <= 0:
            return None
        return self.full_model_latency_s / self.expected_latency_s

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def op_mix(segment: GraphSpec) -> tuple[dict[str, float], dict[str, int], str]:
    """(FLOPs by kind, node counts by kind, where the FLOP split came from) for one manifest graph."""
    nodes: dict[str, int] = {"conv": 0, "matmul": 0}
    for op, count in segment.op_counts.items():
        if op not in FREE_OPS:
            kind = OP_CATEGORY.get(op, "other")
            nodes[kind] = nodes.get(kind, 0) + int(count)
    flops = float(segment.flops)
    by_op = segment.extra.get("flops_by_op")
    if by_op:
        split = {k: float(by_op.get(k, 0.0)) for k in ("conv", "matmul")}
        rest = max(0.0, flops - sum(split.values()))
        if rest:  # FLOPs of kinds the profile has no rate for count as matmul
            split["matmul"] += rest
        return split, nodes, "manifest flops_by_op"
    heavy = nodes["conv"] + nodes["matmul"]
    if heavy == 0:
        return {"conv": 0.0, "matmul": flops}, nodes, "no op_counts: all FLOPs treated as matmul"
    return ({"conv": flops * nodes["conv"] / heavy, "matmul": flops * nodes["matmul"] / heavy}, nodes,
            "split by Conv vs MatMul/Gemm node counts (manifest has no flops_by_op)")


def exit_fractions(manifest: Manifest, variant: str = "onnx/fp32") -> tuple[list[float] | None, str]:
    """Fraction of samples answered at each exit at the calibrated point (of ``variant``'s re-calibrated
    thresholds when the bundle has them), and where it came from."""
    n = manifest.num_exits
    own = (manifest.policy.variants.get(variant) or {}).get("exit_rates")
    chosen = manifest.calibration.chosen if manifest.calibration is not None else None
    if own:
        values, where = list(own), f"policy.variants[{variant!r}].exit_rates"
    elif chosen is None:
        return None, "the manifest has no calibration.chosen"
    else:
        values, where = chosen.exit_fractions, "calibration.chosen.exit_fractions"
    if not values:
        return None, "calibration.chosen has no exit_fractions"
    if len(values) != n or sum(values) <= 0 or min(values) < 0:
        raise ConfigError(f"{where}: expected {n} non-negative numbers, got {values}")
    total = float(sum(values))
    return [float(v) / total for v in values], where


def estimate_segment_latency(segment: GraphSpec, profile: DeviceProfile, *, batch_size: int = 1,
                            last: bool = False, first: bool = False) -> float:
    """Estimated seconds for one manifest segment on ``profile`` (see the module docstring)."""
    lat = profile.latency
    if lat is None:
        raise ConfigError(f"profile {profile.name!r} has no 'latency' section; run `edge-runtime profile "
                          "fit` on the device or pick a profile with one")
    split, nodes, _ = op_mix(segment)
    elems = batch_size * max([_elements(tsr) for tsr in [*segment.inputs, *segment.outputs]] or [0])
    t = lat.call_overhead_s
    for kind, count in nodes.items():
        known = kind in lat.op_s
        t += count * lat.op_s[kind if known else "other"]
        if kind in PER_ELEMENT:  # approximated on the segment's largest input/output tensor
            t += count * elems * lat.elem_s.get(kind if known else "other", lat.other_elem_s)
    for kind, f in split.items():
        rate = lat.gflops.get(kind) or lat.gflops["matmul"]  # a profile always has matmul_gflops
        t += batch_size * f / (rate * 1e9)
    if last:
        t += lat.final_s
    elif first and lat.first_s is not None:
        t += lat.first_s
    else:
        t += lat.decision_s
    return t


def _elements(tensor: TensorSpec) -> int:
    n = 1
    for d in tensor.shape[1:]:
        n *= int(d or 1)
    return n


def estimate_bundle(bundle: str | Path | Manifest, profile: DeviceProfile | str | None = None, *,
                   batch_size: int = 1, backend: str | None = None, precision: str | None = None) -> CostEstimate:
    """Estimate latency and energy per segment, per exit, at the calibrated operating point, and for the one-graph
    model (the baseline the speed-up is against).

    Args:
        bundle: a bundle directory or its :class:`~edge_runtime.manifest.Manifest`.
        profile: a profile (object, name or YAML path); None: this machine's.
        batch_size: samples per call.
        backend: the backend the device would run (default: the profile's); with ``precision`` it names the file
            variant whose re-calibrated operating point the expectation uses.
        precision: ``fp32`` (default: the profile's when the bundle holds it), ``fp16``, ``int8``, ...

    Example:
        >>> p = estimate_bundle("out/tiny_cnn", "rpi4")                 # doctest: +SKIP
        >>> [round(e.latency_s * 1e3, 3) for e in p.exits]             # doctest: +SKIP
    """
    if isinstance(bundle, Manifest):
        manifest, label = bundle, bundle.name
    else:
        manifest = read_bundle(bundle, verify_hashes=False).manifest
        label = str(bundle)
    prof = resolve_profile(profile)
    threads = int((prof.latency.threads if prof.latency and prof.latency.threads else None) or prof.threads
                  or prof.cpu.cores)
    power_w = prof.power.watts(threads, prof.cpu.cores)
    be = backend or prof.backend
    fmt = BACKEND_FORMATS.get(be)
    if fmt is None:
        raise ConfigError(f"--backend: unknown backend {be!r}; known: {', '.join(sorted(BACKEND_FORMATS))}")
    held = {f"{f}/{p}" for f, p in manifest.held_variants()}
    want = precision or (prof.precision if f"{fmt}/{prof.precision}" in held else "fp32")
    variant = f"{fmt}/{want}"
    if variant not in held:
        raise ConfigError(f"--backend/--precision: the bundle holds no {variant} files; it holds "
                          f"{', '.join(sorted(held))}")
    segs = manifest.segments
    seg_preds = []
    for i, seg in enumerate(segs):
        split, nodes, source = op_mix(seg)
        t = estimate_segment_latency(seg, prof, batch_size=batch_size, last=i == len(segs) - 1, first=i == 0)
        seg_preds.append(SegmentEstimate(i, int(seg.flops), split, nodes, t, t * power_w, source))
    exits = []
    for ex in manifest.exits:
        ran = seg_preds[: ex.segment + 1]
        cum_t = sum(s.latency_s for s in ran)
        flops = int(ex.cumulative_flops if ex.cumulative_flops is not None else sum(s.flops for s in ran))
        exits.append(ExitEstimate(ex.index, cum_t, cum_t * power_w, flops))
    fractions, where = exit_fractions(manifest, variant)
    notes = []
    if be != prof.backend or want != "fp32":
        notes.append(f"latency rates are {prof.name}'s ({prof.backend}, fp32 graphs); {variant} changes the operating "
                     "point (its own thresholds), not the per-FLOP rates")
    if fractions is None:
        notes.append(f"{where}: expected figures assume every sample runs to the final exit (upper bound)")
        fractions = [0.0] * (len(exits) - 1) + [1.0]
        point = f"none ({where}); upper bound: all samples at the final exit"
    else:
        point = f"{where} (policy {manifest.policy.name}, thresholds {list(manifest.policy.thresholds)})"
    exp_t = sum(f * e.latency_s for f, e in zip(fractions, exits))
    if prof.latency is not None and prof.latency.sources:
        notes.append("latency model: " + sorted(set(prof.latency.sources.values()))[0])
    notes.append(f"energy: estimated from {prof.name}'s power model ({power_w:.2f} W with {threads} busy core(s))")
    full_t = None
    if manifest.full_model is not None:
        full_t = estimate_segment_latency(manifest.full_model, prof, batch_size=batch_size, last=True)
        if not manifest.full_model.op_counts:
            notes.append("the one-graph model's op counts are not in this manifest (written before they were "
                         "recorded): its figure counts FLOPs and the call only")
    return CostEstimate(label, prof.name, batch_size, threads, power_w, seg_preds, exits, exp_t, exp_t * power_w,
                      point, fractions, notes, full_t, None if full_t is None else full_t * power_w, variant)


def format_estimate(p: CostEstimate) -> str:
    """The table ``edge-runtime estimate`` prints."""
    lines = [f"bundle {p.bundle} on profile {p.profile!r}: batch {p.batch_size}, {p.threads} thread(s), "
             f"power model {p.power_w:.2f} W while running"]
    lines.append(f"{'seg':>3} {'MFLOPs':>8} {'conv %':>6} {'nodes':>5} {'latency ms':>10} {'energy mJ':>9}")
    for s in p.segments:
        conv = 100 * s.flops_by_kind.get("conv", 0.0) / max(s.flops, 1)
        lines.append(f"{s.index:>3} {s.flops / 1e6:>8.3f} {conv:>5.0f}% {sum(s.nodes_by_kind.values()):>5} "
                     f"{s.latency_s * 1e3:>10.4f} {s.energy_j * 1e3:>9.4f}")
    lines.append(f"{'exit':>4} {'cum MFLOPs':>10} {'latency ms':>10} {'energy mJ':>9} {'fraction':>8}")
    for e, f in zip(p.exits, p.exit_fractions):
        lines.append(f"{e.index:>4} {e.cumulative_flops / 1e6:>10.3f} {e.latency_s * 1e3:>10.4f} "
                     f"{e.energy_j * 1e3:>9.4f} {f:>8.3f}")
    lines.append(f"expected at the operating point ({p.variant}): {p.expected_latency_s * 1e3:.4f} ms, "
                 f"{p.expected_energy_j * 1e3:.4f} mJ per call  [{p.operating_point}]")
    if p.full_model_latency_s is not None and p.full_model_energy_j is not None:
        lines.append(f"one-graph model (no exits): {p.full_model_latency_s * 1e3:.4f} ms, "
                     f"{p.full_model_energy_j * 1e3:.4f} mJ per call; expected speed-up {p.speedup:.2f}x")
    lines.append(f"op mix: {p.segments[0].op_mix_source}")
    lines += [f"note: {n}" for n in p.notes]
    return "\n".join(lines)
