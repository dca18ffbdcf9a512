"""An MLP for tabular data, written the way a user writes one, and a CSV to try it on: scikit-learn's breast
cancer table (569 rows, 30 numeric features, labels "malignant"/"benign") written with a header row.

    python examples/mlp_tabular.py out/examples/breast_cancer.csv   # write the data
    edge-runtime convert examples/mlp_tabular.yaml --out out/mlp_tabular --allow-code
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn


class TabularMLP(nn.Module):
    """Three hidden layers (Linear + ReLU), then the classifier."""

    def __init__(self, in_features: int = 30, num_classes: int = 2, hidden: int = 64) -> None:
        super().__init__()
        self.fc1 = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU())
        self.fc2 = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU())
        self.fc3 = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU())
        self.out = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.fc3(self.fc2(self.fc1(x))))


def build_mlp(in_features: int = 30, num_classes: int = 2) -> TabularMLP:
    """The factory a recipe names."""
    return TabularMLP(in_features, num_classes)


def write_breast_cancer_csv(path: str | Path) -> Path:
    """scikit-learn's breast cancer data as a CSV with a header and a string ``label`` column."""
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    names = [n.replace(" ", "_") for n in d.feature_names]
    lines = [",".join([*names, "label"])]
    lines += [",".join([*(f"{v:.6g}" for v in row), str(d.target_names[t])]) for row, t in zip(d.data, d.target)]
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


if __name__ == "__main__":
    print(f"wrote {write_breast_cancer_csv(sys.argv[1] if len(sys.argv) > 1 else 'out/examples/breast_cancer.csv')}")
