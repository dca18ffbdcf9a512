"""The DDIM sampling loop on a diffusion bundle's segments, with DeeDiff's per-step, per-sample layer exits.

At every step the still-noisy batch goes through the executor (:meth:`edge_runtime.runtime.Runtime.decide`, the
project's one shrinking-batch loop): after each block every sample whose uncertainty ``u`` is below the threshold
leaves with that block's eps prediction; only the others run the next block. The DDIM update then moves every
sample to the next timestep and the next step starts again with the whole batch. ``mode="full"`` runs the
one-graph model at every step instead (the baseline a user would otherwise deploy).

Each sample's starting noise depends only on ``(seed, its index)``, so a batch gives the same images as its
samples one at a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_runtime.errors import BundleError, ConfigError, InputError
from edge_runtime.manifest import EXIT_OUTPUT, Manifest, Preprocessing
from edge_runtime.methods.deediff.schedule import NoiseSchedule, ddim_step, ddim_timesteps
from edge_runtime.policies import ExitPolicy, create_policy

METHOD = "deediff"
#: the mode that samples a diffusion bundle
MODE = "sample"
#: how :meth:`DiffusionSampler.run` evaluates the network at each step
SAMPLE_MODES = ("early_exit", "full")
#: the model inputs of a diffusion bundle: the noisy image, the timestep, and (class-conditional) the class
IMAGE_INPUT, TIME_INPUT, CLASS_INPUT = "x_t", "t", "y"

#: ``on_step(step, steps)`` after each DDIM step (progress bars)
OnStep = Callable[[int, int], None]


@dataclass
class SampleResult:
    """What :meth:`DiffusionSampler.run` returns.

    Attributes:
        images: the samples in the data's range (the bundle's preprocessing undone; digits: [0, 1]), (N, C, H, W).
        layers: blocks each sample ran at each step, (steps, N).
        timesteps: the DDIM timesteps visited, (steps,).
        classes: the class each sample was conditioned on, (N,); None for an unconditional model.
        step_latency_s: wall time of each step (network + update), (steps,).
        latency_s: wall time of the whole loop.
        mode: ``early_exit`` or ``full``.
        num_layers: blocks of the full network.
        threshold: the uncertainty threshold(s) used (early exit).
        seed: the seed the starting noise was drawn with, when drawn here.
        energy_j, energy_source: energy of the loop, when the runtime has a meter.
    """

    images: np.ndarray
    layers: np.ndarray
    timesteps: np.ndarray
    classes: np.ndarray | None
    step_latency_s: np.ndarray
    latency_s: float
    mode: str
    num_layers: int
    threshold: list[float] | None = None
    seed: int | None = None
    energy_j: float | None = None
    energy_source: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def mean_layers(self) -> float:
        """Blocks run per sample per step, on average."""
        return float(self.layers.mean())

    @property
    def layer_fraction(self) -> float:
        """:attr:`mean_layers` over the full depth (1.0 = no saving)."""
        return self.mean_layers / self.num_layers

    def to_dict(self, *, images: bool = True) -> dict[str, Any]:
        """JSON-ready record (``images`` as nested lists unless ``images=False``)."""
        out: dict[str, Any] = {
            "mode": self.mode, "n": len(self), "steps": int(self.timesteps.shape[0]), "seed": self.seed,
            "threshold": self.threshold, "num_layers": self.num_layers, "mean_layers": self.mean_layers,
            "layer_fraction": self.layer_fraction, "latency_s": self.latency_s,
            "step_latency_s": self.step_latency_s.tolist(), "timesteps": self.timesteps.tolist(),
            "layers": self.layers.tolist(), "classes": None if self.classes is None else self.classes.tolist(),
            "energy_j": self.energy_j, "energy_source": self.energy_source,
        }
        if images:
            out["images"] = self.images.tolist()
        return out


@dataclass(frozen=True)
class DiffusionSpec:
    """What a diffusion bundle records for sampling (``parts.deediff.info``): its schedule and default steps."""

    schedule: NoiseSchedule
    steps: int = 20
    clip: bool = True

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> DiffusionSpec:
        """Read it from a bundle's manifest.

        Raises:
            ConfigError: the bundle has no ``parts.deediff`` (not a diffusion bundle).
            BundleError: its record is malformed.
        """
        parts = manifest.parts.get(METHOD)
        if parts is None:
            raise ConfigError(f"bundle {manifest.name!r} is not a diffusion bundle (no parts.{METHOD}); convert "
                              "a recipe with a 'deediff' section")
        info = parts.info
        try:
            sampler = dict(info.get("sampler") or {})
            return cls(NoiseSchedule.from_dict(info["schedule"]), int(sampler.get("steps", 20)),
                       bool(sampler.get("clip", True)))
        except (KeyError, TypeError, ValueError, ConfigError) as exc:
            raise BundleError(f"bad diffusion record: {exc}", field=f"parts.{METHOD}.info") from None


def unsupported(manifest: Manifest) -> str | None:
    """Why a bundle cannot be sampled, or None."""
    if METHOD not in manifest.parts:
        return f"it has no parts.{METHOD} (convert a recipe with a 'deediff' section)"
    names = [i.name for i in manifest.inputs]
    if names[:2] != [IMAGE_INPUT, TIME_INPUT] or names[2:] not in ([], [CLASS_INPUT]):
        return f"its inputs are {names}; a diffusion bundle takes {[IMAGE_INPUT, TIME_INPUT]} (+ {CLASS_INPUT!r})"
    return None


def starting_noise(n: int, shape: tuple[int, ...], seed: int, start: int = 0) -> np.ndarray:
    """x_T for samples ``start .. start+n-1``: sample k's noise from ``np.random.default_rng([seed, k])`` alone.

    Example:
        >>> a = starting_noise(3, (1, 2, 2), seed=7)
        >>> bool(np.array_equal(a[1:], starting_noise(2, (1, 2, 2), seed=7, start=1)))
        True
    """
    return np.stack([np.random.default_rng([seed, start + k]).standard_normal(shape).astype(np.float32)
                     for k in range(n)])


def _to_data_range(x: np.ndarray, pre: Preprocessing | None) -> np.ndarray:
    """Undo the bundle's input preprocessing ``x' = (x * scale - mean) / std``."""
    if pre is None:
        return x
    shape = (1, -1) + (1,) * (x.ndim - 2)
    out = x.astype(np.float64)
    if pre.std is not None:
        out = out * np.asarray(pre.std, dtype=np.float64).reshape(shape)
    if pre.mean is not None:
        out = out + np.asarray(pre.mean, dtype=np.float64).reshape(shape)
    return (out / pre.scale).astype(np.float32)


class DiffusionSampler:
    """Samples a diffusion bundle on a loaded runtime (see the module docstring).

    Args:
        runtime: a :class:`~edge_runtime.runtime.Runtime` of a bundle converted with a ``deediff`` section.

    Example:
        >>> rt = edge_runtime.load_bundle("out/deediff_probe", threads=1)          # doctest: +SKIP
        >>> res = DiffusionSampler(rt).sample(16, steps=20, seed=0, threshold=0.1)  # doctest: +SKIP
        >>> res.images.shape, res.mean_layers                                       # doctest: +SKIP
    """

    def __init__(self, runtime: Any) -> None:
        why = unsupported(runtime.manifest)
        if why is not None:
            raise ConfigError(f"{runtime.bundle.root}: bundle {runtime.name!r} cannot be sampled: {why}")
        self.runtime = runtime
        self.spec = DiffusionSpec.from_manifest(runtime.manifest)
        self.image = runtime.manifest.inputs[0]
        self.conditional = len(runtime.manifest.inputs) == 3
        self.num_classes = len(runtime.labels) if self.conditional else 0
        self.alphas_cumprod = self.spec.schedule.alphas_cumprod()

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """One image's shape (C, H, W)."""
        return tuple(int(d or 0) for d in self.image.sample_shape)

    def classes(self, n: int, cls: int | None = None) -> np.ndarray | None:
        """The classes to condition ``n`` samples on: ``cls`` for all, else 0, 1, ..., C-1, 0, 1, ...; None when
        the model is unconditional.

        Raises:
            InputError: ``cls`` out of range, or given to an unconditional model.
        """
        if not self.conditional:
            if cls is not None:
                raise InputError("class: this diffusion bundle is unconditional")
            return None
        if cls is not None and not 0 <= int(cls) < self.num_classes:
            raise InputError(f"class: expected 0..{self.num_classes - 1}, got {cls}")
        return np.full(n, int(cls), np.int64) if cls is not None else np.arange(n, dtype=np.int64) % self.num_classes

    def policy(self, threshold: float | list[float] | ExitPolicy | None) -> ExitPolicy:
        """The bundle's uncertainty policy, at ``threshold`` when given (else its chosen thresholds); a policy object
        is used as it is."""
        rt = self.runtime
        if isinstance(threshold, ExitPolicy):
            return threshold
        if threshold is None:
            return rt.default_policy
        return create_policy(rt.manifest.policy.name, rt.num_exits, threshold, **rt.manifest.policy.kwargs)

    def sample(self, n: int, *, steps: int | None = None, seed: int = 0, threshold: float | list[float] | None = None,
               mode: str = "early_exit", cls: int | None = None, on_step: OnStep | None = None) -> SampleResult:
        """Draw ``n`` samples: noise from ``seed`` (:func:`starting_noise`), classes from :meth:`classes`.

        Args:
            n: how many samples (one batch).
            steps: DDIM steps (default: the bundle's).
            seed: the starting noise's seed.
            threshold: the uncertainty threshold(s) (default: the bundle's chosen one); early exit only.
            mode: ``early_exit`` (layer exits) or ``full`` (the one-graph model at every step).
            cls: condition every sample on this class (default: classes in turn).
            on_step: ``on_step(step, steps)`` after each step.

        Raises:
            InputError: ``n`` < 1, ``seed`` < 0 or a bad class; ConfigError: a bad mode or steps.
        """
        if n < 1:
            raise InputError(f"n: expected a positive number of samples, got {n}")
        if seed < 0:
            raise InputError(f"seed: expected a non-negative integer, got {seed}")
        res = self.run(starting_noise(n, self.sample_shape, seed), self.classes(n, cls), steps=steps,
                       threshold=threshold, mode=mode, on_step=on_step)
        res.seed = seed
        return res

    def run(self, x_T: np.ndarray, classes: np.ndarray | None = None, *, steps: int | None = None,
            threshold: float | list[float] | ExitPolicy | None = None, mode: str = "early_exit",
            on_step: OnStep | None = None) -> SampleResult:
        """The DDIM loop from given starting noise ``x_T`` (N, C, H, W) and classes (N,); ``threshold`` may also be
        an exit policy object (e.g. one that records every block's ``u``).

        Raises:
            ConfigError: unknown ``mode``, bad ``steps``.
            InputError: noise or classes of the wrong shape.
        """
        if mode not in SAMPLE_MODES:
            raise ConfigError(f"mode: expected one of {', '.join(SAMPLE_MODES)}, got {mode!r}")
        rt = self.runtime
        x = np.ascontiguousarray(x_T, dtype=np.float32)
        n = x.shape[0]
        if x.shape[1:] != self.sample_shape:
            raise InputError(f"starting noise: expected shape (N, {', '.join(map(str, self.sample_shape))}), "
                             f"got {tuple(x.shape)}")
        if self.conditional and (classes is None or np.shape(classes) != (n,)):
            raise InputError(f"classes: a class-conditional bundle needs one class per sample ({n})")
        timesteps = ddim_timesteps(self.spec.schedule.train_steps, steps if steps is not None else self.spec.steps)
        policy = self.policy(threshold) if mode == "early_exit" else None
        full = rt.full_model_runner if mode == "full" else None
        if mode == "full" and full is None:  # no one-graph file: every segment, nobody leaving
            policy = create_policy("never", rt.num_exits)
        depth = rt.num_exits
        abar = self.alphas_cumprod
        layers = np.empty((timesteps.shape[0], n), dtype=np.int64)
        step_latency = np.empty(timesteps.shape[0], dtype=np.float64)
        meter = rt.meter
        window = meter.start_window() if meter is not None else None
        clock = time.perf_counter
        start = clock()
        for k, t in enumerate(timesteps):
            t0 = clock()
            feeds = {IMAGE_INPUT: x, TIME_INPUT: np.full(n, t, dtype=np.int64)}
            if self.conditional:
                feeds[CLASS_INPUT] = np.asarray(classes, dtype=np.int64)
            if full is not None:
                eps = full.run(feeds)[EXIT_OUTPUT]
                layers[k] = depth
            else:
                assert policy is not None
                run = rt.decide(feeds, policy)
                eps, layers[k] = run.outputs, run.exit_index + 1
            prev = abar[timesteps[k + 1]] if k + 1 < timesteps.shape[0] else 1.0
            x = ddim_step(x, eps, float(abar[t]), float(prev), clip=self.spec.clip)
            step_latency[k] = clock() - t0
            if on_step is not None:
                on_step(k + 1, timesteps.shape[0])
        latency = clock() - start
        result = SampleResult(
            images=_to_data_range(x, self.image.preprocessing), layers=layers, timesteps=timesteps,
            classes=None if classes is None else np.asarray(classes, dtype=np.int64), step_latency_s=step_latency,
            latency_s=latency, mode=mode, num_layers=depth,
            threshold=list(policy.thresholds) if policy is not None and mode == "early_exit" else None)
        if meter is not None:
            result.energy_j, _ = meter.window_energy(window)
            result.energy_source = meter.source
        return result


def sampler_of(runtime: Any) -> DiffusionSampler:
    """The runtime's sampler, created on first use and kept with it (:meth:`Runtime.mode_state`)."""
    return runtime.mode_state(METHOD, lambda: DiffusionSampler(runtime))


def settings_of(manifest: Manifest) -> Mapping[str, Any]:
    """The bundle's DeeDiff record (``parts.deediff.info``)."""
    return manifest.parts[METHOD].info
