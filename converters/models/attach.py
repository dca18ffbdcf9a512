"""``attach_exits``: early exits on any traceable PyTorch model, cut at named modules (or at even FLOPs fractions).

The model is traced with ``torch.fx`` (or taken as it is from a ``torch.export`` program), every node's output
is probed on the example input (shape, FLOPs), and the graph is partitioned after the last node of each named
module. A segment is a ``GraphModule`` over the same parameters and buffers as the model (nothing is copied), so
chaining the segments reproduces the model exactly; the last one ends with the model's own classifier. A cut
that more than one value crosses (a skip connection, a mask computed early) passes them all as named hidden
tensors. Heads are built from the probed shape of the cut module's output (:data:`HEADS`).

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(),
    ...                     nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    >>> model = attach_exits(net, torch.zeros(1, 1, 16, 16), at=["1"], verbose=False)
    >>> [o.shape for o in model(torch.zeros(2, 1, 16, 16))]
    [torch.Size([2, 10]), torch.Size([2, 10])]
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
from torch import fx, nn

from converters.models import heads as _heads  # noqa: F401  (registers the generic heads)
from converters.models._partition import (
    Cut,
    Probe,
    describe,
    make_cut,
    output_value,
    probe_model,
    resolve_at,
    split_graph,
    two_rows,
)
from converters.models.contract import EarlyExitModel
from converters.models.registry import HEADS, create_head
from edge_runtime.errors import ConfigError

#: modules whose output, when it is a (N, C, L) tensor, is a 1-D feature map (channels first), not tokens
_CHANNELS_FIRST_1D = (nn.Conv1d, nn.BatchNorm1d, nn.MaxPool1d, nn.AvgPool1d, nn.AdaptiveAvgPool1d,
                      nn.AdaptiveMaxPool1d, nn.ConvTranspose1d, nn.InstanceNorm1d)
_CONV_1D_OPS = ("conv1d", "batch_norm", "max_pool1d", "avg_pool1d", "adaptive_avg_pool1d", "adaptive_max_pool1d")


def attach_exits(model: nn.Module | Any, example_input: torch.Tensor | tuple[torch.Tensor, ...], *,
                 at: Sequence[str] | str, heads: str | Sequence[Any] = "auto", freeze_backbone: bool = False,
                 head_kwargs: dict[str, Any] | None = None, verbose: bool = True) -> EarlyExitModel:
    """Cut a model into segments at named modules and attach an exit head after each cut.

    Args:
        model: any ``nn.Module`` that ``torch.fx`` can trace, or a ``torch.export`` program
            (``torch.export.load("model.pt2")``, exported with a dynamic batch axis). Put it in eval mode
            first if it is pretrained.
        example_input: one input batch (or a tuple, one per model input); its sample shape is the bundle's.
        at: module names whose outputs are the cut points (``["layer1", "layer2"]``, ``["blocks.3"]``), or
            ``"auto:K"``: K exits at even fractions of the model's cumulative FLOPs (printed).
        heads: ``"auto"`` (a head per cut from the probed shape: (N, C, H, W) -> ``pool_linear``, (N, C, L) ->
            ``pool1d_linear``, (N, T, D) -> ``token_linear``, (N, D) -> ``flatten_linear``), one registered
            head name for every cut, or a list with one entry per cut (a name or ``{name, kwargs}``).
        freeze_backbone: train only the heads (the backbone's parameters and buffers stay bit-identical:
            the losses keep it in eval mode and out of the optimiser).
        head_kwargs: extra keyword arguments for every head (e.g. ``{"hidden": 64}``).
        verbose: print where the exits went.

    Returns:
        An :class:`EarlyExitModel` whose last exit is the model's own output; ``attach_info`` records the cuts.

    Raises:
        ConfigError: an unknown module name (close matches listed), a cut the graph cannot be split at, or
            a model the tracer cannot follow (the construct named).
    """
    example = tuple(example_input) if isinstance(example_input, (tuple, list)) else (example_input,)
    modes = {m: m.training for m in model.modules()} if isinstance(model, nn.Module) else {}
    for m in modes:
        m.eval()   # probing must not move BatchNorm statistics (nor draw dropout masks)
    try:
        probe = probe_model(model, example, at)
    finally:
        for m, was in modes.items():
            m.train(was)
    out_node = probe.nodes[-1]
    final = probe.values[output_value(out_node).name] if isinstance(output_value(out_node), fx.Node) else None
    if not isinstance(final, torch.Tensor) or final.dim() != 2:
        raise ConfigError(f"attach_exits: the model must return one logits tensor (N, classes); it returns "
                          f"{describe(final)}. Wrap it in a module that returns the logits")
    num_classes = int(final.shape[1])
    names = resolve_at(probe, at, verbose)
    cuts = [make_cut(probe, name) for name in names]
    order = sorted(range(len(cuts)), key=lambda i: cuts[i].position)
    if order != list(range(len(cuts))):
        raise ConfigError(f"attach_exits: 'at' must list modules in the order the model runs them; they run as "
                          f"{[cuts[i].name for i in order]}")
    for a, b in zip(cuts, cuts[1:]):
        if a.position == b.position:
            raise ConfigError(f"attach_exits: {a.name!r} and {b.name!r} end at the same point of the graph; "
                              "keep one of them")
    segments = split_graph(probe, cuts)
    specs = _head_specs(heads, len(cuts))
    head_modules, head_types = [], []
    for cut, spec in zip(cuts, specs):
        name, kwargs = _choose_head(probe, cut, spec, num_classes, head_kwargs or {})
        head = create_head(name, **kwargs)
        head_types.append(name)
        head_modules.append(head if len(cut.crossing) == 1 else SelectFirst(head))
    head_modules.append(ModelOutput())
    head_types.append("model_output")
    sample = tuple(example[0].shape[1:]) if len(example) == 1 else None
    eem = EarlyExitModel(segments, head_modules, head_types=head_types, input_shape=sample)
    eem.frozen_backbone = bool(freeze_backbone)
    eem.attach_info = {"cuts": [c.to_dict() for c in cuts], "heads": head_types[:-1],
                       "frozen_backbone": bool(freeze_backbone), "num_classes": num_classes}
    if freeze_backbone:
        for p in (p for s in eem.segments for p in s.parameters()):
            p.requires_grad_(False)
    _check_exact(eem, example, final)
    if verbose:
        print(describe_cuts(cuts))
    return eem


def describe_cuts(cuts: Sequence[Cut]) -> str:
    """One line per exit: where it sits, what crosses, the share of the model's FLOPs before it."""
    lines = []
    for i, c in enumerate(cuts):
        extra = f" (+{len(c.crossing) - 1} more tensor(s) cross the cut)" if len(c.crossing) > 1 else ""
        lines.append(f"exit {i}: after {c.name!r}, hidden {list(c.shapes[0][1:])}{extra}, "
                     f"{100 * c.flops_fraction:.1f}% of the model's FLOPs")
    return "\n".join(lines)


# -- heads -----------------------------------------------------------------------------------------------------
class SelectFirst(nn.Module):
    """Wraps a head when several tensors cross a cut: the head reads the cut module's output (the first)."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head
        self.head_type = getattr(head, "head_type", type(head).__name__)

    def forward(self, *h: torch.Tensor) -> torch.Tensor:
        return self.head(h[0])


@HEADS.register("model_output")
class ModelOutput(nn.Module):
    """The final exit of an attached model: the last segment already ends with the model's own classifier."""

    def __init__(self, **_: Any) -> None:   # takes (and ignores) the probed sizes other heads take
        super().__init__()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h


def _head_specs(heads: Any, n: int) -> list[tuple[str, dict[str, Any]]]:
    if isinstance(heads, str):
        return [(heads, {})] * n
    entries = list(heads)
    if len(entries) != n:
        raise ConfigError(f"attach_exits: heads has {len(entries)} entries for {n} cuts (one per early exit)")
    out: list[tuple[str, dict[str, Any]]] = []
    for e in entries:
        if isinstance(e, str):
            out.append((e, {}))
        elif isinstance(e, dict) and "name" in e:
            out.append((e["name"], dict(e.get("kwargs") or {})))
        else:
            raise ConfigError(f"attach_exits: a head is a name or {{name, kwargs}}, got {e!r}")
    return out


def _hidden_kind(probe: Probe, cut: Cut) -> str:
    """``image`` (N, C, H, W), ``signal`` (N, C, L), ``tokens`` (N, T, D), ``vector`` (N, D), or ``other``."""
    rank = len(cut.shapes[0])
    if rank == 4:
        return "image"
    if rank == 2:
        return "vector"
    if rank != 3:
        return "other"
    mods = dict(probe.gm.named_modules())
    for pos in range(cut.position, -1, -1):   # the nearest layer before the cut says what the axes mean
        node = probe.nodes[pos]
        if node.op == "call_module":
            m = mods.get(str(node.target))
            if isinstance(m, _CHANNELS_FIRST_1D):
                return "signal"
            if isinstance(m, (nn.Linear, nn.LayerNorm, nn.MultiheadAttention, nn.Embedding,
                              nn.TransformerEncoderLayer, nn.TransformerEncoder)):
                return "tokens"
        elif node.op == "call_function":
            name = getattr(node.target, "__name__", str(node.target)).split(".")[-1]
            if name in _CONV_1D_OPS:
                return "signal" if name != "batch_norm" or _rank_of(probe, node) == 3 else "tokens"
            if name in ("linear", "layer_norm", "embedding", "scaled_dot_product_attention"):
                return "tokens"
    return "tokens"


def _rank_of(probe: Probe, node: fx.Node) -> int:
    v = probe.values.get(node.name)
    return v.dim() if isinstance(v, torch.Tensor) else -1


_AUTO = {"image": "pool_linear", "signal": "pool1d_linear", "tokens": "token_linear", "vector": "flatten_linear"}


def _choose_head(probe: Probe, cut: Cut, spec: tuple[str, dict[str, Any]], num_classes: int,
                 extra: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    name, kwargs = spec
    kind = _hidden_kind(probe, cut)
    shape = cut.shapes[0]
    if name == "auto":
        if kind not in _AUTO:
            raise ConfigError(f"attach_exits: no automatic head for the output of {cut.name!r} (shape "
                              f"{list(shape)}); name a head for it (known: {', '.join(HEADS.names())})")
        name = _AUTO[kind]
    if name not in HEADS:
        raise ConfigError(f"attach_exits: unknown exit-head type {name!r}; known: {', '.join(HEADS.names())}")
    sizes: dict[str, Any] = {"num_classes": num_classes}
    if kind in ("image", "signal"):
        sizes["channels"] = int(shape[1])
    if kind == "tokens":
        sizes.update(dim=int(shape[2]), num_tokens=int(shape[1]))
    if kind == "vector":
        sizes["dim"] = int(shape[1])
    sizes["in_features"] = int(torch.tensor(shape[1:]).prod())
    accepted = inspect.signature(HEADS.get(name)).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    probed = {k: v for k, v in sizes.items() if takes_any or k in accepted}
    return name, {**probed, **extra, **kwargs}


def _check_exact(model: EarlyExitModel, example: tuple[torch.Tensor, ...], final: torch.Tensor) -> None:
    """The chained segments must give what the traced model gives on the example (bit for bit); the attached
    model is left in eval mode."""
    model.eval()
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)   # as while probing (and exporting)
    try:
        with torch.no_grad():
            got = model(*(two_rows(t) for t in example))[-1]
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    if got.shape != final.shape or not torch.equal(got, final):
        diff = (got - final).abs().max().item() if got.shape == final.shape else float("nan")
        raise ConfigError(f"attach_exits: the segments do not reproduce the model (max abs difference {diff:.3g}); "
                          "the model may be nondeterministic or depend on state the trace does not capture")


__all__ = ["Cut", "ModelOutput", "SelectFirst", "attach_exits", "describe_cuts"]
