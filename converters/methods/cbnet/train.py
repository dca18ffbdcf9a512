"""CBNet's training loops (CBNet, 2024): the converting autoencoder (Adam, mini-batches, reconstruction loss
against each input's exemplar) and the optional fine-tuning of the lightweight classifier on converted
inputs. Both show progress bars and checkpoint atomically after every epoch so ``--resume`` continues.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from edge_runtime.errors import ConfigError
from edge_runtime.files import write_bytes_atomic


def batched(fn: Callable[[torch.Tensor], Any], x: torch.Tensor, batch_size: int = 512) -> list[Any]:
    """``fn`` over ``x`` in eval-time chunks (no grad); the chunks' results in order."""
    with torch.no_grad():
        return [fn(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)]


def exit_logits(model: nn.Module, x: torch.Tensor) -> list[np.ndarray]:
    """Every exit's logits for every input of ``x`` (the model in eval mode)."""
    model.eval()
    chunks = batched(model, x)
    return [torch.cat([c[i] for c in chunks]).numpy() for i in range(len(chunks[0]))]


def predict(module: nn.Module, x: torch.Tensor) -> np.ndarray:
    """Argmax class of a single-output classifier over ``x``."""
    module.eval()
    return torch.cat(batched(lambda b: module(b).argmax(-1), x)).numpy()


def fingerprint(*parts: Any) -> str:
    """A short digest identifying a training run's inputs, to refuse resuming a different run."""
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


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` via a temp file and an atomic rename."""
    buf = io.BytesIO()
    torch.save(state, buf)
    write_bytes_atomic(path, buf.getvalue())


def load_checkpoint(path: Path | None, resume: bool, key: str) -> dict[str, Any] | None:
    """The checkpoint to continue from, if resuming and it belongs to this run (``key``)."""
    if not resume or path is None or not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("key") != key:
        raise ConfigError(f"{path}: checkpoint belongs to a different CBNet run (settings, data or model changed); "
                          "delete it or run without --resume")
    return state


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True)


def fit(
    module: nn.Module,
    params: Sequence[nn.Parameter],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    desc: str,
    progress: bool,
    checkpoint: Path | None = None,
    resume: bool = False,
    key: str = "",
    shift: int = 0,
) -> list[float]:
    """Adam on mini-batches of (x, target) for ``epochs``; mean loss per epoch.

    Checkpoints module, optimiser and epoch after every epoch when ``checkpoint`` is set;
    with ``resume`` it continues from there (the shuffling is seeded per epoch, so a
    resumed run sees the same batches as an uninterrupted one). ``shift`` > 0 translates every
    input batch by up to that many pixels (seeded, :func:`random_shift`); targets stay as they are.
    """
    opt = torch.optim.Adam(params, lr=lr)
    history: list[float] = []
    start = 0
    state = load_checkpoint(checkpoint, resume, key)
    if state is not None:
        module.load_state_dict(state["module"])
        opt.load_state_dict(state["optimizer"])
        history = list(state["history"])
        start = int(state["epoch"])
    n = x.shape[0]
    steps = (n + batch_size - 1) // batch_size
    bar = _progress(epochs * steps, desc, progress)
    bar.update(start * steps)
    try:
        for epoch in range(start, epochs):
            module.train()
            gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
            order = torch.randperm(n, generator=gen)
            total = 0.0
            for s in range(steps):
                idx = order[s * batch_size:(s + 1) * batch_size]
                loss = loss_fn(random_shift(x[idx], shift, gen), target[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                value = float(loss.detach())
                total += value * idx.numel()
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{value:.4f}")
            history.append(total / n)
            if checkpoint is not None:
                save_checkpoint(checkpoint, {"key": key, "module": module.state_dict(), "optimizer": opt.state_dict(),
                                             "epoch": epoch + 1, "history": history})
    finally:
        bar.close()
    module.eval()
    return history


def random_shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Translate each image of (N, C, H, W) by a random (dy, dx) in [-max_shift, max_shift] pixels,
    filling with the border values (digits: background). No shift or non-image inputs: ``x`` itself."""
    if max_shift <= 0 or x.dim() != 4:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, mode="replicate")
    offsets = torch.randint(0, 2 * max_shift + 1, (2, n), generator=gen)
    out = torch.empty_like(x)
    for dy, dx in torch.unique(offsets, dim=1).T.tolist():
        rows = (offsets[0] == dy) & (offsets[1] == dx)
        out[rows] = padded[rows, :, dy:dy + h, dx:dx + w]
    return out


def classifier_loss(classifier: nn.Module) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Cross-entropy of ``classifier`` on (converted input, class) batches."""
    return lambda xb, yb: F.cross_entropy(classifier(xb), yb)
