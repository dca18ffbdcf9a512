"""Per-call overhead of the runtime against the backend's floor, at batch 1.

Prints, from interleaved runs (rounds of calls, each round's medians; the figure is the median over rounds, with
the rounds' min-max as the spread):

  * exit 0: ``Runtime.infer`` of one sample that leaves at exit 0 (the bundle's policy reading the in-graph score)
    vs one raw ``onnxruntime.InferenceSession.run`` of segment 0 (target <= 1.5x); also the same call with the
    policy computing its score in numpy from the logits (what every call paid before in-graph scores);
  * never: ``Runtime.infer`` with policy ``never`` (every segment) vs the one-graph model, on a >= 1 ms CNN split
    into 4 segments (target <= 1.05x);
  * with ``--bundle`` (e.g. a converted branchynet_lenet): the bundle's default configuration
    (``Runtime.infer(x)``, as the manifest's deployment record sets it) vs its one-graph model (target <= 1.0x).

The tiny bundle is the shipped tiny_cnn recipe (random init, 16x16 input); the >= 1 ms CNN is the one
benchmarks/segmentation_overhead.py builds.

Usage: PYTHONPATH=. python benchmarks/call_overhead.py [--rounds 7] [--calls 1000] [--bundle out/branchynet_lenet]
           [--json out.json]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, interleaved  # noqa: E402

from edge_runtime.files import write_json_atomic  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _rounds(fns: dict[str, Any], rounds: int, calls: int, warmup: int) -> dict[str, list[float]]:
    """Per round, each function's median seconds per call (interleaved within the round)."""
    out: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(rounds):
        times = interleaved(fns, warmup=warmup if r == 0 else warmup // 10, repeats=calls)
        for k, v in times.items():
            out[k].append(float(np.median(v)))
    return out


def _ratio(per_round: dict[str, list[float]], num: str, den: str) -> dict[str, float]:
    r = np.asarray(per_round[num]) / np.asarray(per_round[den])
    return {"median": float(np.median(r)), "min": float(r.min()), "max": float(r.max())}


def _fmt(name: str, per_round: dict[str, list[float]]) -> str:
    v = np.asarray(per_round[name]) * 1e6
    return f"{name:<28} {np.median(v):9.2f} us  (rounds {v.min():.2f}-{v.max():.2f})"


def exit0(rounds: int, calls: int, warmup: int, tmp: Path) -> dict[str, Any]:
    import edge_runtime
    from converters import convert
    from edge_runtime.policies import ScorePolicy, create_policy

    bundle = convert(REPO / "converters/recipes/tiny_cnn.yaml", tmp / "tiny_cnn", progress=False)
    rt = edge_runtime.load_bundle(bundle, threads=1)
    x = np.random.default_rng(0).standard_normal((1, *rt.input_spec.shape[1:])).astype(np.float32)
    probe = rt.default_policy
    assert isinstance(probe, ScorePolicy)
    everyone = [1e9 if probe.lower_is_confident else -1.0] * (rt.num_exits - 1)  # every sample leaves at exit 0
    in_graph = rt.make_policy(None, everyone)
    numpy_score = create_policy(rt.manifest.policy.name, rt.num_exits, everyone, **rt.manifest.policy.kwargs)
    assert rt.infer(x, policy=in_graph).exit_index[0] == 0 and in_graph.reads == ("exit.score",)
    session = rt.segments[0]._dynamic._session  # the raw onnxruntime.InferenceSession of segment 0 (the floor)
    name = rt.segments[0].input_names[0]
    fns = {"raw segment 0 run": lambda: session.run(None, {name: x}),
           "infer, exit 0": lambda: rt.infer(x, policy=in_graph),
           "infer, exit 0, numpy score": lambda: rt.infer(x, policy=numpy_score)}
    per = _rounds(fns, rounds, calls, warmup)
    return {"per_round_s": per, "ratio": _ratio(per, "infer, exit 0", "raw segment 0 run"),
            "ratio_numpy_score": _ratio(per, "infer, exit 0, numpy score", "raw segment 0 run")}


def never(rounds: int, calls: int, warmup: int, tmp: Path) -> dict[str, Any]:
    from segmentation_overhead import build_bundle

    import edge_runtime

    rt = edge_runtime.load_bundle(build_bundle(tmp / "cnn"), threads=1)
    x = np.random.default_rng(0).standard_normal((1, 1, 32, 32)).astype(np.float32)
    pol = edge_runtime.create_policy("never", rt.num_exits)
    fns = {"one graph": lambda: rt.infer(x, mode="full"), "infer, policy never": lambda: rt.infer(x, policy=pol)}
    per = _rounds(fns, rounds, max(calls // 2, 50), warmup // 2)
    return {"per_round_s": per, "ratio": _ratio(per, "infer, policy never", "one graph")}


def default_mode(bundle: Path, rounds: int, calls: int, warmup: int) -> dict[str, Any]:
    import edge_runtime
    from edge_runtime.datasets import load_split

    rt = edge_runtime.load_bundle(bundle, threads=1)
    xs, _ = load_split(bundle, "test")
    xs = rt.preprocess(xs)
    state = {"i": 0}

    def sample() -> np.ndarray:  # the test split in turn: the default point's real mix of exits
        state["i"] = (state["i"] + 1) % len(xs)
        return xs[state["i"]:state["i"] + 1]

    fns = {"one graph": lambda: rt.infer(sample(), mode="full"), "default": lambda: rt.infer(sample())}
    per = _rounds(fns, rounds, calls, warmup)
    dep = rt.manifest.deployment
    return {"per_round_s": per, "ratio": _ratio(per, "default", "one graph"), "bundle": str(bundle),
            "default_mode": rt.default_mode,
            "deployment": None if dep is None else f"{dep.mode} on {dep.variant}: {dep.why}"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7, help="rounds of interleaved calls (default 7)")
    ap.add_argument("--calls", type=int, default=1000, help="calls per configuration per round (default 1000)")
    ap.add_argument("--warmup", type=int, default=200, help="untimed calls first")
    ap.add_argument("--bundle", help="also: this bundle's default configuration vs its one-graph model")
    ap.add_argument("--json", help="also write raw results to this JSON file")
    args = ap.parse_args(argv)
    report: dict[str, Any] = {"header": header(), "settings": vars(args)}
    with tempfile.TemporaryDirectory() as tmp:
        report["exit0"] = exit0(args.rounds, args.calls, args.warmup, Path(tmp))
        report["never"] = never(args.rounds, args.calls, args.warmup, Path(tmp))
    if args.bundle:
        report["default"] = default_mode(Path(args.bundle), args.rounds, args.calls, args.warmup)
    print(f"# call_overhead: batch 1, threads 1, {args.rounds} rounds x {args.calls} interleaved calls")
    e, n = report["exit0"], report["never"]
    for k in e["per_round_s"]:
        print(_fmt(k, e["per_round_s"]))
    r = e["ratio"]
    print(f"exit-0 infer / raw segment run: {r['median']:.2f}x (rounds {r['min']:.2f}-{r['max']:.2f}; target <= 1.5x: "
          f"{'PASS' if r['median'] <= 1.5 else 'MISS'}); with the numpy score: {e['ratio_numpy_score']['median']:.2f}x")
    for k in n["per_round_s"]:
        print(_fmt(k, n["per_round_s"]))
    r = n["ratio"]
    print(f"never / one graph (>= 1 ms CNN, 4 segments): {r['median']:.3f}x (rounds {r['min']:.3f}-{r['max']:.3f}; "
          f"target <= 1.05x: {'PASS' if r['median'] <= 1.05 else 'MISS'})")
    if "default" in report:
        d = report["default"]
        for k in d["per_round_s"]:
            print(_fmt(k, d["per_round_s"]))
        r = d["ratio"]
        print(f"{Path(d['bundle']).name}: default configuration / one graph: {r['median']:.3f}x (rounds "
              f"{r['min']:.3f}-{r['max']:.3f}; target <= 1.0x: {'PASS' if r['median'] <= 1.0 else 'MISS'}); "
              f"deployment: {d['deployment']}")
    if args.json:
        write_json_atomic(args.json, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
