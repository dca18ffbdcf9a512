"""The daemon under a load ramp with a latency objective: fixed thresholds vs the SLO controller, in one run.

Two daemons serve the same calibrated bundle (micro-batching on): one at the bundle's fixed thresholds, one with
``--slo p95_latency_ms=T`` and the accuracy monitor (``--monitor-fraction``). wrk on loopback sends the test split's
samples (KServe v2 binary tensor data) at 1, 2, 4, ... 64 connections, ``--step`` seconds each, as 1-second runs:
each run is one window with its own p95. Rounds alternate between the daemons so drift hits both alike.

Prints, per daemon, the share of 1-second windows whose p95 is within the objective (the SLO daemon's counted once
adapted: from the ``--adapt``-th window of each load step on; target >= 95%), the operating points the controller
used, and for each point used the monitor's live accuracy estimate against the offline test accuracy at that point
(target: within 1 point).

The objective ``T`` defaults to the fixed daemon's p95 at ``--slo-at`` connections (measured first), so the fixed
thresholds meet it at light load and miss it above.

Usage: PYTHONPATH=. python benchmarks/serve_slo.py --bundle out/branchynet_resnet [--step 5] [--max-clients 64]
           [--slo-ms T] [--json out.json]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header  # noqa: E402
from serve_load import _LUA, _bodies, _free_port, _Server, _write_bodies, _wrk  # noqa: E402

from edge_runtime.files import write_json_atomic  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _offline(bundle: Path, x: np.ndarray, y: np.ndarray, thresholds: list[float]) -> float:
    import edge_runtime

    rt = edge_runtime.load_bundle(bundle, threads=1)
    return float((rt.infer(x, thresholds=thresholds).predictions == y).mean())


def _ramp(servers: dict[str, _Server], clients: list[int], step: int, lua: Path, bodies: Path) -> dict[str, list]:
    windows: dict[str, list[dict[str, Any]]] = {k: [] for k in servers}
    for c in clients:
        for w in range(step):
            for label, srv in servers.items():  # alternate: drift hits both daemons alike
                res = _wrk(srv.url, c, 1, lua, bodies)
                meta = srv.client.get("/v2/models/m").json()["operating_point"]
                windows[label].append({"clients": c, "window": w, "p95_ms": res["latency_us"]["p95"] / 1e3,
                                       "rps": res["rps"], "non_2xx": res["non_2xx"], "index": meta.get("index"),
                                       "socket_errors": res["socket_errors"]})
        print(f"  {c:>3} clients: " + "  ".join(
            f"{label} p95 {np.median([w['p95_ms'] for w in windows[label] if w['clients'] == c]):7.2f} ms "
            f"point {windows[label][-1]['index']}" for label in servers), flush=True)
    return windows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", required=True, help="a calibrated bundle (its calibration curve is the front)")
    ap.add_argument("--slo-ms", type=float, default=None, help="the p95 objective in ms (default: see --slo-at)")
    ap.add_argument("--slo-at", type=int, default=4,
                    help="default objective: the fixed daemon's p95 at this many connections (default 4)")
    ap.add_argument("--step", type=int, default=5, help="1-second windows per load step (default 5)")
    ap.add_argument("--adapt", type=int, default=2, help="windows of each step the controller may adapt in")
    ap.add_argument("--max-clients", type=int, default=64, help="the ramp: 1, 2, 4, ... up to this")
    ap.add_argument("--monitor-fraction", type=float, default=0.05, help="share of samples the monitor checks")
    ap.add_argument("--json", help="also write raw results to this JSON file")
    args = ap.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install -y wrk")
    import edge_runtime
    from edge_runtime.datasets import load_split

    bundle = Path(args.bundle).resolve()
    rt = edge_runtime.load_bundle(bundle, threads=1)
    x_raw, y = load_split(bundle, "test")
    x = rt.preprocess(x_raw)
    clients = [c for c in (1, 2, 4, 8, 16, 32, 64, 128) if c <= args.max_clients]
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        bodies = _write_bodies(tmp / "bodies", _bodies(rt, x, {}, True))
        lua = tmp / "post.lua"
        lua.write_text(_LUA)
        fixed = _Server(bundle, _free_port(), 32, tmp / "fixed.log", [])
        _wrk(fixed.url, 4, 2, lua, bodies)  # warm-up
        slo_ms = args.slo_ms or float(np.median([_wrk(fixed.url, args.slo_at, 1, lua, bodies)["latency_us"]["p95"]
                                                 for _ in range(3)]) / 1e3)
        slo = _Server(bundle, _free_port(), 32, tmp / "slo.log",
                      ["--slo", f"p95_latency_ms={slo_ms:.3f}", "--monitor-fraction", str(args.monitor_fraction)])
        _wrk(slo.url, 4, 2, lua, bodies)
        print(f"# serve_slo: {rt.name}, objective p95 <= {slo_ms:.2f} ms, ramp {clients} connections x {args.step} "
              f"1-s windows, wrk -t1, binary requests (the test split), server threads=1, micro-batching on")
        windows = _ramp({"fixed": fixed, "slo": slo}, clients, args.step, lua, bodies)
        state = slo.client.get("/v2/models/m").json()["operating_point"]
        for s in (fixed, slo):
            s.stop()
    report: dict[str, Any] = {"header": header(), "bundle": str(bundle), "slo_ms": slo_ms,
                              "clients": clients, "windows": windows, "final_state": state}
    for label in ("fixed", "slo"):
        counted = [w for w in windows[label] if w["window"] >= args.adapt]
        ok = float(np.mean([w["p95_ms"] <= slo_ms for w in counted])) if counted else float("nan")
        report[f"{label}_within"] = ok
        print(f"{label:>5}: p95 within {slo_ms:.2f} ms in {100 * ok:5.1f}% of 1-s windows (from window {args.adapt} "
              f"of each step on; all windows: "
              f"{100 * float(np.mean([w['p95_ms'] <= slo_ms for w in windows[label]])):.1f}%)"
              f"; errors {sum(w['non_2xx'] + w['socket_errors'] for w in windows[label])}")
    points = state.get("per_point") or {}
    fronts = edge_runtime.load_bundle(bundle, threads=1)
    from edge_runtime.serve.controller import front_points

    front = front_points(fronts.manifest)
    rows = []
    for idx, rec in sorted(points.items(), key=lambda kv: int(kv[0])):
        i = int(idx)
        if i < 0 or rec.get("accuracy_estimate") is None:
            continue
        offline = _offline(bundle, x, y, list(front[i].thresholds))
        rows.append({"index": i, "thresholds": list(front[i].thresholds), "checked": rec["checked"],
                     "live_agreement": rec["agreement"], "live_accuracy_estimate": rec["accuracy_estimate"],
                     "offline_test_accuracy": offline,
                     "within_1pt": abs(rec["accuracy_estimate"] - offline) <= 0.01})
        print(f"  point {i}: live estimate {100 * rec['accuracy_estimate']:.2f}% ({rec['checked']} checked, agreement "
              f"{100 * rec['agreement']:.2f}%) vs offline test {100 * offline:.2f}%: "
              f"{'within' if rows[-1]['within_1pt'] else 'NOT within'} 1 point")
    report["accuracy_estimates"] = rows
    used = sorted({w["index"] for w in windows["slo"]})
    print(f"operating points used: {used}; controller moves {state.get('moves')}, fallbacks {state.get('fallbacks')}")
    target_ok = report["slo_within"] >= 0.95 and all(r["within_1pt"] for r in rows)
    print(f"SLO: {'PASS' if target_ok else 'MISS'} (>= 95% of adapted windows within the objective, every estimate "
          f"within 1 point; fixed thresholds: {100 * report['fixed_within']:.1f}%)")
    if args.json:
        write_json_atomic(args.json, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
