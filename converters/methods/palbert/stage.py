"""PALBERT's step in ``convert`` (recipe section ``palbert``): choose the Q-exit's q on the calibration split.

The paper leaves at the first layer whose exit-distribution CDF exceeds q = 0.5. Here q is swept over a grid on
the exported graphs' outputs (the device's own decision loop), and the bundle ships the cheapest q (fewest mean
layers) whose calibration accuracy stays within ``max_accuracy_drop`` points of the final exit's; ``q: 0.5`` pins
the paper's value instead. The manifest's ``calibration`` section records the sweep, the choice, the test split's
figures at it and the oracle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from converters.pipeline.stages import STAGES, ConversionStage, PartsHook, StageContext
from converters.recipe.sections import expect_mapping, expect_type, section
from edge_runtime.calibration import oracle
from edge_runtime.calibration.bounds import pareto_front
from edge_runtime.errors import ConfigError
from edge_runtime.manifest import Manifest
from edge_runtime.methods.palbert import sweep_q, text_segment_outputs

DEFAULT_GRID = [round(float(q), 3) for q in np.linspace(0.05, 0.95, 19)]


@section("palbert")
def parse_palbert_section(value: Any, where: str = "palbert") -> dict[str, Any]:
    """``palbert: {max_accuracy_drop: 1.0, q: null, q_grid: [...]}``; errors name the key.

    Example:
        >>> parse_palbert_section({"q": 0.5})["q"]
        0.5
    """
    spec = expect_mapping(value, where, {"max_accuracy_drop": 1.0, "q": None, "q_grid": list(DEFAULT_GRID)})
    drop = expect_type(spec["max_accuracy_drop"], (int, float), f"{where}.max_accuracy_drop")
    if drop < 0:
        raise ConfigError(f"recipe key {where}.max_accuracy_drop: must be >= 0, got {drop}")
    grid = [spec["q"]] if spec["q"] is not None else expect_type(spec["q_grid"], list, f"{where}.q_grid")
    if not grid or any(not isinstance(q, (int, float)) or isinstance(q, bool) or not 0 < q < 1 for q in grid):
        raise ConfigError(f"recipe key {where}: q values must be numbers in (0, 1), got {grid!r}")
    return spec


@STAGES.register("palbert")
class PalbertStage(ConversionStage):
    """Picks q for the bundle's ``q_exit`` policy once the exits are exported (before the manifest is written)."""

    section = "palbert"
    when = "after_training"

    def check(self, recipe: Any, split: Any) -> None:
        if split is None:
            raise ConfigError("recipe key 'palbert' needs a 'data' section (q is chosen on its calibration split)")
        if not recipe["input"].get("text"):
            raise ConfigError("recipe key 'palbert' needs text inputs (recipe key input.text)")
        if recipe["policy"]["name"] != "q_exit":
            raise ConfigError(f"recipe key 'palbert' chooses q for policy q_exit; recipe key policy.name is "
                              f"{recipe['policy']['name']!r}")

    def run(self, ctx: StageContext) -> list[PartsHook]:
        spec, split = ctx.recipe["palbert"], ctx.split

        def choose_q(root: Path, manifest: dict[str, Any]) -> None:
            from converters.export.verify import staged_bundle
            from edge_runtime.backends import create_backend
            from edge_runtime.runtime import Runtime

            rt = Runtime(staged_bundle(root, manifest), create_backend("onnxruntime", threads=1))
            (xc, yc), (xt, yt) = split.arrays("calibration"), split.arrays("test")
            oc, ot = text_segment_outputs(rt, xc), text_segment_outputs(rt, xt)
            grid = [spec["q"]] if spec["q"] is not None else spec["q_grid"]
            cal, test = sweep_q(oc, yc, grid), sweep_q(ot, yt, grid)
            final = float((oc[-1]["exit"].argmax(-1) == yc).mean())
            ok = [p for p in cal if p["accuracy"] >= final - spec["max_accuracy_drop"] / 100 - 1e-12]
            pick = min(ok, key=lambda p: (p["mean_layers"], -p["accuracy"])) if ok else max(cal, key=lambda p: p["q"])
            chosen_test = test[cal.index(pick)]
            flops = [int(e["cumulative_flops"]) for e in manifest["exits"]]
            n = len(flops)

            def point(p: dict[str, Any]) -> dict[str, Any]:
                mean_flops = float(np.dot(p["exit_fractions"], flops))
                return {"thresholds": [p["q"]] * (n - 1), "accuracy": p["accuracy"], "mean_flops": mean_flops,
                        "flops_fraction": mean_flops / flops[-1], "exit_fractions": p["exit_fractions"]}

            front = pareto_front(cal, lambda p: p["mean_layers"], lambda p: p["accuracy"])
            test_acc = [float((o["exit"].argmax(-1) == yt).mean()) for o in ot]
            manifest["policy"]["thresholds"] = [pick["q"]] * (n - 1)
            manifest["calibration"] = {
                "split": "calibration", "policy": {"name": "q_exit", "kwargs": {}}, "cost": "flops",
                "max_accuracy_drop": float(spec["max_accuracy_drop"]), "final_exit_accuracy": final,
                "exit_accuracy": [float((o["exit"].argmax(-1) == yc).mean()) for o in oc],
                "points_evaluated": len(cal), "curve": [point(p) for p in front], "chosen": point(pick),
                "method": "palbert: q swept on the calibration split (mean layers as the cost)",
                "test": {"split": "test", "exit_accuracy": test_acc, "final_exit_accuracy": test_acc[-1],
                         "chosen": point(chosen_test), "oracle": oracle([o["exit"] for o in ot], yt, flops)},
            }
            for e, acc in zip(manifest["exits"], test_acc):
                e["test_accuracy"] = acc
            Manifest.from_dict(manifest, path=root / "manifest.json")  # still valid

        return [choose_q]
