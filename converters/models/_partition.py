"""The graph work behind :func:`converters.attach_exits`: trace a model (``torch.fx``, or a ``torch.export``
program's graph), probe every node's value and FLOPs on the example, place cuts after named modules (or at even
FLOPs fractions), and split the graph into ``GraphModule`` segments over the model's own parameters.
"""

from __future__ import annotations

import difflib
import operator
import re
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

from edge_runtime.errors import ConfigError


@dataclass(frozen=True)
class Cut:
    """Where one early exit sits: after the last node of module ``name``.

    Attributes:
        name: the module's name (as in ``model.named_modules()``).
        position: index (in graph order) of the module's last node.
        crossing: names of the graph values that cross the cut (the module's output first).
        shapes: their probed shapes (batch axis included).
        flops_fraction: cumulative FLOPs up to the cut / the model's FLOPs (one sample).
    """

    name: str
    position: int
    crossing: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    flops_fraction: float

    def to_dict(self) -> dict[str, Any]:
        return {"at": self.name, "tensors": len(self.crossing), "shape": list(self.shapes[0][1:]),
                "flops_fraction": round(self.flops_fraction, 4)}


@dataclass
class Probe:
    """The traced graph and what one run on the example input showed about each node."""

    gm: fx.GraphModule
    nodes: list[fx.Node]
    values: dict[str, Any]
    flops: list[int]
    scopes: dict[str, list[int]] = field(default_factory=dict)   # module name -> positions of its nodes


# -- tracing and probing ---------------------------------------------------------------------------------------
class _Tracer(fx.Tracer):
    """``torch.fx``'s tracer, except that the modules containing a requested cut are traced into (torch.nn's own
    containers, e.g. ``nn.TransformerEncoder``, are leaves by default)."""

    def __init__(self, open_names: set[str]) -> None:
        super().__init__()
        self.open_names = open_names

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if module_qualified_name in self.open_names:
            return False
        return super().is_leaf_module(m, module_qualified_name)


def _graph_module(model: Any, at: Sequence[str] | str = ()) -> fx.GraphModule:
    if isinstance(model, torch.export.ExportedProgram):
        gm = model.module()
        _check_dynamic_batch(gm)
        return gm
    if isinstance(model, fx.GraphModule):
        return model
    if not isinstance(model, nn.Module):
        raise ConfigError(f"attach_exits: expected an nn.Module or a torch.export program, got {type(model).__name__}")
    names = [] if isinstance(at, str) else [str(a) for a in at]
    ancestors = {".".join(n.split(".")[:k]) for n in names for k in range(1, n.count(".") + 1)}
    try:
        return _trace(_Tracer(ancestors), model)
    except Exception as exc:  # the tracer raises many types; name the construct and where it is
        raise ConfigError(f"attach_exits: torch.fx cannot trace {type(model).__name__}: {_first_line(exc)}"
                          f"{_user_frame(exc)}. Export it with torch.export (model: {{exported: model.pt2}}), "
                          "which follows shape-dependent code, or build EarlyExitModel(segments, heads) by hand"
                          ) from None


def _trace(tracer: _Tracer, model: nn.Module) -> fx.GraphModule:
    graph = tracer.trace(model)
    return fx.GraphModule(tracer.root, graph, class_name=type(model).__name__)


def _check_dynamic_batch(gm: fx.GraphModule) -> None:
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            val = node.meta.get("val")
            if isinstance(val, torch.Tensor) and val.dim() and isinstance(val.shape[0], int):
                raise ConfigError("attach_exits: the torch.export program has a fixed batch size "
                                  f"{val.shape[0]} for input {node.name!r}; export it with a dynamic batch axis: "
                                  "torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim('batch')},))")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _user_frame(exc: BaseException) -> str:
    """`` (at file:line: code)``: the innermost frame outside torch, where the tracer stopped."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/torch/" not in f.filename.replace("\\", "/")
              and not f.filename.endswith("attach.py")]
    if not frames:
        return ""
    f = frames[-1]
    return f" (at {f.filename}:{f.lineno}: {(f.line or '').strip()})"


def _scope_names(node: fx.Node) -> list[str]:
    stack = node.meta.get("nn_module_stack") or {}
    out = []
    for key, value in stack.items():
        name = value[0] if isinstance(value, tuple) else key
        name = re.sub(r"^L\['self'\]\.?", "", str(name))
        if name:
            out.append(name)
    return out


def probe_model(model: Any, example: tuple[torch.Tensor, ...], at: Sequence[str] | str = ()) -> Probe:
    gm = _graph_module(model, at)
    nodes = [n for n in gm.graph.nodes if not (n.op == "call_module" and str(n.target).startswith("_guards"))]
    values: dict[str, Any] = {}
    flops: list[int] = []
    placeholders = [n for n in nodes if n.op == "placeholder"]
    if len(placeholders) != len(example):
        raise ConfigError(f"attach_exits: the model takes {len(placeholders)} input(s) "
                          f"({[n.name for n in placeholders]}); example_input has {len(example)}")
    interp = fx.Interpreter(gm)
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)   # the fused attention kernel hides its FLOPs (and has no ONNX)
    try:
        _run_nodes(interp, nodes, example, values, flops)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    probe = Probe(gm, nodes, values, flops)
    for pos, node in enumerate(nodes):
        for name in _scope_names(node):
            probe.scopes.setdefault(name, []).append(pos)
    return probe


def _run_nodes(interp: fx.Interpreter, nodes: list[fx.Node], example: tuple[torch.Tensor, ...],
               values: dict[str, Any], flops: list[int]) -> None:
    """Run the graph node by node on the example (batch 2), keeping every value and each node's FLOPs."""
    from torch.utils.flop_counter import FlopCounterMode

    env_inputs = iter(two_rows(t) for t in example)   # batch 2: a tensor with a batch axis shows it
    with torch.no_grad():
        for node in nodes:
            if node.op == "placeholder":
                values[node.name] = next(env_inputs)
                flops.append(0)
                continue
            if node.op == "output":
                flops.append(0)
                continue
            args = fx.node.map_arg(node.args, lambda n: values[n.name])
            kwargs = fx.node.map_arg(node.kwargs, lambda n: values[n.name])
            with FlopCounterMode(display=False) as counter:
                try:
                    values[node.name] = getattr(interp, node.op)(node.target, args, kwargs)
                except Exception as exc:
                    raise ConfigError(f"attach_exits: running node {node.name!r} ({node.op} {node.target}) on the "
                                      f"example input failed: {_first_line(exc)}") from None
            flops.append(int(counter.get_total_flops()))


def two_rows(t: torch.Tensor) -> torch.Tensor:
    """The example's first sample twice (the probe's batch)."""
    return torch.cat([t[:1], t[:1]])


def describe(v: Any) -> str:
    if isinstance(v, torch.Tensor):
        return f"a tensor of shape {list(v.shape)}"
    return type(v).__name__


def output_value(out_node: fx.Node) -> Any:
    arg = out_node.args[0]
    if isinstance(arg, (tuple, list)) and len(arg) == 1:
        return arg[0]
    return arg


# -- cuts ------------------------------------------------------------------------------------------------------
def _module_names(probe: Probe) -> list[str]:
    return [n for n, _ in probe.gm.named_modules() if n] + [n for n in probe.scopes if n]


def resolve_at(probe: Probe, at: Sequence[str] | str, verbose: bool) -> list[str]:
    if isinstance(at, str):
        m = re.fullmatch(r"auto:(\d+)", at.strip())
        if not m:
            raise ConfigError(f"attach_exits: at must be a list of module names or 'auto:K', got {at!r}")
        return _auto_cuts(probe, int(m.group(1)))
    names = [str(a) for a in at]
    if not names:
        raise ConfigError("attach_exits: at names no module (give at least one, or 'auto:K')")
    known = set(_module_names(probe))
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=5, cutoff=0.5)
            hint = f"; close matches: {', '.join(close)}" if close else ""
            raise ConfigError(f"attach_exits: unknown module {name!r} in at{hint} "
                              "(names as in model.named_modules())")
        if name not in probe.scopes:
            raise ConfigError(f"attach_exits: module {name!r} is never called by forward(), or the tracer inlined "
                              "it without a trace of its name; cut at a module forward() calls")
    return names


def _crossing(probe: Probe, position: int) -> list[fx.Node]:
    """Values defined at or before ``position`` and used after it (graph constants excluded)."""
    index = {n.name: i for i, n in enumerate(probe.nodes)}
    out = []
    memo: dict[str, bool] = {}
    for node in probe.nodes[:position + 1]:
        if node.op == "get_attr" or _is_constant(probe, node) or _recomputable(probe, node, memo):
            continue
        if any(index.get(u.name, -1) > position for u in node.users):
            out.append(node)
    return out


def _batch_size_node(node: fx.Node) -> bool:
    """``x.size(0)``, ``x.shape[0]`` or ATen's ``sym_size.int(x, 0)``: the batch size, which any tensor crossing a
    cut gives again (they all have the batch axis first), so it is recomputed after the cut instead of carried."""
    if node.op == "call_method" and node.target == "size" and len(node.args) == 2 and node.args[1] == 0:
        return True
    if node.op == "call_function" and node.target is torch.ops.aten.sym_size.int and node.args[1:] == (0,):
        return True
    if node.op == "call_function" and node.target is operator.getitem and node.args[1] == 0:
        src = node.args[0]
        return isinstance(src, fx.Node) and src.op == "call_function" and src.target is getattr \
            and src.args[1] == "shape"
    return False


def _recomputable(probe: Probe, node: fx.Node, memo: dict[str, bool]) -> bool:
    """A size computed from the batch size (``x.size(0) * heads``) or from constants: recomputed after a cut."""
    if node.name not in memo:
        if _batch_size_node(node):
            memo[node.name] = True
        elif node.op in ("placeholder", "get_attr", "output") or isinstance(probe.values.get(node.name),
                                                                               torch.Tensor):
            memo[node.name] = node.op == "get_attr"
        else:
            memo[node.name] = all(_recomputable(probe, a, memo) or _is_constant(probe, a)
                                  for a in node.all_input_nodes)
    return memo[node.name]


def _is_constant(probe: Probe, node: fx.Node, _memo: dict[str, bool] | None = None) -> bool:
    """True for values that do not depend on a model input (recomputed in every segment that needs them)."""
    memo = _memo if _memo is not None else {}
    if node.name in memo:
        return memo[node.name]
    if node.op == "placeholder":
        memo[node.name] = False
    elif node.op == "get_attr":
        memo[node.name] = True
    else:
        memo[node.name] = all(_is_constant(probe, a, memo) for a in node.all_input_nodes)
    return memo[node.name]


def make_cut(probe: Probe, name: str) -> Cut:
    positions = probe.scopes[name]
    if positions[-1] - positions[0] + 1 != len(positions):
        calls = 1 + sum(1 for a, b in zip(positions, positions[1:]) if b != a + 1)
        raise ConfigError(f"attach_exits: module {name!r} runs in {calls} separate places of forward() (a loop, "
                          "or a module used twice): a cut at its output is ambiguous; cut at a module that runs "
                          "once")
    pos = positions[-1]
    if pos >= _last_compute(probe):
        raise ConfigError(f"attach_exits: {name!r} ends where the model ends; the final exit is the model's own "
                          "output, cut earlier")
    crossing = _crossing(probe, pos)
    main = probe.nodes[pos]
    if main not in crossing:
        raise ConfigError(f"attach_exits: the output of {name!r} is not used after it, so an exit there would see "
                          f"nothing the model uses; cut elsewhere")
    bad = [n for n in crossing if not isinstance(probe.values.get(n.name), torch.Tensor)]
    if bad:
        raise ConfigError(f"attach_exits: at {name!r} a non-tensor value crosses the cut ({bad[0].name}: "
                          f"{describe(probe.values.get(bad[0].name))}); the bundle carries tensors only. "
                          "Cut elsewhere, or compute it from a tensor after the cut")
    ordered = [main] + [n for n in crossing if n is not main]
    batch = 2   # the probe's batch (_two_rows)
    for n in ordered:
        t = probe.values[n.name]
        if t.dim() == 0 or t.shape[0] != batch:
            raise ConfigError(f"attach_exits: at {name!r} the tensor {n.name} of shape {list(t.shape)} crosses the "
                              "cut without a batch axis first; cut elsewhere")
    total = max(1, sum(probe.flops))
    return Cut(name, pos, tuple(n.name for n in ordered), tuple(tuple(probe.values[n.name].shape) for n in ordered),
               sum(probe.flops[:pos + 1]) / total)


def _last_compute(probe: Probe) -> int:
    return max(i for i, n in enumerate(probe.nodes) if n.op not in ("output", "placeholder", "get_attr"))


def _auto_cuts(probe: Probe, k: int) -> list[str]:
    """K module names whose outputs sit nearest to even fractions of the model's cumulative FLOPs; only clean
    cuts (one tensor crosses), the outermost module when several end at the same node."""
    if k < 1:
        raise ConfigError(f"attach_exits: at 'auto:K' needs K >= 1, got {k}")
    last = _last_compute(probe)
    by_pos: dict[int, str] = {}
    for name, positions in sorted(probe.scopes.items(), key=lambda kv: (kv[0].count("."), kv[0])):
        pos = positions[-1]
        if pos >= last or pos in by_pos or positions[-1] - positions[0] + 1 != len(positions):
            continue
        crossing = _crossing(probe, pos)
        if len(crossing) == 1 and crossing[0] is probe.nodes[pos] and isinstance(probe.values.get(crossing[0].name),
                                                                                torch.Tensor):
            by_pos[pos] = name
    if len(by_pos) < k:
        raise ConfigError(f"attach_exits: auto:{k}: the model has only {len(by_pos)} module output(s) where one "
                          "tensor crosses; ask for fewer exits or name the cuts")
    total = max(1, sum(probe.flops))
    cum = {p: sum(probe.flops[:p + 1]) / total for p in by_pos}
    chosen: list[int] = []
    for j in range(1, k + 1):
        target = j / (k + 1)
        free = [p for p in by_pos if p not in chosen]   # block boundaries win over a cut inside a block nearby
        chosen.append(min(free, key=lambda p: (abs(cum[p] - target) + 0.02 * by_pos[p].count("."), p)))
    return [by_pos[p] for p in sorted(chosen)]


# -- partition -------------------------------------------------------------------------------------------------
def split_graph(probe: Probe, cuts: Sequence[Cut]) -> list[fx.GraphModule]:
    bounds = [-1] + [c.position for c in cuts] + [len(probe.nodes) - 1]
    by_name = {n.name: n for n in probe.nodes}
    inputs: list[fx.Node] = [n for n in probe.nodes if n.op == "placeholder"]
    out: list[fx.GraphModule] = []
    for s in range(len(bounds) - 1):
        lo, hi = bounds[s], bounds[s + 1]
        graph = fx.Graph()
        env: dict[str, fx.Node] = {}
        for n in inputs:
            env[n.name] = graph.placeholder(n.name)

        first = env[inputs[0].name]

        def lookup(n: fx.Node, g: fx.Graph = graph, e: dict[str, fx.Node] = env, x0: fx.Node = first) -> fx.Node:
            if n.name not in e:
                if _batch_size_node(n):   # the batch size of an earlier segment: read it off this one's input
                    e[n.name] = g.call_method("size", (x0, 0))
                else:                     # a constant defined in an earlier segment: recompute it here
                    e[n.name] = g.node_copy(n, lambda a: lookup(a))
            return e[n.name]

        for node in probe.nodes[lo + 1:hi + 1]:
            if node.op in ("placeholder",):
                continue
            if node.op == "output":
                result = fx.node.map_arg(node.args[0], lookup)
                graph.output(result)
                continue
            env[node.name] = graph.node_copy(node, lookup)
        if s < len(cuts):
            crossing = [env[name] for name in cuts[s].crossing]
            graph.output(crossing[0] if len(crossing) == 1 else tuple(crossing))
            inputs = [by_name[name] for name in cuts[s].crossing]
        gm = fx.GraphModule(probe.gm, graph, class_name=f"Segment{s}")
        gm.graph.eliminate_dead_code()
        gm.recompile()
        out.append(gm)
    return out
