"""Daemon load test with wrk on loopback: micro-batching on vs off, a soak with hot reloads.

Prints, from one run against the real ``edge-runtime serve`` process:
  * throughput, p50/p99 and non-2xx at 32 concurrent clients with micro-batching on
    (``--max-batch-size 32``) vs off (``--max-batch-size 1``), and the on/off ratio (target: ``--target``, 2x);
  * a soak (default 60 s, 32 clients, batching on): errors, server RSS after warm-up vs at the end
    (target growth < 10%), and 10 reloads during it, half of them of a corrupted bundle
    (target: no lost request, no response ever from a corrupted version).

Needs ``wrk`` (apt-get install wrk) and the ``serve`` extra; the bundle comes from --bundle or is
converted from --recipe (default: the shipped tiny_transformer recipe).

Usage: python benchmarks/serve_load.py [--bundle DIR | --recipe converters/recipes/tiny_transformer.yaml]
           [--duration 15] [--soak 60] [--reloads 10] [--clients 32] [--json out.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header  # noqa: E402

from edge_runtime.files import write_json_atomic  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

# wrk script: rotate over pre-built request bodies (one file each; the binary extension's header length beside
# each), tally model versions and statuses, print one JSON line of results in done().
_LUA = r"""
local bodies, lens = {}, {}
local dir = os.getenv("SERVE_LOAD_DIR")
for i = 1, tonumber(os.getenv("SERVE_LOAD_N")) do
  local f = io.open(dir .. "/body_" .. i, "rb"); bodies[i] = f:read("*a"); f:close()
  local g = io.open(dir .. "/len_" .. i, "r"); lens[i] = g:read("*a"); g:close()
end
local path = os.getenv("SERVE_LOAD_PATH")
local ctype = os.getenv("SERVE_LOAD_CTYPE")
local i = 0
versions = {}
statuses = {}
local threads = {}
function setup(thread) table.insert(threads, thread) end
function request()
  i = i % #bodies + 1
  local headers = {["Content-Type"] = ctype}
  if lens[i] ~= "" then headers["Inference-Header-Content-Length"] = lens[i] end
  return wrk.format("POST", path, headers, bodies[i])
end
function response(status, headers, body)
  statuses[tostring(status)] = (statuses[tostring(status)] or 0) + 1
  local v = string.match(body, '"model_version":%s*"(%x+)"')
  if v then versions[v] = (versions[v] or 0) + 1 end
end
function done(summary, latency, requests)
  local vs, ss = {}, {}
  for _, t in ipairs(threads) do
    for k, n in pairs(t:get("versions")) do vs[k] = (vs[k] or 0) + n end
    for k, n in pairs(t:get("statuses")) do ss[k] = (ss[k] or 0) + n end
  end
  local parts = {}
  for k, n in pairs(vs) do table.insert(parts, string.format('"%s": %d', k, n)) end
  local sparts = {}
  for k, n in pairs(ss) do table.insert(sparts, string.format('"%s": %d', k, n)) end
  io.write(string.format('WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"p50": %d, "p90": %d, "p95": %d, "p99": %d, "max": %d, "mean": %.1f}, ' ..
    '"versions": {%s}, "statuses": {%s}}\n',
    summary.requests, summary.duration, summary.bytes, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.status, summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(95), latency:percentile(99), latency.max,
    latency.mean,
    table.concat(parts, ", "), table.concat(sparts, ", ")))
end
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _manifest_version(bundle: Path) -> str:
    return hashlib.sha256((bundle / "manifest.json").read_bytes()).hexdigest()[:12]


def _variant(src: Path, dst: Path, tweak: float) -> Path:
    """A copy with a different (still valid) threshold list, so a distinct manifest version."""
    shutil.copytree(src, dst)
    m = json.loads((dst / "manifest.json").read_text())
    thr = m["policy"]["thresholds"]
    if thr:
        m["policy"]["thresholds"] = [float(t) * tweak for t in thr]
    m.setdefault("extra", {})["serve_load_variant"] = dst.name
    (dst / "manifest.json").write_text(json.dumps(m, indent=2))
    return dst


def _corrupt(src: Path, dst: Path, how: int) -> Path:
    """Corrupted copies, each with its own manifest version so a response from one would be visible."""
    _variant(src, dst, 0.9)
    m = json.loads((dst / "manifest.json").read_text())
    seg = dst / m["segments"][-1]["files"][0]["path"]
    kinds = ["flip", "truncate", "missing_file", "bad_manifest", "sha_field"]
    kind = kinds[how % len(kinds)]
    if kind == "flip":
        data = bytearray(seg.read_bytes())
        data[len(data) // 2] ^= 0xFF
        seg.write_bytes(bytes(data))
    elif kind == "truncate":
        seg.write_bytes(seg.read_bytes()[:100])
    elif kind == "missing_file":
        seg.unlink()
    elif kind == "bad_manifest":
        (dst / "manifest.json").write_text((dst / "manifest.json").read_text()[:200])
    else:
        m["segments"][0]["files"][0]["sha256"] = "0" * 64
        (dst / "manifest.json").write_text(json.dumps(m, indent=2))
    return dst


def _point(link: Path, target: Path) -> None:
    tmp = link.with_name(link.name + ".tmp")
    if tmp.is_symlink():
        tmp.unlink()
    tmp.symlink_to(target)
    os.replace(tmp, link)


class _Server:
    def __init__(self, bundle: Path, port: int, batch: int, log: Path, extra: list[str]) -> None:
        env = dict(os.environ, EDGE_RUNTIME_THREADS=os.environ.get("EDGE_RUNTIME_THREADS", "1"))
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log
        self.log = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge_runtime", "serve", f"m={bundle}", "--port", str(port),
             "--max-batch-size", str(batch), "--max-queue", "512", *extra],
            stdout=self.log, stderr=subprocess.STDOUT, env=env)
        import httpx

        self.client = httpx.Client(base_url=self.url, timeout=60)
        for _ in range(600):
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited: see {log}")
            try:
                if self.client.get("/v2/health/ready").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise SystemExit(f"server did not become ready: see {log}")

    def metric(self, text: str, name: str, **labels: str) -> float:
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(60)
        self.client.close()
        self.log.close()
        return rc


def _write_bodies(folder: Path, bodies: list[tuple[bytes, str]]) -> Path:
    """One file per request body (and its binary-extension header length, empty for JSON)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, (body, length) in enumerate(bodies, start=1):
        (folder / f"body_{i}").write_bytes(body)
        (folder / f"len_{i}").write_text(length)
    return folder


def _bodies(rt, xs: np.ndarray, params: dict, binary: bool) -> list[tuple[bytes, str]]:
    """Request bodies for single samples: KServe v2 JSON, or the binary tensor data extension (answers in kind)."""
    out = []
    for x in xs:
        x = x[None]
        if binary:
            head = json.dumps({"inputs": [{"name": rt.input_spec.name, "shape": list(x.shape), "datatype": "FP32",
                                           "parameters": {"binary_data_size": int(x.nbytes)}}],
                               "parameters": {**params, "binary_data_output": True}}).encode()
            out.append((head + x.astype("<f4").tobytes(), str(len(head))))
        else:
            out.append((json.dumps({"inputs": [{"name": rt.input_spec.name, "shape": list(x.shape), "datatype": "FP32",
                                                "data": np.round(x, 5).ravel().tolist()}],
                                    **({"parameters": params} if params else {})}).encode(), ""))
    return out


def build_residual_cnn(out: Path) -> Path:
    """A small 3x32x32 residual CNN with 3 exits (random init): the BranchyNet ResNet's stages, the last two in one
    segment."""
    import torch
    from torch import nn

    from converters import create_model, export_bundle
    from converters.models.contract import EarlyExitModel

    torch.manual_seed(0)
    m = create_model("branchynet_resnet", in_channels=3, image_size=32, widths=[8, 16, 32, 64], blocks=[1, 1, 1, 1],
                     exit_heads=[{"name": "conv_pool_linear", "kwargs": {"width": 8, "grid": 8, "stride": 2}},
                                 {"name": "conv_pool_linear", "kwargs": {"width": 8, "grid": 8, "stride": 2}},
                                 "pool_linear"])
    model = EarlyExitModel([m.segments[0], m.segments[1], nn.Sequential(m.segments[2], m.segments[3])],
                           [m.heads[0], m.heads[1], m.heads[3]],
                           head_types=[m.head_types[0], m.head_types[1], m.head_types[3]], input_shape=(3, 32, 32))
    return export_bundle(model, torch.randn(1, 3, 32, 32), out, name="resnet32", policy="entropy", thresholds=1.0)


def _wrk(url: str, clients: int, seconds: float, lua: Path, bodies: Path) -> dict:
    n = len(list(bodies.glob("body_*")))
    ctype = "application/octet-stream" if (bodies / "len_1").read_text() else "application/json"
    env = dict(os.environ, SERVE_LOAD_DIR=str(bodies), SERVE_LOAD_N=str(n), SERVE_LOAD_CTYPE=ctype,
               SERVE_LOAD_PATH="/v2/models/m/infer")
    cmd = ["wrk", "-t1", f"-c{clients}", f"-d{int(seconds)}s", "--timeout", "10s", "-s", str(lua), url]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=seconds + 60)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("WRK_JSON ")), None)
    if line is None:
        raise SystemExit(f"wrk failed:\n{out.stdout}\n{out.stderr}")
    res = json.loads(line[len("WRK_JSON "):])
    res["rps"] = res["requests"] / (res["duration_us"] / 1e6)
    res["non_2xx"] = sum(n for s, n in res["statuses"].items() if not s.startswith("2"))
    res["socket_errors"] = sum(v for k, v in res["errors"].items() if k != "status")
    return res


def _rss(pid: int) -> int:
    import psutil

    return int(psutil.Process(pid).memory_info().rss)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", help="bundle directory to serve (default: convert --recipe)")
    ap.add_argument("--recipe", default=str(REPO / "converters/recipes/tiny_transformer.yaml"),
                    help="recipe converted when no --bundle is given")
    ap.add_argument("--model", choices=["resnet32"], default=None,
                    help="resnet32: build a small 3x32x32 residual CNN with 3 exits (random init) instead of --recipe")
    ap.add_argument("--binary", action="store_true",
                    help="send KServe v2 binary tensor data (Inference-Header-Content-Length) and ask for binary "
                         "answers, instead of JSON float lists")
    ap.add_argument("--clients", type=int, default=32, help="concurrent connections (default 32)")
    ap.add_argument("--target", type=float, default=2.0, help="on/off throughput ratio to reach (default 2)")
    ap.add_argument("--duration", type=float, default=15,
                    help="seconds per on/off throughput run (default 15; 0 skips it)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="alternating off/on rounds the --duration is split into (drift hits both alike)")
    ap.add_argument("--warmup", type=float, default=3, help="untimed wrk seconds per daemon before measuring")
    ap.add_argument("--soak", type=float, default=60, help="soak seconds (default 60; 0 skips the soak)")
    ap.add_argument("--soak-warmup", type=float, default=10, help="seconds of the soak before the RSS baseline")
    ap.add_argument("--reloads", type=int, default=10, help="reloads during the soak, every other one corrupted")
    ap.add_argument("--max-wait-ms", type=float, default=2.0, help="micro-batching wait when on (default 2)")
    ap.add_argument("--bundle-policy", action="store_true",
                    help="use the bundle's calibrated policy (default: entropy thresholds at each exit's median "
                         "on the request bodies, so requests leave at a mix of exits)")
    ap.add_argument("--json", help="also write raw results to this JSON file")
    args = ap.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install -y wrk")

    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        if args.bundle:
            bundle = Path(args.bundle).resolve()
        elif args.model == "resnet32":
            bundle = build_residual_cnn(tmp / "bundle")
        else:
            from converters import convert

            bundle = convert(args.recipe, tmp / "bundle", progress=False)
        import edge_runtime

        rt = edge_runtime.load_bundle(bundle, threads=1)
        shape = [d or 1 for d in rt.input_spec.shape[1:]]
        xs = np.random.default_rng(0).standard_normal((64, 1, *shape)).astype(rt.input_spec.dtype)
        params: dict = {}
        if not args.bundle_policy:  # entropy thresholds at each exit's median: a mix of early and late exits
            entropy = edge_runtime.create_policy("entropy", rt.num_exits, 1.0)
            outs = rt.exit_outputs(xs.reshape(64, *shape))
            params = {"policy": "entropy", "thresholds": [round(float(np.median(entropy.score(o))), 6)
                                                          for o in outs[:-1]]}
        exits = np.bincount(rt.infer(xs.reshape(64, *shape), mode="early_exit", **params).exit_index,
                             minlength=rt.num_exits)
        bodies = _write_bodies(tmp / "bodies", _bodies(rt, np.round(xs.reshape(64, *shape), 5), params,
                                                       args.binary))
        lua = tmp / "post.lua"
        lua.write_text(_LUA)
        report: dict = {"header": header(), "bundle": str(bundle), "model": rt.name, "parameters": params,
                        "exits_of_the_64_bodies": exits.tolist(), "clients": args.clients}
        print(f"# serve_load: {rt.name} ({rt.num_exits} exits; the 64 request bodies exit at {exits.tolist()}), "
              f"{args.clients} clients, wrk -t1, loopback, server threads=1")

        # -- micro-batching on vs off ---------------------------------------------------------
        runs: dict = {}
        if args.duration > 0:  # both daemons up at once (an idle one costs nothing); rounds alternate off/on
            servers = {label: _Server(bundle, _free_port(), batch, tmp / f"server_{label}.log",
                                      ["--max-wait-ms", str(args.max_wait_ms)])
                       for label, batch in (("off", 1), ("on", 32))}
            rounds: dict[str, list[dict]] = {label: [] for label in servers}
            for srv in servers.values():
                if args.warmup:
                    _wrk(srv.url, args.clients, args.warmup, lua, bodies)
            for _ in range(args.rounds):
                for label, srv in servers.items():
                    rounds[label].append(_wrk(srv.url, args.clients, args.duration / args.rounds, lua, bodies))
            for label, srv in servers.items():
                text = srv.client.get("/metrics").text
                count = srv.metric(text, "edge_runtime_batch_size_count", model="m")
                total = srv.metric(text, "edge_runtime_batch_size_sum", model="m")
                rs = rounds[label]
                res = {
                    "requests": sum(r["requests"] for r in rs),
                    "rps": sum(r["requests"] for r in rs) / sum(r["duration_us"] / 1e6 for r in rs),
                    "p50_ms": float(np.median([r["latency_us"]["p50"] for r in rs])) / 1e3,
                    "p99_ms": max(r["latency_us"]["p99"] for r in rs) / 1e3,
                    "non_2xx": sum(r["non_2xx"] for r in rs), "socket_errors": sum(r["socket_errors"] for r in rs),
                    "mean_batch": total / count if count else 0.0, "rounds": rs, "exit_code": srv.stop(),
                }
                runs[label] = res
                print(f"micro-batching {label:>3}: {res['rps']:8.1f} req/s  p50 {res['p50_ms']:6.2f} ms  "
                      f"p99 {res['p99_ms']:7.2f} ms  non-2xx {res['non_2xx']}  socket errors {res['socket_errors']}  "
                      f"mean micro-batch {res['mean_batch']:.1f}  ({res['requests']} requests in {len(rs)} rounds; "
                      f"per-round req/s {[round(r['rps']) for r in rs]})")
        if runs:
            ratio = runs["on"]["rps"] / runs["off"]["rps"]
            ok = ratio >= args.target and all(r["non_2xx"] == 0 and r["socket_errors"] == 0 for r in runs.values())
            print(f"throughput on/off = {ratio:.2f}x (target >= {args.target:g}x, zero non-2xx): "
                  f"{'PASS' if ok else 'MISS'}")
            report["throughput"] = {"runs": runs, "ratio": ratio, "pass": ok}

        if args.soak > 0:
            report["soak"] = _soak(args, bundle, tmp, lua, bodies)
        if args.json:
            write_json_atomic(args.json, report)
    return 0


def _soak(args: argparse.Namespace, bundle: Path, tmp: Path, lua: Path, bodies: Path) -> dict:
    good = [_variant(bundle, tmp / f"good_{i}", tweak) for i, tweak in enumerate((1.0, 0.8))]
    bad = [_corrupt(bundle, tmp / f"bad_{i}", i) for i in range(max(1, args.reloads // 2))]
    good_versions = {_manifest_version(g) for g in good}
    bad_versions = {hashlib.sha256((b / "manifest.json").read_bytes()).hexdigest()[:12] for b in bad}
    link = tmp / "current"
    _point(link, good[0])
    srv = _Server(link, _free_port(), 32, tmp / "server_soak.log", ["--max-wait-ms", str(args.max_wait_ms)])
    rss: list[tuple[float, int]] = []
    reloads: list[dict] = []
    stop = threading.Event()
    t0 = time.monotonic()

    def sample_rss() -> None:
        while not stop.wait(1.0):
            rss.append((time.monotonic() - t0, _rss(srv.proc.pid)))

    def do_reloads() -> None:
        import httpx

        gap = args.soak / (args.reloads + 1)
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            for k in range(args.reloads):
                if stop.wait(gap):
                    return
                target = bad[(k // 2) % len(bad)] if k % 2 else good[(k // 2 + 1) % len(good)]
                _point(link, target)
                r = c.post("/v2/repository/models/m/load")
                reloads.append({"t": round(time.monotonic() - t0, 1), "target": target.name, "status": r.status_code,
                                "serving": r.json().get("version") or r.json().get("serving")})

    threads = [threading.Thread(target=sample_rss), threading.Thread(target=do_reloads)]
    for t in threads:
        t.start()
    res = _wrk(srv.url, args.clients, args.soak, lua, bodies)
    stop.set()
    for t in threads:
        t.join()
    text = srv.client.get("/metrics").text
    served_ok = srv.metric(text, "edge_runtime_inference_requests_total", model="m", status="200")
    served_all = srv.metric(text, "edge_runtime_inference_requests_total", model="m")
    rc = srv.stop()
    warm = [v for t, v in rss if t >= args.soak_warmup]
    base, end = (warm[0], warm[-1]) if warm else (rss[0][1], rss[-1][1])
    growth = (end - base) / base
    seen = set(res["versions"])
    good_reloads = [r for r in reloads if not r["target"].startswith("bad")]
    bad_reloads = [r for r in reloads if r["target"].startswith("bad")]
    ok_reloads = all(r["status"] == 200 for r in good_reloads) and all(r["status"] == 422 for r in bad_reloads)
    out = {
        "wrk": res, "rss_mb": [(round(t, 1), round(v / 2**20, 1)) for t, v in rss], "rss_growth": growth,
        "reloads": reloads, "versions_seen": res["versions"], "good_versions": sorted(good_versions),
        "corrupted_versions": sorted(bad_versions), "server_answered": served_all, "server_200": served_ok,
        "exit_code": rc,
    }
    counted = sum(res["versions"].values()) == res["requests"]  # every answer's version was read
    out["pass"] = (res["non_2xx"] == 0 and res["socket_errors"] == 0 and growth < 0.10 and ok_reloads and counted
                   and bool(seen) and seen <= good_versions and not (seen & bad_versions) and rc == 0)
    print(f"soak {args.soak:.0f} s: {res['requests']} requests, {res['rps']:.1f} req/s, p99 "
          f"{res['latency_us']['p99'] / 1e3:.2f} ms, non-2xx {res['non_2xx']}, socket errors {res['socket_errors']}; "
          f"server answered {served_all:.0f} ({served_ok:.0f} with 200)")
    print(f"  RSS {base / 2**20:.1f} MB after {args.soak_warmup:.0f} s warm-up -> {end / 2**20:.1f} MB at the end "
          f"({growth * 100:+.1f}%, target < +10%)")
    print(f"  reloads: {len(good_reloads)} good -> {[r['status'] for r in good_reloads]}, "
          f"{len(bad_reloads)} corrupted -> {[r['status'] for r in bad_reloads]} "
          f"({', '.join(sorted({r['target'] for r in bad_reloads}))})")
    print(f"  versions answered: {res['versions']} (of {res['requests']} answers; good: {sorted(good_versions)}); "
          f"corrupted versions answered: {sorted(seen & bad_versions) or 'none'}")
    print(f"soak: {'PASS' if out['pass'] else 'MISS'} (zero errors, RSS growth < 10%, no lost request, "
          f"never a corrupted model; graceful exit code {rc})")
    if not out["pass"]:  # what a failed run needs for its diagnosis: wrk's statuses and the server's complaints
        print(f"  statuses seen by wrk: {res['statuses']}; wrk errors: {res['errors']}")
        complaints = [ln for ln in srv.log_path.read_text(errors="replace").splitlines()
                      if "WARNING" in ln or "ERROR" in ln or "Traceback" in ln]
        print("  server log (warnings and errors, last 20):" + "".join(f"\n    {ln}" for ln in complaints[-20:]))
    return out


if __name__ == "__main__":
    raise SystemExit(main())
