"""The on-device runtime: load a bundle, run its segments in sequence, leave early per sample.

The batch shrinks as samples leave: after each segment the exit policy decides per
sample from that segment's exit output, and only the samples still undecided go
into the next segment. Nothing here imports torch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edge_runtime import _env
from edge_runtime.backends import Backend, Session, create_backend
from edge_runtime.bundle import Bundle, BundleFile, read_bundle
from edge_runtime.errors import BundleError, ConfigError, InputError
from edge_runtime.policies import ExitPolicy, create_policy
from edge_runtime.registry import Registry

_NP_DTYPES = {"float32": np.float32, "float16": np.float16, "int8": np.int8, "uint8": np.uint8,
              "int32": np.int32, "int64": np.int64}


@dataclass
class InferenceResult:
    """What one :meth:`Runtime.infer` call returns.

    Attributes:
        predictions: argmax class per sample, shape (N,).
        exit_index: the exit that answered each sample, shape (N,).
        outputs: the answering exit's output per sample, shape (N, ...).
        segment_latency_s: wall time spent in each segment for this batch (model run
            plus the exit decision), shape (num_segments,); 0 for segments no sample reached.
        segment_batch_size: how many samples entered each segment, shape (num_segments,).
        sample_latency_s: time from the call's start until each sample was answered, shape (N,).
        latency_s: wall time of the whole call.
        mode: ``early_exit``, ``full`` or another registered mode.
        energy_j: energy attributed to the call, when a meter is attached.
        energy_source: ``measured:<meter>`` or ``estimated:<profile>`` when energy_j is set.
        sample_energy_j: energy per sample, when a meter is attached: each segment's energy is
            shared by the samples that entered it (they sum to ``energy_j``).
        segment_energy_j: energy per segment, when a meter is attached (integrated per segment
            when the meter samples faster than the segments run, else split by segment latency).
        part_latency_s: wall time per named part, for modes that run parts rather than
            segments (``cbnet``: ``autoencoder``, ``classifier``); None otherwise.
    """

    predictions: np.ndarray
    exit_index: np.ndarray
    outputs: np.ndarray
    segment_latency_s: np.ndarray
    segment_batch_size: np.ndarray
    sample_latency_s: np.ndarray
    latency_s: float
    mode: str = "early_exit"
    energy_j: float | None = None
    energy_source: str | None = None
    sample_energy_j: np.ndarray | None = None
    labels: list[str] = field(default_factory=list, repr=False)
    part_latency_s: dict[str, float] | None = None
    segment_energy_j: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.predictions.shape[0])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with one record per sample plus the batch totals."""
        samples = []
        for i in range(len(self)):
            rec: dict[str, Any] = {
                "prediction": int(self.predictions[i]),
                "exit_index": int(self.exit_index[i]),
                "output": self.outputs[i].tolist(),
                "latency_s": float(self.sample_latency_s[i]),
            }
            if self.labels:
                rec["label"] = self.labels[int(self.predictions[i])]
            if self.sample_energy_j is not None:
                rec["energy_j"] = float(self.sample_energy_j[i])
                rec["energy_source"] = self.energy_source
            samples.append(rec)
        out = {
            "mode": self.mode,
            "latency_s": self.latency_s,
            "segment_latency_s": self.segment_latency_s.tolist(),
            "segment_batch_size": self.segment_batch_size.tolist(),
            "energy_j": self.energy_j,
            "energy_source": self.energy_source,
            "samples": samples,
        }
        if self.part_latency_s is not None:
            out["part_latency_s"] = dict(self.part_latency_s)
        if self.segment_energy_j is not None:
            out["segment_energy_j"] = np.asarray(self.segment_energy_j).tolist()
        return out


class SegmentRunner:
    """Runs one segment (or one whole graph) from its files: a dynamic-batch file runs any
    batch at once; fixed-batch files run a batch as chunks of the best-fitting size.
    """

    def __init__(self, sessions: list[Session], name: str) -> None:
        self.name = name
        dynamic = [s for s in sessions if s.batch_size is None]
        self._dynamic = dynamic[0] if dynamic else None
        self._fixed = sorted((s for s in sessions if s.batch_size is not None), key=lambda s: s.batch_size)
        first = self._dynamic or self._fixed[0]
        self.input_name = first.input_names[0]
        self.output_names = list(first.output_names)

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        if self._dynamic is not None:
            return self._dynamic.run({self.input_name: x})
        return self._run_chunked(x)

    def _run_chunked(self, x: np.ndarray) -> list[np.ndarray]:
        n = x.shape[0]
        pieces: list[list[np.ndarray]] = []
        start = 0
        while start < n:  # greedy: the largest file that fits what is left, else the smallest (padded)
            left = n - start
            fitting = [s for s in self._fixed if s.batch_size <= left]
            session = fitting[-1] if fitting else self._fixed[0]
            b = session.batch_size
            chunk = x[start:start + b]
            start += b
            real = chunk.shape[0]
            if real < b:  # pad the last chunk; padded rows are dropped below
                pad = np.zeros((b - real,) + chunk.shape[1:], dtype=chunk.dtype)
                chunk = np.concatenate([chunk, pad])
            outs = session.run({session.input_names[0]: chunk})
            pieces.append([o[:real] for o in outs])
        return [np.concatenate([p[k] for p in pieces]) for k in range(len(pieces[0]))]


#: inference modes: functions ``(runtime, x, policy) -> InferenceResult``; CBNet adds its own.
MODES: Registry[Callable[..., InferenceResult]] = Registry("inference mode", plugins="edge_runtime.methods")


class Runtime:
    """A loaded bundle, ready to infer. Build one with :func:`load_bundle`.

    Example:
        >>> rt = load_bundle("out/tiny_cnn", threads=1)          # doctest: +SKIP
        >>> res = rt.infer(x)                                    # doctest: +SKIP
        >>> res.predictions, res.exit_index                      # doctest: +SKIP
    """

    def __init__(self, bundle: Bundle, backend: Backend, *, precision: str = "fp32",
                 batch_sizes: Sequence[int] | None = None) -> None:
        self.bundle = bundle
        self.backend = backend
        self.precision = precision
        #: ``format/precision`` of the files this runtime runs (key of ``policy.variants``)
        self.variant = f"{backend.file_format}/{precision}"
        m = bundle.manifest
        self.manifest = m
        self.name: str = m["name"]
        self.labels: list[str] = list(m["labels"])
        self.num_exits = len(m["exits"])
        self.input_spec: dict[str, Any] = m["input"]
        self._dtype = np.dtype(_NP_DTYPES[self.input_spec["dtype"]])
        self._sample_shape = tuple(self.input_spec["shape"][1:])
        self.meter: Any = None  # an energy meter (see edge_runtime.meters), attached by the caller
        self.profile: Any = None  # the DeviceProfile applied by load_bundle, if any
        self.segments = [
            self._runner(files, f"segment {i}")
            for i, files in enumerate(bundle.segment_files(backend.file_format, precision, batch_sizes))
        ]
        self._hidden_pos: list[int] = []
        self._exit_pos: list[int] = []
        for i, seg in enumerate(self.segments):
            names = seg.output_names
            if "exit" not in names or (i < len(self.segments) - 1 and "hidden" not in names):
                raise BundleError(
                    f"segment {i} graph outputs {names}; expected 'hidden' and 'exit' (last: 'exit')",
                    path=bundle.manifest_path,
                    field=f"segments.{i}.outputs",
                )
            self._exit_pos.append(names.index("exit"))
            self._hidden_pos.append(names.index("hidden") if "hidden" in names else -1)
        self._full: SegmentRunner | None = None
        full = m.get("full_model")
        if full:
            try:
                files = bundle.files_for(full["files"], "full_model.files", backend.file_format, precision,
                                         batch_sizes)
            except BundleError:
                files = []
            if files:
                self._full = self._runner(files, "full model")
        self.default_policy = self.make_policy()

    def _runner(self, files: list[BundleFile], name: str) -> SegmentRunner:
        return SegmentRunner([self.backend.load(f.path) for f in files], name)

    # -- policies -------------------------------------------------------------------------
    def make_policy(self, policy: str | ExitPolicy | None = None, thresholds: Any = None, **kwargs: Any) -> ExitPolicy:
        """The bundle's policy, or another by name, with optional threshold overrides."""
        if isinstance(policy, ExitPolicy):
            if thresholds is not None:
                raise ConfigError("give thresholds either inside the policy object or as 'thresholds', not both")
            return policy
        spec = self.manifest["policy"]
        if policy is None or policy == spec["name"]:
            name = spec["name"]
            kw = {**spec["kwargs"], **kwargs}
            variant = spec.get("variants", {}).get(self.variant, {})  # re-calibrated for quantized files
            thr = thresholds if thresholds is not None else (variant.get("thresholds") or spec["thresholds"] or None)
        else:
            name, kw, thr = policy, kwargs, thresholds
        return create_policy(name, self.num_exits, thr, **kw)

    # -- input ----------------------------------------------------------------------------
    def check_input(self, x: Any) -> np.ndarray:
        """Validate an input batch against the bundle's input spec.

        Raises:
            InputError: wrong type, rank, shape, dtype, or NaN/Inf values.
        """
        expected = "(N, " + ", ".join(str(d) for d in self._sample_shape) + ")"
        if not isinstance(x, np.ndarray):
            raise InputError(f"input must be a numpy array of shape {expected}, got {type(x).__name__}")
        if x.ndim != len(self._sample_shape) + 1:
            raise InputError(f"input has rank {x.ndim} (shape {tuple(x.shape)}); expected rank "
                             f"{len(self._sample_shape) + 1}, shape {expected}")
        for axis, (got, want) in enumerate(zip(x.shape[1:], self._sample_shape), start=1):
            if want is not None and got != want:
                raise InputError(f"input shape {tuple(x.shape)} does not match {expected} at axis {axis}")
        if x.shape[0] == 0:
            raise InputError("input batch is empty")
        if x.dtype != self._dtype:
            raise InputError(f"input dtype is {x.dtype}; expected {self._dtype} "
                             f"(convert with x.astype(np.{self._dtype}))")
        if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
            bad = int((~np.isfinite(x)).reshape(x.shape[0], -1).any(axis=1).sum())
            raise InputError(f"input contains NaN or Inf values in {bad} sample(s)")
        return np.ascontiguousarray(x)

    def preprocess(self, raw: np.ndarray) -> np.ndarray:
        """Apply the manifest's preprocessing (scale, per-channel mean/std) to raw inputs."""
        pre = self.input_spec.get("preprocessing", {})
        x = np.asarray(raw, dtype=np.float64) * pre.get("scale", 1.0)
        shape = (1, -1) + (1,) * (x.ndim - 2)
        if "mean" in pre:
            x = x - np.asarray(pre["mean"]).reshape(shape)
        if "std" in pre:
            x = x / np.asarray(pre["std"]).reshape(shape)
        return x.astype(self._dtype)

    # -- inference ------------------------------------------------------------------------
    def infer(self, x: np.ndarray, *, policy: str | ExitPolicy | None = None, thresholds: Any = None,
              mode: str = "early_exit") -> InferenceResult:
        """Run a batch; each sample leaves at the first exit whose policy decision says so.

        Args:
            x: model-ready input, shape (N, *input.shape[1:]), the manifest's dtype.
            policy: a policy name or object; None uses the bundle's calibrated policy.
            thresholds: per-exit thresholds overriding the policy's.
            mode: ``early_exit`` (default), ``full`` or a mode the bundle adds (``cbnet``).

        Raises:
            InputError: the input does not match the bundle's input spec.
            ConfigError: unknown policy/mode or bad thresholds.
        """
        x = self.check_input(x)
        if policy is None and thresholds is None:
            pol = self.default_policy
        else:
            pol = self.make_policy(policy, thresholds)
        handler = MODES.get(mode)
        meter = self.meter
        if meter is None:
            return handler(self, x, pol)
        window = meter.start_window()
        result = handler(self, x, pol)
        meter.finish_window(window, result)
        return result

    def run_early_exit(self, x: np.ndarray, policy: ExitPolicy,
                       on_exit: Callable[[np.ndarray, int, np.ndarray, float], None] | None = None) -> InferenceResult:
        """The shrinking-batch executor (no input checks; use :meth:`infer`).

        Args:
            x: model-ready input batch.
            policy: the exit policy deciding per sample after each segment.
            on_exit: optional ``on_exit(indices, exit_index, outputs, t)`` called as soon as samples
                leave: their row indices in ``x``, the exit they left at, their answering outputs and
                the seconds since the call started (the daemon answers each request from here).
        """
        n = x.shape[0]
        num = len(self.segments)
        predictions = np.empty(n, dtype=np.int64)
        exit_index = np.empty(n, dtype=np.int64)
        sample_latency = np.empty(n, dtype=np.float64)
        seg_latency = np.zeros(num, dtype=np.float64)
        seg_batch = np.zeros(num, dtype=np.int64)
        outputs: np.ndarray | None = None
        alive = np.arange(n)
        state = policy.start(n)
        h = x
        clock = time.perf_counter
        start = clock()
        for i, runner in enumerate(self.segments):
            t0 = clock()
            outs = runner.run(h)
            exit_out = outs[self._exit_pos[i]]
            if outputs is None:
                outputs = np.empty((n,) + exit_out.shape[1:], dtype=exit_out.dtype)
            seg_batch[i] = alive.shape[0]
            if i == num - 1:
                leave = np.ones(alive.shape[0], dtype=bool)
            else:
                leave = np.asarray(policy.decide(i, exit_out, state), dtype=bool)
            if leave.any():
                gone = alive[leave]
                answered = exit_out[leave]
                outputs[gone] = answered
                predictions[gone] = answered.argmax(axis=-1)
                exit_index[gone] = i
            t1 = clock()
            seg_latency[i] = t1 - t0
            if leave.any():
                sample_latency[alive[leave]] = t1 - start
                if on_exit is not None:
                    on_exit(alive[leave], i, exit_out[leave], t1 - start)
            if leave.all():
                break
            if leave.any():
                keep = ~leave
                h = outs[self._hidden_pos[i]][keep]
                alive = alive[keep]
                state = {k: v[keep] for k, v in state.items()}
            else:
                h = outs[self._hidden_pos[i]]
        assert outputs is not None
        return InferenceResult(
            predictions=predictions, exit_index=exit_index, outputs=outputs,
            segment_latency_s=seg_latency, segment_batch_size=seg_batch,
            sample_latency_s=sample_latency, latency_s=clock() - start,
            mode="early_exit", labels=self.labels,
        )

    def run_full(self, x: np.ndarray) -> InferenceResult:
        """The unsplit model as one graph when the bundle has it (else every segment)."""
        if self._full is None:
            res = self.run_early_exit(x, create_policy("never", self.num_exits))
            res.mode = "full"
            return res
        clock = time.perf_counter
        start = clock()
        out = self._full.run(x)[0]
        elapsed = clock() - start
        n = x.shape[0]
        seg_latency = np.zeros(len(self.segments))
        seg_latency[-1] = elapsed
        return InferenceResult(
            predictions=out.argmax(axis=-1), exit_index=np.full(n, self.num_exits - 1, dtype=np.int64),
            outputs=out, segment_latency_s=seg_latency,
            segment_batch_size=np.full(len(self.segments), n, dtype=np.int64),
            sample_latency_s=np.full(n, elapsed), latency_s=elapsed, mode="full", labels=self.labels,
        )

    def exit_outputs(self, x: np.ndarray) -> list[np.ndarray]:
        """Every exit's output for every sample (runs all segments); for calibration and oracles."""
        x = self.check_input(x)
        h = x
        result = []
        for i, runner in enumerate(self.segments):
            outs = runner.run(h)
            result.append(outs[self._exit_pos[i]])
            if self._hidden_pos[i] >= 0:
                h = outs[self._hidden_pos[i]]
        return result

    def close(self) -> None:
        """Stop the attached meter's sampling thread (if any); the runtime stays usable without energy."""
        meter, self.meter = self.meter, None
        if meter is not None and hasattr(meter, "stop"):
            meter.stop()

    @property
    def has_full_model(self) -> bool:
        return self._full is not None

    def modes(self) -> list[str]:
        """Modes this bundle can run."""
        return [m for m in MODES.names() if m != "cbnet" or "cbnet" in self.manifest]


MODES.register("early_exit", lambda rt, x, policy: rt.run_early_exit(x, policy))
MODES.register("full", lambda rt, x, policy: rt.run_full(x))


def load_bundle(path: str | Path, *, backend: str | None = None, threads: int | None = None,
                precision: str | None = None, verify_hashes: bool = True, batch_sizes: Sequence[int] | None = None,
                profile: Any = None, meter: Any = None, **backend_options: Any) -> Runtime:
    """Load and check a bundle, and open one backend session per segment file.

    Args:
        path: the bundle directory.
        backend: a registered backend name (``onnxruntime``; ``litert`` where installed).
        threads: backend threads; None reads ``EDGE_RUNTIME_THREADS``, else the backend's default.
        precision: which precision variant of the files to run (``fp32``, ``fp16``, ``int8``,
            ``int8_dynamic``); the bundle's thresholds re-calibrated for that variant are used. None: the
            profile's preferred precision when the bundle holds it for this backend, else ``fp32``.
        verify_hashes: check every file's sha256 against the manifest (default True).
        batch_sizes: load only the fixed-batch files of these sizes (each must exist); None loads all.
        profile: a device profile (object, name, YAML path, or ``"auto"`` to detect); None uses
            ``EDGE_RUNTIME_PROFILE`` if set. Its preferred backend and threads apply unless
            ``backend``/``threads`` are given (``EDGE_RUNTIME_THREADS`` also wins over the profile).
        meter: an energy meter (object, or a spec such as ``"auto"``, ``"estimate"``,
            ``"powercap"``, ``"ina219:bus=1,shunt_ohms=0.1"``); started and attached as
            :attr:`Runtime.meter` so every result carries ``energy_j`` and ``energy_source``.
            Stop it with :meth:`Runtime.close`.

    Raises:
        BundleError: the bundle is missing, malformed, tampered with or unsupported.

    Example:
        >>> rt = load_bundle("out/tiny_cnn")                # doctest: +SKIP
        >>> rt.infer(np.zeros((2, 1, 16, 16), np.float32)).exit_index   # doctest: +SKIP
    """
    bundle = read_bundle(path, verify_hashes=verify_hashes)
    prof = _resolve_profile(profile)
    if threads is None:
        threads = _env.default_threads()
    if threads is None and prof is not None:
        threads = prof.threads
    if backend is None:
        backend = prof.backend if prof is not None else "onnxruntime"
    be = create_backend(backend, threads=threads, **backend_options)
    if precision is None:
        held = {(fmt, p) for fmt, p, _ in bundle.variants()}
        wanted = prof.precision if prof is not None else "fp32"
        precision = wanted if (be.file_format, wanted) in held else "fp32"
    rt = Runtime(bundle, be, precision=precision, batch_sizes=batch_sizes)
    rt.profile = prof
    if meter is not None:
        from edge_runtime.meters import create_meter

        rt.meter = create_meter(meter, profile=prof).start()
    return rt


def _resolve_profile(profile: Any) -> Any:
    """A DeviceProfile, or None when no profile was asked for (and ``EDGE_RUNTIME_PROFILE`` is unset)."""
    from edge_runtime import profiles

    if profile is None and _env.profile_name() is None:
        return None
    if profile == "auto":
        return profiles.get_profile(profiles.detect_profile().name)
    return profiles.resolve_profile(profile)


def simulate_exits(exit_outputs: Sequence[np.ndarray], policy: ExitPolicy) -> np.ndarray:
    """Exit index per sample that ``policy`` would choose, from precomputed outputs of all exits.

    Uses the same per-exit ``decide`` calls (and state handling) as the executor, so
    calibration and reports agree with what the device does.
    """
    n = exit_outputs[0].shape[0]
    exit_index = np.full(n, len(exit_outputs) - 1, dtype=np.int64)
    alive = np.arange(n)
    state = policy.start(n)
    for i, out in enumerate(exit_outputs[:-1]):
        leave = np.asarray(policy.decide(i, out[alive], state), dtype=bool)
        exit_index[alive[leave]] = i
        keep = ~leave
        alive = alive[keep]
        state = {k: v[keep] for k, v in state.items()}
        if alive.size == 0:
            break
    return exit_index
