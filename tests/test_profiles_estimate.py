"""Device profiles (data files with a source for every figure), detection, calibration and prediction."""

from __future__ import annotations

import json

import pytest
import yaml

from edge_runtime.cli import main
from edge_runtime.errors import ConfigError
from edge_runtime.estimate import estimate_bundle, op_mix
from edge_runtime.manifest import GraphSpec, Manifest
from edge_runtime.profile_fit import FitSettings, fit_power_model, fit_profile
from edge_runtime.profiles import BUILTIN_DIR, PROFILES, detect_profile, get_profile, load_profile, profile_from_dict

BUILTIN = ["generic_x86_64", "jetson_nano", "jetson_orin_nano", "rpi4", "rpi5"]


def _figures(node, where=""):
    if isinstance(node, dict):
        if "value" in node:
            yield where, node
        else:
            for k, v in node.items():
                yield from _figures(v, f"{where}.{k}")


@pytest.mark.parametrize("name", BUILTIN)
def test_every_builtin_profile_loads_and_cites_every_figure(name):
    assert name in PROFILES
    prof = PROFILES.create(name)
    raw = yaml.safe_load((BUILTIN_DIR / f"{name}.yaml").read_text())
    figs = list(_figures({k: v for k, v in raw.items() if k != "measured"}))
    assert len(figs) >= 10
    for where, fig in figs:
        assert isinstance(fig["value"], (int, float)), where
        assert len(str(fig.get("source", "")).strip()) > 10, f"{name}{where} has no source"
    assert prof.power.active_w > prof.power.idle_w > 0
    assert prof.latency is not None and prof.latency.gflops["conv"] > 0 and prof.detect


def _minimal(**over):
    data = {"name": "x", "cpu": {"cores": 2, "type": "t", "arch": "a"}, "preferred": {"threads": 2},
            "power": {"idle_w": {"value": 1.0, "source": "s"}, "active_w": {"value": 3.0, "source": "s"}}}
    data.update(over)
    return data


def test_profile_validation_names_the_key():
    assert profile_from_dict(_minimal()).power.active_w_per_core(2) == 1.0
    with pytest.raises(ConfigError, match=r"power.idle_w: expected \{value: NUMBER, source"):
        profile_from_dict(_minimal(power={"idle_w": 1.0, "active_w": {"value": 3.0, "source": "s"}}))
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['gpu'\]"):
        profile_from_dict(_minimal(gpu=1))
    with pytest.raises(ConfigError, match="active_w 0.5 is below idle_w"):
        profile_from_dict(_minimal(power={"idle_w": {"value": 1, "source": "s"},
                                          "active_w": {"value": 0.5, "source": "s"}}))
    with pytest.raises(ConfigError, match=r"latency: missing key 'conv_gflops'"):
        profile_from_dict(_minimal(latency={"call_overhead_s": {"value": 1e-5, "source": "s"},
                                            "other_op_s": {"value": 1e-6, "source": "s"},
                                            "matmul_gflops": {"value": 1, "source": "s"}}))
    with pytest.raises(ConfigError, match=r"detect: unknown rule"):
        profile_from_dict(_minimal(detect={"dmi": ["x"]}))


@pytest.mark.parametrize("model,tegra,cpuinfo,machine,expected", [
    ("Raspberry Pi 4 Model B Rev 1.4\x00", "", "Hardware\t: BCM2835\n", "aarch64", "rpi4"),
    ("Raspberry Pi 5 Model B Rev 1.0\x00", "", "", "aarch64", "rpi5"),
    ("NVIDIA Jetson Nano Developer Kit\x00", "# R32 (release), REVISION: 7.1", "", "aarch64", "jetson_nano"),
    ("NVIDIA Jetson Orin Nano Developer Kit\x00", "# R36 (release), REVISION: 3.0", "", "aarch64",
     "jetson_orin_nano"),
    ("", "", "vendor_id\t: GenuineIntel\n", "x86_64", "generic_x86_64"),
])
def test_detect_from_configurable_paths(tmp_path, model, tegra, cpuinfo, machine, expected):
    paths = {}
    for key, text in (("device_tree_model", model), ("tegra_release", tegra), ("cpuinfo", cpuinfo)):
        f = tmp_path / key
        if text:
            f.write_text(text)
        paths[key] = f
    d = detect_profile(paths, machine=machine)
    assert d.name == expected and d.evidence


def test_predict_hand_computed_and_operating_point(tmp_path):
    prof = profile_from_dict(_minimal(latency={
        "threads": 1,
        "call_overhead_s": {"value": 1e-5, "source": "s"}, "other_op_s": {"value": 1e-6, "source": "s"},
        "conv_op_s": {"value": 2e-6, "source": "s"}, "matmul_op_s": {"value": 3e-6, "source": "s"},
        "conv_gflops": {"value": 1.0, "source": "s"}, "matmul_gflops": {"value": 2.0, "source": "s"},
        "decision_s": {"value": 5e-6, "source": "s"}, "final_s": {"value": 4e-6, "source": "s"}}))
    def seg(i, conv, mm):
        return {"index": i, "flops": conv + mm, "flops_by_op": {"conv": conv, "matmul": mm}, "params": 1,
                "op_counts": {"Conv": 1, "Gemm": 1, "Relu": 2, "Constant": 5},
                "files": [{"format": "onnx", "path": f"s{i}.onnx", "sha256": "0" * 64}],
                "inputs": [{"name": "x" if i == 0 else "h", "shape": [None, 4], "dtype": "float32"}],
                "outputs": ([] if i else [{"name": "h", "shape": [None, 4], "dtype": "float32"}])
                + [{"name": "exit", "shape": [None, 2], "dtype": "float32"}]}

    manifest = {"format": "edge-runtime-bundle", "format_version": 2, "name": "m", "labels": ["a", "b"],
                "inputs": [{"name": "x", "shape": [None, 4], "dtype": "float32"}],
                "segments": [seg(0, 10_000, 20_000), seg(1, 0, 40_000)],
                "exits": [{"index": 0, "segment": 0, "head_type": "h"}, {"index": 1, "segment": 1, "head_type": "h"}],
                "policy": {"name": "entropy", "kwargs": {}, "thresholds": [0.5]},
                "verification": {"tolerance": 1e-4, "passed": True, "batch_sizes": [1], "exits": []}}
    p = estimate_bundle(Manifest.from_dict(manifest), prof)
    # seg 0: 10 us call + 2 us conv node + 3 us gemm node + 2 x 1 us other + 10k/1e9 + 20k/2e9 + 5 us decision
    assert p.segments[0].latency_s == pytest.approx(10e-6 + 2e-6 + 3e-6 + 2e-6 + 10e-6 + 10e-6 + 5e-6)
    assert p.segments[1].latency_s == pytest.approx(10e-6 + 2e-6 + 3e-6 + 2e-6 + 20e-6 + 4e-6)
    assert p.exits[1].latency_s == pytest.approx(p.segments[0].latency_s + p.segments[1].latency_s)
    assert p.power_w == pytest.approx(2.0)                              # 1 W idle + 1 W per busy core
    assert p.segments[0].energy_j == pytest.approx(2.0 * p.segments[0].latency_s)
    assert "upper bound" in p.operating_point and p.expected_latency_s == p.exits[1].latency_s
    point = {"thresholds": [0.5], "accuracy": 0.9, "exit_fractions": [0.75, 0.25]}
    manifest["calibration"] = {"chosen": point, "curve": [point]}
    q = estimate_bundle(Manifest.from_dict(manifest), prof)
    assert q.expected_latency_s == pytest.approx(0.75 * q.exits[0].latency_s + 0.25 * q.exits[1].latency_s)
    manifest["calibration"]["chosen"] = {**point, "exit_fractions": [1, 2, 3]}
    with pytest.raises(ConfigError, match="calibration.chosen.exit_fractions: expected 2"):
        estimate_bundle(Manifest.from_dict(manifest), prof)


def test_op_mix_fallback_without_flops_by_op():
    graph = GraphSpec(files=(), flops=300, op_counts={"Conv": 2, "MatMul": 1, "Identity": 3, "Add": 1})
    split, nodes, src = op_mix(graph)
    assert split == {"conv": 200.0, "matmul": 100.0} and nodes == {"conv": 2, "matmul": 1, "elementwise": 1}
    assert "node counts" in src


def test_profile_fit_writes_a_loadable_measured_profile(tmp_path):
    out = fit_profile(tmp_path / "here.yaml", base="rpi4",
                      settings=FitSettings(threads=1, seconds_per_graph=0.005, min_runs=3))
    prof = load_profile(out)
    assert prof.name == "here" and prof.threads == 1
    lat = prof.latency
    assert lat.call_overhead_s > 0 and lat.gflops["conv"] > 0.1 and lat.gflops["matmul"] > 0.1
    assert all(s.startswith("measured: edge-runtime profile fit") for s in lat.sources.values())
    assert prof.power.idle_w == get_profile("rpi4").power.idle_w
    assert "copied from profile 'rpi4'" in prof.power.sources["idle_w"]
    with pytest.raises(ConfigError, match="must end in .yaml"):
        fit_profile(tmp_path / "x.txt")


def test_fit_power_model_from_a_log(tmp_path):
    from edge_runtime.meters.powerlog import PowerLog

    log = tmp_path / "p.csv"
    log.write_text("t,w\n" + "".join(f"{t},{3.0 if t < 10 else 7.0}\n" for t in range(0, 21)))
    idle, active = fit_power_model(PowerLog(log), (0, 9), (11, 20), busy_cores=2, cores=4)
    assert idle == pytest.approx(3.0) and active == pytest.approx(3.0 + 4.0 * 4 / 2)


def test_cli_profile_and_predict(cnn_bundle, tmp_path, capsys):
    assert main(["profile", "list"]) == 0
    listing = capsys.readouterr().out
    assert all(n in listing for n in BUILTIN)
    assert main(["profile", "show", "rpi4", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["power"]["idle_w"]["source"]
    model = tmp_path / "model"
    model.write_text("Raspberry Pi 4 Model B Rev 1.5")
    assert main(["profile", "detect", "--device-tree-model", str(model), "--machine", "aarch64"]) == 0
    assert capsys.readouterr().out.startswith("rpi4")
    assert main(["predict", str(cnn_bundle), "--profile", "rpi4"]) == 0
    out = capsys.readouterr().out
    assert "expected at the operating point" in out and "estimated from rpi4" in out
    assert main(["predict", str(cnn_bundle), "--profile", "nope"]) == 2
    assert "unknown device profile 'nope'" in capsys.readouterr().err
    assert main(["meter", "list"]) == 0
    assert "auto-selection:" in capsys.readouterr().out
