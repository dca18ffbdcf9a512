"""DeeDiff (Tang et al., arXiv 2309.17074) on a small U-ViT denoiser: an output head and an uncertainty module
after every block, the model cut into one segment per block.

The backbone is U-ViT (Bao et al. 2023) scaled down: the noised image as patch tokens, a time token and (when
class-conditional) a class token, ``depth`` pre-norm transformer blocks — ``depth // 2`` "in" blocks, a middle
block, ``depth // 2`` "out" blocks each fusing a long skip from its mirror in-block (``Linear(cat(h, skip))``) —
and the final layer ``LayerNorm -> Linear -> unpatchify -> 3x3 conv`` predicting the noise eps.

DeeDiff adds, after every block i but the last:

- an output head g_i shaped like the final layer, predicting eps from the block's tokens;
- an uncertainty estimation module (UEM): ``u_i = mean over patch tokens of sigmoid(w^T [LN(token), temb(t)] + b)``,
  a linear layer made timestep-aware by the sinusoidal embedding of t concatenated to each token.

Every block is one segment of the bundle (exits after every block). The tensors crossing cut i are named:
``h_<i>`` (the token sequence), ``temb_<i>`` (the timestep embedding the UEMs read) and the long skips not yet
consumed, ``skip<k>_<i>``. Segment i's exit outputs are ``exit`` (g_i's eps) and ``u`` (the UEM's score); the last
segment answers ``exit`` only (the final layer). Model inputs: ``x_t`` (N, C, H, W), ``t`` (N,) int64 timesteps
and, class-conditional, ``y`` (N,) int64 classes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from converters.models.contract import EarlyExitModel
from converters.models.registry import MODELS
from converters.models.vit import Block, _init_vit_weights
from edge_runtime.errors import ConfigError
from edge_runtime.methods.deediff.schedule import NoiseSchedule

#: what the exits answer: the predicted noise of a DDPM (recorded as every exit's ``output_kind``)
OUTPUT_KIND = "epsilon"
#: the name of the uncertainty output of every non-final segment (the exit policy reads it)
UNCERTAINTY_OUTPUT = "u"


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps (N,) -> (N, dim) (DDPM's / U-ViT's)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.to(torch.float32)[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class Stem(nn.Module):
    """(x_t, t[, y]) -> (tokens, temb): patch tokens with a time token and a class token in front, plus positions;
    ``temb`` is the sinusoidal timestep embedding the UEMs read (it crosses every cut unchanged)."""

    def __init__(self, channels: int, image_size: int, patch_size: int, dim: int, num_classes: int,
                 temb_dim: int) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ConfigError(f"model.kwargs: image_size {image_size} is not a multiple of patch_size {patch_size}")
        self.dim, self.temb_dim = dim, temb_dim
        self.num_patches = (image_size // patch_size) ** 2
        self.patch = nn.Conv2d(channels, dim, patch_size, stride=patch_size)
        self.time_embed = nn.Sequential(nn.Linear(dim, 4 * dim), nn.SiLU(), nn.Linear(4 * dim, dim))
        self.label_embed = nn.Embedding(num_classes, dim) if num_classes else None
        self.extras = 1 + (1 if num_classes else 0)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.extras + self.num_patches, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        patches = self.patch(x).flatten(2).transpose(1, 2)
        tokens = [self.time_embed(timestep_embedding(t, self.dim))[:, None]]
        if self.label_embed is not None:
            if y is None:
                raise ConfigError("a class-conditional denoiser needs the classes y")
            tokens.append(self.label_embed(y)[:, None])
        h = torch.cat([*tokens, patches], dim=1) + self.pos_embed
        return h, timestep_embedding(t, self.temb_dim)


class FirstSegment(nn.Module):
    """Segment 0: the stem and the first in-block. -> (h_0, temb_0); h_0 is also the first long skip."""

    def __init__(self, stem: Stem, block: nn.Module) -> None:
        super().__init__()
        self.stem, self.block = stem, block

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h, temb = self.stem(*inputs)
        return self.block(h), temb


class InSegment(nn.Module):
    """An in-block or the middle block: (h, temb, *skips) -> (block(h), temb, *skips, h); the block's input is the
    long skip its mirror out-block will read."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, h: torch.Tensor, temb: torch.Tensor, *skips: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (self.block(h), temb, *skips, h)


class OutSegment(nn.Module):
    """An out-block: (h, temb, *skips, s) -> (block(Linear(cat(h, s))), temb, *skips), consuming the newest skip."""

    def __init__(self, block: nn.Module, dim: int) -> None:
        super().__init__()
        self.skip_linear = nn.Linear(2 * dim, dim)
        self.block = block

    def forward(self, h: torch.Tensor, temb: torch.Tensor, *skips: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h = self.block(self.skip_linear(torch.cat([h, skips[-1]], dim=-1)))
        return (h, temb, *skips[:-1])


class EpsHead(nn.Module):
    """g_i and the final layer: LayerNorm -> Linear -> unpatchify -> 3x3 conv, predicting eps (N, C, H, W).

    With ``temb_dim`` the normalised tokens are also modulated by the timestep embedding (DiT's adaLN:
    ``LN(h) * (1 + scale(temb)) + shift(temb)``, zero-initialised so it starts as the plain head).
    """

    def __init__(self, dim: int, channels: int, image_size: int, patch_size: int, extras: int,
                 temb_dim: int | None = None) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.modulation = None
        if temb_dim:
            self.modulation = nn.Sequential(nn.Linear(temb_dim, dim), nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.linear = nn.Linear(dim, patch_size * patch_size * channels)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.channels, self.patch, self.grid, self.extras = channels, patch_size, image_size // patch_size, extras

    def forward(self, h: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        x = self.norm(h)
        if self.modulation is not None:
            assert temb is not None
            scale, shift = self.modulation(temb)[:, None].chunk(2, dim=-1)
            x = x * (1 + scale) + shift
        x = self.linear(x)[:, self.extras:]
        n, g, p, c = x.shape[0], self.grid, self.patch, self.channels
        x = x.reshape(n, g, g, p, p, c).permute(0, 5, 1, 3, 2, 4).reshape(n, c, g * p, g * p)
        return self.conv(x)


class UncertaintyModule(nn.Module):
    """DeeDiff's UEM: ``u = mean_p sigmoid(w^T [LN(h_p), temb] + b)`` over the patch tokens p -> (N,)."""

    def __init__(self, dim: int, temb_dim: int, extras: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.linear = nn.Linear(dim + temb_dim, 1)
        self.extras = extras

    def forward(self, h: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        tokens = self.norm(h[:, self.extras:])
        time = temb[:, None, :].expand(-1, tokens.shape[1], -1)
        return torch.sigmoid(self.linear(torch.cat([tokens, time], dim=-1)))[..., 0].mean(dim=1)


class DeeDiffHead(nn.Module):
    """Exit i < last: (h, temb, *skips) -> (eps_i, u_i)."""

    def __init__(self, eps: EpsHead, uem: UncertaintyModule) -> None:
        super().__init__()
        self.eps, self.uem = eps, uem

    def forward(self, h: torch.Tensor, temb: torch.Tensor, *skips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.eps(h, temb if self.eps.modulation is not None else None), self.uem(h, temb)


class FinalHead(nn.Module):
    """The last exit: the model's own final layer (eps only)."""

    def __init__(self, eps: EpsHead) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, h: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        return self.eps(h)


class DeeDiffUViT(EarlyExitModel):
    """The U-ViT denoiser with DeeDiff exits as an :class:`EarlyExitModel` (see the module docstring).

    ``forward(x_t, t[, y])`` returns, per exit, ``(eps_i, u_i)`` for i < last and ``eps`` for the last.
    ``backbone_parameters()`` / ``exit_parameters()`` split the weights for the frozen-backbone variant.

    Attributes:
        schedule: the DDPM noise schedule it is trained and sampled with.
        num_classes: conditioning classes (0: unconditional).
        labels: the class names recorded in the bundle.
    """

    def __init__(self, segments: Sequence[nn.Module], heads: Sequence[nn.Module], *, schedule: NoiseSchedule,
                 num_classes: int, image_shape: tuple[int, int, int], hidden_names: Sequence[Sequence[str]]) -> None:
        names = ["x_t", "t"] + (["y"] if num_classes else [])
        super().__init__(segments, heads, head_types=["deediff"] * (len(heads) - 1) + ["uvit_final"],
                         input_shape=image_shape, input_names=names, hidden_names=hidden_names,
                         exit_extra_names=[UNCERTAINTY_OUTPUT], output_kind=OUTPUT_KIND)
        self.schedule = schedule
        self.num_classes = num_classes
        self.labels = [str(c) for c in range(num_classes)] if num_classes else ["sample"]

    def backbone_parameters(self) -> list[nn.Parameter]:
        """The denoiser's own weights: every segment and the final layer."""
        return [*self.segments.parameters(), *self.heads[-1].parameters()]

    def exit_parameters(self) -> list[nn.Parameter]:
        """DeeDiff's additions: the output heads g_i and the UEMs."""
        return [p for head in self.heads[:-1] for p in head.parameters()]

    def example_inputs(self, batch_size: int = 1, *, generator: torch.Generator | None = None) -> Any:
        x = torch.randn(batch_size, *self.input_shape, generator=generator)  # type: ignore[misc]
        t = torch.randint(0, self.schedule.train_steps, (batch_size,), generator=generator)
        if not self.num_classes:
            return x, t
        return x, t, torch.randint(0, self.num_classes, (batch_size,), generator=generator)

    def data_inputs(self, x: torch.Tensor, y: torch.Tensor | None = None, *,
                    generator: torch.Generator | None = None) -> Any:
        """Data samples noised at timesteps spread evenly over [0, T) (sample k at ``(k + 0.5) T / n``): what
        convert exports and verifies the segments on, so every block is checked at many noise levels."""
        n = x.shape[0]
        t = ((torch.arange(n, dtype=torch.float64) + 0.5) * self.schedule.train_steps / n).long()
        eps = torch.randn(x.shape, generator=generator)
        x_t = noised(self.schedule, x, t, eps)
        if not self.num_classes:
            return x_t, t
        labels = y.long() if y is not None else torch.zeros(n, dtype=torch.long)
        return x_t, t, labels


def noised(schedule: NoiseSchedule, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """The forward process: ``sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` (float32)."""
    abar = torch.as_tensor(schedule.alphas_cumprod(), dtype=torch.float32, device=x0.device)[t]
    abar = abar.reshape(-1, *([1] * (x0.dim() - 1)))
    return abar.sqrt() * x0 + (1 - abar).sqrt() * eps


def cut_names(depth: int) -> list[list[str]]:
    """The names of the tensors crossing each cut of a ``depth``-block U-ViT (see the module docstring)."""
    half = depth // 2
    names = []
    for i in range(depth - 1):
        skips = i if i <= half else depth - 1 - i   # in-blocks and the middle add one skip each; out-blocks pop
        names.append([f"h_{i}", f"temb_{i}", *[f"skip{k}_{i}" for k in range(skips)]])
    return names


@MODELS.register("deediff_uvit")
def deediff_uvit(image_size: int = 16, channels: int = 1, patch_size: int = 4, dim: int = 128, depth: int = 9,
                 heads: int = 4, mlp_ratio: float = 2.0, num_classes: int = 10, temb_dim: int = 32,
                 time_aware_heads: bool = False, schedule: Mapping[str, Any] | None = None) -> DeeDiffUViT:
    """A U-ViT denoiser with DeeDiff output heads and UEMs after every block (exits after every block).

    Args:
        image_size, channels: the images (square).
        patch_size: pixels per patch side.
        dim, depth, heads, mlp_ratio: the transformer (``depth`` odd: in-blocks, a middle block, out-blocks).
        num_classes: class-conditional on this many classes (a class token); 0 for unconditional.
        temb_dim: size of the timestep embedding the UEMs read.
        time_aware_heads: modulate the output heads g_i by the timestep embedding too (adaLN; not in the paper,
            whose heads are plain copies of the final layer).
        schedule: the noise schedule (:class:`NoiseSchedule` fields; default DDPM's linear, T = 1000).

    Example:
        >>> m = deediff_uvit(dim=32, depth=3, heads=2)
        >>> x, t, y = m.example_inputs(2)
        >>> [tuple(o.shape) if torch.is_tensor(o) else [tuple(p.shape) for p in o] for o in m(x, t, y)]
        [[(2, 1, 16, 16), (2,)], [(2, 1, 16, 16), (2,)], (2, 1, 16, 16)]
    """
    if depth < 3 or depth % 2 == 0:
        raise ConfigError(f"model.kwargs.depth: a U-ViT needs an odd depth >= 3, got {depth}")
    if dim % heads:
        raise ConfigError(f"model.kwargs: dim {dim} is not divisible by heads {heads}")
    sched = NoiseSchedule.from_dict(schedule)
    half = depth // 2
    stem = Stem(channels, image_size, patch_size, dim, num_classes, temb_dim)
    blocks = [Block(dim, heads, mlp_ratio) for _ in range(depth)]
    segments: list[nn.Module] = [FirstSegment(stem, blocks[0])]
    segments += [InSegment(b) for b in blocks[1:half + 1]]
    segments += [OutSegment(b, dim) for b in blocks[half + 1:]]

    def eps_head(time_aware: bool) -> EpsHead:
        return EpsHead(dim, channels, image_size, patch_size, stem.extras, temb_dim if time_aware else None)

    exit_heads = [DeeDiffHead(eps_head(time_aware_heads), UncertaintyModule(dim, temb_dim, stem.extras))
                  for _ in range(depth - 1)]
    model = DeeDiffUViT(segments, [*exit_heads, FinalHead(eps_head(False))], schedule=sched, num_classes=num_classes,
                        image_shape=(channels, image_size, image_size), hidden_names=cut_names(depth))
    model.apply(_init_vit_weights)
    for head in exit_heads:   # adaLN modulation starts at zero: the plain head
        mod = head.eps.modulation
        if mod is not None:
            last = mod[2]
            assert isinstance(last, nn.Linear)
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
    return model
