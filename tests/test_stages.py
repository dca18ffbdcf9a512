"""Conversion stages as a plug-in point (each registered stage's own smoke test is in test_registries.py): a stage
registered from outside ``convert`` runs when its section is present, at its point, with the bundle's final policy,
and its parts' hooks reach the bundle; its ``check`` refuses a recipe before anything trains."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from converters.pipeline.stages import STAGES, ConversionStage
from converters.recipe import load_recipe, parse_recipe
from converters.recipe.sections import SECTIONS, section
from edge_runtime.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def probe():
    """A recipe section ``probe_stage`` and two stages keyed on it (one per point), recording what they saw."""
    seen: list[tuple] = []

    @section("probe_stage")
    def _parse(value, where="probe_stage"):
        return dict(value or {})

    class _Early(ConversionStage):
        section = "probe_stage"
        when = "after_training"

        def run(self, ctx):
            seen.append(("after_training", dict(ctx.policy), ctx.staging))
            return []

    class _Late(ConversionStage):
        section = "probe_stage"

        def check(self, recipe, split):
            if recipe["probe_stage"].get("needs_data") and split is None:
                raise ConfigError("recipe key 'probe_stage' needs a 'data' section")

        def run(self, ctx):
            seen.append(("after_calibration", dict(ctx.policy), ctx.staging))

            def hook(root, manifest):
                seen.append(("hook", Path(root).is_dir(), len(manifest["segments"])))
            return [hook]

    STAGES.register("probe_early", _Early)
    STAGES.register("probe_late", _Late)
    try:
        yield seen
    finally:
        for registry, names in ((STAGES, ("probe_early", "probe_late")), (SECTIONS, ("probe_stage",))):
            for name in names:
                registry._entries.pop(name, None)


def test_stages_run_at_their_points_without_calibration(probe, tmp_path):
    from converters import convert

    data = copy.deepcopy(load_recipe(REPO / "converters" / "recipes" / "tiny_cnn.yaml").resolved())
    convert(parse_recipe({**data, "probe_stage": {}}), tmp_path / "b", progress=False)
    policy = {"name": "entropy", "kwargs": {}, "thresholds": [0.5, 0.5]}
    assert probe == [("after_training", policy, None), ("after_calibration", policy, None), ("hook", True, 3)]
    probe.clear()
    convert(parse_recipe(data), tmp_path / "c", progress=False)      # no section: no stage
    assert probe == []


def test_after_calibration_stage_sees_the_calibrated_policy_in_the_staging_bundle(probe, tmp_path):
    import edge_runtime
    from converters import convert

    recipe = {
        "name": "probe", "seed": 0, "data": {"name": "digits", "kwargs": {"size": 8}},
        "model": {"name": "tiny_cnn", "kwargs": {"image_size": 8, "widths": [8, 16], "exits_after": [0]}},
        "train": {"threads": 1, "stages": [{"name": "s", "lr": 0.01, "epochs": 1, "batch_size": 64}]},
        "policy": {"name": "entropy", "thresholds": 0.5},
        "calibrate": {"measure_latency": False, "max_accuracy_drop": 5.0},
        "probe_stage": {"needs_data": True},
    }
    out = convert(parse_recipe(recipe), tmp_path / "b", progress=False)
    shipped = edge_runtime.load_bundle(out, threads=1).manifest.policy
    (_, early_policy, _), (point, policy, staging), hook = probe
    assert early_policy["thresholds"] == 0.5                   # before calibration: the recipe's
    assert point == "after_calibration" and staging is not None and hook == ("hook", True, 2)
    assert list(policy["thresholds"]) == list(shipped.thresholds)
    no_data = {k: v for k, v in recipe.items() if k not in ("data", "train", "calibrate")}
    probe.clear()
    with pytest.raises(ConfigError, match="'probe_stage' needs a 'data' section"):
        convert(parse_recipe(no_data), tmp_path / "never", progress=False)
    assert probe == [] and not (tmp_path / "never").exists()


@pytest.fixture()
def writer():
    """A section ``probe_bundle`` whose stage writes a whole (synthetic) bundle itself (``when = "bundle"``)."""
    from edge_runtime.synthetic import write_synthetic_bundle

    seen: list = []

    @section("probe_bundle")
    def _parse(value, where="probe_bundle"):
        return dict(value or {})

    class _Writer(ConversionStage):
        section = "probe_bundle"
        when = "bundle"

        def run(self, ctx):
            seen.append((ctx.model, ctx.staging.is_dir(), sorted(ctx.staging.iterdir())))
            if not ctx.recipe["probe_bundle"].get("write_nothing"):
                ctx.staging.rmdir()  # the synthetic writer creates its directory itself
                write_synthetic_bundle(ctx.staging, num_exits=2)
            return []

    STAGES.register("probe_writer", _Writer)
    try:
        yield seen
    finally:
        STAGES._entries.pop("probe_writer", None)
        SECTIONS._entries.pop("probe_bundle", None)


def test_a_bundle_stage_writes_the_whole_bundle_without_a_model_section(writer, tmp_path):
    import edge_runtime
    from converters import convert

    out = convert(parse_recipe({"name": "w", "probe_bundle": {}}), tmp_path / "b", progress=False)
    assert out == tmp_path / "b" and writer == [(None, True, [])]          # no model built; an empty staging dir
    assert edge_runtime.load_bundle(out).num_exits == 2
    # a rank that writes nothing (torchrun's others) gets None and leaves nothing behind
    assert convert(parse_recipe({"name": "w", "probe_bundle": {"write_nothing": True}}), tmp_path / "c",
                   progress=False) is None
    assert not (tmp_path / "c").exists()
    with pytest.raises(ConfigError, match="recipe key 'model' is required"):
        convert(parse_recipe({"name": "w"}), tmp_path / "d", progress=False)
