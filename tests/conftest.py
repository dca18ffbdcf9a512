"""Shared fixtures: tiny bundles exported once per session from the registered tiny models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

#: the workstation modules the device-side CLI and bench may load through their entry points: light, no torch
PLUGIN_MODULES = ("converters", "converters.pipeline", "converters.pipeline.cli_convert",
                  "converters.pipeline.cli_demo", "converters.pipeline.bench_rows")
#: Python expression (for subprocess snippets) listing the heavy workstation modules a device process loaded
HEAVY_MODULES = ("sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnx') "
                 f"or (m.split('.')[0] == 'converters' and m not in {PLUGIN_MODULES!r}))")


def manifest_json(bundle: Path) -> dict:
    """A bundle's manifest as written on disk (plain JSON), for tests of the file format itself."""
    import json

    return json.loads((Path(bundle) / "manifest.json").read_text(encoding="utf-8"))


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
