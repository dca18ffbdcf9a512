"""The inference-mode interface and registry: one plug-in per way of running a bundle.

A mode says whether a bundle supports it, runs a checked batch on a :class:`~edge_runtime.runtime.Runtime`
and returns an :class:`InferenceResult`; it may add lines to ``inspect``, rows to ``bench`` and targets to
the report. ``early_exit`` and ``full`` are modes like any other (``edge_runtime/modes/``); a paper method
adds its own from its folder under ``edge_runtime/methods/`` — nothing shared names it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from edge_runtime.bundle import Bundle
from edge_runtime.executor import ExitRun, GraphRunner, OnExit, Tensors
from edge_runtime.manifest import GraphSpec, InputSpec, Manifest
from edge_runtime.policies import ExitPolicy
from edge_runtime.registry import Registry


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
        mode: the registered mode that produced it.
        energy_j: energy attributed to the call, when a meter is attached.
        energy_source: ``measured:<meter>`` or ``estimated:<profile>`` when energy_j is set.
        sample_energy_j: energy per sample, when a meter is attached: each segment's energy is
            shared by the samples that entered it (they sum to ``energy_j``).
        segment_energy_j: energy per segment, when a meter is attached.
        part_latency_s: wall time per named part, for modes that run a method's parts rather than
            segments; None otherwise.
        info: a mode's own per-call facts (JSON-ready), e.g. the fraction answered by a converted path.
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
    info: dict[str, Any] = field(default_factory=dict)

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
        out: dict[str, Any] = {
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
        if self.info:
            out["info"] = dict(self.info)
        return out


class RuntimeView(Protocol):
    """What a mode may use of the runtime it runs on (:class:`edge_runtime.runtime.Runtime` provides it)."""

    bundle: Bundle
    manifest: Manifest
    name: str
    labels: list[str]
    num_exits: int
    default_policy: ExitPolicy

    @property
    def input_spec(self) -> InputSpec: ...

    @property
    def full_model_runner(self) -> GraphRunner | None: ...

    def decide(self, feeds: Tensors, policy: ExitPolicy, *, on_exit: OnExit | None = None) -> ExitRun: ...

    def open_graph(self, graph: GraphSpec, field: str) -> GraphRunner: ...

    def mode_state(self, name: str, factory: Callable[[], Any]) -> Any: ...

    def modes(self) -> list[str]: ...


#: a report target: ``check(results) -> {"status": PASS|MISS|N/A, "value", "goal", "detail"}``
TargetCheck = Callable[[dict[str, Any]], dict[str, Any]]


class Mode(ABC):
    """A way of running a bundle. Subclass, set :attr:`name`, implement :meth:`run`, and register an instance
    with :func:`register_mode` (from a module under ``edge_runtime/modes/`` or ``edge_runtime/methods/``).

    Attributes:
        name: the registry name (``early_exit``, ``full``, ...); what ``--mode`` and the API take.
        description: one line for ``inspect`` and the CLI help.
        uses_policy: whether the exit policy and thresholds apply to this mode.
    """

    name: str = ""
    description: str = ""
    uses_policy: bool = False
    #: whether the daemon hands whole JSON requests of this mode to :meth:`serve_request` (a generative mode
    #: whose request is not a tensor batch); False: requests are decoded as tensors and micro-batched
    handles_requests: bool = False
    #: whether the mode generates sequences from a prompt (:meth:`generate`, ``Runtime.generate``)
    generates: bool = False

    def unsupported(self, manifest: Manifest) -> str | None:
        """Why this bundle cannot run in this mode, or None when it can (default: every bundle can)."""
        return None

    @abstractmethod
    def run(self, runtime: RuntimeView, feeds: Tensors, policy: ExitPolicy | None, *,
            on_exit: OnExit | None = None) -> InferenceResult:
        """Run a checked batch (named model inputs). ``on_exit(rows, exit, outputs, t)`` must be called for
        every sample once it has its answer (a mode that answers all at once calls it once at the end)."""

    def describe(self, manifest: Manifest) -> list[str]:
        """Lines ``edge-runtime inspect`` prints for a bundle that supports this mode."""
        return []

    def bench_rows(self, ctx: Any) -> list[Any]:
        """Extra rows ``edge-runtime bench`` measures for this mode
        (:class:`edge_runtime.bench.configs.BenchConfig`)."""
        return []

    def targets(self) -> dict[str, TargetCheck]:
        """Report targets this mode adds (name -> check over results.json)."""
        return {}

    def serve_request(self, runtime: RuntimeView, doc: dict[str, Any]) -> dict[str, Any]:
        """Answer one KServe v2 JSON request (the parsed body) when :attr:`handles_requests` is set; returns the
        JSON response body. Raise :class:`edge_runtime.errors.InputError` (or the daemon's ``RequestError``) for
        a bad request: the daemon turns it into a 4xx naming the field."""
        raise NotImplementedError(f"mode {self.name!r} does not answer requests itself")

    def generate(self, runtime: RuntimeView, prompt: Any, **options: Any) -> Any:
        """Generate from ``prompt`` when :attr:`generates` is set (``Runtime.generate`` delegates here); the
        options and the result are the mode's own (e.g. a language model's text, tokens and speed)."""
        raise NotImplementedError(f"mode {self.name!r} does not generate")

    def register_commands(self, sub: Any) -> None:  # noqa: B027 - optional hook: most modes add no command
        """Add this mode's own ``edge-runtime`` subcommands (``sub`` is argparse's subparsers object)."""


#: inference modes: name -> :class:`Mode` instance (built-ins in edge_runtime/modes/, methods' in edge_runtime/methods/)
MODES: Registry[Mode] = Registry("inference mode", plugins=("edge_runtime.modes", "edge_runtime.methods"))


def register_mode(cls: type[Mode]) -> type[Mode]:
    """Class decorator: register one instance of a :class:`Mode` subclass under its ``name``."""
    MODES.register(cls.name, cls())
    return cls
