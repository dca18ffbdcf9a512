"""The on-device runtime: load a bundle, check inputs, and run it in one of its modes.

:func:`load_bundle` reads and checks a bundle and opens one backend session per segment file;
:meth:`Runtime.infer` checks a batch against the manifest's inputs and hands it to a registered
:class:`~edge_runtime.modes.Mode` (``early_exit`` by default: the shrinking-batch executor). A mode's own
state (a method's extra sessions) is kept per runtime through :meth:`Runtime.mode_state`. Nothing here
imports torch.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime import _env, profiles
from edge_runtime.backends import FORMAT_BACKENDS, Backend, Session, create_backend
from edge_runtime.backends.base import check_threads
from edge_runtime.bundle import Bundle, BundleFile, read_bundle
from edge_runtime.errors import BundleError, ConfigError, EdgeRuntimeError, InputError
from edge_runtime.executor import ExitRun, GraphRunner, OnExit, Tensors, decide_exits, simulate_exits
from edge_runtime.manifest import EXIT_OUTPUT, SCORE_OUTPUT, GraphSpec, InputSpec, Manifest
from edge_runtime.meters import create_meter
from edge_runtime.modes import MODES, InferenceResult, Mode
from edge_runtime.policies import POLICIES, ExitPolicy, ScorePolicy, create_policy
from edge_runtime.registry import UnknownNameError
from edge_runtime.text import TextBatch, TextEncoder

__all__ = ["MODES", "InferenceResult", "Runtime", "load_bundle", "simulate_exits"]


class Runtime:
    """A loaded bundle, ready to infer. Build one with :func:`load_bundle`.

    Example:
        >>> rt = load_bundle("out/tiny_cnn", threads=1)          # doctest: +SKIP
        >>> res = rt.infer(x)                                    # doctest: +SKIP
        >>> res.predictions, res.exit_index                      # doctest: +SKIP
    """

    def __init__(self, bundle: Bundle, backend: Backend, *, precision: str = "fp32",
                 batch_sizes: Sequence[int] | None = None, check_range: bool = True) -> None:
        self.bundle = bundle
        #: refuse model-ready inputs outside the range the input spec's raw range maps to (raw data fed unprocessed)
        self.check_range = check_range
        self.backend = backend
        self.precision = precision
        self.batch_sizes = None if batch_sizes is None else tuple(batch_sizes)
        #: ``format/precision`` of the files this runtime runs (key of ``policy.variants``)
        self.variant = f"{backend.file_format}/{precision}"
        m = bundle.manifest
        self.manifest: Manifest = m
        self.name: str = m.name
        self.labels: list[str] = list(m.labels)
        self.num_exits = m.num_exits
        self.inputs: tuple[InputSpec, ...] = m.inputs
        self.meter: Any = None  # an energy meter (see edge_runtime.meters), attached by the caller
        self.profile: Any = None  # the DeviceProfile applied by load_bundle, if any
        self._mode_state: dict[str, Any] = {}
        self._supported: dict[str, Mode] = {}  # modes checked against this bundle (Runtime.mode)
        self.segments = [self.open_graph(seg, f"segments.{seg.index}") for seg in m.segments]
        later: set[str] = set()
        carry: list[tuple[str, ...]] = []
        for seg in reversed(m.segments):  # names each cut must keep: what later segments read
            carry.append(tuple(sorted(later)))
            later |= set(seg.input_names)
        self._carry = list(reversed(carry))
        self._full: GraphRunner | None = None
        if m.full_model is not None and self._graph_files(m.full_model, "full_model") is not None:
            self._full = self.open_graph(m.full_model, "full_model")
        #: (policy name, kwargs) whose score every non-final segment file of this variant computes in its graph;
        #: used at fp32 only (the score was verified at fp32; a quantized variant's thresholds were calibrated on the
        #: numpy score of its own logits, so it decides on that)
        self.in_graph_score = _in_graph_score(m, self.segments) if precision == "fp32" else None
        self.default_policy = self._bundle_policy()
        self._default_mode = self.default_mode
        self._policy_mode = "early_exit" if "early_exit" in self.modes() else self._default_mode

    def _bundle_policy(self) -> ExitPolicy:
        """The manifest's policy; a bundle whose policy cannot be built is refused naming the field."""
        spec, where = self.manifest.policy, self.bundle.manifest_path
        try:
            POLICIES.get(spec.name)
        except UnknownNameError as exc:
            raise BundleError(str(exc), path=where, field="policy.name") from None
        try:
            return self.make_policy()
        except ConfigError as exc:
            field = "policy.thresholds" if "threshold" in str(exc) else "policy.kwargs"
            raise BundleError(f"the bundle's policy cannot be built: {exc}", path=where, field=field) from None

    def _graph_files(self, graph: GraphSpec, field: str) -> list[BundleFile] | None:
        """The graph's files for this backend, precision and batch sizes; None when it has none."""
        try:
            return self.bundle.files_for(graph, field, self.backend.file_format, self.precision, self.batch_sizes)
        except BundleError:
            return None

    @property
    def input_spec(self) -> InputSpec:
        """The first (for most bundles: the only) model input."""
        return self.inputs[0]

    def open_graph(self, graph: GraphSpec, field: str) -> GraphRunner:
        """Open a graph's files for this runtime's backend, precision and batch sizes.

        Raises:
            BundleError: the graph has no file of this format/precision (names ``field``).
        """
        files = self.bundle.files_for(graph, field, self.backend.file_format, self.precision, self.batch_sizes)
        sessions = []
        for f in files:
            data = self.bundle.read_file(f, f.field)  # read once: the hashed bytes are the loaded bytes
            try:
                session = self.backend.load_bytes(data, source=f.path)
            except BundleError as exc:
                if exc.field is not None:
                    raise
                raise type(exc)(exc.detail, path=exc.path, field=f.field) from None
            _check_session(graph, field, f, session)
            sessions.append(session)
        return GraphRunner(sessions, field)

    def mode_state(self, name: str, factory: Callable[[], Any]) -> Any:
        """A mode's per-runtime state (e.g. its parts' sessions), created by ``factory`` on first use."""
        if name not in self._mode_state:
            self._mode_state[name] = factory()
        return self._mode_state[name]

    @property
    def full_model_runner(self) -> GraphRunner | None:
        """The one-graph model, when the bundle has it for this backend and precision."""
        return self._full

    @property
    def has_full_model(self) -> bool:
        return self._full is not None

    # -- policies -------------------------------------------------------------------------
    def make_policy(self, policy: str | ExitPolicy | None = None, thresholds: Any = None,
                    **kwargs: Any) -> ExitPolicy:
        """The bundle's policy, or another by name, with optional threshold overrides."""
        if isinstance(policy, ExitPolicy):
            if thresholds is not None:
                raise ConfigError("give thresholds either inside the policy object or as 'thresholds', not both")
            return policy
        spec = self.manifest.policy
        if policy is None or policy == spec.name:
            name = spec.name
            kw = {**spec.kwargs, **kwargs}
            thr = thresholds if thresholds is not None else spec.thresholds_for(self.variant)
        else:
            name, kw, thr = policy, kwargs, thresholds
        pol = create_policy(name, self.num_exits, thr, **kw)
        if isinstance(pol, ScorePolicy) and self.in_graph_score == (name, pol.config()):
            pol.read_score_output()  # the segments compute this very score: compare one number per sample
        return pol

    # -- input ----------------------------------------------------------------------------
    def check_input(self, x: Any) -> Any:
        """Validate a batch against the manifest's inputs; returns it contiguous, in the form it came in.

        ``x`` is an array for a single-input bundle (an array comes back), or a mapping input name -> array
        (a dict comes back).

        Raises:
            InputError: wrong type, names, rank, shape, dtype, batch sizes, or NaN/Inf values.
        """
        feeds = self.feeds(x)
        return feeds if isinstance(x, Mapping) else feeds[self.inputs[0].name]

    def feeds(self, x: Any) -> Tensors:
        """Validate a batch (see :meth:`check_input`) and return it as named model inputs.

        Raises:
            InputError: wrong type, names, rank, shape, dtype, batch sizes, or NaN/Inf values.
        """
        if type(x) is np.ndarray and len(self.inputs) == 1:  # the common case, checked with the least work
            spec = self.inputs[0]
            arr = _check_one(spec, x, False)
            pre = spec.preprocessing
            if self.check_range and pre is not None and pre.input_range is not None:
                pre.check_model_ready(arr, "input")   # raw data fed as model-ready: refused, not answered
            return {spec.name: arr}
        if isinstance(x, Mapping):
            unknown = sorted(set(x) - {s.name for s in self.inputs})
            missing = [s.name for s in self.inputs if s.name not in x]
            if unknown or missing:
                raise InputError(f"inputs: expected {[s.name for s in self.inputs]}"
                                 + (f"; missing {missing}" if missing else "")
                                 + (f"; unknown {unknown}" if unknown else ""))
            items = [(s, x[s.name]) for s in self.inputs]
        else:
            if len(self.inputs) != 1:
                raise InputError(f"this bundle takes {len(self.inputs)} inputs {[s.name for s in self.inputs]}; "
                                 "pass a mapping name -> array")
            items = [(self.inputs[0], x)]
        out: Tensors = {}
        n = None
        for spec, arr in items:
            out[spec.name] = _check_one(spec, arr, len(self.inputs) > 1)
            if self.check_range and spec.preprocessing is not None:
                spec.preprocessing.check_model_ready(out[spec.name], f"input {spec.name!r}")
            if n is None:
                n = arr.shape[0]
            elif arr.shape[0] != n:
                raise InputError(f"input {spec.name!r} has batch size {arr.shape[0]}; {self.inputs[0].name!r} has {n}")
        return out

    def preprocess(self, raw: np.ndarray) -> np.ndarray:
        """Apply the manifest's preprocessing (scale, per-channel or per-feature mean/std) to raw inputs of the first
        input, after checking they lie in its declared raw range.

        Raises:
            InputError: raw values outside the input spec's ``input_range`` (or not numbers), or a batch of another
                rank or channel count than the input's shape.
        """
        pre = self.input_spec.preprocessing
        dtype = self.input_spec.np_dtype
        raw = np.asarray(raw)
        if raw.dtype.kind not in "biuf":
            raise InputError(f"raw input must hold numbers, got dtype {raw.dtype}")
        want = self.input_spec.shape
        if raw.ndim != len(want) or (want[1:] and want[1] is not None and raw.shape[1] != want[1]):
            dims = ", ".join("?" if d is None else str(d) for d in want[1:])
            raise InputError(f"raw input: expected shape (N{', ' + dims if dims else ''}) (channels on axis 1), "
                             f"got {tuple(raw.shape)}")
        if pre is None:
            return raw.astype(dtype)
        pre.check_raw(raw, "raw input")
        return pre.apply(raw, dtype)

    # -- inference ------------------------------------------------------------------------
    def modes(self) -> list[str]:
        """Modes this bundle can run."""
        return [name for name in MODES.ordered() if MODES.get(name).unsupported(self.manifest) is None]

    def mode(self, name: str) -> Mode:
        """A registered mode this bundle supports.

        Raises:
            ConfigError: unknown mode, or one this bundle does not support (says why).
        """
        mode = self._supported.get(name)
        if mode is not None:
            return mode
        mode = MODES.get(name)
        why = mode.unsupported(self.manifest)
        if why is not None:
            raise ConfigError(f"{self.bundle.root}: bundle {self.name!r} cannot run mode {name!r}: {why}; "
                              f"its modes: {', '.join(self.modes())}")
        self._supported[name] = mode
        return mode

    @property
    def default_mode(self) -> str:
        """The mode :meth:`infer` runs when none is asked for: the bundle's recommended one (its ``deployment``
        record) when this runtime runs the recommended files, else ``early_exit``, else (a bundle that cannot run
        early exit, e.g. a diffusion or LM bundle) the first mode it supports."""
        dep = self.manifest.deployment
        modes = self.modes()
        if dep is not None and dep.variant == self.variant and dep.mode in modes:
            return dep.mode
        return "early_exit" if "early_exit" in modes or not modes else modes[0]

    def resolve_mode(self, mode: str | None, policy_given: bool = False) -> str:
        """``mode``, or when None: :attr:`default_mode`, or ``early_exit`` when a policy or thresholds were given (and
        the bundle can run it)."""
        if mode is not None:
            return mode
        return self._policy_mode if policy_given else self._default_mode

    def infer(self, x: Any, *, policy: str | ExitPolicy | None = None, thresholds: Any = None,
              mode: str | None = None, on_exit: OnExit | None = None) -> InferenceResult:
        """Run a batch in a mode (default: the bundle's recommended configuration, :attr:`default_mode`; early exit,
        each sample leaving at the first exit its policy accepts, when a policy or thresholds are given).

        Args:
            x: model-ready input, shape (N, *input.shape[1:]), the manifest's dtype; or a mapping
                input name -> array for a bundle with several inputs.
            policy: a policy name or object; None uses the bundle's calibrated policy.
            thresholds: per-exit thresholds overriding the policy's.
            mode: a registered mode the bundle supports (``early_exit``, ``full``, a method's own); None: the
                default above.
            on_exit: ``on_exit(rows, exit, outputs, seconds)`` as soon as samples have their answer.

        Raises:
            InputError: the input does not match the bundle's input spec.
            ConfigError: unknown policy/mode or bad thresholds.
        """
        feeds = self.feeds(x)
        handler = self.mode(self.resolve_mode(mode, policy is not None or thresholds is not None))
        if policy is None and thresholds is None:
            pol: ExitPolicy | None = self.default_policy
        else:
            pol = self.make_policy(policy, thresholds)
        meter = self.meter
        if meter is None:
            return handler.run(self, feeds, pol, on_exit=on_exit)
        window = meter.start_window()
        result = handler.run(self, feeds, pol, on_exit=on_exit)
        meter.finish_window(window, result)
        return result

    def generate(self, prompt: Any, *, mode: str | None = None, **options: Any) -> Any:
        """Generate from ``prompt`` in a generative mode (default: the first one this bundle supports); the options
        and the result are the mode's (e.g. ``kangaroo``: ``max_new_tokens``, ``eta``, ``gamma``, ``on_token``).

        Raises:
            ConfigError: the bundle has no generative mode, or ``mode`` is not one it supports.
        """
        if mode is None:
            mode = next((n for n in self.modes() if MODES.get(n).generates), None)
            if mode is None:
                raise ConfigError(f"{self.bundle.root}: bundle {self.name!r} has no generative mode; "
                                  f"its modes: {', '.join(self.modes())}")
        handler = self.mode(mode)
        if not handler.generates:
            raise ConfigError(f"mode {mode!r} does not generate; use infer(..., mode={mode!r})")
        return handler.generate(self, prompt, **options)

    # -- text ---------------------------------------------------------------------------
    @property
    def text_encoder(self) -> TextEncoder:
        """The bundle's tokenizer with its manifest settings (loaded on first use).

        Raises:
            ConfigError: the bundle takes no text (no ``text`` section), or ``tokenizers`` is not installed.
        """
        spec = self.manifest.text
        if spec is None:
            raise ConfigError(f"{self.bundle.root}: bundle {self.name!r} takes no text (its inputs: "
                              f"{', '.join(f'{s.name} {s.dtype}' for s in self.inputs)})")
        path = dict(self.bundle.all_files())["text.tokenizer"].path
        return self.mode_state("text", lambda: TextEncoder.from_file(
            path, max_length=spec.max_length, padding=spec.padding, input_ids=spec.input_ids,
            attention_mask=spec.attention_mask))

    def encode_text(self, texts: Any, *, field: str = "text") -> TextBatch:
        """Tokenize texts into this bundle's model inputs (see :meth:`infer_text`)."""
        return self.text_encoder.encode(texts, field=field)

    def infer_text(self, texts: Any, **kwargs: Any) -> InferenceResult:
        """Classify a batch of texts: tokenized with the bundle's tokenizer (padded to the batch's longest text
        unless the bundle says otherwise), then :meth:`infer` (same keyword arguments). The result's
        ``info["truncated"]`` says, per text, whether it was cut at the manifest's ``max_length``.

        Raises:
            InputError: an empty text, bytes that are not UTF-8, not a list of strings.
            ConfigError: the bundle takes no text.

        Example:
            >>> rt = load_bundle("out/palbert_minilm")                        # doctest: +SKIP
            >>> rt.infer_text(["a small domesticated carnivore"]).predictions  # doctest: +SKIP
        """
        batch = self.encode_text(texts)
        result = self.infer(batch.feeds, **kwargs)
        result.info["truncated"] = batch.truncated.tolist()
        return result

    def sample(self, n: int, **kwargs: Any) -> Any:
        """Draw ``n`` samples from a generative bundle in its ``sample`` mode (a diffusion bundle: DDIM with
        per-step layer exits; keyword arguments ``steps``, ``seed``, ``threshold``, ``mode`` = ``early_exit`` |
        ``full``, ``cls``: :meth:`edge_runtime.methods.deediff.DiffusionSampler.sample`).

        Raises:
            ConfigError: the bundle cannot run the ``sample`` mode (says why).
        """
        return self.mode("sample").sample(self, n, **kwargs)  # type: ignore[attr-defined]

    def decide(self, feeds: Tensors, policy: ExitPolicy, *, on_exit: OnExit | None = None) -> ExitRun:
        """The shrinking-batch executor on this bundle's segments (checked inputs; use :meth:`infer`)."""
        return decide_exits(self._run_segment, len(self.segments), feeds, policy, carry=self._carry, on_exit=on_exit)

    def _run_segment(self, i: int, feeds: Tensors, alive: np.ndarray) -> Tensors:
        return self.segments[i].run(feeds)

    def exit_outputs(self, x: Any) -> list[np.ndarray]:
        """Every exit's ``exit`` output for every sample (runs all segments); for calibration and oracles."""
        return [outs[EXIT_OUTPUT] for outs in self.segment_outputs(x)]

    def segment_outputs(self, x: Any) -> list[Tensors]:
        """Every segment's named outputs (hidden tensors, ``exit`` and a head's extras) for every sample."""
        feeds = self.feeds(x)
        result = []
        for i, runner in enumerate(self.segments):
            outs = runner.run(feeds)
            result.append(outs)
            feeds = {**{k: v for k, v in feeds.items() if k in self._carry[i]},
                     **{k: v for k, v in outs.items() if k != EXIT_OUTPUT}}
        return result

    def close(self) -> None:
        """Stop the attached meter's sampling thread (if any); the runtime stays usable without energy."""
        meter, self.meter = self.meter, None
        if meter is not None and hasattr(meter, "stop"):
            meter.stop()


def _check_session(graph: GraphSpec, field: str, f: BundleFile, session: Session) -> None:
    """The loaded graph against its manifest record: every tensor the manifest names exists with that rank, fixed
    axes and dtype, and the file's batch size is what the manifest says (a graph's own batch size is never trusted:
    one declaring 10,000,000 made every call allocate that batch).

    Raises:
        BundleError: naming the file's field (batch size) or the graph's ``inputs``/``outputs`` field.
    """
    missing = sorted(set(graph.input_names) - set(session.input_names)) + \
        sorted(set(graph.output_names) - set(session.output_names) - {SCORE_OUTPUT})  # a file may lack the score
    if missing:
        raise BundleError(f"graph {f.path.name} has inputs {session.input_names} and outputs {session.output_names}; "
                          f"the manifest names {missing} too", path=f.path, field=field)
    if session.batch_size != f.batch_size:
        have = "a dynamic batch" if session.batch_size is None else f"batch size {session.batch_size}"
        want = "a dynamic batch (null)" if f.batch_size is None else str(f.batch_size)
        raise BundleError(f"the graph has {have}; the manifest says {want}", path=f.path, field=f.field)
    if session.tensors is None:
        return
    for kind, specs in (("input", graph.inputs), ("output", graph.outputs)):
        for spec in specs:
            got = session.tensors.get(spec.name)
            if got is None:
                continue
            fits = len(got.shape) == len(spec.shape) and all(
                g is None or w is None or g == w for g, w in zip(got.shape[1:], spec.shape[1:]))
            if not fits or got.dtype != spec.dtype:
                raise BundleError(f"{kind} {spec.name!r}: the graph declares {list(got.shape)} {got.dtype}, the "
                                  f"manifest {list(spec.shape)} {spec.dtype}", path=f.path, field=f"{field}.{kind}s")


def _in_graph_score(m: Manifest, runners: Sequence[GraphRunner]) -> tuple[str, dict[str, Any]] | None:
    """The (policy, kwargs) every non-final segment scores in its graph, when all of them do and agree."""
    found: list[tuple[str, dict[str, Any]]] = []
    for seg, runner in zip(m.segments[:-1], runners):
        spec = seg.extra.get("score")
        if not spec or SCORE_OUTPUT not in runner.output_names:
            return None
        found.append((spec["policy"], dict(spec["kwargs"])))
    return found[0] if found and all(f == found[0] for f in found) else None


def _check_one(spec: InputSpec, x: Any, named: bool) -> np.ndarray:
    sample = spec.sample_shape
    if type(x) is not np.ndarray and not isinstance(x, np.ndarray):
        raise InputError(f"{_what(spec, named)} must be a numpy array of shape {_expected(sample)}, "
                         f"got {type(x).__name__}")
    if x.ndim != len(sample) + 1:
        raise InputError(f"{_what(spec, named)} has rank {x.ndim} (shape {tuple(x.shape)}); expected rank "
                         f"{len(sample) + 1}, shape {_expected(sample)}")
    if x.shape[1:] != sample:
        for axis, (got, want) in enumerate(zip(x.shape[1:], sample), start=1):
            if want is not None and got != want:
                raise InputError(f"{_what(spec, named)} shape {tuple(x.shape)} does not match {_expected(sample)} "
                                 f"at axis {axis}")
    if x.shape[0] == 0:
        raise InputError(f"{_what(spec, named)} batch is empty")
    if x.dtype != spec.np_dtype:
        pre = spec.preprocessing
        if pre is not None and pre.input_dtype == str(x.dtype):
            raise InputError(f"{_what(spec, named)} dtype is {x.dtype}: raw data, the bundle takes {spec.dtype} after "
                             "its preprocessing; preprocess it (Runtime.preprocess, run --preprocess, the daemon's "
                             "preprocess parameter)")
        raise InputError(f"{_what(spec, named)} dtype is {x.dtype}; expected {spec.dtype} (convert with "
                         f"x.astype(np.{spec.dtype}))")
    if x.dtype.kind == "f" and not _all_finite(x):
        bad = int((~np.isfinite(x)).reshape(x.shape[0], -1).any(axis=1).sum())
        raise InputError(f"{_what(spec, named)} contains NaN or Inf values in {bad} sample(s)")
    return x if x.flags.c_contiguous else np.ascontiguousarray(x)


def _what(spec: InputSpec, named: bool) -> str:
    return f"input {spec.name!r}" if named else "input"


def _expected(sample: tuple[int | None, ...]) -> str:
    return "(N, " + ", ".join(str(d) for d in sample) + ")"


_ZEROS: dict[tuple[str, int], np.ndarray] = {}


def _all_finite(x: np.ndarray) -> bool:
    """Whether every value is finite. For float32/float64 one dot product with zeros decides it (x * 0 is 0 for a
    finite x and NaN for NaN or +-Inf, and NaN survives the sum): no temporary array of the input's size."""
    if x.dtype not in (np.float32, np.float64):
        return bool(np.isfinite(x).all())
    key = (x.dtype.char, x.size)
    zeros = _ZEROS.get(key)
    if zeros is None:
        if len(_ZEROS) >= 16:
            _ZEROS.clear()
        zeros = _ZEROS[key] = np.zeros(x.size, dtype=x.dtype)
    try:
        return math.isfinite(float(np.dot(x.reshape(-1), zeros)))
    except RuntimeWarning:  # warnings turned into errors: Inf * 0 raised "invalid value"
        return False


# a non-finite input makes the check above compute Inf * 0: expected, and reported as an InputError instead
warnings.filterwarnings("ignore", message="invalid value encountered in dot", category=RuntimeWarning,
                        module=__name__)


def load_bundle(path: str | Path, *, backend: str | None = None, threads: int | None = None,
                precision: str | None = None, verify_hashes: bool = True, batch_sizes: Sequence[int] | None = None,
                profile: Any = None, meter: Any = None, allow_unverified: bool = False,
                check_range: bool = True, **backend_options: Any) -> Runtime:
    """Load and check a bundle, and open one backend session per segment file.

    Args:
        path: the bundle directory.
        backend: a registered backend name (``onnxruntime``; ``litert`` where installed); None: the profile's,
            else the one running the bundle's recommended files (``deployment``) when installed, else onnxruntime.
        threads: backend threads; None reads ``EDGE_RUNTIME_THREADS``, else the backend's default.
        precision: which precision variant of the files to run (``fp32``, ``fp16``, ``int8``,
            ``int8_dynamic``); the bundle's thresholds re-calibrated for that variant are used. None: the
            profile's preferred precision when the bundle holds it for this backend, else the bundle's recommended
            one (``deployment``), else ``fp32``.
        verify_hashes: check every file's sha256 against the manifest (default True).
        batch_sizes: load only the fixed-batch files of these sizes (each must exist); None loads all.
        profile: a device profile (object, name, YAML path, or ``"auto"`` to detect); None uses
            ``EDGE_RUNTIME_PROFILE`` if set. Its preferred backend and threads apply unless
            ``backend``/``threads`` are given (``EDGE_RUNTIME_THREADS`` also wins over the profile).
        meter: an energy meter (object, or a spec such as ``"auto"``, ``"estimate"``,
            ``"powercap"``, ``"ina219:bus=1,shunt_ohms=0.1"``); started and attached as
            :attr:`Runtime.meter` so every result carries ``energy_j`` and ``energy_source``.
            Stop it with :meth:`Runtime.close`.
        allow_unverified: run a bundle whose export verification did not pass (``verification.passed: false``:
            its graphs disagreed with PyTorch beyond the tolerance); refused by default.
        check_range: refuse inputs outside the range the input spec declares (raw data fed as model-ready).

    Raises:
        BundleError: the bundle is missing, malformed, tampered with, unverified or unsupported.
        ConfigError: ``threads`` (or ``EDGE_RUNTIME_THREADS``) is not 1 .. the usable CPU cores.

    Example:
        >>> rt = load_bundle("out/tiny_cnn")                # doctest: +SKIP
        >>> rt.infer(np.zeros((2, 1, 16, 16), np.float32)).exit_index   # doctest: +SKIP
    """
    threads = check_threads(threads, "threads")
    bundle = read_bundle(path, verify_hashes=verify_hashes)
    if not bundle.manifest.verification.passed and not allow_unverified:
        raise BundleError("the bundle's export verification did not pass (its graphs disagreed with PyTorch beyond "
                          "the tolerance); pass allow_unverified=True (--allow-unverified) to run it anyway",
                          path=bundle.manifest_path, field="verification.passed")
    prof = _resolve_profile(profile)
    if threads is None:
        threads = check_threads(_env.default_threads(), "EDGE_RUNTIME_THREADS")
    if threads is None and prof is not None:
        threads = prof.threads
    dep = bundle.manifest.deployment  # the recommended files, when nothing else decides
    if backend is None:
        backend = prof.backend if prof is not None else FORMAT_BACKENDS.get(dep.format, "onnxruntime") \
            if dep is not None else "onnxruntime"
        try:
            be = create_backend(backend, threads=threads, **backend_options)
        except EdgeRuntimeError:  # the recommended backend is not installed here: the default one
            backend = "onnxruntime"
            be = create_backend(backend, threads=threads, **backend_options)
    else:
        be = create_backend(backend, threads=threads, **backend_options)
    if precision is None:
        held = {(fmt, p) for fmt, p, _ in bundle.variants()}
        wanted = prof.precision if prof is not None else \
            dep.precision if dep is not None and dep.format == be.file_format else "fp32"
        precision = wanted if (be.file_format, wanted) in held else "fp32"
    rt = Runtime(bundle, be, precision=precision, batch_sizes=batch_sizes, check_range=check_range)
    rt.profile = prof
    if meter is not None:
        rt.meter = create_meter(meter, profile=prof).start()
    return rt


def _resolve_profile(profile: Any) -> Any:
    """A DeviceProfile, or None when no profile was asked for (and ``EDGE_RUNTIME_PROFILE`` is unset)."""
    if profile is None and _env.profile_name() is None:
        return None
    if profile == "auto":
        return profiles.get_profile(profiles.detect_profile().name)
    return profiles.resolve_profile(profile)
