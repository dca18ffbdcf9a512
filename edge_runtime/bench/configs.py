"""What a benchmark measures: one :class:`BenchConfig` per row of the report.

Each kind of row (the one-graph full model, the segmented model with policy ``never``,
early exit at the calibrated point, the threshold sweep, the rows of the bundle's other modes
(:meth:`edge_runtime.modes.Mode.bench_rows`), other backend/precision variants, rows installed
packages add through the ``edge_runtime.bench_rows`` entry point) is a function registered in
:data:`CONFIG_KINDS` that looks at the bundle and returns its rows (none when the bundle lacks what it needs).
The oracle bound is derived after measuring (see :mod:`edge_runtime.bench.oracle`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_runtime.modes.base import MODES
from edge_runtime.plugins import BENCH_GROUP, entry_points
from edge_runtime.registry import Registry

RunFn = Callable[[np.ndarray], Any]


def infer_fn(rt: Any, **kwargs: Any) -> RunFn:
    """A row's ``run``: ``x -> rt.infer(x, **kwargs)`` (binds ``rt`` and the options now, not at call time)."""
    return lambda x: rt.infer(x, **kwargs)


@dataclass(frozen=True)
class BenchConfig:
    """One measured configuration.

    Attributes:
        name: unique row id (``full``, ``never``, ``early_exit``, ``sweep_03``, a mode's name, ...).
        kind: the registered kind that produced it.
        label: what the report calls it.
        run: ``x -> InferenceResult`` (or anything with ``predictions``, ``exit_index``, ``segment_latency_s``,
            ``energy_j``, ``energy_source`` attributes).
        backend: backend name; precision: file precision.
        policy: policy name and thresholds when the row runs the early-exit executor.
        segmented: whether the row runs the segment chain (its per-segment latency means something).
        notes: what the report should say about the row.
    """

    name: str
    kind: str
    label: str
    run: RunFn
    backend: str
    precision: str
    policy: str | None = None
    thresholds: list[float] | None = None
    segmented: bool = False
    notes: str = ""


@dataclass
class BenchContext:
    """What the config builders see: the runtimes per (backend, precision), data, settings.

    Attributes:
        runtimes: ``(backend, precision) -> Runtime``; the first entry is the primary variant.
        x, y: model-ready data and labels.
        sweep_points: how many threshold-sweep rows to add.
        exit_outputs: every exit's output on ``x`` from the primary runtime (filled lazily).
        options: extra builder options (``torch_checkpoint``, ...).
        notes: notes the builders add for the report.
    """

    runtimes: dict[tuple[str, str], Any]
    x: np.ndarray
    y: np.ndarray
    sweep_points: int = 8
    options: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    sweep_source: str = "none"
    _exit_outputs: list[np.ndarray] | None = None

    @property
    def primary(self) -> Any:
        return next(iter(self.runtimes.values()))

    @property
    def primary_key(self) -> tuple[str, str]:
        return next(iter(self.runtimes))

    def exit_outputs(self, chunk: int = 256) -> list[np.ndarray]:
        """Every exit's output for every sample (primary runtime), computed once."""
        if self._exit_outputs is None:
            parts = [self.primary.exit_outputs(self.x[i:i + chunk]) for i in range(0, len(self.x), chunk)]
            self._exit_outputs = [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]
        return self._exit_outputs


#: row kinds: name -> ``builder(ctx) -> list[BenchConfig]``; rows appear in registration order
CONFIG_KINDS: Registry[Callable[[BenchContext], list[BenchConfig]]] = Registry(
    "benchmark configuration kind", plugins="edge_runtime.methods")
#: modes whose rows the built-in kinds below already measure
_BUILTIN_ROWS = ("early_exit", "full")


def config_kind(name: str) -> Callable[[Callable[[BenchContext], list[BenchConfig]]], Any]:
    """Register a row kind (a builder ``ctx -> list[BenchConfig]``); rows follow registration order (built-ins,
    then plug-ins)."""

    def decorator(fn: Callable[[BenchContext], list[BenchConfig]]) -> Callable[[BenchContext], list[BenchConfig]]:
        CONFIG_KINDS.register(name, fn)
        return fn

    return decorator


def build_configs(ctx: BenchContext, kinds: list[str] | None = None) -> list[BenchConfig]:
    """Every row the bundle supports, in registration order (or only ``kinds``)."""
    out: list[BenchConfig] = []
    for kind in kinds or CONFIG_KINDS.ordered():
        out.extend(CONFIG_KINDS.get(kind)(ctx))
    names = [c.name for c in out]
    assert len(names) == len(set(names)), f"duplicate benchmark rows: {names}"
    return out


def variant_suffix(key: tuple[str, str], primary: tuple[str, str]) -> str:
    """The row-name suffix of a non-primary variant (``@litert/int8``); empty for the primary."""
    return "" if key == primary else f"@{key[0]}/{key[1]}"


@config_kind("full")
def _full(ctx: BenchContext) -> list[BenchConfig]:
    rows = []
    for key, rt in ctx.runtimes.items():
        one_graph = rt.has_full_model
        note = "" if one_graph else "the bundle has no one-graph file: this row runs every segment (policy never)"
        rows.append(BenchConfig(
            name="full" + variant_suffix(key, ctx.primary_key), kind="full",
            label="full model (one graph)" if one_graph else "full model (segments, no one-graph file)",
            run=infer_fn(rt, mode="full"), backend=key[0], precision=key[1], notes=note))
    return rows


@config_kind("never")
def _never(ctx: BenchContext) -> list[BenchConfig]:
    rows = []
    for key, rt in ctx.runtimes.items():
        pol = rt.make_policy("never")
        rows.append(BenchConfig(
            name="never" + variant_suffix(key, ctx.primary_key), kind="never", label="segmented, policy never",
            run=infer_fn(rt, policy=pol), backend=key[0], precision=key[1],
            policy="never", segmented=True,
            notes="every sample runs every segment: the cost of splitting" if key == ctx.primary_key else ""))
    return rows


@config_kind("early_exit")
def _early_exit(ctx: BenchContext) -> list[BenchConfig]:
    rows = []
    for key, rt in ctx.runtimes.items():
        pol = rt.default_policy  # the runtime applies thresholds re-calibrated for its variant (policy.variants)
        rows.append(BenchConfig(
            name="early_exit" + variant_suffix(key, ctx.primary_key), kind="early_exit",
            label="early exit, calibrated point", run=infer_fn(rt, policy=pol),
            backend=key[0], precision=key[1], policy=rt.manifest.policy.name,
            thresholds=list(getattr(pol, "thresholds", []) or []), segmented=True))
    return rows


@config_kind("sweep")
def _sweep(ctx: BenchContext) -> list[BenchConfig]:
    from edge_runtime.bench.sweep import sweep_thresholds

    rt = ctx.primary
    points, source, origins = sweep_thresholds(rt, ctx)
    ctx.sweep_source = source
    rows = []
    for k, (thr, origin) in enumerate(zip(points, origins)):
        pol = rt.make_policy(None, thr)
        rows.append(BenchConfig(
            name=f"sweep_{k:02d}", kind="sweep", label=f"sweep point {k} ({origin})",
            run=infer_fn(rt, policy=pol), backend=ctx.primary_key[0],
            precision=ctx.primary_key[1], policy=rt.manifest.policy.name, thresholds=list(pol.thresholds),
            segmented=True))
    return rows


@config_kind("modes")
def _modes(ctx: BenchContext) -> list[BenchConfig]:
    """Rows the bundle's other modes add (a method's mode: :meth:`edge_runtime.modes.Mode.bench_rows`)."""
    rows: list[BenchConfig] = []
    for name in MODES.ordered():
        if name in _BUILTIN_ROWS:
            continue
        mode = MODES.get(name)
        if mode.unsupported(ctx.primary.manifest) is None:
            rows.extend(mode.bench_rows(ctx))
    return rows


@config_kind("plugins")
def _plugins(ctx: BenchContext) -> list[BenchConfig]:
    """Rows that installed packages add through the ``edge_runtime.bench_rows`` entry point (e.g. the
    workstation's optional PyTorch-eager row); each is ``rows(ctx) -> list[BenchConfig]``."""
    rows: list[BenchConfig] = []
    for ep in entry_points(BENCH_GROUP):
        try:
            fn = ep.load()
        except ImportError as exc:
            ctx.notes.append(f"bench rows {ep.name!r} unavailable here: {exc}")
            continue
        rows.extend(fn(ctx))
    return rows
