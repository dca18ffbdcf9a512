"""CBNet's (2024) step in ``convert``: a registered conversion stage that runs when a recipe has a ``cbnet``
section, trains the converting autoencoder (and its classifier) with the calibrated policy, and hands the
parts' export hook to the bundle."""

from __future__ import annotations

from typing import Any

from converters.methods.cbnet.core import cbnet_from_recipe
from converters.pipeline.stages import STAGES, ConversionStage, PartsHook, StageContext
from edge_runtime.errors import ConfigError


@STAGES.register("cbnet")
class CBNetStage(ConversionStage):
    """Runs once the bundle's policy is final: the easy inputs CBNet learns from are the ones the shipped
    (calibrated) policy lets leave at the first exit."""

    section = "cbnet"
    when = "after_calibration"

    def check(self, recipe: Any, split: Any) -> None:
        if split is None:
            raise ConfigError("recipe key 'cbnet' needs a 'data' section (the training split CBNet learns from)")
        gate = recipe["cbnet"]["gate"]
        if gate is not None and not recipe.get("calibrate"):
            raise ConfigError("recipe key 'cbnet.gate' needs a 'calibrate' section: the gate is calibrated with the "
                              "exit thresholds, on the calibration split, against the bundle's calibrated policy")

    def run(self, ctx: StageContext) -> list[PartsHook]:
        return [cbnet_from_recipe(ctx.recipe, ctx.model, ctx.split, ctx.preprocess, ctx.policy, ctx.example,
                                  verify_inputs=ctx.verify_inputs, checkpoint_dir=ctx.checkpoint_dir,
                                  resume=ctx.resume, progress=ctx.progress)]
