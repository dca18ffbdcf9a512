"""The command-line tool end to end, and recipe validation errors that name the bad key."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from converters.recipe import load_recipe, parse_recipe
from edge_runtime.cli import build_parser, main
from edge_runtime.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_every_subcommand_has_help(capsys):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {"convert", "run", "inspect"} <= set(sub.choices)
    for name, p in sub.choices.items():
        assert p.description or p.format_help(), name
        for action in p._actions:
            if action.dest not in ("help",) and action.option_strings:
                assert action.help, f"{name} {action.option_strings} has no help"


def test_convert_run_inspect(tmp_path, capsys):
    out = tmp_path / "b"
    assert main(["convert", str(REPO / "converters/recipes/tiny_cnn.yaml"), "--out", str(out), "--no-progress"]) == 0
    resolved = json.loads((out / "manifest.json").read_text())["recipe"]
    assert resolved["model"]["name"] == "tiny_cnn" and resolved["export"]["tolerance"] == 1e-4
    x = np.random.default_rng(0).standard_normal((3, 1, 16, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    capsys.readouterr()
    assert main(["run", str(out), "--input", str(tmp_path / "x.npy"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["samples"]) == 3
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "verification: passed" in text and "branchy_conv" in text
    # a second convert to the same place refuses without --overwrite
    assert main(["convert", str(REPO / "converters/recipes/tiny_cnn.yaml"), "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err


def test_console_script_runs(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "edge_runtime", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "convert" in proc.stdout


BASE = {"name": "t", "model": {"name": "tiny_cnn", "kwargs": {}}}


@pytest.mark.parametrize(
    "data, message",
    [
        ({**BASE, "modle": {}}, r"recipe key 'modle' is not known"),
        ({"model": BASE["model"]}, r"recipe key 'name' is required"),
        ({**BASE, "model": {"name": "resnet9000"}}, r"model\.name: unknown model builder 'resnet9000'"),
        ({**BASE, "model": {"kwargs": {}}}, r"model\.name is required"),
        ({**BASE, "policy": {"name": "psychic"}}, r"policy\.name: unknown exit policy"),
        ({**BASE, "policy": {"thresholds": "high"}}, r"policy\.thresholds"),
        ({**BASE, "export": {"tolerance": -1}}, r"export\.tolerance: must be > 0"),
        ({**BASE, "export": {"tolerence": 1}}, r"export\.'tolerence' is not known"),
        ({**BASE, "export": {"verify_batch_sizes": [1, 0]}}, r"export\.verify_batch_sizes"),
        ({**BASE, "export": {"fp16_tolerance": 0}}, r"export\.fp16_tolerance: must be > 0"),
        ({**BASE, "seed": True}, r"seed: expected int, got a boolean"),
        ([1, 2], "must be a YAML mapping"),
    ],
)
def test_recipe_errors_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        parse_recipe(data)


def test_recipe_yaml_cannot_run_code(tmp_path):
    p = tmp_path / "evil.yaml"
    p.write_text("name: !!python/object/apply:os.system ['echo pwned']\nmodel: {name: tiny_cnn}\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_recipe(p)


def test_shipped_recipes_validate():
    for path in sorted((REPO / "converters" / "recipes").glob("*.yaml")):
        assert load_recipe(path).name


def test_run_defaults_to_the_bundles_recommended_mode(cnn_bundle, monkeypatch, capsys):
    from edge_runtime.runtime import Runtime

    monkeypatch.setattr(Runtime, "default_mode", property(lambda self: "full"))  # as a deployment record would say
    assert main(["run", str(cnn_bundle), "--random", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["mode"] == "full"


@pytest.mark.parametrize("source", [["--random", "2"], ["--text", "a dog"]])
def test_run_refuses_preprocess_without_an_input_file(cnn_bundle, capsys, source):
    assert main(["run", str(cnn_bundle), *source, "--preprocess"]) == 2
    assert "--preprocess" in capsys.readouterr().err
