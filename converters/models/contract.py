"""The model contract: ``EarlyExitModel(segments, heads)``, and helpers that build one from common backbones.

Segment i maps h_{i-1} to h_i; head i maps h_i to exit output i; the last head is
the model's own classifier. Splitting the model at segment boundaries gives
exactly what the unsplit model gives.

A hidden state may be several tensors (hidden states plus an attention mask, a skip connection that
crosses the cut): a segment may return a tuple, and the next segment and the head then receive its
items as positional arguments. A model may likewise take several inputs (a tuple). Each tensor crossing a
cut is exported under its own name (:meth:`EarlyExitModel.hidden_names`). A head may return a tuple too:
its first item is the exit's answer (``exit``), the others extra outputs a policy reads (an uncertainty
score), named by :meth:`EarlyExitModel.exit_names`.

Not every model is a classifier fed with the data's samples: ``output_kind`` says what the exits answer
(``logits``, or a method's own kind such as a denoiser's noise prediction), and :meth:`EarlyExitModel.data_inputs`
maps data samples to the model's inputs (a denoiser takes noised images, timesteps and classes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from edge_runtime.errors import ConfigError
from edge_runtime.manifest import EXIT_OUTPUT


def call_with(module: nn.Module, h: Any) -> Any:
    """Call ``module`` on a hidden state: a tuple's items become positional arguments."""
    return module(*h) if isinstance(h, tuple) else module(h)


def as_tuple(h: Any) -> tuple[torch.Tensor, ...]:
    """A hidden state (tensor or tuple/list of tensors) as a tuple."""
    return tuple(h) if isinstance(h, (tuple, list)) else (h,)


class EarlyExitModel(nn.Module):
    """A backbone cut into segments, with one exit head after each segment.

    Args:
        segments: segment i maps h_{i-1} (x for i = 0) to h_i.
        heads: head i maps h_i to exit output i (logits); the last is the model's classifier.
        head_types: registered head-type name per head (recorded in the manifest).
        input_shape: one sample's input shape (no batch axis), used for export.
        input_names: the model inputs' names in the bundle (default ``input``, or ``input_0``.. for several).
        hidden_names: per cut, the names of the tensors crossing it (default ``hidden_<i>`` for one tensor,
            ``hidden_<i>_<k>`` for several).
        exit_extra_names: names of the extra outputs of heads that return a tuple ``(exit, *extras)``, in order
            (default ``exit_<k>``).
        output_kind: what the exit outputs are (``logits``; a method's own kind otherwise), recorded per exit.
        dynamic_axes: per tensor name (model inputs, hidden tensors, exit outputs), axes other than the batch that
            vary between calls, e.g. ``{"input_ids": {1: "sequence"}}`` (exported as dynamic, ``null`` in the
            manifest).

    Example:
        >>> m = EarlyExitModel([nn.Flatten(), nn.Linear(4, 4)], [nn.Linear(4, 2), nn.Linear(4, 2)],
        ...                    input_shape=(2, 2))
        >>> [o.shape for o in m(torch.zeros(3, 2, 2))]
        [torch.Size([3, 2]), torch.Size([3, 2])]
    """

    def __init__(
        self,
        segments: Sequence[nn.Module],
        heads: Sequence[nn.Module],
        *,
        head_types: Sequence[str] | None = None,
        input_shape: Sequence[int] | None = None,
        input_names: Sequence[str] | None = None,
        hidden_names: Sequence[Sequence[str]] | None = None,
        exit_extra_names: Sequence[str] = (),
        output_kind: str = "logits",
        dynamic_axes: dict[str, dict[int, str]] | None = None,
    ) -> None:
        super().__init__()
        if len(segments) != len(heads):
            raise ConfigError(f"EarlyExitModel needs one head per segment: {len(segments)} segments, "
                              f"{len(heads)} heads")
        if not segments:
            raise ConfigError("EarlyExitModel needs at least one segment")
        self.segments = nn.ModuleList(segments)
        self.heads = nn.ModuleList(heads)
        if head_types is None:
            head_types = [getattr(h, "head_type", type(h).__name__) for h in heads]
        if len(head_types) != len(heads):
            raise ConfigError(f"head_types has {len(head_types)} names for {len(heads)} heads")
        self.head_types = list(head_types)
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self._input_names = list(input_names) if input_names is not None else None
        if hidden_names is not None and len(hidden_names) != len(segments) - 1:
            raise ConfigError(f"hidden_names: expected one list per cut ({len(segments) - 1}), got {len(hidden_names)}")
        self._hidden_names = [list(n) for n in hidden_names] if hidden_names is not None else None
        self._exit_extra_names = list(exit_extra_names)
        self.output_kind = output_kind
        self.dynamic_axes: dict[str, dict[int, str]] = {k: dict(v) for k, v in (dynamic_axes or {}).items()}
        #: train only the early heads: the training losses keep the segments and the final head in eval mode and
        #: out of the optimiser, so the backbone's parameters and buffers stay bit-identical
        self.frozen_backbone = False
        #: where the exits went when :func:`converters.attach_exits` built the model (cuts, heads), else None
        self.attach_info: dict[str, Any] | None = None
        #: the user's model it came from (factory, arguments, weights' sha256), recorded in the bundle
        self.source_record: dict[str, Any] | None = None

    def input_names(self, example: Any) -> list[str]:
        """The bundle names of the model inputs for an example input (tensor or tuple)."""
        n = len(as_tuple(example))
        if self._input_names is not None:
            if len(self._input_names) != n:
                raise ConfigError(f"input_names has {len(self._input_names)} names for {n} model inputs")
            return list(self._input_names)
        return ["input"] if n == 1 else [f"input_{k}" for k in range(n)]

    def hidden_names(self, cut: int, hidden: Any) -> list[str]:
        """The bundle names of the tensors crossing cut ``cut`` (after segment ``cut``)."""
        n = len(as_tuple(hidden))
        if self._hidden_names is not None:
            names = self._hidden_names[cut]
            if len(names) != n:
                raise ConfigError(f"hidden_names[{cut}] has {len(names)} names for {n} tensors crossing the cut")
            return list(names)
        return [f"hidden_{cut}"] if n == 1 else [f"hidden_{cut}_{k}" for k in range(n)]

    def exit_names(self, index: int, out: Any) -> list[str]:
        """The bundle names of exit ``index``'s outputs ``out`` (a tensor, or a head's tuple): ``exit``, then the
        extra outputs."""
        n = len(as_tuple(out)) - 1
        extras = self._exit_extra_names[:n]
        extras += [f"exit_{k}" for k in range(len(extras) + 1, n + 1)]
        return [EXIT_OUTPUT, *extras]

    def example_inputs(self, batch_size: int = 1, *, generator: torch.Generator | None = None) -> Any:
        """Random model inputs for ``batch_size`` samples (a tensor, or a tuple for several inputs), for export
        and tests without data. Default: standard normal of ``input_shape``."""
        if self.input_shape is None:
            raise ConfigError("example_inputs: the model has no input_shape")
        return torch.randn(batch_size, *self.input_shape, generator=generator)

    def data_inputs(self, x: torch.Tensor, y: torch.Tensor | None = None, *,
                    generator: torch.Generator | None = None) -> Any:
        """The model inputs for model-ready data samples ``x`` (labels ``y``): ``x`` itself for a classifier. A
        model whose inputs are not the data's samples (a denoiser: noised images, timesteps, classes) overrides it.
        """
        return x

    @property
    def num_exits(self) -> int:
        return len(self.segments)

    def forward(self, *x: Any) -> list[torch.Tensor]:
        """All exit outputs, in order (the last is the final classifier's)."""
        outputs = []
        h: Any = x if len(x) > 1 else x[0]
        for segment, head in zip(self.segments, self.heads):
            h = call_with(segment, h)
            outputs.append(call_with(head, h))
        return outputs

    def forward_with_hidden(self, *x: Any) -> tuple[list[torch.Tensor], list[Any]]:
        """All exit outputs and all hidden states h_0..h_{n-1} (for feature losses)."""
        outputs, hidden = [], []
        h: Any = x if len(x) > 1 else x[0]
        for segment, head in zip(self.segments, self.heads):
            h = call_with(segment, h)
            hidden.append(h)
            outputs.append(call_with(head, h))
        return outputs, hidden


class SegmentWithExit(nn.Module):
    """Segment i plus head i as one module (the exported segment graph): takes the tensors crossing the
    previous cut as positional arguments and returns (*hidden, exit, *extras), or the last head's output alone."""

    def __init__(self, segment: nn.Module, head: nn.Module, last: bool) -> None:
        super().__init__()
        self.segment = segment
        self.head = head
        self.last = last

    def forward(self, *h: Any) -> Any:
        hidden = call_with(self.segment, h if len(h) > 1 else h[0])
        out = call_with(self.head, hidden)
        if self.last:
            return out
        return (*as_tuple(hidden), *as_tuple(out))


class FullModel(nn.Module):
    """The unsplit model as one graph: input -> final exit output only (a tuple head's first item)."""

    def __init__(self, model: EarlyExitModel) -> None:
        super().__init__()
        self.segments = model.segments
        self.head = model.heads[-1]

    def forward(self, *x: Any) -> torch.Tensor:
        h: Any = x if len(x) > 1 else x[0]
        for segment in self.segments:
            h = call_with(segment, h)
        return as_tuple(call_with(self.head, h))[0]


def _group(blocks: Sequence[nn.Module], exits_after: Sequence[int]) -> list[nn.Sequential]:
    n = len(blocks)
    cuts = sorted(set(int(e) for e in exits_after))
    if any(c < 0 or c >= n - 1 for c in cuts):
        raise ConfigError(f"exits_after must name blocks 0..{n - 2} (the last block ends in the final head), "
                          f"got {cuts}")
    bounds = [0] + [c + 1 for c in cuts] + [n]
    return [nn.Sequential(*blocks[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def from_sequential_cnn(
    blocks: Sequence[nn.Module],
    exits_after: Sequence[int],
    make_head: Callable[[int], nn.Module],
    final_head: nn.Module,
    *,
    input_shape: Sequence[int],
    head_types: Sequence[str] | None = None,
) -> EarlyExitModel:
    """Cut a sequential CNN into segments after the given blocks, with a head after each cut.

    Args:
        blocks: the backbone's blocks in order.
        exits_after: block indices after which an early exit is attached.
        make_head: builds the early head for the exit after block ``i``.
        final_head: the model's own classifier (after the last block).
        input_shape: one sample's input shape.
    """
    return _assemble(None, blocks, exits_after, make_head, final_head, input_shape, head_types)


def from_transformer_encoder(
    embed: nn.Module,
    blocks: Sequence[nn.Module],
    exits_after: Sequence[int],
    make_head: Callable[[int], nn.Module],
    final_head: nn.Module,
    *,
    input_shape: Sequence[int],
    head_types: Sequence[str] | None = None,
) -> EarlyExitModel:
    """Group a transformer encoder's blocks into segments; the embedding joins the first segment.

    Hidden states between segments are the token sequences (B, tokens, dim).
    """
    return _assemble(embed, blocks, exits_after, make_head, final_head, input_shape, head_types)


def _assemble(stem: nn.Module | None, blocks: Sequence[nn.Module], exits_after: Sequence[int],
              make_head: Callable[[int], nn.Module], final_head: nn.Module, input_shape: Sequence[int],
              head_types: Sequence[str] | None) -> EarlyExitModel:
    segments = _group(blocks, exits_after)
    if stem is not None:  # e.g. a ViT's patch embedding joins the first segment
        segments[0] = nn.Sequential(stem, *segments[0])
    cuts = sorted(set(int(e) for e in exits_after))
    heads = [make_head(c) for c in cuts] + [final_head]
    return EarlyExitModel(segments, heads, head_types=head_types, input_shape=input_shape)
