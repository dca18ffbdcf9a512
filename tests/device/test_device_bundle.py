"""Loading a synthetic bundle on the device, and the refusals: tampered, missing or escaping files, old formats."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bundle_edits import edit_manifest

import edge_runtime
from edge_runtime.bundle import read_bundle
from edge_runtime.errors import BundleError
from edge_runtime.manifest import EXIT_OUTPUT
from edge_runtime.synthetic import synthetic_weights


def test_loads_and_describes_itself(make_bundle: Callable[..., Path]) -> None:
    rt = edge_runtime.load_bundle(make_bundle(num_exits=3), threads=1)
    m = rt.manifest
    assert (m.name, m.num_exits, m.format_version) == ("synthetic", 3, 2)
    assert [s.name for s in m.inputs] == ["input"] and m.input.shape == (None, 8)
    assert [s.output_names for s in m.segments] == [["hidden_0", EXIT_OUTPUT], ["hidden_1", EXIT_OUTPUT], [EXIT_OUTPUT]]
    flops = [c or 0 for c in m.cumulative_flops]
    assert flops == sorted(flops) and flops[0] > 0
    assert rt.labels == [f"class_{k}" for k in range(4)]
    assert rt.modes() == ["early_exit", "full"]
    assert rt.infer(np.zeros((2, 8), np.float32)).outputs.shape == (2, 4)


def test_tampered_file_is_refused_unless_hashes_are_skipped(bundle_copy: Path) -> None:
    seg = bundle_copy / "segments" / "segment_1.onnx"
    data = bytearray(seg.read_bytes())
    at = data.find(synthetic_weights(3, 8, 4)[1].w.tobytes())  # a weight's raw bytes: the graph still parses
    data[at] ^= 0x01
    seg.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"segment_1\.onnx.*segments\.1\.files\.0\.sha256.*sha256 mismatch"):
        edge_runtime.load_bundle(bundle_copy)
    rt = edge_runtime.load_bundle(bundle_copy, verify_hashes=False)  # the caller's explicit choice
    assert rt.num_exits == 3 and at > 0


def test_missing_file(bundle_copy: Path) -> None:
    (bundle_copy / "segments" / "segment_2.onnx").unlink()
    with pytest.raises(BundleError, match=r"segment_2\.onnx.*segments\.2\.files\.0.*file is missing"):
        edge_runtime.load_bundle(bundle_copy)


@pytest.mark.parametrize("bad", ["../outside.onnx", "/etc/hostname", "segments/../../x.onnx"])
def test_path_outside_the_bundle(bundle_copy: Path, bad: str) -> None:
    edit_manifest(bundle_copy, lambda m: m["full_model"]["files"][0].update(path=bad))
    with pytest.raises(BundleError, match=r"full_model\.files\.0\.path.*points outside the bundle"):
        read_bundle(bundle_copy, verify_hashes=False)  # refused before any file is opened


def test_symlink_out_of_the_bundle(bundle_copy: Path, tmp_path: Path) -> None:
    seg = bundle_copy / "segments" / "segment_0.onnx"
    target = tmp_path / "elsewhere.onnx"
    shutil.move(seg, target)
    seg.symlink_to(target)
    with pytest.raises(BundleError, match=r"segments\.0\.files\.0\.path.*points outside the bundle"):
        edge_runtime.load_bundle(bundle_copy)


def test_format_version_1_names_the_version(bundle_copy: Path) -> None:
    edit_manifest(bundle_copy, lambda m: m.update(format_version=1))
    with pytest.raises(BundleError, match=r"manifest\.json.*format_version.*unsupported bundle format version 1 "
                                          r"\(written by edge-runtime 0\.1"):
        edge_runtime.load_bundle(bundle_copy)


@pytest.mark.parametrize(("edit", "field"), [
    (lambda m: m["segments"][1]["inputs"][0].update(name="nowhere"), "segments.1.inputs"),
    (lambda m: m["policy"].update(thresholds=[0.1]), "policy.thresholds"),
    (lambda m: m["labels"].pop(), "labels"),
    (lambda m: m["inputs"][0]["shape"].__setitem__(0, 4), "inputs.0.shape.0"),
])
def test_inconsistent_manifest_names_the_field(bundle_copy: Path, edit: Callable[[dict[str, Any]], Any],
                                               field: str) -> None:
    edit_manifest(bundle_copy, edit)
    with pytest.raises(BundleError) as info:
        edge_runtime.load_bundle(bundle_copy)
    assert info.value.field == field and info.value.path == str(bundle_copy / "manifest.json")


def test_graph_that_does_not_match_its_manifest(bundle_copy: Path) -> None:
    def rename(m: dict[str, Any]) -> None:  # the manifest says hidden_0 is called "h0"; the graph disagrees
        m["segments"][0]["outputs"][0]["name"] = "h0"
        m["segments"][1]["inputs"][0]["name"] = "h0"

    edit_manifest(bundle_copy, rename)
    with pytest.raises(BundleError, match=r"field 'segments\.0'.*the manifest names \['h0'\]"):
        edge_runtime.load_bundle(bundle_copy)
