"""results.json: the one source of truth of a benchmark (header, rows, targets), its schema, CSV and compare."""

from __future__ import annotations

import csv
import io
import json
import os
import platform
from functools import lru_cache
from importlib import metadata, resources
from pathlib import Path
from typing import Any

from edge_runtime.errors import ConfigError, InputError

RESULTS_FORMAT = "edge-runtime-bench-results"
RESULTS_VERSION = 1
PACKAGES = ("edge-runtime", "numpy", "onnxruntime", "ai-edge-litert", "tflite-runtime", "psutil", "matplotlib",
            "torch")


@lru_cache(maxsize=1)
def results_schema() -> dict[str, Any]:
    """The JSON schema of results.json (``edge_runtime/schemas/bench_results.schema.json``)."""
    return json.loads(resources.files("edge_runtime").joinpath("schemas/bench_results.schema.json").read_text())


def validate_results(results: Any, *, path: str | Path = "results.json") -> None:
    """Check a results dict against the schema.

    Raises:
        InputError: naming the file and the first bad field.
    """
    import jsonschema

    validator = jsonschema.Draft202012Validator(results_schema())
    errors = sorted(validator.iter_errors(results), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        err = errors[0]
        where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        raise InputError(f"{path}: field {where}: {err.message}")


def load_results(path: str | Path) -> dict[str, Any]:
    """Read and validate a results.json."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: results file not found")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{p}: not valid JSON ({exc})") from None
    validate_results(data, path=p)
    return data


def machine_info() -> dict[str, Any]:
    """What ran the benchmark: OS, CPU model, cores, memory, Python."""
    import psutil

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                cpu = value.strip()
                break
    except OSError:
        pass
    return {
        "system": f"{platform.system()} {platform.release()}",
        "arch": platform.machine(),
        "cpu": cpu or "unknown",
        "logical_cpus": os.cpu_count() or 0,
        "physical_cpus": psutil.cpu_count(logical=False) or 0,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 2),
        "python": platform.python_version(),
    }


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that matter (read from metadata: nothing is imported)."""
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


# -- CSV --------------------------------------------------------------------------------------
def results_csv(results: dict[str, Any]) -> str:
    """One line per row: accuracy, latency percentiles, speed-up, throughput per batch size, energy, RSS."""
    sizes = results["settings"]["batch_sizes"]
    cols = ["name", "kind", "label", "backend", "precision", "measured", "accuracy", "accuracy_drop_pts",
            "latency_mean_ms", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "speedup_vs_full",
            *[f"throughput_b{b}_per_s" for b in sizes], *[f"throughput_speedup_b{b}" for b in sizes],
            "energy_per_inference_j", "energy_source", "mean_flops_fraction", "exit_histogram", "peak_rss_mb"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in results["configs"]:
        lat = r.get("latency_ms") or {}
        thr = {t["batch_size"]: t for t in r.get("throughput") or []}
        w.writerow([r["name"], r["kind"], r["label"], r["backend"], r["precision"], r["measured"], r["accuracy"],
                    r["accuracy_drop_pts"], lat.get("mean"), lat.get("p50"), lat.get("p95"), lat.get("p99"),
                    r.get("speedup_vs_full"), *[thr.get(b, {}).get("samples_per_s") for b in sizes],
                    *[thr.get(b, {}).get("speedup_vs_full") for b in sizes], r["energy"]["per_inference_j"],
                    r["energy"]["source"], r.get("mean_flops_fraction"),
                    "|".join(str(c) for c in r["exit_histogram"]), r.get("peak_rss_mb")])
    return buf.getvalue()


# -- compare ----------------------------------------------------------------------------------
_HEADER_KEYS = (("machine", "cpu"), ("machine", "arch"), ("machine", "logical_cpus"), ("header", "backend"),
                ("header", "threads"), ("header", "profile"), ("header", "meter"), ("bundle", "name"),
                ("bundle", "manifest_sha256"), ("data", "spec"), ("data", "n_samples"))


def compare_results(a: dict[str, Any], b: dict[str, Any], *, names: tuple[str, str] = ("A", "B")) -> str:
    """A text table of what differs between two results.json files (header, then each row both have).

    Ratios are B / A. Example: a Raspberry Pi run (B) against a workstation run (A).
    """
    out = [f"A = {names[0]}", f"B = {names[1]}", "", "header differences:"]
    any_diff = False
    for section, key in _HEADER_KEYS:
        va, vb = _lookup(a, section, key), _lookup(b, section, key)
        if va != vb:
            any_diff = True
            out.append(f"  {section}.{key}: {va!r} -> {vb!r}")
    for pkg in sorted(set(a["header"]["packages"]) | set(b["header"]["packages"])):
        va, vb = a["header"]["packages"].get(pkg), b["header"]["packages"].get(pkg)
        if va != vb:
            any_diff = True
            out.append(f"  packages.{pkg}: {va} -> {vb}")
    if not any_diff:
        out.append("  (none)")
    rows_a = {r["name"]: r for r in a["configs"]}
    rows_b = {r["name"]: r for r in b["configs"]}
    common = [n for n in rows_a if n in rows_b]
    sizes = [s for s in a["settings"]["batch_sizes"] if s in b["settings"]["batch_sizes"]]
    out += ["", f"{'row':<22} {'metric':<22} {'A':>12} {'B':>12} {'B/A':>8}"]
    for n in common:
        ra, rb = rows_a[n], rows_b[n]
        metrics = [("accuracy %", _pct(ra["accuracy"]), _pct(rb["accuracy"])),
                   ("mean ms (b=1)", _get(ra, "latency_ms", "mean"), _get(rb, "latency_ms", "mean")),
                   ("p95 ms (b=1)", _get(ra, "latency_ms", "p95"), _get(rb, "latency_ms", "p95")),
                   ("speed-up vs full", ra.get("speedup_vs_full"), rb.get("speedup_vs_full")),
                   ("energy mJ/inference", _mj(ra), _mj(rb))]
        for s in sizes:
            metrics.append((f"throughput/s b={s}", _thr(ra, s), _thr(rb, s)))
        shown = n
        for label, va, vb in metrics:
            if va is None and vb is None:
                continue
            ratio = f"{vb / va:8.3f}" if va not in (None, 0) and vb is not None else f"{'-':>8}"
            out.append(f"{shown:<22} {label:<22} {_num(va):>12} {_num(vb):>12} {ratio}")
            shown = ""
    only = sorted(set(rows_a) ^ set(rows_b))
    if only:
        out += ["", "rows in only one file: " + ", ".join(only)]
    return "\n".join(out)


def _lookup(results: dict[str, Any], section: str, key: str) -> Any:
    sec = results["header"] if section == "header" else results["header"].get(section, results.get(section, {}))
    return (sec or {}).get(key)


def _get(row: dict[str, Any], key: str, sub: str) -> float | None:
    return (row.get(key) or {}).get(sub)


def _pct(v: float | None) -> float | None:
    return None if v is None else 100.0 * v


def _mj(row: dict[str, Any]) -> float | None:
    e = row["energy"]["per_inference_j"]
    return None if e is None else e * 1e3


def _thr(row: dict[str, Any], b: int) -> float | None:
    return next((t["samples_per_s"] for t in row.get("throughput") or [] if t["batch_size"] == b), None)


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g}"


def check_batch_sizes(text: str) -> tuple[int, ...]:
    """'1,8,32' -> (1, 8, 32); errors name the flag."""
    try:
        sizes = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"--batch-sizes: expected positive integers separated by commas, got {text!r}") from None
    if not sizes or any(s < 1 for s in sizes):
        raise ConfigError(f"--batch-sizes: expected positive integers separated by commas, got {text!r}")
    return tuple(sorted(set(sizes)))
