"""Kangaroo's conversion stage: a recipe with a ``kangaroo`` section is a causal language model, which
``export_bundle`` (per-exit classifier segments) does not cover, so the stage writes the whole bundle
(``when = "bundle"``): corpus -> tokenizer -> LM -> adapter -> KV-cache graphs, verified (:mod:`.build`)."""

from __future__ import annotations

from typing import Any

from converters.methods.kangaroo.build import KEY, build_lm_bundle
from converters.pipeline.stages import STAGES, ConversionStage, PartsHook, StageContext
from edge_runtime.errors import ConfigError

#: recipe sections of the early-exit path that a language-model recipe does not use (its own are under kangaroo:)
_NOT_HERE = {"model": "kangaroo.lm", "data": "kangaroo.corpus", "heads": "kangaroo.lm (the adapter is the exit)",
             "train": "kangaroo.train", "calibrate": "kangaroo.eta / kangaroo.gamma"}


@STAGES.register(KEY)
class KangarooStage(ConversionStage):
    """Trains the LM and its adapter and writes the bundle (draft/verify segments, full model, tokenizer)."""

    section = KEY
    when = "bundle"

    def check(self, recipe: Any, split: Any) -> None:
        for key, instead in _NOT_HERE.items():
            if recipe.get(key) is not None:
                raise ConfigError(f"recipe key {key!r}: a kangaroo recipe describes its language model under "
                                  f"'kangaroo' ({instead}); remove {key!r}")

    def run(self, ctx: StageContext) -> list[PartsHook]:
        if ctx.staging is None:
            raise ConfigError("the kangaroo stage writes a whole bundle: it needs the staging directory")
        recipe = ctx.recipe
        build_lm_bundle(recipe[KEY], ctx.staging, name=recipe.name, seed=recipe["seed"],
                        tolerance=float(ctx.export["tolerance"]), opset=int(ctx.export["opset"]),
                        checkpoint=ctx.checkpoint_dir / "checkpoint.pt", resume=ctx.resume, progress=ctx.progress,
                        sections={"recipe": recipe.resolved()})
        return []
