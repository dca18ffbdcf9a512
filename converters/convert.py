"""``convert``: recipe -> model -> (train, calibrate) -> export -> verified bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from converters.export import export_bundle
from converters.recipe import Recipe, load_recipe
from converters.zoo import create_model


def seed_everything(seed: int) -> None:
    """Seed torch (and numpy's legacy global generator) for reproducible runs."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def convert(recipe: Recipe | str | Path, out_dir: str | Path, *, overwrite: bool = False,
            resume: bool = False, progress: bool = True) -> Path:
    """Run a recipe end to end and write its bundle.

    Args:
        recipe: a :class:`Recipe` or the path of a YAML recipe.
        out_dir: the bundle directory to write (atomically).
        overwrite: replace an existing bundle.
        resume: continue an interrupted training run from its checkpoint.
        progress: show progress bars.

    Example:
        >>> convert("converters/recipes/tiny_cnn.yaml", "out/tiny_cnn")     # doctest: +SKIP
    """
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    seed_everything(recipe["seed"])
    model = create_model(recipe["model"]["name"], **recipe["model"]["kwargs"])
    shape = recipe["input"]["shape"] or list(model.input_shape or ())
    example = torch.randn(1, *shape)
    sections: dict[str, Any] = {"recipe": recipe.resolved()}
    exp = recipe["export"]
    pol = recipe["policy"]
    return export_bundle(
        model,
        example,
        out_dir,
        name=recipe.name,
        policy=pol["name"],
        policy_kwargs=pol["kwargs"],
        thresholds=pol["thresholds"],
        preprocessing=recipe["input"]["preprocessing"],
        tolerance=float(exp["tolerance"]),
        verify_batch_sizes=exp["verify_batch_sizes"],
        include_full_model=exp["full_model"],
        sections=sections,
        opset=exp["opset"],
        overwrite=overwrite,
        seed=recipe["seed"],
    )
