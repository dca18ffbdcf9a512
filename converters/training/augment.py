"""Training-time input augmentation shared by the methods: random translations of image batches."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator | None = None, *,
                 axis_major: bool = False) -> torch.Tensor:
    """Translate each image of an (N, C, H, W) batch by its own random (dy, dx) in [-max_shift, max_shift]
    pixels, filling with the replicated border (digits: background).

    Args:
        x: the batch; anything but a 4-d tensor is returned as it is (no spatial axes to shift).
        max_shift: the largest offset in pixels; 0 returns ``x`` itself.
        generator: where the offsets come from (None: torch's global generator, which the trainer
            checkpoints; the trainer's per-epoch generator needs no saved state to resume).
        axis_major: the order the 2N offsets are drawn in: False draws (dy, dx) image after image
            (LGViT's losses), True draws every dy, then every dx (a method's converting autoencoder). Both orders
            are kept so the shipped recipes train to the same weights as before the two copies merged.

    Example:
        >>> random_shift(torch.zeros(2, 1, 8, 8), 2).shape
        torch.Size([2, 1, 8, 8])
    """
    if max_shift <= 0 or x.dim() != 4:
        return x
    s = int(max_shift)
    n, _, h, w = x.shape
    if axis_major:
        offsets = torch.randint(0, 2 * s + 1, (2, n), generator=generator)
    else:
        offsets = torch.randint(0, 2 * s + 1, (n, 2), generator=generator).T
    padded = F.pad(x, (s, s, s, s), mode="replicate")
    out = torch.empty_like(x)
    for dy, dx in torch.unique(offsets, dim=1).T.tolist():
        rows = (offsets[0] == dy) & (offsets[1] == dx)
        out[rows] = padded[rows, :, dy:dy + h, dx:dx + w]
    return out
