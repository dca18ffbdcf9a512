"""`edge-runtime demo`: a clear error without the convert extra; the quick smoke run (default tier); the real
demo under 10 minutes (slow tier: ``python -m pytest -m slow tests/test_demo.py``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from edge_runtime.bench.plots import PLOTS

REPORT_FILES = ("report.md", "report.html", "results.json", "results.csv", *PLOTS)


def _demo_ready() -> bool:
    from converters.pipeline.demo import load_demo_spec, recipe_path

    return all(recipe_path(m.recipe).is_file() for m in load_demo_spec().models)


def test_demo_without_the_convert_extra_says_what_to_install(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # as if the convert extra were not installed: `import torch` fails
        from edge_runtime.cli import main
        sys.exit(main(["demo", "--out", {str(tmp_path / 'out')!r}]))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert 'pip install -e ".[convert,bench]"' in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_demo_models_are_data_and_errors_name_the_file_and_key(tmp_path):
    from converters.pipeline.demo import load_demo_spec, recipe_path
    from edge_runtime.errors import ConfigError

    spec = load_demo_spec()
    assert spec.models and all(recipe_path(m.recipe).is_file() for m in spec.models)
    assert len({m.key for m in spec.models}) == len(spec.models) and "early_exit" in spec.table_rows
    bad = tmp_path / "models.yaml"
    for text, key in [("models:\n  - {key: a, recipe: a.yaml}\ntable_rows: []\n", r"models\[0\]\.title"),
                      ("models:\n  - {key: a, recipe: a.yaml, title: A, when: 1}\ntable_rows: []\n", "when"),
                      ("models:\n  - {key: a, recipe: a.yaml, title: A}\ntable_rows: full\n", "table_rows"),
                      ("models: []\n", "'models' list")]:
        bad.write_text(text)
        load_demo_spec.cache_clear()
        with pytest.raises(ConfigError, match=key):
            load_demo_spec(bad)
    load_demo_spec.cache_clear()


def _run_demo(args: list[str], cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "EDGE_RUNTIME_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-m", "edge_runtime", "demo", *args, "--no-progress"],
                          capture_output=True, text=True, timeout=900, env=env)


def _check_outputs(out: Path, stdout: str, keys: tuple[str, ...]) -> None:
    from edge_runtime.bench import load_results

    assert (out / "summary.md").is_file()
    assert f"report: {out / 'summary.md'}" in stdout
    for key in keys:
        for name in REPORT_FILES:
            assert (out / key / name).is_file(), f"{key}/{name}"
        res = load_results(out / key / "results.json")
        assert res["data"]["split_check"] == "match", res["data"]["notes"]
        kinds = {r["kind"] for r in res["configs"]}
        assert {"full", "never", "early_exit", "oracle"} <= kinds
        assert (out / "bundles" / key / "manifest.json").is_file()
    res = load_results(out / "branchynet_resnet" / "results.json")
    assert "cbnet" in {r["kind"] for r in res["configs"]}, "the BranchyNet demo bundle carries CBNet parts"
    summary = stdout.split(f"report: {out / 'summary.md'}")[1].strip().splitlines()[1:]
    # the report's six summary lines per model (the last: what to deploy), then every model's targets in one line
    assert len(summary) == 6 * len(keys) + 1 and summary[-1].startswith("targets:")
    table = [line for line in (out / "summary.md").read_text().splitlines() if line.startswith("|")]
    assert table[0].startswith("| model | configuration | accuracy % |") and table[1].startswith("|---|")
    assert any("| CBNet (autoencoder" in line for line in table)          # a row kind named in models.yaml


def test_demo_quick_smoke_run_and_cache_reuse(tmp_path):
    """The demo's whole path (train, cache, bench, report, summary) on the CBNet bundle, one epoch per stage;
    the LGViT bundle is left to the slow tier's full run."""
    if not _demo_ready():
        pytest.skip("the demo recipes (branchynet_resnet.yaml, lgvit_vit.yaml) are not in this tree yet")
    cache, out = tmp_path / "cache", tmp_path / "out"
    args = ["--quick", "--models", "branchynet_resnet", "--out", str(out)]
    first = _run_demo(args, cache)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "converting" in first.stdout
    _check_outputs(out, first.stdout, ("branchynet_resnet",))
    t0 = time.perf_counter()
    second = _run_demo(args, cache)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "converting" not in second.stdout, "the second run must reuse the cached bundles"
    assert time.perf_counter() - t0 < 120


@pytest.mark.slow
def test_demo_full_run_under_ten_minutes(tmp_path):
    if not _demo_ready():
        pytest.skip("the demo recipes are not in this tree yet")
    t0 = time.perf_counter()
    proc = _run_demo(["--out", str(tmp_path / "out")], tmp_path / "cache")
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    _check_outputs(tmp_path / "out", proc.stdout, ("branchynet_resnet", "lgvit_vit"))
    assert elapsed <= 600, f"the demo took {elapsed:.0f} s from an empty cache (limit 600 s)"
    print(proc.stdout)
    print(json.dumps({"demo_seconds": round(elapsed, 1)}))
