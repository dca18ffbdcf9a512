"""Train a module in stages: the recipe's ``train.stages`` run in order, each with a registered loss
(:data:`converters.training.registry.LOSSES`), optimiser and learning-rate schedule. Exit heads
(BranchyNet, LGViT) train here, and so do a method's own parts (e.g. a converting autoencoder and its
classifier, with losses registered from the method's folder under ``converters/methods/``).

Seeded and reproducible: stage s, epoch e shuffles with a generator seeded ``seed + s + e`` (as torch's
``DistributedSampler`` does), and a loss may draw its augmentation from that same generator
(:meth:`ExitLoss.start_epoch`). A checkpoint is written atomically after every epoch so an interrupted
run continues where it stopped (``resume=True``) and ends with the same weights as an uninterrupted
one. Under ``torchrun --nproc_per_node=N`` the data is sharded per rank (the ``DistributedSampler``
split), gradients are averaged across ranks after every backward pass (gloo on CPU, nccl on GPU) — the
arithmetic of DDP, done on the parameter gradients so a loss may call any model method
(``forward_with_hidden``, a head's ``parts``) — BatchNorm statistics are averaged at every epoch end,
and rank 0 alone writes checkpoints.

Example:
    >>> trainer = Trainer(model, [StageConfig(epochs=2)], x_train, y_train, seed=0)   # doctest: +SKIP
    >>> history = trainer.fit()                                                     # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from converters.training.dist import DistContext
from converters.training.evaluation import evaluate
from converters.training.losses import ExitLoss, create_loss
from converters.training.registry import OPTIMIZERS, SCHEDULES
from edge_runtime.errors import ConfigError
from edge_runtime.files import write_bytes_atomic

CHECKPOINT_FORMAT = "edge-runtime-train-checkpoint-1"


def run_fingerprint(*parts: Any) -> str:
    """A short digest of what a run trains (settings, arrays, tensors), stored in its checkpoint so that
    resuming a different run is refused (:class:`Trainer`'s ``run_id``).

    Example:
        >>> run_fingerprint({"seed": 0}) == run_fingerprint({"seed": 0}) != run_fingerprint({"seed": 1})
        True
    """
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, torch.Tensor):
            p = p.detach().cpu().numpy()
        if isinstance(p, np.ndarray):
            h.update(str(p.shape).encode())
            h.update(np.ascontiguousarray(p).tobytes())
        else:
            h.update(json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class StageConfig:
    """One training stage (a ``train.stages[i]`` entry of a recipe)."""

    name: str = "stage"
    loss: dict[str, Any] = field(default_factory=lambda: {"name": "weighted_exits", "kwargs": {}})
    optimizer: dict[str, Any] = field(default_factory=lambda: {"name": "adam", "kwargs": {}})
    lr: float = 1e-3
    epochs: int = 10
    batch_size: int = 64
    weight_decay: float = 0.0
    schedule: dict[str, Any] = field(default_factory=lambda: {"name": "cosine", "kwargs": {}})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StageConfig:
        return cls(**d)


class TrainCallback:
    """Hooks the trainer calls; override what you need (raising stops training, e.g. to test resume)."""

    def on_batch_end(self, trainer: Trainer, stage: int, epoch: int, step: int, loss: float) -> None:
        """After each optimiser step."""

    def on_epoch_end(self, trainer: Trainer, stage: int, epoch: int, metrics: dict[str, Any]) -> None:
        """After each epoch, once its checkpoint is written."""

    def on_train_end(self, trainer: Trainer) -> None:
        """After the last stage (every rank)."""


def _as_inputs(x: Any) -> tuple[torch.Tensor, ...]:
    """Model inputs as tensors: floats as float32, integer inputs (token ids, masks) as int64; a tuple of arrays
    is a model with several inputs."""
    parts = x if isinstance(x, tuple) else (x,)
    out = []
    for p in parts:
        t = p if isinstance(p, torch.Tensor) else torch.as_tensor(np.ascontiguousarray(p))
        out.append(t.to(torch.float32) if t.is_floating_point() else t.to(torch.int64))
    return tuple(out)


def _as_targets(y: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Class labels as int64; floating targets (a reconstruction's) as float32."""
    t = y if isinstance(y, torch.Tensor) else torch.as_tensor(np.asarray(y))
    return t.to(torch.float32) if t.is_floating_point() else t.to(torch.long)


class Trainer:
    """Runs training stages on a module (an :class:`EarlyExitModel`, or a method's part).

    Args:
        model: the module (trained in place).
        stages: the stages, in order.
        x, y: training inputs (model-ready, float32 N, ...; a tuple of arrays for a model with several inputs,
            integer ones such as token ids kept as int64) and targets: int class labels, or float tensors a loss
            compares outputs with (e.g. a method's exemplars); numpy or torch.
        eval_data: optional (x, y) to report per-exit accuracy on after each epoch (not the test split).
        seed: base seed; stage s, epoch e shuffle with ``seed + s + e``.
        checkpoint_path: where to write the per-epoch checkpoint (None: no checkpoints).
        resume: continue from ``checkpoint_path`` if it exists.
        run_id: a digest of what is trained (:func:`run_fingerprint`); a checkpoint with another id is
            refused on resume.
        progress: show a tqdm bar per epoch (rank 0 only).
        epoch_lines: with ``progress``, also print a summary line after every epoch.
        callbacks: :class:`TrainCallback` objects.
        dist: the process group context (default: this process alone).
    """

    def __init__(self, model: nn.Module, stages: Sequence[StageConfig], x: Any,
                 y: np.ndarray | torch.Tensor, *, eval_data: tuple[np.ndarray, np.ndarray] | None = None,
                 seed: int = 0, checkpoint_path: str | Path | None = None, resume: bool = False, run_id: str = "",
                 progress: bool = True, epoch_lines: bool = True, callbacks: Sequence[TrainCallback] = (),
                 dist: DistContext | None = None) -> None:
        self.dist = dist or DistContext()
        self.model = model.to(self.dist.device)
        self.stages = list(stages)
        self.xs = _as_inputs(x)
        self.x = self.xs[0]
        self.y = _as_targets(y)
        if any(len(t) != len(self.y) for t in self.xs):
            raise ConfigError(f"training data: {len(self.x)} inputs but {len(self.y)} targets")
        self.eval_data = eval_data
        self.seed = int(seed)
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path else None
        self.resume = resume
        self.run_id = run_id
        self.progress = progress and self.dist.is_main
        self.epoch_lines = epoch_lines
        self.callbacks = list(callbacks)
        self.history: list[dict[str, Any]] = []

    # -- checkpoints -------------------------------------------------------------------------
    def _save(self, stage: int, epoch: int, optimizer: torch.optim.Optimizer, sched: Any) -> None:
        if self.checkpoint_path is None or not self.dist.is_main:
            return
        state = {"format": CHECKPOINT_FORMAT, "run_id": self.run_id, "stage": stage, "epoch": epoch,
                 "model": self.model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": sched.state_dict(), "torch_rng": torch.get_rng_state(), "history": self.history}
        buf = io.BytesIO()
        torch.save(state, buf)
        write_bytes_atomic(self.checkpoint_path, buf.getvalue())

    def _load(self) -> dict[str, Any] | None:
        p = self.checkpoint_path
        if not self.resume or p is None or not p.is_file():
            return None
        try:
            state = torch.load(p, map_location=self.dist.device, weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
            raise ConfigError(f"{p}: cannot read the training checkpoint ({exc}); delete it to start over") from None
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise ConfigError(f"{p}: not an edge-runtime training checkpoint")
        if state.get("run_id") != self.run_id:
            raise ConfigError(f"{p}: the checkpoint belongs to a different run (its recipe, data or model "
                              "changed); delete it or run without --resume")
        return state

    # -- data order --------------------------------------------------------------------------
    def _epoch_order(self, stage: int, epoch: int) -> tuple[torch.Tensor, torch.Generator]:
        """This rank's sample order for one epoch, and the generator that drew it.

        The split of torch's ``DistributedSampler`` (shuffle, no drop_last): a permutation seeded
        ``seed + stage + epoch``, padded with its head to a multiple of the world size, every
        world-size-th index from the rank on.
        """
        n, world = len(self.x), self.dist.world_size
        gen = torch.Generator().manual_seed(self.seed + stage + epoch)
        order = torch.randperm(n, generator=gen)
        total = -(-n // world) * world
        if total > n:
            order = torch.cat([order, order.repeat(-(-(total - n) // n))[:total - n]])
        return order[self.dist.rank:total:world], gen

    def _batch_size(self, cfg: StageConfig) -> int:
        return max(1, cfg.batch_size // self.dist.world_size)  # the global batch stays cfg.batch_size

    def _steps(self, cfg: StageConfig) -> int:
        per_rank = -(-len(self.x) // self.dist.world_size)
        return -(-per_rank // self._batch_size(cfg))

    # -- training ----------------------------------------------------------------------------
    def fit(self) -> list[dict[str, Any]]:
        """Run every stage (continuing from the checkpoint when resuming); returns the per-epoch history."""
        from tqdm.auto import tqdm

        ckpt = self._load()       # every rank reads it (multi-node: keep the checkpoint on a shared disk)
        start_stage, start_epoch = 0, 0
        if ckpt is not None:
            self.model.load_state_dict(ckpt["model"])
            self.history = list(ckpt["history"])
            start_stage, start_epoch = int(ckpt["stage"]), int(ckpt["epoch"]) + 1
            torch.set_rng_state(ckpt["torch_rng"].cpu())
        self.dist.broadcast_module(self.model)
        for s, cfg in enumerate(self.stages):
            if s < start_stage or (s == start_stage and start_epoch >= cfg.epochs):
                continue
            loss_fn = create_loss(cfg.loss["name"], self.model, **cfg.loss.get("kwargs", {}))
            params = self._select_parameters(loss_fn)
            opt = OPTIMIZERS.get(cfg.optimizer["name"])(params, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                                        **cfg.optimizer.get("kwargs", {}))
            steps = self._steps(cfg)
            total = cfg.epochs * steps
            factor = SCHEDULES.get(cfg.schedule["name"])(**cfg.schedule.get("kwargs", {}))
            sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(factor, total))
            first = start_epoch if s == start_stage else 0
            if ckpt is not None and s == start_stage and first > 0:
                opt.load_state_dict(ckpt["optimizer"])
                sched.load_state_dict(ckpt["scheduler"])
            for epoch in range(first, cfg.epochs):
                metrics = self._epoch(loss_fn, opt, sched, s, epoch, tqdm)
                self.history.append(metrics)
                self._save(s, epoch, opt, sched)
                for cb in self.callbacks:
                    cb.on_epoch_end(self, s, epoch, metrics)
        for p in self.model.parameters():
            p.requires_grad_(True)
        self.model.eval()
        for cb in self.callbacks:
            cb.on_train_end(self)
        return self.history

    def _select_parameters(self, loss_fn: ExitLoss) -> list[dict[str, Any]]:
        """The loss's parameter groups (in model order within each group); every other parameter is frozen."""
        groups = loss_fn.parameter_groups(self.model)
        group_of = {id(p): g for g, spec in enumerate(groups) for p in spec["params"]}
        out: list[dict[str, Any]] = [{**{k: v for k, v in spec.items() if k != "params"}, "params": []}
                                     for spec in groups]
        for p in self.model.parameters():
            p.requires_grad_(id(p) in group_of)
            if id(p) in group_of:
                out[group_of[id(p)]]["params"].append(p)
        out = [g for g in out if g["params"]]
        if not out:
            raise ConfigError(f"loss {type(loss_fn).__name__}: no trainable parameters")
        return out

    def _epoch(self, loss_fn: ExitLoss, opt: torch.optim.Optimizer, sched: Any, s: int, epoch: int,
               tqdm: Any) -> dict[str, Any]:
        cfg = self.stages[s]
        order, gen = self._epoch_order(s, epoch)
        loss_fn.start_epoch(epoch, gen)
        loss_fn.train_mode(self.model)
        steps = self._steps(cfg)
        loader = DataLoader(TensorDataset(*self.xs, self.y), batch_size=self._batch_size(cfg),
                            sampler=order.tolist(), num_workers=0)
        # keep this shape: the DataLoader draws a worker seed from torch's global generator for each iterator
        # it makes (two per epoch here: tqdm.auto's bar makes one), which losses drawing from that generator
        # (LGViT's shifts, dropout) see, so changing it changes every trained figure
        bar = tqdm(loader, desc=f"stage {s + 1}/{len(self.stages)} {cfg.name} epoch {epoch + 1}/{cfg.epochs}",
                   disable=not self.progress, leave=False, dynamic_ncols=True)
        correct = torch.zeros(0, dtype=torch.float64)
        seen, loss_sum = 0, 0.0
        dev = self.dist.device
        for i, (*xbs, yb) in enumerate(bar):
            xb: Any = tuple(t.to(dev) for t in xbs) if len(xbs) > 1 else xbs[0].to(dev)
            yb = yb.to(dev)
            step = epoch * steps + i
            loss, logits = loss_fn(self.model, xb, yb, step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            self.dist.average_gradients(self.model)
            opt.step()
            sched.step()
            with torch.no_grad():
                if i == 0:
                    correct = torch.zeros(len(logits), dtype=torch.float64)
                for k, z in enumerate(logits):
                    correct[k] += float((z.argmax(-1) == yb).sum())
            seen += int(yb.shape[0])
            loss_sum += float(loss.detach()) * int(yb.shape[0])
            if self.progress:
                acc = " ".join(f"{100 * c / seen:.1f}" for c in correct.tolist())
                bar.set_postfix_str(f"loss {loss_sum / seen:.4f}" + (f" acc {acc}" if acc else ""))
            for cb in self.callbacks:
                cb.on_batch_end(self, s, epoch, step, float(loss.detach()))
        self.dist.average_buffers(self.model)
        totals = self.dist.sum_tensor(torch.tensor([seen, loss_sum, *correct.tolist()], dtype=torch.float64))
        n = max(1.0, float(totals[0]))
        metrics: dict[str, Any] = {"stage": s, "name": cfg.name, "epoch": epoch, "loss": float(totals[1]) / n,
                                   "train_accuracy": [float(c) / n for c in totals[2:]]}
        if self.eval_data is not None:
            metrics["eval_accuracy"] = evaluate(self.model, *self.eval_data, device=dev)
        if self.progress and self.epoch_lines:
            acc = metrics.get("eval_accuracy", metrics["train_accuracy"])
            tqdm.write(f"stage {s + 1} {cfg.name} epoch {epoch + 1}/{cfg.epochs}: loss {metrics['loss']:.4f}"
                       + (f", {'eval' if 'eval_accuracy' in metrics else 'train'} accuracy per exit "
                          + " ".join(f"{100 * a:.2f}%" for a in acc) if acc else ""))
        return metrics


def _schedule(factor: Callable[[int, int], float], total: int) -> Callable[[int], float]:
    """The per-step learning-rate factor of a stage of ``total`` steps (bound now, not late in a loop)."""
    return lambda step: factor(step, total)
