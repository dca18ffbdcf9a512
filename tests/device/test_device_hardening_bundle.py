"""A hostile or broken bundle against the loader (issue 16): external data, the hash-then-open race, unreadable
files, manifests that used to end in a traceback, graphs that disagree with their manifest, unbounded sizes, a
symlinked manifest, unverified bundles. Every refusal is a :class:`BundleError` naming the file and the field."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bundle_edits import edit_manifest

import edge_runtime
from edge_runtime import _onnx_proto as P
from edge_runtime.backends import create_backend
from edge_runtime.bundle import read_bundle
from edge_runtime.errors import BundleError, ConfigError
from edge_runtime.manifest import EXIT_OUTPUT
from edge_runtime.runtime import Runtime
from edge_runtime.synthetic import synthetic_weights


def _replace_graph(bundle: Path, rel: str, data: bytes, edit: Callable[[dict[str, Any]], Any] | None = None) -> None:
    """Write new bytes for one graph file and pin them in the manifest (a bundle that passes every hash)."""
    (bundle / rel).write_bytes(data)

    def pin(m: dict[str, Any]) -> None:
        for graph in [*m["segments"], *([m["full_model"]] if m.get("full_model") else [])]:
            for f in graph["files"]:
                if f["path"] == rel:
                    f["sha256"] = hashlib.sha256(data).hexdigest()
                    f["bytes"] = len(data)
        if edit is not None:
            edit(m)

    edit_manifest(bundle, pin)


def _segment0(w_tensor: bytes, features: int = 8, classes: int = 4, batch: int | str = "N") -> bytes:
    """Segment 0 of a 3-exit synthetic bundle (outputs hidden_0 and exit) with ``w0`` given as a tensor record."""
    head = synthetic_weights(3, features, classes)[0].head
    nodes = [P.node("MatMul", ["input", "w0"], ["pre0"]), P.node("Relu", ["pre0"], ["hidden_0"]),
             P.node("MatMul", ["hidden_0", "head0"], [EXIT_OUTPUT])]
    return P.model(nodes, [P.value_info("input", [batch, features])],
                   [P.value_info("hidden_0", [batch, features]), P.value_info(EXIT_OUTPUT, [batch, classes])],
                   [w_tensor, P.tensor("head0", head)])


# -- 1. ONNX external data ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["inside", "escapes", "absolute", "symlink", "hardlink"])
def test_external_data_is_refused(bundle_copy: Path, tmp_path: Path, where: str) -> None:
    w = synthetic_weights(3, 8, 4)[0].w
    outside = tmp_path / "outside.bin"
    outside.write_bytes(w.tobytes())
    location = {"inside": "w0.bin", "escapes": "../../outside.bin", "absolute": str(outside),
                "symlink": "w0.bin", "hardlink": "w0.bin"}[where]
    target = bundle_copy / "segments" / "w0.bin"
    if where == "inside":
        target.write_bytes(w.tobytes())
    elif where == "symlink":
        target.symlink_to(outside)
    elif where == "hardlink":
        os.link(outside, target)
    _replace_graph(bundle_copy, "segments/segment_0.onnx", _segment0(P.tensor_external("w0", [8, 8], location)))
    with pytest.raises(BundleError) as info:
        edge_runtime.load_bundle(bundle_copy, threads=1)
    err = info.value
    assert err.field == "segments.0.files.0" and err.path == str(bundle_copy / "segments" / "segment_0.onnx")
    assert "external data" in str(err) and "'w0'" in str(err)


def test_external_data_swap_cannot_change_a_pinned_model(bundle_copy: Path) -> None:
    """The attack of item 1: a model whose weights sit in an unpinned file would change with the file while every
    sha256 and the daemon's ``model_version`` stay the same. Refused at load, whatever the file holds."""
    w = synthetic_weights(3, 8, 4)[0].w
    (bundle_copy / "segments" / "w0.bin").write_bytes(w.tobytes())
    _replace_graph(bundle_copy, "segments/segment_0.onnx", _segment0(P.tensor_external("w0", [8, 8], "w0.bin")))
    read_bundle(bundle_copy)  # every pinned hash passes ...
    (bundle_copy / "segments" / "w0.bin").write_bytes((w * 0).tobytes())
    read_bundle(bundle_copy)  # ... and still passes after the swap
    with pytest.raises(BundleError, match="external data"):
        edge_runtime.load_bundle(bundle_copy, threads=1)


def test_external_data_reader_walks_subgraphs_and_refuses_garbage() -> None:
    inner = P.model([P.node("Constant", [], ["c"], [P._bytes(5, P.tensor_external("c", [1], "x.bin"))])], [], [])
    graph = memoryview(inner)
    g_bytes = next(bytes(v) for f, w, v in P._fields(graph) if f == 7)
    if_node = P.node("If", ["cond"], ["z"], [P._str(1, "then_branch") + P._bytes(6, g_bytes) + P._int(20, 5)])
    outer = P.model([if_node], [], [])
    assert P.external_data_tensors(outer) == [("c", "x.bin")]
    with pytest.raises(ValueError):
        P.external_data_tensors(b"\x3a\xff\xff\xff\xff\x0f")  # a length running past the end


# -- 2. hash, then open: the loaded bytes are the hashed bytes ------------------------------------------------------
def test_a_file_swapped_after_the_hash_check_is_not_loaded(bundle_copy: Path) -> None:
    bundle = read_bundle(bundle_copy)  # every hash checked here ...
    seg = bundle_copy / "segments" / "segment_1.onnx"
    data = bytearray(seg.read_bytes())
    at = data.find(synthetic_weights(3, 8, 4)[1].w.tobytes())
    data[at] ^= 0x01
    seg.write_bytes(bytes(data))  # ... then a writer swaps a file before the sessions open
    with pytest.raises(BundleError, match=r"segments\.1\.files\.0\.sha256.*sha256 mismatch"):
        Runtime(bundle, create_backend("onnxruntime", threads=1))


def test_backends_load_the_bytes_they_are_given(make_bundle: Callable[..., Path]) -> None:
    data = (make_bundle(num_exits=3) / "segments" / "segment_0.onnx").read_bytes()
    session = create_backend("onnxruntime", threads=1).load_bytes(data, source="segment_0.onnx")
    assert session.input_names == ["input"] and session.output_names == ["hidden_0", EXIT_OUTPUT]
    assert session.tensors is not None and session.tensors["input"].shape == (None, 8)


@pytest.mark.slow
def test_concurrent_swaps_never_load_an_unverified_graph(bundle_copy: Path) -> None:
    """The probe of item 2: a writer flips a segment between the pinned file and a tampered one while the loader
    loads 150 times; every load either refuses or runs the pinned weights."""
    import threading

    seg = bundle_copy / "segments" / "segment_0.onnx"
    good = seg.read_bytes()
    bad = bytearray(good)
    w = synthetic_weights(3, 8, 4)[0].w
    at = bad.find(w.tobytes())
    bad[at:at + w.nbytes] = (w * 0).tobytes()
    stop = threading.Event()

    def flip() -> None:
        k = 0
        while not stop.is_set():
            tmp = seg.with_suffix(f".tmp{k % 2}")
            tmp.write_bytes(bytes(bad) if k % 2 else good)
            os.replace(tmp, seg)
            k += 1

    x = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    want = edge_runtime.load_bundle(bundle_copy, threads=1).exit_outputs(x)[0]
    writer = threading.Thread(target=flip, daemon=True)
    writer.start()
    loaded = refused = 0
    try:
        for _ in range(150):
            try:
                rt = edge_runtime.load_bundle(bundle_copy, threads=1)
            except BundleError:
                refused += 1
                continue
            loaded += 1
            np.testing.assert_allclose(rt.exit_outputs(x)[0], want, atol=1e-5)
    finally:
        stop.set()
        writer.join()
    assert loaded + refused == 150


# -- 5. unreadable files ------------------------------------------------------------------------------------------
REPO = Path(__file__).resolve().parents[2]


def _without_read_override(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a process that cannot read other accounts' owner-only files: as root, without the
    capabilities that let root read any file (util-linux ``setpriv``); otherwise as ourselves."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: cannot drop the capability to read any file")
        prefix = [setpriv, "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search"]
    return subprocess.run([*prefix, sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120, cwd=REPO)


@pytest.fixture()
def world_readable_copy(make_bundle: Callable[..., Path]) -> Iterator[Path]:
    """A copy of a bundle in a directory another account can walk (pytest's tmp_path is owner-only)."""
    root = Path(tempfile.mkdtemp(prefix="edge-runtime-modes-"))
    try:
        os.chmod(root, 0o755)
        dst = root / "bundle"
        shutil.copytree(make_bundle(num_exits=3), dst)
        for p in [dst, *dst.rglob("*")]:
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        yield dst
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("what", ["segments/segment_1.onnx", "manifest.json"])
def test_an_unreadable_file_is_a_bundle_error_naming_it(world_readable_copy: Path, what: str) -> None:
    os.chmod(world_readable_copy / what, 0o600)  # what a mkstemp-mode bundle of another account looks like
    if os.geteuid() == 0:
        os.chown(world_readable_copy / what, 65534, 65534)
    else:
        os.chmod(world_readable_copy / what, 0)
    proc = _without_read_override(f"""
        import sys
        import edge_runtime
        from edge_runtime.errors import BundleError
        try:
            edge_runtime.load_bundle({str(world_readable_copy)!r}, threads=1)
        except BundleError as exc:
            print("BundleError:", exc)
            sys.exit(0)
        sys.exit(3)
    """)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"BundleError: {world_readable_copy / what}" in proc.stdout and "ermission denied" in proc.stdout


def test_a_non_regular_file_is_refused_without_blocking(bundle_copy: Path) -> None:
    seg = bundle_copy / "segments" / "segment_2.onnx"
    seg.unlink()
    os.mkfifo(seg)  # reading a FIFO would block the loader forever
    with pytest.raises(BundleError, match=r"segment_2\.onnx.*segments\.2\.files\.0.*not a regular file"):
        edge_runtime.load_bundle(bundle_copy, threads=1)


# -- 7. manifests that used to end in a traceback --------------------------------------------------------------------
@pytest.mark.parametrize(("path", "why"), [
    ("segments/seg\x00ment_0.onnx", "control character"),
    ("segments/" + "a" * 300 + ".onnx", "longer than"),
    ("/".join(["d"] * 2000) + "/x.onnx", "longer than"),
    ("segments\\segment_0.onnx", "backslash"),
])
def test_bad_file_paths_name_the_field(bundle_copy: Path, path: str, why: str) -> None:
    edit_manifest(bundle_copy, lambda m: m["segments"][0]["files"][0].update(path=path))
    with pytest.raises(BundleError, match=why) as info:
        edge_runtime.load_bundle(bundle_copy, threads=1)
    assert info.value.field == "segments.0.files.0.path"


@pytest.mark.parametrize("depth", [200, 5000, 100_000])
def test_deeply_nested_manifest(bundle_copy: Path, depth: int) -> None:
    text = (bundle_copy / "manifest.json").read_text()
    nested = "[" * depth + "]" * depth
    (bundle_copy / "manifest.json").write_text(text[:-2] + f', "extra": {{"deep": {nested}}}}}')
    with pytest.raises(BundleError, match="nest") as info:
        edge_runtime.load_bundle(bundle_copy, threads=1)
    assert info.value.path == str(bundle_copy / "manifest.json")


@pytest.mark.parametrize(("edit", "field", "message"), [
    (lambda m: m["policy"].update(kwargs={"bogus": 1}), "policy.kwargs", "bogus"),
    (lambda m: m["policy"].update(name="patience", thresholds=[], kwargs={"patience": "two"}), "policy.kwargs",
     "patience"),
    (lambda m: m["inputs"][0].update(shape=[None, 8.0]), "inputs.0.shape.1", "integer"),
    (lambda m: m["inputs"][0].update(shape=[None, 10 ** 12]), "inputs.0.shape.1", "integer from 1"),
    (lambda m: m["inputs"][0].update(shape=[None, 2 ** 20, 2 ** 20]), "inputs.0.shape", "elements"),
    (lambda m: m["segments"][0]["files"][0].update(batch_size=10_000_000), "segments.0.files.0.batch_size",
     "maximum"),
    (lambda m: m["labels"].append("extra") or m["segments"][2]["outputs"][0].update(shape=[None, 5]),
     "segments.2.outputs", "output 'exit'"),
    (lambda m: m["inputs"][0].update(shape=[None, 9]) or m["segments"][0]["inputs"][0].update(shape=[None, 9]),
     "segments.0.inputs", "input"),
])
def test_manifest_errors_name_the_field(bundle_copy: Path, edit: Callable[[dict[str, Any]], Any], field: str,
                                        message: str) -> None:
    edit_manifest(bundle_copy, edit)
    with pytest.raises(BundleError, match=message) as info:
        edge_runtime.load_bundle(bundle_copy, threads=1)
    assert info.value.field == field, str(info.value)


@pytest.mark.parametrize(("literal", "field"), [
    ("NaN", "policy.thresholds.0"), ("Infinity", "policy.thresholds.0"), ("-Infinity", "policy.thresholds.0"),
    ("1e400", "policy.thresholds.0"), ("-1e999", "policy.thresholds.0"),
])
def test_non_finite_numbers_are_refused(bundle_copy: Path, literal: str, field: str) -> None:
    edit_manifest(bundle_copy, lambda m: m["policy"]["thresholds"].__setitem__(0, "@literal@"))
    text = (bundle_copy / "manifest.json").read_text()
    (bundle_copy / "manifest.json").write_text(text.replace('"@literal@"', literal))
    with pytest.raises(BundleError, match="not a finite number") as info:
        read_bundle(bundle_copy)
    assert info.value.field == field


def test_duplicate_manifest_keys_are_refused(bundle_copy: Path) -> None:
    text = (bundle_copy / "manifest.json").read_text()
    (bundle_copy / "manifest.json").write_text(text.replace('"name": "synthetic"', '"name": "a", "name": "synthetic"'))
    with pytest.raises(BundleError, match="'name' given twice"):
        read_bundle(bundle_copy)


def test_fewer_labels_than_the_graph_has_classes(bundle_copy: Path) -> None:
    """The manifest claims 3 classes (and has 3 labels); the final graph answers 4: refused at load, not an
    IndexError when a sample is labelled."""
    def three(m: dict[str, Any]) -> None:
        m["labels"] = m["labels"][:3]
        for seg in m["segments"]:
            seg["outputs"][-1]["shape"] = [None, 3]
        m["full_model"]["outputs"] = [{"name": EXIT_OUTPUT, "shape": [None, 3], "dtype": "float32"}]

    edit_manifest(bundle_copy, three)
    with pytest.raises(BundleError, match=r"output 'exit'.*\[None, 4\].*\[None, 3\]") as info:
        edge_runtime.load_bundle(bundle_copy, threads=1)
    assert info.value.field == "segments.0.outputs"


def test_a_backend_run_failure_is_a_project_error(bundle_copy: Path) -> None:
    """A graph that loads but fails at run time (a Reshape that only fits batch 2) fails as a BundleError naming
    the file, not as onnxruntime's exception with its C++ source location."""
    shape = P._int(1, 2) + P._int(2, 7) + P._str(8, "shape") + P._bytes(9, np.array([2, 4], "<i8").tobytes())
    w = synthetic_weights(3, 8, 4)[0]
    nodes = [P.node("MatMul", ["input", "w0"], ["pre0"]), P.node("Relu", ["pre0"], ["hidden_0"]),
             P.node("MatMul", ["hidden_0", "head0"], ["flat"]), P.node("Reshape", ["flat", "shape"], [EXIT_OUTPUT])]
    graph = P.model(nodes, [P.value_info("input", ["N", 8])],
                    [P.value_info("hidden_0", ["N", 8]), P.value_info(EXIT_OUTPUT, ["N", 4])],
                    [P.tensor("w0", w.w), P.tensor("head0", w.head), shape])
    _replace_graph(bundle_copy, "segments/segment_0.onnx", graph)
    rt = edge_runtime.load_bundle(bundle_copy, threads=1)
    rt.infer(np.zeros((2, 8), np.float32))
    with pytest.raises(BundleError, match=r"segment_0\.onnx.*onnxruntime failed to run") as info:
        rt.infer(np.zeros((3, 8), np.float32))
    assert ".cc:" not in str(info.value) and "onnxruntime_src" not in str(info.value)


# -- 8. a graph's batch size is checked, not trusted ------------------------------------------------------------------
def test_a_graph_declaring_a_huge_fixed_batch_is_refused(bundle_copy: Path) -> None:
    w = synthetic_weights(3, 8, 4)[0].w
    _replace_graph(bundle_copy, "segments/segment_0.onnx", _segment0(P.tensor("w0", w), batch=10_000_000))
    with pytest.raises(BundleError, match="batch") as info:
        edge_runtime.load_bundle(bundle_copy, threads=1)
    assert info.value.field == "segments.0.files.0"


def test_a_fixed_batch_file_whose_graph_disagrees(make_bundle: Callable[..., Path], tmp_path: Path) -> None:
    dst = tmp_path / "b"
    shutil.copytree(make_bundle(num_exits=3, batch_sizes=(2,), dynamic_batch=False), dst)
    edit_manifest(dst, lambda m: m["segments"][0]["files"][0].update(batch_size=4))
    with pytest.raises(BundleError, match="batch size 2.*manifest says 4") as info:
        edge_runtime.load_bundle(dst, threads=1)
    assert info.value.field == "segments.0.files.0"


@pytest.mark.parametrize("threads", [0, -1, 100_000])
def test_threads_are_bounded(make_bundle: Callable[..., Path], threads: int) -> None:
    with pytest.raises(ConfigError, match="threads"):
        edge_runtime.load_bundle(make_bundle(num_exits=3), threads=threads)


# -- 10. smaller ones -------------------------------------------------------------------------------------------------
def test_a_symlinked_manifest_is_refused(bundle_copy: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.json"
    shutil.move(bundle_copy / "manifest.json", outside)
    (bundle_copy / "manifest.json").symlink_to(outside)
    with pytest.raises(BundleError, match="symbolic link") as info:
        read_bundle(bundle_copy)
    assert info.value.path == str(bundle_copy / "manifest.json")


def test_an_unverified_bundle_runs_only_when_allowed(bundle_copy: Path) -> None:
    edit_manifest(bundle_copy, lambda m: m["verification"].update(passed=False))
    with pytest.raises(BundleError, match="allow_unverified") as info:
        edge_runtime.load_bundle(bundle_copy, threads=1)
    assert info.value.field == "verification.passed"
    rt = edge_runtime.load_bundle(bundle_copy, threads=1, allow_unverified=True)
    assert rt.infer(np.zeros((1, 8), np.float32)).outputs.shape == (1, 4)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_scalar_thresholds_must_be_finite(make_bundle: Callable[..., Path], value: float) -> None:
    from edge_runtime.policies import create_policy

    with pytest.raises(ConfigError, match="finite"):
        create_policy("entropy", 3, value)
    rt = edge_runtime.load_bundle(make_bundle(num_exits=3), threads=1)
    with pytest.raises(ConfigError, match="finite"):
        rt.infer(np.zeros((1, 8), np.float32), thresholds=value)

