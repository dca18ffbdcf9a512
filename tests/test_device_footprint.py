"""The device side never imports torch, and its memory stays small and flat."""

import json
import subprocess
import sys
import textwrap

from _helpers import HEAVY_MODULES


def _run(code: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_and_inference_never_import_torch(bundles):
    out = _run(f"""
        import json, sys
        import numpy as np
        import edge_runtime
        rt = edge_runtime.load_bundle({str(bundles['tiny_transformer'])!r})
        x = np.zeros((3, 1, 16, 16), np.float32)
        rt.infer(x); rt.infer(x, mode="full"); rt.infer(x, policy="patience")
        from edge_runtime.cli import build_parser
        build_parser()
        print(json.dumps({{"mods": {HEAVY_MODULES}}}))
    """)
    assert out["mods"] == []


def test_resident_memory_small_and_flat(bundles):
    out = _run(f"""
        import json
        import numpy as np, psutil
        import edge_runtime
        proc = psutil.Process()
        rt = edge_runtime.load_bundle({str(bundles['tiny_cnn'])!r}, threads=1)
        x = np.random.default_rng(0).standard_normal((1, 1, 16, 16)).astype(np.float32)
        for _ in range(100):
            rt.infer(x)
        warm = proc.memory_info().rss
        for _ in range(1000):
            rt.infer(x)
        end = proc.memory_info().rss
        print(json.dumps({{"warm": warm, "end": end}}))
    """)
    mb = 1 << 20
    assert out["end"] < 150 * mb, f"resident {out['end'] / mb:.1f} MB"
    assert out["end"] - out["warm"] < 2 * mb, f"grew {(out['end'] - out['warm']) / mb:.2f} MB after warm-up"
