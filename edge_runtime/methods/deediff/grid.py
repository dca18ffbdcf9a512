"""Image grids of samples as PNG files (Pillow, else matplotlib; imported when a grid is written)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edge_runtime.errors import ConfigError
from edge_runtime.files import write_bytes_atomic


def tile(images: np.ndarray, columns: int | None = None, *, pad: int = 1) -> np.ndarray:
    """Images (N, C, H, W) in [0, 1] as one (rows*(H+pad)-pad, cols*(W+pad)-pad, C) array, row by row.

    Example:
        >>> tile(np.ones((5, 1, 2, 2)), columns=3).shape
        (5, 8, 1)
    """
    n, c, h, w = images.shape
    cols = columns or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    out = np.zeros((rows * (h + pad) - pad, cols * (w + pad) - pad, c), dtype=np.float32)
    for k in range(n):
        r, q = divmod(k, cols)
        out[r * (h + pad):r * (h + pad) + h, q * (w + pad):q * (w + pad) + w] = images[k].transpose(1, 2, 0)
    return out


def side_by_side(grids: Sequence[np.ndarray], *, gap: int = 4, value: float = 1.0) -> np.ndarray:
    """Grids (H, W, C) next to each other with a ``gap``-pixel separator of ``value`` (white)."""
    h = max(g.shape[0] for g in grids)
    parts: list[np.ndarray] = []
    for k, g in enumerate(grids):
        if k:
            parts.append(np.full((h, gap, g.shape[2]), value, np.float32))
        parts.append(np.pad(g, ((0, h - g.shape[0]), (0, 0), (0, 0))))
    return np.concatenate(parts, axis=1)


def png_bytes(grid: np.ndarray, *, scale: int = 4) -> bytes:
    """A grid (H, W, C) in [0, 1] as PNG bytes, each pixel drawn ``scale`` x ``scale``.

    Raises:
        ConfigError: neither Pillow nor matplotlib is installed.
    """
    img = np.clip(grid, 0, 1)
    img = np.repeat(np.repeat(img, scale, axis=0), scale, axis=1)
    gray = img.shape[2] == 1
    pixels = (img[..., 0] if gray else img) * 255 + 0.5
    buf = io.BytesIO()
    try:
        from PIL import Image

        Image.fromarray(pixels.astype(np.uint8), mode="L" if gray else "RGB").save(buf, format="PNG")
    except ImportError:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            raise ConfigError("writing a PNG grid needs Pillow or matplotlib (pip install pillow)") from None
        plt.imsave(buf, pixels.astype(np.uint8), cmap="gray" if gray else None, vmin=0, vmax=255, format="png")
    return buf.getvalue()


def write_grid(path: str | Path, images: np.ndarray | Sequence[np.ndarray], *, columns: int | None = None,
               scale: int = 4) -> Path:
    """Write images (N, C, H, W) in [0, 1] — or several such sets, side by side — as one PNG grid, atomically."""
    sets = [images] if isinstance(images, np.ndarray) else list(images)
    grid = side_by_side([tile(np.asarray(s, np.float32), columns) for s in sets])
    path = Path(path)
    write_bytes_atomic(path, png_bytes(grid, scale=scale))
    return path
