"""The digits classifier of DeeDiff's quality measure: its penultimate features are the FID space, its argmax the
class accuracy of class-conditional samples. Trained in the same recipe on the same model-space images (the
denoiser's x_0 range), with the one training loop."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from converters.models.contract import EarlyExitModel
from converters.training.trainer import StageConfig, Trainer


class DigitsClassifier(EarlyExitModel):
    """A small CNN as a one-exit :class:`EarlyExitModel` (so the one training loop trains it with the
    ``weighted_exits`` loss): segment = conv body -> features (N, features), head = Linear -> logits.

    Example:
        >>> clf = DigitsClassifier(1, 16, 10, features=32)
        >>> logits, feats = ClassifierWithFeatures(clf)(torch.zeros(2, 1, 16, 16))
        >>> tuple(logits.shape), tuple(feats.shape)
        ((2, 10), (2, 32))
    """

    def __init__(self, channels: int, image_size: int, num_classes: int, *, features: int = 64,
                 width: int = 32) -> None:
        body = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(2 * width * (image_size // 4) ** 2, features), nn.ReLU())
        super().__init__([body], [nn.Linear(features, num_classes)], input_shape=(channels, image_size, image_size))
        self.features = features


class ClassifierWithFeatures(nn.Module):
    """The exported quality classifier: image -> (logits, features) (the penultimate layer is the FID space)."""

    def __init__(self, classifier: DigitsClassifier) -> None:
        super().__init__()
        self.body, self.head = classifier.segments[0], classifier.heads[0]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.body(x)
        return self.head(f), f


def train_classifier(x: np.ndarray, y: np.ndarray, num_classes: int, *, features: int = 64, epochs: int = 30,
                     batch_size: int = 64, lr: float = 2e-3, seed: int = 0, progress: bool = True,
                     checkpoint_path: Any = None, resume: bool = False, run_id: str = "") -> DigitsClassifier:
    """Train the classifier on model-ready images ``x`` (N, C, H, W) and labels ``y`` (cross-entropy, Adam, cosine)."""
    torch.manual_seed(seed)
    model = DigitsClassifier(x.shape[1], x.shape[2], num_classes, features=features)
    stage = StageConfig(name="quality_classifier", loss={"name": "weighted_exits", "kwargs": {}},
                        optimizer={"name": "adam", "kwargs": {}}, lr=lr, epochs=epochs, batch_size=batch_size,
                        schedule={"name": "cosine", "kwargs": {}})
    Trainer(model, [stage], x, y, seed=seed, progress=progress, checkpoint_path=checkpoint_path, resume=resume,
            run_id=run_id).fit()
    return model.eval()


@torch.no_grad()
def accuracy(model: DigitsClassifier, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy on model-ready images."""
    logits = model.eval()(torch.as_tensor(x, dtype=torch.float32))[-1]
    return float((logits.argmax(-1).numpy() == np.asarray(y)).mean())
