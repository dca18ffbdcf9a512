"""``edge-runtime demo``: train (or reuse cached) demo bundles on the built-in digits data, benchmark them and
write the reports — the README's first command.

Two bundles: the BranchyNet ResNet-style CNN with its CBNet parts (``branchynet_resnet.yaml``) and the
LGViT ViT (``lgvit_vit.yaml``). Converted bundles are cached under ``edge_runtime._env.cache_dir()/demo``,
keyed by the resolved recipe, the torch and edge-runtime versions and the bundle format, so a second run only
benchmarks (``--force`` retrains, e.g. after editing the converters' code).
"""

from __future__ import annotations

import copy
import hashlib
import json
import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import yaml

from edge_runtime import _env
from edge_runtime.errors import BundleError, ConfigError
from edge_runtime.files import write_text_atomic


@dataclass(frozen=True)
class DemoModel:
    """One model of the demo: a shipped recipe and what the summary calls it.

    Attributes:
        ensure: recipe sections the demo needs; added with these values when the recipe lacks them
            (``{"cbnet": {"epochs": 20}}``: CBNet with its defaults, the paper's 20 epochs).
    """

    key: str
    recipe: str
    title: str
    ensure: dict[str, Any] = field(default_factory=dict)


DEMO_MODELS: tuple[DemoModel, ...] = (
    DemoModel("branchynet_resnet", "branchynet_resnet.yaml", "BranchyNet ResNet-style CNN + CBNet",
              {"cbnet": {"epochs": 20}}),
    DemoModel("lgvit_vit", "lgvit_vit.yaml", "LGViT ViT"),
)


@dataclass(frozen=True)
class DemoSettings:
    """Settings of one demo run.

    Attributes:
        out: where the reports (and a copy of each bundle) go.
        force: retrain even when a cached bundle exists.
        threads: backend threads for the benchmark (1: steady numbers on a shared machine).
        quick: a smoke run (one epoch per training stage, 10 latency repeats in calibration, 64 benchmark
            samples, 2 sweep points): the numbers mean nothing.
        batch_sizes: the benchmark's throughput batch sizes.
        sweep_points: threshold-sweep rows per bundle.
        models: which demo models to run (keys of :data:`DEMO_MODELS`).
        jobs: conversions run in parallel (None: one per core, at most one per model; 1: one after another,
            with progress bars).
        progress: progress bars.
    """

    out: Path = Path("out/demo")
    force: bool = False
    threads: int | None = 1
    quick: bool = False
    batch_sizes: tuple[int, ...] = (1, 8, 32)
    sweep_points: int = 8
    models: tuple[str, ...] = field(default_factory=lambda: tuple(m.key for m in DEMO_MODELS))
    jobs: int | None = None
    progress: bool = True


@dataclass(frozen=True)
class DemoResult:
    """Where the demo wrote things and what it found."""

    out: Path
    summary_path: Path
    reports: dict[str, Path]
    bundles: dict[str, Path]
    reused: dict[str, bool]
    summary: list[str]
    table: str


def recipe_path(name: str) -> Path:
    """A shipped recipe's path (``converters/recipes/NAME``)."""
    return Path(str(resources.files("converters").joinpath("recipes", name)))


def _recipe_data(model: DemoModel, quick: bool) -> dict[str, Any]:
    path = recipe_path(model.recipe)
    if not path.is_file():
        raise ConfigError(f"{path}: the demo recipe is missing from this install")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    for key, value in model.ensure.items():
        data.setdefault(key, copy.deepcopy(value))
    return _quick(data) if quick else data


#: the smoke run's caps on recipe values, wherever the key appears
_QUICK_CAPS = {"epochs": 1, "latency_repeats": 10}


def _quick(node: Any) -> Any:
    """A copy with every ``epochs`` cut to 1 and ``latency_repeats`` to 10 (the smoke run)."""
    if isinstance(node, dict):
        return {k: (min(v, _QUICK_CAPS[k]) if k in _QUICK_CAPS and isinstance(v, int) else _quick(v))
                for k, v in node.items()}
    if isinstance(node, list):
        return [_quick(v) for v in node]
    return copy.deepcopy(node)


def cache_path(model: DemoModel, settings: DemoSettings) -> tuple[Path, dict[str, Any]]:
    """Where the model's bundle is cached (keyed by the resolved recipe data, the torch and edge-runtime versions
    and the bundle format), and the recipe data it is converted from."""
    import torch

    from edge_runtime import __version__
    from edge_runtime.bundle import FORMAT_VERSION

    data = _recipe_data(model, settings.quick)
    key = hashlib.sha256(json.dumps({"recipe": data, "torch": torch.__version__, "edge_runtime": __version__,
                                     "bundle_format": FORMAT_VERSION}, sort_keys=True, default=str).encode()
                         ).hexdigest()[:16]
    return _env.cache_dir() / "demo" / f"{model.key}{'-quick' if settings.quick else ''}-{key}", data


def _usable(path: Path, log: Callable[[str], None]) -> bool:
    from edge_runtime.bundle import read_bundle

    if not path.is_dir():
        return False
    try:
        read_bundle(path)
        return True
    except BundleError as exc:
        log(f"cached bundle {path} is unusable ({exc}); converting again")
        return False


def _convert_one(recipe_file: str, data: dict[str, Any], path: str, threads: int | None, progress: bool) -> float:
    """Convert one recipe into ``path`` (also the entry point of a parallel worker); returns seconds taken."""
    import torch

    from converters.pipeline.convert import convert
    from converters.recipe import parse_recipe

    if threads:
        torch.set_num_threads(threads)  # a recipe's own train.threads still wins while training
    t0 = time.perf_counter()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    convert(parse_recipe(data, source=recipe_path(recipe_file)), path, overwrite=True, progress=progress)
    return time.perf_counter() - t0


def prepare_bundles(models: list[DemoModel], settings: DemoSettings,
                    log: Callable[[str], None] = print) -> dict[str, tuple[Path, bool]]:
    """Every model's bundle from the cache, converting the missing ones (or all with ``force``);
    ``key -> (path, reused)``. Several conversions run in parallel processes, one core each, when the machine
    has the cores (``settings.jobs``)."""
    out: dict[str, tuple[Path, bool]] = {}
    todo = []
    for m in models:
        path, data = cache_path(m, settings)
        reuse = not settings.force and _usable(path, log)
        out[m.key] = (path, reuse)
        if not reuse:
            todo.append((m, path, data))
    jobs = min(len(todo), settings.jobs or os.cpu_count() or 1)
    if jobs <= 1:
        for m, path, data in todo:
            log(f"converting {m.recipe} -> {path} (cached for the next run)")
            _convert_one(m.recipe, data, str(path), None, settings.progress)
        return out
    threads = max(1, (os.cpu_count() or 1) // jobs)
    log(f"converting {len(todo)} recipes in parallel ({jobs} processes, {threads} thread(s) each); "
        f"each prints a line when done")
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        futures = {}
        for m, path, data in todo:
            log(f"converting {m.recipe} -> {path} (cached for the next run)")
            futures[pool.submit(_convert_one, m.recipe, data, str(path), threads, False)] = m
        for fut in as_completed(futures):
            log(f"converted {futures[fut].recipe} in {fut.result():.0f} s")
    return out


def run_demo(settings: DemoSettings = DemoSettings(), log: Callable[[str], None] = print) -> DemoResult:
    """Train or reuse the demo bundles, benchmark each against its one-graph model, write the reports.

    Example:
        >>> result = run_demo(DemoSettings(out=Path("out/demo")))    # doctest: +SKIP
        >>> print("\\n".join(result.summary))                       # doctest: +SKIP
    """
    from edge_runtime.bench import BenchSettings, run_bench, write_report

    models = {m.key: m for m in DEMO_MODELS}
    unknown = [k for k in settings.models if k not in models]
    if unknown:
        raise ConfigError(f"demo models {unknown} are not known; known: {', '.join(models)}")
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    reports, bundles, reused, results = {}, {}, {}, {}
    prepared = prepare_bundles([models[k] for k in settings.models], settings, log)
    for key in settings.models:
        model = models[key]
        cached, was_cached = prepared[key]
        reused[key] = was_cached
        bundle = out / "bundles" / key
        if bundle.exists():
            shutil.rmtree(bundle)
        shutil.copytree(cached, bundle)
        bundles[key] = bundle
        data_name = (json.loads((bundle / "manifest.json").read_text()).get("data") or {}).get("name")
        if not data_name:
            raise ConfigError(f"{bundle}: the demo bundle records no data set (manifest 'data' section)")
        log(f"benchmarking {model.title} ({'cached bundle' if was_cached else 'new bundle'}) on {data_name}:test")
        bench = BenchSettings(data=f"{data_name}:test", threads=settings.threads, batch_sizes=settings.batch_sizes,
                              sweep_points=2 if settings.quick else settings.sweep_points,
                              max_samples=64 if settings.quick else None,
                              warmup=5 if settings.quick else 20, progress=settings.progress)
        results[key] = run_bench(bundle, bench)
        reports[key] = write_report(results[key], out / key)
    table = summary_table(results, {k: models[k].title for k in results})
    lines = summary_lines(results, {k: models[k].title for k in results})
    summary_path = out / "summary.md"
    _write_summary(summary_path, table, lines, reports, settings)
    return DemoResult(out, summary_path, reports, bundles, reused, lines, table)


def _row(res: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((r for r in res["configs"] if r["name"] == name), None)


def _thr_x(row: dict[str, Any] | None, b: int) -> float | None:
    return next((t["speedup_vs_full"] for t in (row or {}).get("throughput", []) if t["batch_size"] == b), None)


def _f(v: float | None, spec: str, scale: float = 1.0) -> str:
    return "n/a" if v is None else format(v * scale, spec)


def summary_table(results: dict[str, dict[str, Any]], titles: dict[str, str]) -> str:
    """The demo's summary table (markdown), rendered from the results only."""
    big = max(max(r["settings"]["batch_sizes"]) for r in results.values())
    lines = [f"| model | configuration | accuracy % | drop pts | mean ms (b=1) | p95 ms (b=1) | speed-up (b=1) | "
             f"throughput x (b={big}) | energy mJ/inf | energy source |", "|---|---|---|---|---|---|---|---|---|---|"]
    for key, res in results.items():
        for name in ("full", "never", "early_exit", "cbnet", "oracle"):
            r = _row(res, name)
            if r is None:
                continue
            lat = r["latency_ms"] or {}
            lines.append(
                f"| {titles[key]} | {r['label']} | {_f(r['accuracy'], '.2f', 100)} | {_f(r['accuracy_drop_pts'], '.2f')}"
                f" | {_f(lat.get('mean'), '.3f')} | {_f(lat.get('p95'), '.3f')} | {_f(r['speedup_vs_full'], '.2f')} | "
                f"{_f(_thr_x(r, big), '.2f')} | {_f(r['energy']['per_inference_j'], '.4f', 1e3)} | "
                f"{r['energy']['source'] or 'not measured'} |")
    return "\n".join(lines)


def summary_lines(results: dict[str, dict[str, Any]], titles: dict[str, str]) -> list[str]:
    """The terminal summary: per model one line (plus CBNet), the oracle bound, the targets (five lines for
    the two demo models)."""
    lines = []
    for key, res in results.items():
        full, ee, cb = _row(res, "full"), _row(res, "early_exit"), _row(res, "cbnet")
        line = (f"{titles[key]}: full {_f(full['accuracy'], '.1f', 100)}% {_f(full['latency_ms']['mean'], '.3f')} ms"
                f" | early exit {_f(ee['accuracy'], '.1f', 100)}% {_f(ee['latency_ms']['mean'], '.3f')} ms "
                f"({_f(ee['speedup_vs_full'], '.2f')}x, batch 32: {_f(_thr_x(ee, 32), '.2f')}x)")
        lines.append(line)
        if cb:
            lines.append(f"  CBNet {_f(cb['accuracy'], '.1f', 100)}% {_f(cb['latency_ms']['mean'], '.3f')} ms "
                         f"({_f(cb['speedup_vs_full'], '.2f')}x vs full)")
    oracle = []
    for key, res in results.items():
        o = _row(res, "oracle")
        if o and o["latency_ms"]:
            oracle.append(f"{key} {_f(o['accuracy'], '.1f', 100)}% ~{_f(o['latency_ms']['mean'], '.3f')} ms "
                          f"({_f(o['speedup_vs_full'], '.2f')}x)")
    lines.append("oracle bound (earliest correct exit, estimated): " + "; ".join(oracle))
    targets = [(t["name"], t["status"], k) for k, res in results.items() for t in res["targets"]]
    passed = sum(s == "PASS" for _, s, _ in targets)
    missed = [f"{k}:{n}" for n, s, k in targets if s == "MISS"]
    lines.append(f"targets: {passed} PASS, {len(missed)} MISS" + (f" ({', '.join(missed)})" if missed else ""))
    return lines


def _write_summary(path: Path, table: str, lines: list[str], reports: dict[str, Path], settings: DemoSettings) -> None:

    body = ["# edge-runtime demo", ""]
    if settings.quick:
        body += ["**Quick smoke run (one epoch per stage): the numbers below mean nothing.**", ""]
    body += [table, "", "Reports:", ""] + [f"- [{k}]({p.relative_to(path.parent)})" for k, p in reports.items()]
    body += ["", "```", *[l for l in lines if l], "```", ""]
    write_text_atomic(path, "\n".join(body))
