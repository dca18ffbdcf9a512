"""`edge-runtime bench`: every report file, the results schema, report.md == results.json, --compare, data checks."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from _helpers import HEAVY_MODULES

from edge_runtime.bench import compare_results, load_results, validate_results
from edge_runtime.bench.plots import PLOTS
from edge_runtime.errors import EdgeRuntimeError, InputError

N_SAMPLES = 48


@pytest.fixture(scope="module")
def report(bundles, tmp_path_factory) -> dict:
    """Run the bench CLI once, in a fresh interpreter (so we can see what it imported), on a tiny bundle."""
    root = tmp_path_factory.mktemp("bench")
    rng = np.random.default_rng(7)
    data = root / "data.npz"
    np.savez(data, x=rng.standard_normal((N_SAMPLES, 1, 16, 16)).astype(np.float32), y=rng.integers(0, 10, N_SAMPLES))
    out = root / "report"
    args = [str(bundles["tiny_cnn"]), "--data", str(data), "--report", str(out), "--threads", "1",
            "--batch-sizes", "1,4,16", "--sweep-points", "3", "--warmup", "2", "--min-batches", "2",
            "--no-progress", "--meter", "none"]
    code = textwrap.dedent(f"""
        import json, sys
        from edge_runtime.cli import main
        rc = main(["bench", *{args!r}])
        print(json.dumps({{"rc": rc, "mods": {HEAVY_MODULES}}}))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"dir": out, "stdout": proc.stdout, **status}


def test_bench_writes_every_report_file_without_torch(report):
    assert report["rc"] == 0
    assert report["mods"] == [], "the device-side bench must not import torch or converters"
    for name in ("report.md", "report.html", "results.json", "results.csv", *PLOTS):
        path = report["dir"] / name
        assert path.is_file() and path.stat().st_size > 0, name
    for name in PLOTS:
        assert (report["dir"] / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (report["dir"] / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(PLOTS)
    assert not re.search(r'src="(?!data:)', html), "report.html must be self-contained"
    assert "report:" in report["stdout"] and "targets" in report["stdout"]


def test_results_validate_and_hold_every_row(report):
    res = load_results(report["dir"] / "results.json")  # validates against the schema
    names = [r["name"] for r in res["configs"]]
    assert names[:3] == ["full", "never", "early_exit"]
    assert [n for n in names if n.startswith("sweep_")] == ["sweep_00", "sweep_01", "sweep_02"]
    assert names[-1] == "oracle"
    assert res["settings"]["batch_sizes"] == [1, 4, 16]
    rows = {r["name"]: r for r in res["configs"]}
    assert rows["full"]["speedup_vs_full"] == pytest.approx(1.0)
    for r in res["configs"]:
        assert sum(r["exit_histogram"]) == N_SAMPLES
        if r["measured"]:
            assert r["latency_ms"]["n"] == N_SAMPLES
            assert [t["batch_size"] for t in r["throughput"]] == [1, 4, 16]
            assert r["latency_ms"]["p50"] <= r["latency_ms"]["p95"] <= r["latency_ms"]["p99"]
        # the oracle picks the earliest correct exit: no policy over the same exits can beat it
        assert r["accuracy"] <= rows["oracle"]["accuracy"] + 1e-12
    assert rows["never"]["exit_histogram"][:-1] == [0] * (len(rows["never"]["exit_histogram"]) - 1)
    assert rows["oracle"]["measured"] is False and rows["oracle"]["latency_ms"]["mean"] > 0
    assert res["header"]["bundle"]["manifest_sha256"] == __import__("hashlib").sha256(
        (Path(res["header"]["bundle"]["path"]) / "manifest.json").read_bytes()).hexdigest()
    status = {t["name"]: t["status"] for t in res["targets"]}
    assert "cbnet_speedup" not in status  # a mode's targets appear only where the bundle runs the mode
    assert status["batched_throughput_32"] == "N/A"  # batch 32 was not measured
    assert status["early_exit_speedup"] in ("PASS", "MISS")


def test_schema_rejects_broken_results(report):
    res = json.loads((report["dir"] / "results.json").read_text())
    bad = copy.deepcopy(res)
    bad["configs"][0]["accuracy"] = 1.5
    with pytest.raises(InputError, match="configs.0.accuracy"):
        validate_results(bad)
    bad = copy.deepcopy(res)
    del bad["configs"][1]["latency_ms"]
    with pytest.raises(InputError, match="latency_ms"):
        validate_results(bad)


def _md_table(md: str, first_header: str, second_header: str) -> list[dict[str, str]]:
    """Parse the markdown table whose header starts with the given two cells."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} | {second_header} |"))
    headers = [c.strip() for c in lines[start].strip("|").split("|")]
    out = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        out.append(dict(zip(headers, [c.strip() for c in line.strip("|").split("|")])))
    return out


def _close(cell: str, value: float | None, decimals: int) -> bool:
    if value is None:
        return cell == "n/a"
    return abs(float(cell) - value) <= 0.5 * 10 ** -decimals + 1e-9


def test_report_numbers_are_the_results_json_numbers(report):
    md = (report["dir"] / "report.md").read_text()
    res = json.loads((report["dir"] / "results.json").read_text())
    rows = {r["name"]: r for r in res["configs"]}
    table = _md_table(md, "row", "configuration")
    assert [t["row"] for t in table] == [r["name"] for r in res["configs"]]
    for t in table:
        r = rows[t["row"]]
        lat = r["latency_ms"] or {}
        assert _close(t["accuracy %"], 100 * r["accuracy"], 2)
        assert _close(t["drop pts"], r["accuracy_drop_pts"], 2)
        for key in ("mean", "p50", "p95", "p99"):
            assert _close(t[f"{key} ms"], lat.get(key), 3), (t["row"], key)
        assert _close(t["speed-up x"], r["speedup_vs_full"], 2)
    thr = _md_table(md, "row", "b=1 /s")
    for t in thr:
        for e in rows[t["row"]]["throughput"]:
            assert _close(t[f"b={e['batch_size']} /s"], e["samples_per_s"], 1)
            assert _close(t[f"b={e['batch_size']} x"], e["speedup_vs_full"], 2)
    targets = _md_table(md, "target", "status")
    assert [(t["target"], t["status"].strip("*")) for t in targets] == \
        [(x["name"], x["status"]) for x in res["targets"]]
    assert res["header"]["bundle"]["manifest_sha256"] in md
    csv_lines = (report["dir"] / "results.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + len(res["configs"])


def test_render_reproduces_the_report_from_json(report, tmp_path):
    from edge_runtime.cli import main

    assert main(["bench", "--render", str(report["dir"] / "results.json"), "--report", str(tmp_path)]) == 0
    assert (tmp_path / "report.md").read_text() == (report["dir"] / "report.md").read_text()


def test_compare_prints_ratios(report, tmp_path, capsys):
    from edge_runtime.cli import main

    a = json.loads((report["dir"] / "results.json").read_text())
    b = copy.deepcopy(a)
    b["header"]["machine"]["cpu"] = "Cortex-A72"
    for r in b["configs"]:
        if r["latency_ms"]:
            r["latency_ms"]["mean"] *= 2
    pa, pb = tmp_path / "a.json", tmp_path / "b.json"
    pa.write_text(json.dumps(a))
    pb.write_text(json.dumps(b))
    assert main(["bench", "--compare", str(pa), str(pb)]) == 0
    out = capsys.readouterr().out
    assert "machine.cpu" in out and "Cortex-A72" in out
    mean_lines = [line for line in out.splitlines() if "mean ms (b=1)" in line]
    assert len(mean_lines) == len([r for r in a["configs"] if r["latency_ms"]])
    assert all(line.split()[-1] == "2.000" for line in mean_lines)
    assert next(line for line in out.splitlines() if "accuracy %" in line).split()[-1] == "1.000"
    assert "early_exit" in out
    text = compare_results(a, a)
    assert "(none)" in text


def test_bench_cli_errors_are_one_line(report, tmp_path, capsys):
    from edge_runtime.cli import main

    assert main(["bench", str(tmp_path)]) == 2
    assert "--data" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "something else"}))
    assert main(["bench", "--compare", str(bad), str(bad)]) == 2
    assert "bad.json" in capsys.readouterr().err


def test_bench_data_checks(bundles, tmp_path):
    import edge_runtime
    from edge_runtime.bench import load_bench_data

    rt = edge_runtime.load_bundle(bundles["tiny_cnn"], threads=1)
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, x=np.zeros((4, 1, 8, 8), np.float32), y=np.zeros(4, np.int64))
    with pytest.raises(InputError, match=r"\(N, 1, 16, 16\)"):
        load_bench_data(str(wrong), rt)
    labels = tmp_path / "labels.npz"
    np.savez(labels, x=np.zeros((4, 1, 16, 16), np.float32), y=np.array([0, 1, 2, 99]))
    with pytest.raises(InputError, match=r"\[0, 10\)"):
        load_bench_data(str(labels), rt)
    with pytest.raises(EdgeRuntimeError, match="NAME:SPLIT"):
        load_bench_data("digits", rt)


def test_registered_dataset_split_is_checked_against_the_manifest(bundles, tmp_path):
    pytest.importorskip("sklearn")
    import edge_runtime
    from edge_runtime import datasets
    from edge_runtime.bench import load_bench_data

    bundle = tmp_path / "b"
    shutil.copytree(bundles["tiny_cnn"], bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["data"] = datasets.build_split({"name": "digits", "kwargs": {"size": 16}}).manifest_section()
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    rt = edge_runtime.load_bundle(bundle, threads=1)
    data = load_bench_data("digits:test", rt)
    assert data.split_check == "match" and len(data.y) == manifest["data"]["counts"]["test"]
    assert data.x.shape[1:] == (1, 16, 16)
    manifest["data"]["test_indices_sha256"] = "0" * 64
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    assert load_bench_data("digits:test", edge_runtime.load_bundle(bundle, threads=1)).split_check == "mismatch"


def test_optional_pytorch_eager_row(bundles, tmp_path):
    """--torch-checkpoint adds a PyTorch-eager row; same weights as the bundle, so the same answers."""
    import torch

    from converters import create_model, load_recipe
    from converters.pipeline.convert import seed_everything
    from edge_runtime.bench import BenchSettings, run_bench

    recipe = load_recipe(Path(__file__).resolve().parents[1] / "converters" / "recipes" / "tiny_cnn.yaml")
    seed_everything(recipe["seed"])  # what convert does before building the model: the bundle's weights
    model = create_model(recipe["model"]["name"], **recipe["model"]["kwargs"])
    torch.save(model.state_dict(), tmp_path / "model.pt")
    import edge_runtime

    x = np.random.default_rng(2).standard_normal((12, 1, 16, 16)).astype(np.float32)
    # labels = the full model's own answers
    y = edge_runtime.load_bundle(bundles["tiny_cnn"], threads=1).infer(x, mode="full").predictions
    np.savez(tmp_path / "d.npz", x=x, y=y)
    res = run_bench(bundles["tiny_cnn"], BenchSettings(
        data=str(tmp_path / "d.npz"), threads=1, batch_sizes=(1, 4), sweep_points=0, warmup=1, min_batches=1,
        meter="none", torch_checkpoint=str(tmp_path / "model.pt"), progress=False))
    rows = {r["name"]: r for r in res["configs"]}
    assert rows["full"]["accuracy"] == 1.0
    assert rows["torch_eager"]["accuracy"] == 1.0
    assert rows["torch_eager"]["baseline"] == "full" and rows["torch_eager"]["speedup_vs_full"] > 0


def test_sweep_uses_the_calibration_curve_then_quantiles(bundles, tmp_path):
    import edge_runtime
    from edge_runtime.bench import BenchContext
    from edge_runtime.bench.sweep import sweep_thresholds

    bundle = tmp_path / "b"
    shutil.copytree(bundles["tiny_cnn"], bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    curve = [{"thresholds": [0.3, 0.2], "mean_flops": 20, "accuracy": 0.9},
             {"thresholds": [0.1, 0.4], "mean_flops": 10, "accuracy": 0.8}]
    manifest["calibration"] = {"policy": {"name": "entropy"}, "curve": curve}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    rt = edge_runtime.load_bundle(bundle, threads=1)
    x = np.random.default_rng(0).standard_normal((30, 1, 16, 16)).astype(np.float32)
    ctx = BenchContext(runtimes={("onnxruntime", "fp32"): rt}, x=x, y=np.zeros(30, np.int64), sweep_points=2)
    points, source, origins = sweep_thresholds(rt, ctx)
    assert points == [[0.1, 0.4], [0.3, 0.2]] and source.startswith("manifest calibration curve")  # by cost
    ctx.sweep_points = 5
    points, source, origins = sweep_thresholds(rt, ctx)
    assert points[:2] == [[0.1, 0.4], [0.3, 0.2]] and len(points) == 5 and "quantile" in source
    assert origins == ["calibration curve"] * 2 + ["score quantile 0.25", "score quantile 0.50", "score quantile 0.75"]
    scores = [rt.default_policy.score(o) for o in rt.exit_outputs(x)[:-1]]
    assert points[2][0] == pytest.approx(np.quantile(scores[0], 0.25))  # levels 0.25, 0.5, 0.75
