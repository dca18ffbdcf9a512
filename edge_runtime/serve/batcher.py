"""Micro-batching: gather concurrent requests into one shrinking-batch early-exit run.

Requests that share a mode and policy are concatenated into one batch (up to
``max_batch_size`` samples, waiting at most ``max_wait`` for company). The batch runs
through the request's mode (:meth:`edge_runtime.modes.Mode.run`), whose ``on_exit`` hook fires
as samples leave; a request is answered the moment its last sample has left, so easy
samples do not wait for hard ones in later segments (the shrinking batch of
BranchyNet-style early exit, applied across callers).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_runtime.policies import ExitPolicy
from edge_runtime.runtime import InferenceResult, Runtime
from edge_runtime.serve.codec import batch_feeds

log = logging.getLogger("edge_runtime.serve")


class Overloaded(Exception):
    """The model's queue is full; the caller should retry later (HTTP 503)."""


class Closed(Exception):
    """The batcher no longer accepts requests (its model was replaced or the daemon is stopping)."""


@dataclass
class Answer:
    """One request's answer: per sample exit, answering output, latency, energy."""

    exit_index: np.ndarray
    outputs: np.ndarray
    latency_s: np.ndarray
    queue_s: float
    batch_size: int
    energy_j: np.ndarray | None = None
    energy_source: str | None = None


@dataclass(eq=False)
class _Request:
    x: np.ndarray
    key: Hashable
    mode: str
    policy: ExitPolicy
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    enqueued: float
    n: int = 0
    remaining: int = 0
    cancelled: bool = False
    exit_index: np.ndarray = field(init=False)  # (n,), filled as samples leave
    outputs: np.ndarray | None = None  # (n, ...), allocated at the first exit any of its samples takes
    latency: np.ndarray = field(init=False)  # (n,)
    started: float = 0.0
    batch_size: int = 0

    def __post_init__(self) -> None:
        self.n = self.remaining = int(self.x.shape[0])
        self.exit_index = np.empty(self.n, dtype=np.int64)
        self.latency = np.empty(self.n, dtype=np.float64)


def _resolve(future: asyncio.Future, value: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


class MicroBatcher:
    """A worker thread that owns one :class:`Runtime` and serves its queue in micro-batches.

    Args:
        runtime: the loaded model (only this thread runs it).
        max_batch_size: most samples per run; 1 runs each request alone.
        max_wait_s: longest the oldest request waits for others to join.
        max_queue: most samples waiting; :meth:`submit` raises :class:`Overloaded` beyond it.
        on_batch: called after each run with ``(result, requests_in_batch)`` (metrics).
        after_batch: called after each run's answers went out with ``(x, result, requests, queued_samples)`` (the
            SLO controller and the accuracy monitor, :mod:`edge_runtime.serve.adaptive`); its errors are logged.

    Example:
        >>> b = MicroBatcher(rt, max_batch_size=32, max_wait_s=0.002, max_queue=256)   # doctest: +SKIP
        >>> answer = await b.submit(x, key=None, mode="early_exit", policy=rt.default_policy)  # doctest: +SKIP
    """

    def __init__(self, runtime: Runtime, *, max_batch_size: int, max_wait_s: float, max_queue: int,
                 on_batch: Callable[[InferenceResult, int], None] | None = None, name: str = "model",
                 after_batch: Callable[[np.ndarray, InferenceResult, list[Any], int], None] | None = None) -> None:
        self.runtime = runtime
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.on_batch = on_batch
        self.after_batch = after_batch
        self._queue: deque[_Request] = deque()
        self._queued = 0
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._work, name=f"batcher-{name}", daemon=True)
        self._thread.start()

    # -- caller side (event loop) -----------------------------------------------------------
    @property
    def queued_samples(self) -> int:
        return self._queued

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def submit(self, x: np.ndarray, *, key: Hashable, mode: str, policy: ExitPolicy) -> _Request:
        """Queue a checked input batch; returns the request (await ``request.future``).

        Raises:
            Overloaded: the queue already holds ``max_queue`` samples.
            Closed: the batcher is draining or stopped.
        """
        loop = asyncio.get_running_loop()
        req = _Request(x=x, key=key, mode=mode, policy=policy, loop=loop,
                       future=loop.create_future(), enqueued=time.perf_counter())
        with self._cond:
            if self._closed:
                raise Closed("model is being replaced or the daemon is stopping")
            if self._queued + req.n > self.max_queue:
                raise Overloaded(f"queue holds {self._queued} of {self.max_queue} samples")
            self._queue.append(req)
            self._queued += req.n
            self._cond.notify()
        return req

    def cancel(self, req: _Request) -> None:
        """Abandon a request (timeout, client gone): dropped from the queue if it has not started."""
        with self._cond:
            req.cancelled = True
            try:
                self._queue.remove(req)
            except ValueError:  # already taken into a batch; its answer is simply not awaited
                return
            self._queued -= req.n
            self._cond.notify()

    def close(self) -> None:
        """Stop accepting requests; the worker finishes what is queued, then exits."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the worker to finish the queue; True when it did."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # -- worker side ------------------------------------------------------------------------
    def _take(self) -> list[_Request] | None:
        """Block until a micro-batch is ready; None when closed and empty."""
        with self._cond:
            while True:
                while not self._queue:
                    if self._closed:
                        return None
                    self._cond.wait()
                head = self._queue[0]
                deadline = head.enqueued + self.max_wait_s
                while not self._closed and self.max_batch_size > 1 and not head.cancelled:
                    if sum(r.n for r in self._queue if r.key == head.key) >= self.max_batch_size:
                        break
                    left = deadline - time.perf_counter()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                if not head.cancelled:
                    break
            batch: list[_Request] = []
            rest: deque[_Request] = deque()
            total = 0
            for r in self._queue:
                if r.key == head.key and (not batch or total + r.n <= self.max_batch_size):
                    batch.append(r)
                    total += r.n
                    self._queued -= r.n
                else:
                    rest.append(r)
            self._queue = rest
            return batch

    def _work(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                self.runtime.close()  # this thread owned the runtime: stop its meter's sampling, if any
                return
            try:
                self._run(batch)
            except BaseException as exc:  # noqa: BLE001 - every waiting caller must hear about it
                log.exception("inference failed for a batch of %d request(s)", len(batch))
                for r in batch:
                    r.loop.call_soon_threadsafe(_resolve, r.future, None, exc)

    def _run(self, batch: list[_Request]) -> None:
        rt = self.runtime
        x = batch[0].x if len(batch) == 1 else np.concatenate([r.x for r in batch])
        n = x.shape[0]
        owner = np.repeat(np.arange(len(batch)), [r.n for r in batch])
        offset = np.cumsum([0] + [r.n for r in batch])
        meter = rt.meter
        started = time.perf_counter()
        for r in batch:
            r.started, r.batch_size = started, n

        def on_exit(idx: np.ndarray, exit_i: int, outs: np.ndarray, t: float) -> None:
            now = time.perf_counter()
            who = owner[idx]
            for j in np.unique(who):
                r = batch[j]
                sel = who == j
                rows = idx[sel] - offset[j]
                if r.outputs is None:
                    r.outputs = np.empty((r.n,) + outs.shape[1:], dtype=outs.dtype)
                r.outputs[rows] = outs[sel]
                r.exit_index[rows] = exit_i
                r.latency[rows] = now - r.enqueued
                r.remaining -= rows.shape[0]
                if r.remaining == 0 and meter is None:
                    self._answer(r)

        policy = batch[0].policy
        window = meter.start_window() if meter is not None else None
        feeds = batch_feeds(rt, x)
        result = rt.mode(batch[0].mode).run(rt, feeds, policy, on_exit=on_exit)
        if meter is not None:
            meter.finish_window(window, result)
            for j, r in enumerate(batch):
                energy = None if result.sample_energy_j is None else result.sample_energy_j[offset[j]:offset[j + 1]]
                self._answer(r, energy, result.energy_source)
        if self.on_batch is not None:
            self.on_batch(result, len(batch))
        if self.after_batch is not None:
            try:
                self.after_batch(x, result, list(batch), self._queued)
            except Exception:  # noqa: BLE001 - the answers went out; a monitoring failure must not stop the worker
                log.exception("after-batch hook failed")

    @staticmethod
    def _answer(r: _Request, energy: np.ndarray | None = None, source: str | None = None) -> None:
        assert r.outputs is not None, "answered before any of its samples left"
        answer = Answer(exit_index=r.exit_index, outputs=r.outputs, latency_s=r.latency,
                        queue_s=r.started - r.enqueued, batch_size=r.batch_size,
                        energy_j=energy, energy_source=source)
        r.loop.call_soon_threadsafe(_resolve, r.future, answer, None)
