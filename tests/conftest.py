"""Shared fixtures: tiny bundles exported once per session from the registered tiny models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """name -> bundle dir for the two shipped smoke recipes (random init)."""
    from converters import convert

    root = tmp_path_factory.mktemp("bundles")
    out = {}
    for name in ("tiny_cnn", "tiny_transformer"):
        out[name] = convert(REPO / "converters" / "recipes" / f"{name}.yaml", root / name, progress=False)
    return out


@pytest.fixture(scope="session")
def cnn_bundle(bundles: dict[str, Path]) -> Path:
    return bundles["tiny_cnn"]


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
