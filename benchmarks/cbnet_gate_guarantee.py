"""CBNet's gate with the exit thresholds' risk control (issue 18) vs the point estimate, on existing bundles.

For each bundle (one with CBNet parts, e.g. from ``benchmarks/cbnet_table.py``), the gate is calibrated on the
bundle's calibration split twice with :func:`edge_runtime.methods.cbnet.calibrate_gate` — the point estimate
and ``guarantee={"confidence": 0.9}`` — and applied to the test split in front of the bundle's early exit:
the share converted and the accuracy on both splits, whether the guarantee certified anything, and the budget
the chain left it.

Usage: python benchmarks/cbnet_gate_guarantee.py out/r3/cbnet_bench/resnet out/r3/cbnet_bench/lenet
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]   # this checkout's packages, not an install's

import edge_runtime  # noqa: E402
from edge_runtime.datasets import load_split  # noqa: E402
from edge_runtime.methods.cbnet import CBNetRunner, calibrate_gate, gate_policy  # noqa: E402


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    for path in argv:
        rt = edge_runtime.load_bundle(path, threads=1)
        xc, yc = load_split(path, "calibration")
        xt, yt = load_split(path, "test")
        xc, xt = rt.preprocess(xc), rt.preprocess(xt)
        full = float((rt.infer(xt, mode="full").predictions == yt).mean())
        chain = rt.infer(xt, mode="early_exit").predictions
        out = CBNetRunner(rt, gated=False).run(rt.check_input(xt)).outputs
        for name, g in (("point estimate", None), ("confidence 0.9", {"confidence": 0.9, "seed": 0})):
            rec = calibrate_gate(rt, xc, yc, max_accuracy_drop=1.0, guarantee=g)
            pol = gate_policy(rec)
            passed = np.asarray(pol.decide(0, out, pol.start(len(yt))), dtype=bool)
            pred = np.where(passed, out.argmax(-1), chain)
            cert = rec.get("guarantee", {})
            print(f"{path} {name}: calibration {100 * rec['converted_fraction']:.1f}% converted, gated "
                  f"{100 * rec['accuracy']['gated']:.2f}%; test {100 * passed.mean():.1f}% converted, gated "
                  f"{100 * (pred == yt).mean():.2f}% (full {100 * full:.2f}%, early exit "
                  f"{100 * (chain == yt).mean():.2f}%); certified {cert.get('certified')}, budget left "
                  f"{cert.get('budget_left')}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
