"""Model lifecycle: serve bundles by name, reload with full verification and an atomic swap."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.errors import BundleError, EdgeRuntimeError
from edge_runtime.manifest import EXIT_OUTPUT
from edge_runtime.policies import create_policy
from edge_runtime.runtime import Runtime, load_bundle
from edge_runtime.serve.adaptive import AdaptiveModel
from edge_runtime.serve.batcher import MicroBatcher
from edge_runtime.serve.config import ServeConfig
from edge_runtime.serve.controller import SLO
from edge_runtime.serve.metrics import ServeMetrics

log = logging.getLogger("edge_runtime.serve")


@dataclass(frozen=True)
class LoadedModel:
    """One model generation: what a request holds on to until it is answered."""

    name: str
    path: Path
    runtime: Runtime
    batcher: MicroBatcher
    version: str
    generation: int
    loaded_at: float
    #: policies built for per-request overrides, by override key (policies keep no state between batches)
    policies: dict = field(default_factory=dict, repr=False, compare=False)
    #: the SLO controller and accuracy monitor (``--slo``, ``--monitor-fraction``), or None
    adaptive: AdaptiveModel | None = field(default=None, repr=False, compare=False)


def _malloc_trim() -> None:
    """glibc's malloc_trim(0): return freed heap pages (old sessions' buffers) to the OS; no-op elsewhere."""
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _LIBC.malloc_trim  # noqa: B018 - musl/macOS lack it
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


_LIBC: Any = None


def bundle_version(runtime: Runtime) -> str:
    """A short content id: sha256 of the manifest (which pins every file's sha256)."""
    return hashlib.sha256(runtime.bundle.manifest_path.read_bytes()).hexdigest()[:12]


def verify_runtime(runtime: Runtime, batch_sizes: tuple[int, ...] = (1, 2)) -> None:
    """Check a freshly loaded bundle end to end before it may serve.

    Loading already validated the schema, the paths and every file's sha256; this runs a smoke batch of every
    size in ``batch_sizes`` (the daemon passes 1 and its largest micro-batch: the sizes it will run) through every
    segment (and the full graph when present) and checks shapes and finiteness, and refuses bundles whose recorded
    export verification failed.

    Raises:
        BundleError: the bundle cannot answer correctly.
    """
    m = runtime.manifest
    where = runtime.bundle.manifest_path
    if not m.verification.passed:
        raise BundleError("the bundle's export verification did not pass", path=where, field="verification.passed")
    modes = runtime.modes()
    if "early_exit" in modes:
        smoke = ["early_exit"] + (["full"] if runtime.has_full_model and "full" in modes else [])
    else:  # a bundle with its own modes only (e.g. a language model): smoke-run its first
        smoke = modes[:1]
    never = create_policy("never", runtime.num_exits)
    logits = m.exits[-1].output_kind == "logits"
    declared = next(t.shape for t in m.segments[-1].outputs if t.name == EXIT_OUTPUT)  # a non-classifier's answer
    for n in sorted(set(batch_sizes)):
        x = {s.name: np.zeros([n] + [d or 1 for d in s.shape[1:]], dtype=s.np_dtype) for s in runtime.inputs}
        for mode in smoke:
            try:
                out = runtime.infer(x, mode=mode, policy=never if mode == "early_exit" else None).outputs
            except EdgeRuntimeError as exc:
                raise BundleError(f"smoke run ({mode}) at batch {n} failed: {exc}", path=where,
                                  field=getattr(exc, "field", None) or "segments") from None
            as_declared = out.ndim == len(declared) and all(d in (None, g) for d, g in zip(declared[1:],
                                                                                           out.shape[1:]))
            if out.shape != (n, len(runtime.labels)) and (logits or not as_declared):
                raise BundleError(f"smoke run ({mode}) at batch {n} gave outputs of shape {out.shape}; expected "
                                  f"({n}, {len(runtime.labels)}) (one score per label)"
                                  + ("" if logits else f" or the last segment's declared {list(declared)}"),
                                  path=where, field="labels" if logits else f"segments.{len(m.segments) - 1}")
            if not np.isfinite(out).all():
                raise BundleError(f"smoke run ({mode}) at batch {n} gave NaN/Inf outputs", path=where,
                                  field="segments")


class ModelRepository:
    """Named models, each a :class:`LoadedModel` swapped atomically on reload.

    Args:
        sources: model name -> bundle directory (re-read on every reload).
        config: daemon settings (backend, threads, batching).
        metrics: where load events and batch statistics go.

    Example:
        >>> repo = ModelRepository({"tiny": Path("out/tiny_cnn")}, ServeConfig(), ServeMetrics())  # doctest: +SKIP
        >>> repo.load_all(); repo.get("tiny").version                                             # doctest: +SKIP
    """

    def __init__(self, sources: dict[str, Path], config: ServeConfig, metrics: ServeMetrics,
                 on_loaded: Callable[[LoadedModel], None] | None = None) -> None:
        self.sources = {name: Path(p) for name, p in sources.items()}
        self.config = config
        self.metrics = metrics
        self.on_loaded = on_loaded
        self._models: dict[str, LoadedModel] = {}
        self._lock = threading.Lock()
        self._reload_locks = {name: threading.Lock() for name in self.sources}
        self._generation = 0
        self.last_error: dict[str, str | None] = {name: None for name in self.sources}
        self._retired: list[LoadedModel] = []

    # -- access -------------------------------------------------------------------------
    def names(self) -> list[str]:
        return list(self.sources)

    def get(self, name: str) -> LoadedModel:
        """The model serving ``name`` now. Raises KeyError for unknown names."""
        with self._lock:
            return self._models[name]

    def all(self) -> list[LoadedModel]:
        with self._lock:
            return list(self._models.values())

    def submit(self, name: str, x: np.ndarray, **kwargs):  # noqa: ANN201 - returns (model, request)
        """Pick the current model and queue on it in one step, so a swap cannot slip in between."""
        with self._lock:
            model = self._models[name]
            return model, model.batcher.submit(x, **kwargs)

    @property
    def ready(self) -> bool:
        with self._lock:
            return len(self._models) == len(self.sources) and all(m.batcher.alive for m in self._models.values())

    # -- lifecycle ----------------------------------------------------------------------
    def _build(self, name: str) -> LoadedModel:
        path = self.sources[name].resolve()  # pin the target once: a symlink flipped mid-load cannot mix bundles
        c = self.config
        runtime = load_bundle(path, backend=c.backend, threads=c.threads, precision=c.precision, profile=c.profile,
                              meter=c.meter)
        try:
            verify_runtime(runtime, batch_sizes=(1, c.max_batch_size))
        except BaseException:
            runtime.close()
            raise
        with self._lock:
            self._generation += 1
            generation = self._generation
        adaptive = None
        if c.slo is not None or c.monitor_fraction > 0:
            try:
                adaptive = AdaptiveModel(runtime, SLO.parse(c.slo) if c.slo else None, floor_accuracy=c.floor_accuracy,
                                         monitor_fraction=c.monitor_fraction, backlog=max(c.max_queue // 2, 1),
                                         publish=lambda state: self.metrics.observe_operating_point(name, state))
            except BaseException:
                runtime.close()
                raise
        batcher = MicroBatcher(
            runtime, max_batch_size=self.config.max_batch_size, max_wait_s=self.config.max_wait_ms / 1e3,
            max_queue=self.config.max_queue, name=name,
            on_batch=lambda res, k: self.metrics.observe_batch(name, res, k),
            after_batch=adaptive.after_batch if adaptive is not None else None,
        )
        if adaptive is not None:
            self.metrics.observe_operating_point(name, adaptive.state())
        return LoadedModel(name=name, path=path, runtime=runtime, batcher=batcher,
                           version=bundle_version(runtime), generation=generation, loaded_at=time.time(),
                           adaptive=adaptive)

    def load(self, name: str) -> LoadedModel:
        """(Re)load ``name`` from its bundle directory; the old model keeps serving on any failure.

        The new bundle is loaded and verified completely (schema, paths, sha256 of every file,
        a smoke run through every segment) before one atomic swap; requests already queued on
        the old model finish on it, then its worker exits.

        Raises:
            KeyError: unknown model name.
            EdgeRuntimeError: the new bundle failed to load or verify (old model untouched).
        """
        if name not in self.sources:
            raise KeyError(name)
        with self._reload_locks[name]:
            try:
                new = self._build(name)
            except EdgeRuntimeError as exc:
                self.metrics.loads.labels(name, "failed").inc()
                self.last_error[name] = str(exc)
                log.error("loading model %r failed; %s: %s", name,
                          "keeping the old one" if name in self._models else "no model to serve", exc)
                raise
            except Exception as exc:  # anything else a broken file can raise inside a backend
                self.metrics.loads.labels(name, "failed").inc()
                self.last_error[name] = f"{type(exc).__name__}: {exc}"
                log.exception("loading model %r failed", name)
                raise BundleError(f"could not load: {type(exc).__name__}: {exc}", path=self.sources[name]) from exc
            with self._lock:
                old = self._models.get(name)
                self._models[name] = new
            self.metrics.loads.labels(name, "ok").inc()
            self.metrics.info.labels(name, new.version).set(1)
            self.last_error[name] = None
            if old is not None:
                if old.version != new.version:
                    self.metrics.info.remove(name, old.version)
                old.batcher.close()  # drains its queue in its own thread, then exits
                self._retired.append(old)
                threading.Thread(target=self._release, args=(old,), name=f"retire-{name}", daemon=True).start()
            log.warning("model %r generation %d (version %s) serving from %s",
                        name, new.generation, new.version, new.path)
            if self.on_loaded is not None:
                self.on_loaded(new)
            return new

    def _release(self, old: LoadedModel) -> None:
        """Once a replaced model's queue has drained, drop it and hand its memory back to the OS, so
        repeated reloads do not ratchet the daemon's resident memory up."""
        old.batcher.join(self.config.drain_s + self.config.timeout_s)
        with self._lock:
            self._retired = [m for m in self._retired if m is not old and m.batcher.alive]
        del old
        gc.collect()
        _malloc_trim()

    def load_all(self) -> None:
        """Load every model; raises on the first failure (used at start-up)."""
        for name in self.sources:
            self.load(name)

    def reload_all(self) -> dict[str, str | None]:
        """Reload every model (SIGHUP); returns name -> error message or None."""
        out: dict[str, str | None] = {}
        for name in self.sources:
            try:
                self.load(name)
                out[name] = None
            except EdgeRuntimeError as exc:
                out[name] = str(exc)
        return out

    def close(self, timeout: float) -> bool:
        """Stop every batcher after its queue drains; True when all finished within ``timeout``."""
        models = self.all() + self._retired
        for m in models:
            m.batcher.close()
        deadline = time.monotonic() + timeout
        return all(m.batcher.join(max(0.0, deadline - time.monotonic())) for m in models)
