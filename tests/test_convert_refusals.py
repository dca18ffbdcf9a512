"""``convert`` refuses, before training and writing anything, recipes and arguments it cannot honour: each a
one-line project error naming the recipe key or argument."""

from __future__ import annotations

from pathlib import Path

import pytest

from converters import convert
from converters.training.trainer import TrainCallback
from edge_runtime.errors import ConfigError


class _Trained(TrainCallback):
    def __init__(self) -> None:
        self.batches = 0

    def on_batch_end(self, trainer, stage, epoch, step, loss) -> None:
        self.batches += 1


def _digits(**extra) -> dict:
    return {"name": "r", "seed": 0, "model": {"name": "tiny_cnn", "kwargs": {}},
            "data": {"name": "digits", "kwargs": {"size": 16}},
            "train": {"stages": [{"name": "s", "epochs": 1, "batch_size": 64}]}, **extra}


def _refused(recipe: dict, tmp_path: Path, match: str, **kwargs) -> None:
    cb = _Trained()
    with pytest.raises(ConfigError, match=match) as exc:
        convert(recipe, tmp_path / "b", progress=False, callbacks=[cb], **kwargs)
    assert len(str(exc.value).splitlines()) == 1, str(exc.value)
    assert cb.batches == 0                        # before training
    assert list(tmp_path.iterdir()) == []         # nothing written


def test_calibrate_with_a_text_input_is_refused_before_training(tmp_path):
    recipe = _digits(input={"text": {"tokenizer": "tokenizer.json"}},
                     calibrate={"measure_latency": False, "recommend": False})
    _refused(recipe, tmp_path, r"recipe key calibrate: .*input\.text")


def test_calibrate_with_an_empty_test_split_is_refused_before_training(tmp_path):
    recipe = _digits(calibrate={"measure_latency": False, "recommend": False})
    recipe["data"]["split"] = {"seed": 0, "fractions": {"train": 0.7, "calibration": 0.3, "test": 0.0}}
    _refused(recipe, tmp_path, r"recipe key data\.split\.fractions\.test: .*calibrate")


KANGAROO_TINY = Path(__file__).resolve().parents[1] / "converters" / "recipes" / "kangaroo_tiny.yaml"


@pytest.mark.parametrize("arg", ["model", "trained", "callbacks"])
def test_a_bundle_writing_stage_refuses_arguments_it_would_ignore(tmp_path, arg):
    from converters.models import create_model
    given = {"model": {"model": create_model("tiny_cnn")},
             "trained": {"trained": tmp_path / "b.train" / "trained.pt"},
             "callbacks": {}}[arg]   # _refused passes a callback itself
    if arg == "trained":
        given["trained"].parent.mkdir()
        given["trained"].write_bytes(b"weights")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    cb = _Trained()
    with pytest.raises(ConfigError, match=rf"recipe section 'kangaroo' writes the whole bundle itself.*\b{arg}\b"):
        convert(KANGAROO_TINY, tmp_path / "b", progress=False, callbacks=[cb] if arg == "callbacks" else (),
                **given)
    assert cb.batches == 0 and sorted(p.name for p in tmp_path.rglob("*")) == before   # the weights are kept


def test_a_bundle_writing_stage_honours_keep_trained(tmp_path):
    out = convert(KANGAROO_TINY, tmp_path / "lm", progress=False, keep_trained=True)
    assert out is not None and (tmp_path / "lm.train").is_dir()


@pytest.mark.parametrize("how", ["factory", "model="])
def test_a_heads_section_with_a_users_model_is_refused(tmp_path, how):
    from converters.models import create_model
    recipe = _digits(heads=[{"name": "flatten_linear", "kwargs": {"in_features": 4}}])
    kwargs = {}
    if how == "factory":
        recipe["model"] = {"factory": "mymod:build", "exits": {"at": ["layer1"]}}
    else:
        kwargs["model"] = create_model("tiny_cnn")
    _refused(recipe, tmp_path, r"recipe key heads: .*registered model", **kwargs)
