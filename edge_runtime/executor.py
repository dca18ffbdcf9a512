"""The executor: run exported graphs on named tensors, and the one early-exit decision loop.

:class:`GraphRunner` runs one graph (a segment, the one-graph model, a method's part) from its files: a
dynamic-batch file runs any batch at once, fixed-batch files run a batch as chunks of the best-fitting size.

:func:`decide_exits` is the shrinking-batch loop, written once: after each segment the exit policy decides
per sample from that segment's outputs, and only the samples still running go into the next segment,
carrying every named hidden tensor of the cut (several tensors cross a cut when the model needs them:
hidden states and an attention mask, a skip connection). The device runs it on real segments
(:meth:`edge_runtime.runtime.Runtime.infer`); calibration and reports run the *same* loop on outputs
computed beforehand (:func:`simulate_exits`), so what they predict is what the device does.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_runtime.backends import Session
from edge_runtime.errors import BackendError, ConfigError
from edge_runtime.manifest import EXIT_OUTPUT
from edge_runtime.policies import ExitPolicy

Tensors = dict[str, np.ndarray]
#: ``run_segment(i, feeds, alive) -> outputs``: segment i's named outputs for the samples still running
#: (``feeds``: the named tensors it may read; ``alive``: their row indices in the original batch)
SegmentFn = Callable[[int, Tensors, np.ndarray], Tensors]
#: ``on_exit(rows, exit_index, outputs, seconds)``: called as soon as samples leave (their rows in the batch,
#: the exit, their answering ``exit`` outputs, seconds since the call started)
OnExit = Callable[[np.ndarray, int, np.ndarray, float], None]


class GraphRunner:
    """Runs one graph from its files (one session per file) on named inputs, returning named outputs.

    Args:
        sessions: the graph's loaded files (one dynamic-batch file, and/or fixed-batch files).
        name: what to call the graph in errors.
    """

    def __init__(self, sessions: Sequence[Session], name: str) -> None:
        self.name = name
        dynamic = [s for s in sessions if s.batch_size is None]
        self._dynamic = dynamic[0] if dynamic else None
        self._fixed = sorted((s for s in sessions if s.batch_size is not None), key=lambda s: s.batch_size or 0)
        first = self._dynamic or self._fixed[0]
        self.input_names = list(first.input_names)
        self.output_names = list(first.output_names)

    def run(self, feeds: Mapping[str, np.ndarray]) -> Tensors:
        """Run on ``feeds`` (every graph input by name; extra entries are ignored); outputs by name.

        Raises:
            BackendError: the backend failed, or an output does not have one row per input row (every output of a
                graph is batch-first: a graph answering other rows must not mix samples up).
        """
        inputs = {k: feeds[k] for k in self.input_names}
        outs = self._dynamic.run(inputs) if self._dynamic is not None else self._run_chunked(inputs)
        if inputs:
            n = next(iter(inputs.values())).shape[0]
            for name, out in zip(self.output_names, outs):
                if out.ndim == 0 or out.shape[0] != n:
                    raise BackendError(f"output {name!r} has shape {tuple(out.shape)}; expected {n} row(s), one per "
                                       "input sample", field=self.name)
        return dict(zip(self.output_names, outs))

    def run_one(self, x: np.ndarray) -> np.ndarray:
        """A single-input graph's first output (e.g. a method's part)."""
        return self.run({self.input_names[0]: x})[self.output_names[0]]

    def _run_chunked(self, inputs: Tensors) -> list[np.ndarray]:
        n = next(iter(inputs.values())).shape[0]
        pieces: list[list[np.ndarray]] = []
        start = 0
        while start < n:  # greedy: the largest file that fits what is left, else the smallest (padded)
            left = n - start
            fitting = [s for s in self._fixed if (s.batch_size or 0) <= left]
            session = fitting[-1] if fitting else self._fixed[0]
            b = int(session.batch_size or 0)
            real = min(b, left)
            chunk = {}
            for k, v in inputs.items():
                part = v[start:start + b]
                if real < b:  # pad the last chunk; padded rows are dropped below
                    part = np.concatenate([part, np.zeros((b - real,) + part.shape[1:], dtype=part.dtype)])
                chunk[k] = part
            start += b
            outs = session.run(chunk)
            pieces.append([o[:real] for o in outs])
        return [np.concatenate([p[k] for p in pieces]) for k in range(len(pieces[0]))]


@dataclass
class ExitRun:
    """What :func:`decide_exits` returns.

    Attributes:
        exit_index: the exit that answered each sample, (N,).
        outputs: the answering exit's ``exit`` output per sample, (N, ...).
        segment_latency_s: wall time in each segment (run + decision), (segments,); 0 where no sample went.
        segment_batch_size: how many samples entered each segment, (segments,).
        sample_latency_s: seconds from the call's start until each sample was answered, (N,).
        latency_s: wall time of the whole loop.
        extra_outputs: other named outputs of the answering exit, per sample, when asked for (``keep``).
    """

    exit_index: np.ndarray
    outputs: np.ndarray
    segment_latency_s: np.ndarray
    segment_batch_size: np.ndarray
    sample_latency_s: np.ndarray
    latency_s: float
    extra_outputs: Tensors = field(default_factory=dict)


def _read(outs: Tensors, reads: tuple[str, ...], i: int, policy: Any) -> Tensors:
    """The outputs of segment ``i`` a policy reads beyond ``exit``; a missing one is a ConfigError naming it."""
    try:
        return {k: outs[k] for k in reads}
    except KeyError:
        missing = [k for k in reads if k not in outs]
        raise ConfigError(f"policy {type(policy).__name__} reads output(s) {missing}; segment {i} answers "
                          f"{sorted(outs)}") from None


def decide_exits(run_segment: SegmentFn, num_segments: int, inputs: Mapping[str, np.ndarray], policy: ExitPolicy,
                 *, carry: Sequence[Sequence[str]] | None = None, on_exit: OnExit | None = None,
                 keep: Sequence[str] = ()) -> ExitRun:
    """The shrinking-batch early-exit loop (the one decision loop of the project).

    Args:
        run_segment: runs segment i for the samples still running (see :data:`SegmentFn`).
        num_segments: how many segments (= exits); the last answers every remaining sample.
        inputs: the model's named inputs, batch axis first.
        policy: decides per sample after each non-final segment (``policy.reads`` names the outputs it reads:
            ``("exit",)`` passes the ``exit`` array, more names pass a dict).
        carry: per segment, the names of the tensors that must stay available after it (hidden outputs and
            model inputs later segments read); None keeps every output and every model input.
        on_exit: called as soon as samples leave (the daemon answers each request from here).
        keep: other output names of the answering exit to collect per sample (``ExitRun.extra_outputs``).

    Example:
        >>> from edge_runtime.policies import create_policy
        >>> outs = [np.array([[9., 0.], [0., 0.]]), np.array([[0., 9.], [0., 9.]])]
        >>> run = decide_exits(lambda i, feeds, alive: {"exit": outs[i][alive]}, 2, {"x": np.zeros((2, 1))},
        ...                    create_policy("confidence", 2, 0.9))
        >>> run.exit_index.tolist()
        [0, 1]
    """
    n = int(next(iter(inputs.values())).shape[0])
    last = num_segments - 1
    seg_latency = np.zeros(num_segments, dtype=np.float64)
    seg_batch = np.zeros(num_segments, dtype=np.int64)
    # allocated at the first exit that answers only part of the batch (a batch answered whole needs no copies)
    exit_index: np.ndarray | None = None
    sample_latency: np.ndarray | None = None
    answers: np.ndarray | None = None
    extras: Tensors = {}
    reads = tuple(getattr(policy, "reads", (EXIT_OUTPUT,)))
    whole = reads == (EXIT_OUTPUT,)
    alive = _rows(n)
    state = policy.start(n)
    feeds: Tensors = inputs if type(inputs) is dict else dict(inputs)
    clock = time.perf_counter
    start = clock()
    for i in range(num_segments):
        t0 = clock()
        outs = run_segment(i, feeds, alive)
        exit_out = outs[EXIT_OUTPUT]
        m = alive.shape[0]
        seg_batch[i] = m
        leave: Any = None
        if i == last:
            n_leave = m
        elif m == 1:  # one sample: a plain bool, no mask (its only outcomes are "nobody" and "everyone")
            n_leave = int(policy.decide_one(i, exit_out if whole else _read(outs, reads, i, policy), state))
        else:
            leave = policy.decide(i, exit_out if whole else _read(outs, reads, i, policy), state)
            if type(leave) is not np.ndarray or leave.dtype != np.bool_:
                leave = np.asarray(leave, dtype=bool)
            n_leave = int(np.count_nonzero(leave))
        t1 = clock()
        seg_latency[i] = t1 - t0
        if n_leave == 0:
            pass
        elif n_leave == m and exit_index is None:  # the whole batch answers here, nobody left before
            exit_index = np.empty(n, dtype=np.int64)
            exit_index.fill(i)
            sample_latency = np.empty(n, dtype=np.float64)
            sample_latency.fill(t1 - start)
            answers = exit_out
            for k in keep:
                extras[k] = outs[k]
            if on_exit is not None:
                on_exit(alive, i, exit_out, t1 - start)
            break
        else:
            if exit_index is None:
                exit_index = np.full(n, last, dtype=np.int64)
                sample_latency = np.zeros(n, dtype=np.float64)
            assert sample_latency is not None
            if answers is None:
                answers = np.empty((n,) + exit_out.shape[1:], dtype=exit_out.dtype)
            sel = slice(None) if leave is None else leave
            gone = alive[sel]
            answers[gone] = exit_out[sel]
            exit_index[gone] = i
            sample_latency[gone] = t1 - start
            for k in keep:
                if k not in extras:
                    extras[k] = np.empty((n,) + outs[k].shape[1:], dtype=outs[k].dtype)
                extras[k][gone] = outs[k][sel]
            if on_exit is not None:
                on_exit(gone, i, exit_out[sel], t1 - start)
            if n_leave == m:
                break
        names = carry[i] if carry is not None else None
        nxt = {k: v for k, v in outs.items() if k != EXIT_OUTPUT and (names is None or k in names)}
        for k, v in feeds.items():
            if k in inputs and k not in nxt and (names is None or k in names):
                nxt[k] = v
        if n_leave:
            stay = ~leave
            alive = alive[stay]
            state = {k: v[stay] for k, v in state.items()}
            nxt = {k: v[stay] for k, v in nxt.items()}
        feeds = nxt
    assert answers is not None and exit_index is not None and sample_latency is not None
    return ExitRun(exit_index, answers, seg_latency, seg_batch, sample_latency, clock() - start, extras)


_ROWS = np.arange(0)


def _rows(n: int) -> np.ndarray:
    """Row indices 0..n-1 (a read-only view of one shared array, grown as needed)."""
    global _ROWS
    if _ROWS.shape[0] < n:
        _ROWS = np.arange(max(n, 2 * _ROWS.shape[0], 64))
        _ROWS.flags.writeable = False
    return _ROWS[:n]


def simulate_exits(exit_outputs: Sequence[Any], policy: ExitPolicy) -> np.ndarray:
    """Exit index per sample that ``policy`` would choose, from every exit's outputs computed beforehand.

    Runs :func:`decide_exits` — the device's own loop — over the precomputed outputs, so calibration and
    reports agree with what the device does.

    Args:
        exit_outputs: per exit, the ``exit`` array (N, ...) or a dict of named outputs (for policies that read
            more than ``exit``).
        policy: the policy to simulate.
    """
    per_exit = [o if isinstance(o, Mapping) else {EXIT_OUTPUT: o} for o in exit_outputs]
    n = int(per_exit[0][EXIT_OUTPUT].shape[0])

    def run_segment(i: int, feeds: Tensors, alive: np.ndarray) -> Tensors:
        return {k: np.asarray(v)[alive] for k, v in per_exit[i].items()}

    return decide_exits(run_segment, len(per_exit), {"_rows": np.zeros((n, 0))}, policy, carry=[()] * len(per_exit)
                        ).exit_index
