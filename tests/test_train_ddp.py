"""torchrun/DDP training on CPU (gloo): 2 processes end with identical weights; the bundle is written once."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).resolve().parent


@pytest.mark.slow
def test_torchrun_two_cpu_ranks_identical_weights_one_bundle(tmp_path):
    recipe = {
        "name": "ddp_tiny", "seed": 0,
        "data": {"name": "digits", "kwargs": {"size": 16}},
        "model": {"name": "tiny_cnn", "kwargs": {"widths": [4, 8, 8, 8]}},
        "train": {"device": "cpu", "threads": 1,
                  "stages": [{"name": "s", "epochs": 2, "batch_size": 64, "lr": 0.01}]},
        "policy": {"name": "entropy", "thresholds": 0.5},
        "calibrate": {"latency_repeats": 3, "levels": 6},
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    records = tmp_path / "records"
    records.mkdir()
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(HERE / "_ddp_worker.py"), str(tmp_path / "r.yaml"), str(tmp_path / "bundle"), str(records)],
        capture_output=True, text=True, timeout=600, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (json.loads((records / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    assert r0["weights"] == r1["weights"]                      # gradients and BN statistics averaged
    assert r0["returned"] == str(tmp_path / "bundle") and r1["returned"] is None
    n = r0["train_samples"]
    assert r0["batches_samples"] == r1["batches_samples"] < n   # each rank saw its own shard
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "r.yaml", "records"]   # once, no leftovers
    from edge_runtime.bundle import read_bundle

    m = read_bundle(tmp_path / "bundle").manifest
    assert tuple(m.calibration.chosen.thresholds) == m.policy.thresholds
    print(f"torchrun 2 ranks: {time.perf_counter() - t0:.1f} s")
