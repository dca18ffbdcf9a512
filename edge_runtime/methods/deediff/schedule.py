"""The DDPM noise schedule and the DDIM update, in numpy: the one definition both sides use.

The workstation trains the denoiser with these ``alphas_cumprod`` (:mod:`converters.methods.deediff.losses`)
and records the schedule in the bundle (``parts.deediff.info.schedule``); the device samples with the same
numbers (:mod:`edge_runtime.methods.deediff.sampler`). DDPM: Ho et al. 2020; DDIM: Song et al. 2021 (eta = 0).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edge_runtime.errors import ConfigError

SCHEDULE_KINDS = ("linear", "cosine")


@dataclass(frozen=True)
class NoiseSchedule:
    """A DDPM forward process: ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` for t = 0..train_steps-1.

    Attributes:
        kind: ``linear`` (betas from ``beta_start`` to ``beta_end``, DDPM's) or ``cosine`` (Nichol & Dhariwal).
        train_steps: T, the number of training timesteps.
        beta_start, beta_end: the linear schedule's end points.

    Example:
        >>> s = NoiseSchedule("linear", 1000)
        >>> round(float(s.alphas_cumprod()[0]), 6), s.alphas_cumprod().shape
        (0.9999, (1000,))
    """

    kind: str = "linear"
    train_steps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULE_KINDS:
            raise ConfigError(f"noise schedule kind {self.kind!r}; expected one of {', '.join(SCHEDULE_KINDS)}")
        if self.train_steps < 2:
            raise ConfigError(f"noise schedule train_steps must be >= 2, got {self.train_steps}")
        if not 0 < self.beta_start < self.beta_end < 1:
            raise ConfigError(f"noise schedule needs 0 < beta_start < beta_end < 1, got {self.beta_start}, "
                              f"{self.beta_end}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> NoiseSchedule:
        """From a manifest/recipe record (missing keys take the defaults)."""
        d = dict(d or {})
        unknown = sorted(set(d) - {"kind", "train_steps", "beta_start", "beta_end"})
        if unknown:
            raise ConfigError(f"noise schedule: unknown key(s) {', '.join(unknown)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def betas(self) -> np.ndarray:
        """beta_t for t = 0..T-1 (float64)."""
        n = self.train_steps
        if self.kind == "linear":
            return np.linspace(self.beta_start, self.beta_end, n, dtype=np.float64)
        s = 0.008  # cosine: abar(t) = cos^2(((t/T + s) / (1 + s)) pi/2), betas clipped at 0.999
        f = np.cos(((np.arange(n + 1, dtype=np.float64) / n + s) / (1 + s)) * math.pi / 2) ** 2
        return np.clip(1 - f[1:] / f[:-1], 0.0, 0.999)

    def alphas_cumprod(self) -> np.ndarray:
        """abar_t = prod_{s <= t} (1 - beta_s), for t = 0..T-1 (float64)."""
        return np.cumprod(1.0 - self.betas())


def ddim_timesteps(train_steps: int, steps: int) -> np.ndarray:
    """The ``steps`` timesteps DDIM visits, from the noisiest down (evenly spaced, ending at 0).

    Example:
        >>> ddim_timesteps(1000, 4).tolist()
        [999, 666, 333, 0]
    """
    if not 1 <= steps <= train_steps:
        raise ConfigError(f"steps must be in 1..{train_steps}, got {steps}")
    return np.round(np.linspace(train_steps - 1, 0, steps)).astype(np.int64)


def ddim_step(x: np.ndarray, eps: np.ndarray, abar_t: float, abar_prev: float, *, clip: bool = True) -> np.ndarray:
    """One deterministic DDIM update (eta = 0) from timestep t to the previous visited one.

    The predicted clean sample ``x0 = (x - sqrt(1 - abar_t) eps) / sqrt(abar_t)`` is clipped to [-1, 1] when
    ``clip`` (and eps re-derived from it, as diffusers' DDIM does); then
    ``x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev) eps``. At the last step pass ``abar_prev = 1``.
    """
    x64, e64 = x.astype(np.float64), eps.astype(np.float64)
    x0 = (x64 - math.sqrt(1 - abar_t) * e64) / math.sqrt(abar_t)
    if clip:
        x0 = np.clip(x0, -1.0, 1.0)
        e64 = (x64 - math.sqrt(abar_t) * x0) / math.sqrt(1 - abar_t)
    return (math.sqrt(abar_prev) * x0 + math.sqrt(1 - abar_prev) * e64).astype(x.dtype)
