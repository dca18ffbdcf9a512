"""``edge-runtime profile list|show|detect|fit``: device profiles (data files) and this machine's own."""

from __future__ import annotations

import argparse
import json
import sys

import yaml


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="device profiles: list, show, detect, fit one to this machine",
                       description="Device profiles are YAML data files (device_profiles/); every figure names "
                                   "its source.")
    psub = p.add_subparsers(dest="profile_command", metavar="ACTION")
    ls = psub.add_parser("list", help="list the registered profiles")
    ls.set_defaults(func=run_list)
    sh = psub.add_parser("show", help="print one profile with the source of every figure")
    sh.add_argument("name", help="profile name or a profile YAML path")
    sh.add_argument("--json", action="store_true", help="print as JSON instead of YAML")
    sh.set_defaults(func=run_show)
    dt = psub.add_parser("detect", help="which profile matches this machine, and the evidence",
                         description="Match this machine against every profile's detect rules; warn (stderr) when "
                                     "an installed package version is known bad on the detected board.")
    dt.add_argument("--device-tree-model", default=None,
                    help="path read instead of /proc/device-tree/model")
    dt.add_argument("--tegra-release", default=None, help="path read instead of /etc/nv_tegra_release")
    dt.add_argument("--cpuinfo", default=None, help="path read instead of /proc/cpuinfo")
    dt.add_argument("--machine", default=None, help="use this instead of platform.machine()")
    dt.set_defaults(func=run_detect)
    cal = psub.add_parser("fit", aliases=["calibrate"],
                          help="micro-benchmark this machine's backend and write a fitted profile "
                               "('calibrate' is the old spelling, kept for one release)")
    cal.add_argument("--out", required=True, help="profile YAML to write (e.g. my.yaml)")
    cal.add_argument("--name", help="profile name (default: the file's stem)")
    cal.add_argument("--threads", type=int, default=1, help="backend threads to measure at (default 1)")
    cal.add_argument("--seconds-per-graph", type=float, default=0.15,
                     help="timing budget per micro-benchmark graph (default 0.15 s)")
    cal.add_argument("--powerlog", help="CSV power log written during the run; fits the power model from it")
    cal.add_argument("--base", help="profile whose power model is copied without --powerlog (default: detected)")
    cal.set_defaults(func=run_fit)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def run_list(args: argparse.Namespace) -> int:
    from edge_runtime.profiles import PROFILES

    print(f"{'name':<18} {'cores':>5} {'cpu':<14} {'idle W':>6} {'active W':>8} {'threads':>7}  description")
    for name in PROFILES.names():
        p = PROFILES.create(name)
        print(f"{name:<18} {p.cpu.cores:>5} {p.cpu.type:<14} {p.power.idle_w:>6.2f} {p.power.active_w:>8.2f} "
              f"{str(p.threads):>7}  {p.description}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    from edge_runtime.profiles import get_profile, profile_to_dict

    data = profile_to_dict(get_profile(args.name))
    data.pop("measured", None)
    print(json.dumps(data, indent=2) if args.json else yaml.safe_dump(data, sort_keys=False, width=120).rstrip())
    return 0


def run_detect(args: argparse.Namespace) -> int:
    from edge_runtime.profiles import detect_profile, get_profile, wheel_warnings

    paths = {k: v for k, v in (("device_tree_model", args.device_tree_model), ("tegra_release", args.tegra_release),
                               ("cpuinfo", args.cpuinfo)) if v}
    d = detect_profile(paths, machine=args.machine)
    print(f"{d.name} (score {d.score}): " + "; ".join(d.evidence))
    for line in wheel_warnings(get_profile(d.name)):
        print(f"warning: {line}", file=sys.stderr)
    return 0


def run_fit(args: argparse.Namespace) -> int:
    from edge_runtime.profile_fit import FitSettings, fit_profile
    from edge_runtime.profiles import load_profile

    settings = FitSettings(threads=args.threads, seconds_per_graph=args.seconds_per_graph)
    out = fit_profile(args.out, name=args.name, base=args.base, settings=settings, powerlog=args.powerlog,
                      progress=lambda m: print(f"fitting: {m}", flush=True))
    prof = load_profile(out)
    lat = prof.latency
    assert lat is not None
    print(f"wrote {out}: call overhead {lat.call_overhead_s * 1e6:.2f} us, conv {lat.gflops['conv']:.1f} GFLOP/s, "
          f"matmul {lat.gflops['matmul']:.1f} GFLOP/s at {args.threads} thread(s); "
          f"power idle {prof.power.idle_w:.2f} W, active {prof.power.active_w:.2f} W")
    return 0
