"""A 1-D CNN for signals, written the way a user writes one (plain ``nn.Module``, no edge-runtime imports), and
a small synthetic signal data set to try it on: 64-sample waveforms of five shapes (string labels) with random
frequency, phase, amplitude and noise, saved as an ``npz`` of shape (N, 1, 64).

    python examples/cnn1d_signal.py out/examples/signals.npz        # write the data
    edge-runtime convert examples/cnn1d_signal.yaml --out out/cnn1d_signal --allow-code
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

SHAPES = ("sine", "square", "triangle", "sawtooth", "chirp")


class Signal1dCNN(nn.Module):
    """Three conv blocks (Conv1d + BatchNorm1d + ReLU + MaxPool1d), global average pool, linear classifier."""

    def __init__(self, num_classes: int = 5, in_channels: int = 1, widths: tuple[int, ...] = (16, 32, 64)) -> None:
        super().__init__()
        blocks, cin = [], in_channels
        for w in widths:
            blocks.append(nn.Sequential(nn.Conv1d(cin, w, 5, padding=2), nn.BatchNorm1d(w), nn.ReLU(),
                                        nn.MaxPool1d(2)))
            cin = w
        self.block1, self.block2, self.block3 = blocks
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block3(self.block2(self.block1(x)))
        return self.fc(self.pool(x).flatten(1))


def build_cnn1d(num_classes: int = 5) -> Signal1dCNN:
    """The factory a recipe names."""
    return Signal1dCNN(num_classes=num_classes)


def make_signals(n_per_class: int = 240, length: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(x, y): x float32 (N, 1, length), y the shape names (strings)."""
    rng = np.random.default_rng(seed)
    t = np.arange(length) / length
    xs, ys = [], []
    for shape in SHAPES:
        for _ in range(n_per_class):
            f, ph, a = rng.uniform(1.5, 4.0), rng.uniform(0, 1), rng.uniform(0.5, 1.5)
            u = (f * t + ph) % 1.0
            wave = {"sine": np.sin(2 * np.pi * u), "square": np.sign(np.sin(2 * np.pi * u)),
                    "triangle": 4 * np.abs(u - 0.5) - 1, "sawtooth": 2 * u - 1,
                    "chirp": np.sin(2 * np.pi * (f * t + 3 * t * t) + 2 * np.pi * ph)}[shape]
            xs.append(a * wave + rng.normal(0, 0.35, length))
            ys.append(shape)
    return np.asarray(xs, np.float32)[:, None], np.asarray(ys)


def write_signals(path: str | Path, **kwargs: int) -> Path:
    """Write :func:`make_signals` as an ``npz`` (``x``, ``y``)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    x, y = make_signals(**kwargs)
    np.savez(p, x=x, y=y)
    return p


if __name__ == "__main__":
    print(f"wrote {write_signals(sys.argv[1] if len(sys.argv) > 1 else 'out/examples/signals.npz')}")
