"""Conversion stages a method adds to ``convert`` by registering them in :data:`STAGES` from its own folder.

Imports nothing else from ``converters``, so ``converters/methods/<method>/`` can register a stage without an
import cycle, and ``convert`` runs every registered stage without naming one.

Example:
    >>> @STAGES.register("my_method")                                     # doctest: +SKIP
    ... class MyStage(ConversionStage):
    ...     section = "my_method"              # runs when the recipe has a `my_method:` section
    ...     def run(self, ctx):
    ...         return [my_parts_exporter(ctx.model, ctx.example)]   # export hooks of its extra parts
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from edge_runtime.registry import Registry

#: when a stage runs: after the training stages (before the bundle is exported), or once the bundle's policy is
#: final (after threshold calibration when the recipe calibrates; with the recipe's policy otherwise); or, for a
#: model family ``export_bundle`` does not cover (a causal language model with key-value caches), ``bundle``: the
#: stage builds, trains and writes the whole bundle into ``StageContext.staging`` instead of the early-exit path
WHEN = ("after_training", "after_calibration", "bundle")

#: an export hook for a stage's extra parts: ``hook(bundle_dir, manifest)`` writes its files and manifest section
#: (``export_bundle``'s ``extra_parts``); its ``graphs(manifest)`` lists them for TFLite/quantized variants
PartsHook = Callable[[Path, dict[str, Any]], None]


@dataclass
class StageContext:
    """What a stage sees of the conversion.

    Attributes:
        recipe: the validated recipe (:class:`converters.recipe.Recipe`; its sections by key).
        model: the trained early-exit model (in eval mode; do not modify it after ``after_training``).
        split: the recipe's data split (:class:`edge_runtime.datasets.SplitData`), None without ``data``.
        preprocess: raw inputs -> model-ready inputs (the bundle's preprocessing).
        example: one model-ready input batch (the export's example input).
        verify_inputs: real model-ready inputs exported graphs are verified on, None without data.
        export: the ``export_bundle`` keyword arguments (opset, backends, tolerances, verify batch sizes, seed).
        checkpoint_dir: where the stage may keep training checkpoints (removed once the bundle is complete).
        resume: continue from those checkpoints.
        progress: show progress bars.
        policy: the bundle's policy ``{"name", "kwargs", "thresholds"}`` (the calibrated one at
            ``after_calibration``; the recipe's at ``after_training``).
        staging: the bundle directory being built (``after_calibration`` with calibration, and ``bundle``: the empty
            directory the stage writes the bundle into; else None).
        manifest: its manifest as written so far (``after_calibration`` with calibration).
    """

    recipe: Any
    model: Any
    split: Any
    preprocess: Callable[[Any], Any]
    example: Any
    verify_inputs: Any
    export: dict[str, Any]
    checkpoint_dir: Path
    resume: bool
    progress: bool
    policy: dict[str, Any]
    staging: Path | None = None
    manifest: dict[str, Any] | None = None


class ConversionStage(ABC):
    """A method's step in ``convert``: it runs when the recipe has its :attr:`section`, at :attr:`when`, and
    returns the export hooks of the parts it adds to the bundle (``convert`` writes them and their variants).
    """

    #: the recipe section that switches the stage on (present and not null)
    section: ClassVar[str]
    #: when it runs, one of :data:`WHEN`
    when: ClassVar[str] = "after_calibration"

    def applies(self, recipe: Any) -> bool:
        """Whether the recipe asks for this stage (default: its section is present and not null)."""
        return recipe.get(self.section) is not None

    def check(self, recipe: Any, split: Any) -> None:  # noqa: B027 - optional hook: most stages accept any recipe
        """Refuse a recipe the stage cannot run on, before anything trains (raise ``ConfigError`` naming the
        key); ``split`` is None when the recipe has no ``data`` section."""

    @abstractmethod
    def run(self, ctx: StageContext) -> list[PartsHook]:
        """Do the stage's work; the export hooks of the parts it adds (may be empty)."""


#: conversion stages: ``name -> ConversionStage subclass``, discovered from ``converters/methods/``
STAGES: Registry[type[ConversionStage]] = Registry("conversion stage", plugins="converters.methods")


def active_stages(recipe: Any, split: Any) -> list[ConversionStage]:
    """The registered stages this recipe asks for, in registration order, each checked against it.

    Raises:
        ConfigError: from a stage's :meth:`ConversionStage.check`.
        ValueError: a stage declares a ``when`` that is not one of :data:`WHEN`.
    """
    out = []
    for name in STAGES.ordered():
        stage = STAGES.get(name)()
        if stage.when not in WHEN:
            raise ValueError(f"conversion stage {name!r}: when={stage.when!r}; expected one of {', '.join(WHEN)}")
        if stage.applies(recipe):
            stage.check(recipe, split)
            out.append(stage)
    return out
