"""A small Llama-style causal LM (RMSNorm, rotary positions, SwiGLU) with Kangaroo's adapter (Liu et al., NeurIPS
2024), and the three graphs the device runs with key-value caches.

The LM's first ``exit_layer`` decoder layers are the *shallow sub-network*; the adapter (input RMSNorm ->
multi-head self-attention -> residual, then a final RMSNorm, no MLP) on top of them, with the LM's own frozen head,
is the draft model. Caches are packed per graph, batch first: ``(B, 2 * layers, heads, positions, head_dim)``
(keys of layer i at ``2i``, values at ``2i + 1``); a graph reads how many positions are cached from its past
tensor's shape, so positions and the causal mask need no extra inputs.

Graphs (:func:`graph_modules`): ``draft`` (token ids + shallow and adapter caches -> shallow hidden states, the
adapter's next-token logits at the last position, new caches), ``verify`` (shallow hidden states + deep cache -> the
LM's logits at every position, new deep cache), ``full`` (token ids + shallow and deep caches -> the LM's logits at
the last position; the autoregressive baseline).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from edge_runtime.errors import ConfigError

#: cache tensor names of the exported graphs (``past_<stack>`` in, ``present_<stack>`` out)
STACKS = ("shallow", "adapter", "deep")


@dataclass(frozen=True)
class LMConfig:
    """The LM's shape.

    Attributes:
        vocab_size: tokens (the tokenizer's vocabulary).
        dim: model width.
        layers: decoder layers.
        heads: attention heads (``dim % heads == 0``; the head size must be even for rotary positions).
        ffn_dim: SwiGLU hidden size.
        exit_layer: how many layers form the shallow sub-network the adapter sits on (1 <= exit_layer < layers).
        context: the training window (tokens); decoding may run past it (rotary positions extrapolate poorly).
        rope_theta: rotary base.
        norm_eps: RMSNorm epsilon.
    """

    vocab_size: int = 2048
    dim: int = 256
    layers: int = 8
    heads: int = 4
    ffn_dim: int = 688
    exit_layer: int = 1
    context: int = 128
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        if self.dim % self.heads or (self.dim // self.heads) % 2:
            raise ConfigError(f"LM dim {self.dim} must split into {self.heads} heads of an even size")
        if not 1 <= self.exit_layer < self.layers:
            raise ConfigError(f"exit_layer must be in 1..{self.layers - 1} (layers {self.layers}), "
                              f"got {self.exit_layer}")
        for name in ("vocab_size", "dim", "layers", "heads", "ffn_dim", "context"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"LM {name} must be >= 1, got {getattr(self, name)}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    def stack_layers(self, stack: str) -> int:
        """How many attention layers a cache stack holds (``shallow``, ``adapter``, ``deep``)."""
        return {"shallow": self.exit_layer, "adapter": 1, "deep": self.layers - self.exit_layer}[stack]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RMSNorm(nn.Module):
    """x / rms(x) * weight (Llama's norm)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotary(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotary angles for ``positions`` (T,), each (T, head_dim / 2)."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = positions.to(torch.float32)[:, None] * inv_freq[None, :]
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, H, T, D) by the angles (T, D/2): the two halves of the head as (real, imaginary) parts."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def causal_mask(past: int, length: int) -> torch.Tensor:
    """Additive mask (T, P + T): query i (at position P + i) sees keys 0..P + i."""
    q = torch.arange(length)[:, None] + past
    k = torch.arange(past + length)[None, :]
    return torch.where(k <= q, 0.0, torch.finfo(torch.float32).min)


class Attention(nn.Module):
    """Multi-head self-attention with rotary positions and an optional key-value cache."""

    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        self.heads, self.head_dim = cfg.heads, cfg.head_dim
        self.q = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.k = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.v = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.o = nn.Linear(cfg.dim, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor,
                k_past: torch.Tensor | None = None, v_past: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, T, dim) -> (output (B, T, dim), keys and values over past + new positions (B, H, P + T, D))."""
        b, t, _ = x.shape
        q, k, v = (proj(x).view(b, t, self.heads, self.head_dim).transpose(1, 2) for proj in (self.q, self.k, self.v))
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if k_past is not None and v_past is not None:
            k, v = torch.cat([k_past, k], dim=2), torch.cat([v_past, v], dim=2)
        scores = q @ k.transpose(-1, -2) * (1.0 / math.sqrt(self.head_dim)) + mask
        out = F.softmax(scores, dim=-1) @ v
        return self.o(out.transpose(1, 2).reshape(b, t, -1)), k, v


class DecoderLayer(nn.Module):
    """Pre-norm Llama block: x + attn(norm(x)), then x + SwiGLU(norm(x))."""

    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.mlp_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.gate = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.up = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.down = nn.Linear(cfg.ffn_dim, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor,
                k_past: torch.Tensor | None = None, v_past: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        a, k, v = self.attn(self.attn_norm(x), cos, sin, mask, k_past, v_past)
        x = x + a
        h = self.mlp_norm(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h)), k, v


class Adapter(nn.Module):
    """Kangaroo's adapter: x + attn(norm(x)), then a final RMSNorm (no MLP); the LM's head follows."""

    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor,
                k_past: torch.Tensor | None = None, v_past: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        a, k, v = self.attn(self.attn_norm(x), cos, sin, mask, k_past, v_past)
        return self.norm(x + a), k, v


def run_stack(layers: Iterable[nn.Module], x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor,
              past: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Run layers over x with their packed cache ``past`` (B, 2n, H, P, D) or None; returns (x, present)."""
    kv = []
    for i, layer in enumerate(layers):
        k_past = past[:, 2 * i] if past is not None else None
        v_past = past[:, 2 * i + 1] if past is not None else None
        x, k, v = layer(x, cos, sin, mask, k_past, v_past)
        kv += [k, v]
    return x, torch.stack(kv, dim=1)


class KangarooLM(nn.Module):
    """The causal LM plus its Kangaroo adapter; the head is tied to the token embedding.

    Args:
        cfg: the LM's shape (:class:`LMConfig`).

    Example:
        >>> lm = KangarooLM(LMConfig(vocab_size=32, dim=16, layers=2, heads=2, ffn_dim=32, exit_layer=1))
        >>> lm(torch.zeros(1, 5, dtype=torch.long)).shape
        torch.Size([1, 5, 32])
    """

    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.adapter = Adapter(cfg)
        nn.init.normal_(self.embed.weight, std=0.02)
        for name, p in self.named_parameters():
            if p.dim() == 2 and not name.startswith("embed"):
                # GPT-2's scaled init of the projections that write into the residual stream
                std = 0.02 / math.sqrt(2 * cfg.layers) if name.endswith(("o.weight", "down.weight")) else 0.02
                nn.init.normal_(p, std=std)

    #: the adapter's exit after the shallow sub-network and the LM head
    num_exits = 2

    @property
    def shallow(self) -> nn.ModuleList:
        return self.layers[:self.cfg.exit_layer]

    @property
    def deep(self) -> nn.ModuleList:
        return self.layers[self.cfg.exit_layer:]

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """The LM head (tied to the embedding) on normalised hidden states."""
        return F.linear(h, self.embed.weight)

    def _angles(self, past: int, length: int) -> tuple[torch.Tensor, ...]:
        cos, sin = rotary(torch.arange(length) + past, self.cfg.head_dim, self.cfg.rope_theta)
        return cos, sin, causal_mask(past, length)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Logits at every position (B, T, vocab), no cache (training)."""
        return self.forward_with_exit(input_ids)[0]

    def forward_with_exit(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (B, T, vocab), the shallow sub-network's hidden states (B, T, dim))."""
        cos, sin, mask = self._angles(0, input_ids.shape[1])
        h, _ = run_stack(self.shallow, self.embed(input_ids), cos, sin, mask, None)
        x, _ = run_stack(self.deep, h, cos, sin, mask, None)
        return self.head(self.norm(x)), h

    def adapter_logits(self, shallow_hidden: torch.Tensor) -> torch.Tensor:
        """The draft model's logits at every position (B, T, vocab) from the shallow hidden states."""
        cos, sin, mask = self._angles(0, shallow_hidden.shape[1])
        a, _, _ = self.adapter(shallow_hidden, cos, sin, mask)
        return self.head(a)


class CachedGraph(nn.Module):
    """A graph the device runs with key-value caches: its input and output names, in positional order."""

    input_names: tuple[str, ...] = ()
    output_names: tuple[str, ...] = ()

    def __init__(self, lm: KangarooLM) -> None:
        super().__init__()
        self.lm = lm


class DraftGraph(CachedGraph):
    """The ``draft`` graph: shallow layers + adapter + head (the exit after the shallow sub-network).

    ``(input_ids (B, T), past_shallow, past_adapter) -> (hidden (B, T, dim), exit (B, vocab) at the last position,
    present_shallow, present_adapter)``.
    """

    input_names = ("input_ids", "past_shallow", "past_adapter")
    output_names = ("hidden", "exit", "present_shallow", "present_adapter")

    def forward(self, input_ids: torch.Tensor, past_shallow: torch.Tensor,
                past_adapter: torch.Tensor) -> tuple[torch.Tensor, ...]:
        cos, sin, mask = self.lm._angles(past_shallow.shape[3], input_ids.shape[1])
        h, present_shallow = run_stack(self.lm.shallow, self.lm.embed(input_ids), cos, sin, mask, past_shallow)
        a, present_adapter = run_stack([self.lm.adapter], h, cos, sin, mask, past_adapter)
        return h, self.lm.head(a[:, -1]), present_shallow, present_adapter


class VerifyGraph(CachedGraph):
    """The ``verify`` graph: the remaining layers + final norm + head over the shallow hidden states.

    ``(hidden (B, T, dim), past_deep) -> (exit (B, T, vocab), present_deep)``.
    """

    input_names = ("hidden", "past_deep")
    output_names = ("exit", "present_deep")

    def forward(self, hidden: torch.Tensor, past_deep: torch.Tensor) -> tuple[torch.Tensor, ...]:
        cos, sin, mask = self.lm._angles(past_deep.shape[3], hidden.shape[1])
        x, present = run_stack(self.lm.deep, hidden, cos, sin, mask, past_deep)
        return self.lm.head(self.lm.norm(x)), present


class FullGraph(CachedGraph):
    """The ``full`` graph (autoregressive baseline): every layer + final norm + head, logits at the last position.

    ``(input_ids (B, T), past_shallow, past_deep) -> (exit (B, vocab), present_shallow, present_deep)``.
    """

    input_names = ("input_ids", "past_shallow", "past_deep")
    output_names = ("exit", "present_shallow", "present_deep")

    def forward(self, input_ids: torch.Tensor, past_shallow: torch.Tensor,
                past_deep: torch.Tensor) -> tuple[torch.Tensor, ...]:
        cos, sin, mask = self.lm._angles(past_shallow.shape[3], input_ids.shape[1])
        h, present_shallow = run_stack(self.lm.shallow, self.lm.embed(input_ids), cos, sin, mask, past_shallow)
        x, present_deep = run_stack(self.lm.deep, h, cos, sin, mask, past_deep)
        return self.lm.head(self.lm.norm(x[:, -1])), present_shallow, present_deep


GRAPHS: dict[str, type[CachedGraph]] = {"draft": DraftGraph, "verify": VerifyGraph, "full": FullGraph}


def empty_cache(cfg: LMConfig, stack: str, batch: int = 1, positions: int = 0) -> torch.Tensor:
    """A zero cache of one stack: (batch, 2 * layers, heads, positions, head_dim)."""
    return torch.zeros(batch, 2 * cfg.stack_layers(stack), cfg.heads, positions, cfg.head_dim)


def graph_modules(lm: KangarooLM) -> dict[str, CachedGraph]:
    """The three exported graphs as modules (sharing the LM's weights), in eval mode."""
    return {name: cls(lm).eval() for name, cls in GRAPHS.items()}
