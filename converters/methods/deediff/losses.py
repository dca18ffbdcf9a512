"""DeeDiff's training objectives (registered in :data:`converters.training.registry.LOSSES`).

Every batch of clean images x_0 (model-ready, in [-1, 1]) is noised at uniformly drawn timesteps t with noise
eps (both drawn from the trainer's per-epoch generator, so a resumed run repeats them); then, with g_i the
output head after block i, u_i its UEM's score and eps_theta the final layer:

- ``ddpm_simple``: L_simple = ||eps_theta - eps||^2 (DDPM), training the denoiser alone (the exits untouched).
- ``deediff`` (the paper's): L_simple + lambda * sum_i (u_i - uhat_i)^2 + beta * sum_i (1 - u_i) ||g_i - eps||^2
  over the non-final blocks i, with the pseudo-label uhat_i = mean over pixels of tanh(|g_i - eps|) (a target:
  no gradient flows into it). Everything trains jointly; lambda = beta = 1 in the paper.
- ``deediff_probe`` (the frozen-backbone variant an independent reproduction found to work): the denoiser is
  frozen; the heads learn sum_i ||g_i - eps||^2 and the UEMs, as per-layer probes, lambda * sum_i (u_i - uhat_i)^2.

``||.||^2`` is the mean over pixels, per sample; every term is averaged over the batch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from converters.methods.deediff.model import DeeDiffUViT, noised
from converters.training.losses import ExitLoss
from converters.training.registry import LOSSES
from edge_runtime.errors import ConfigError


def pseudo_uncertainty(eps_pred: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """DeeDiff's pseudo-label per sample: mean over pixels of tanh(|g_i(h) - eps|), (N,), no gradient.

    Example:
        >>> [round(v, 4) for v in pseudo_uncertainty(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.0, 0.0]])).tolist()]
        [0.3808]
    """
    return torch.tanh((eps_pred - eps).abs()).flatten(1).mean(dim=1).detach()


def per_sample_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over every non-batch axis of the squared error, (N,)."""
    return ((pred - target) ** 2).flatten(1).mean(dim=1)


def deediff_terms(outputs: list[Any], eps: torch.Tensor) -> dict[str, torch.Tensor]:
    """The loss terms from the model's outputs (``[(g_0, u_0), ..., (g_{L-2}, u_{L-2}), eps_theta]``) and the noise.

    Returns:
        ``simple`` (scalar), and per non-final exit, stacked (exits, N): ``mse`` ||g_i - eps||^2, ``u`` and
        ``uhat``.
    """
    heads = outputs[:-1]
    return {
        "simple": per_sample_mse(outputs[-1], eps).mean(),
        "mse": torch.stack([per_sample_mse(g, eps) for g, _ in heads]),
        "u": torch.stack([u for _, u in heads]),
        "uhat": torch.stack([pseudo_uncertainty(g, eps) for g, _ in heads]),
    }


def deediff_loss(terms: dict[str, torch.Tensor], lam: float = 1.0, beta: float = 1.0) -> torch.Tensor:
    """The paper's objective from :func:`deediff_terms`: L_simple + lambda L_u + beta L_UAL.

    Example:
        >>> terms = {"simple": torch.tensor(0.5), "mse": torch.tensor([[0.2, 0.4]]), "u": torch.tensor([[0.1, 0.5]]),
        ...          "uhat": torch.tensor([[0.3, 0.5]])}
        >>> round(float(deediff_loss(terms)), 4)    # 0.5 + mean(0.04, 0) + mean(0.9 * 0.2, 0.5 * 0.4)
        0.71
    """
    l_u = ((terms["u"] - terms["uhat"]) ** 2).mean(dim=1).sum()
    l_ual = ((1 - terms["u"]) * terms["mse"]).mean(dim=1).sum()
    return terms["simple"] + lam * l_u + beta * l_ual


class _DiffusionLoss(ExitLoss):
    """Draws t and eps for a batch and runs the model on the noised images."""

    def __init__(self, model: nn.Module, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        if not isinstance(model, DeeDiffUViT):
            raise ConfigError(f"loss {type(self).__name__} trains a deediff_uvit model, got {type(model).__name__}")

    def forward_terms(self, model: DeeDiffUViT, x0: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        gen = self.generator if self.generator is not None else torch.default_generator
        n = x0.shape[0]
        t = torch.randint(0, model.schedule.train_steps, (n,), generator=gen).to(x0.device)
        eps = torch.randn(x0.shape, generator=gen).to(x0.device)
        inputs = (noised(model.schedule, x0, t, eps), t) + ((y,) if model.num_classes else ())
        return deediff_terms(model(*inputs), eps)


@LOSSES.register("ddpm_simple")
class DDPMSimpleLoss(_DiffusionLoss):
    """DDPM's L_simple on the final layer; trains the denoiser only (segments + final layer)."""

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        return model.backbone_parameters()  # type: ignore[operator]

    def __call__(self, model, x, y, step):
        return self.forward_terms(model, x, y)["simple"], []


@LOSSES.register("deediff")
class DeeDiffLoss(_DiffusionLoss):
    """The paper's joint objective (every weight trains).

    Args:
        lam: weight of the uncertainty loss (paper: 1).
        beta: weight of the uncertainty-aware layer-wise loss (paper: 1).
    """

    def __init__(self, model: nn.Module, lam: float = 1.0, beta: float = 1.0) -> None:
        super().__init__(model)
        self.lam, self.beta = float(lam), float(beta)

    def __call__(self, model, x, y, step):
        return deediff_loss(self.forward_terms(model, x, y), self.lam, self.beta), []


@LOSSES.register("deediff_probe")
class DeeDiffProbeLoss(_DiffusionLoss):
    """The frozen-backbone variant: heads fit eps, UEMs fit the pseudo-label, the denoiser stays as it is.

    Args:
        lam: weight of the uncertainty loss.
    """

    def __init__(self, model: nn.Module, lam: float = 1.0) -> None:
        super().__init__(model)
        self.lam = float(lam)

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        return model.exit_parameters()  # type: ignore[operator]

    def __call__(self, model, x, y, step):
        terms = self.forward_terms(model, x, y)
        l_u = ((terms["u"] - terms["uhat"]) ** 2).mean(dim=1).sum()
        return terms["mse"].mean(dim=1).sum() + self.lam * l_u, []
