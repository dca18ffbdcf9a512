"""``edge-runtime demo``: train (or reuse cached) demo bundles on the built-in digits data, benchmark them and
write the reports — the README's first command.

The models are data (``converters/recipes/demo/models.yaml``: shipped recipes, titles, the rows of the
summary table). Converted bundles are cached under ``edge_runtime._env.cache_dir()/demo``,
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
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from edge_runtime import _env
from edge_runtime.bench import report
from edge_runtime.bench.report import render_markdown
from edge_runtime.errors import BundleError, ConfigError
from edge_runtime.files import write_text_atomic


@dataclass(frozen=True)
class DemoModel:
    """One model of the demo: a shipped recipe and what the summary calls it.

    Attributes:
        key: its name (``--models``, output folders, the cache).
        recipe: the recipe file under ``converters/recipes/``.
        title: what the summary table calls it.
        ensure: recipe sections the demo needs; added with these values when the recipe lacks them.
    """

    key: str
    recipe: str
    title: str
    ensure: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DemoSpec:
    """What the demo runs (``converters/recipes/demo/models.yaml``).

    Attributes:
        models: the demo models, in order.
        table_rows: benchmark row names the summary table shows, in this order, when a bundle has them.
    """

    models: tuple[DemoModel, ...]
    table_rows: tuple[str, ...]


def recipe_path(name: str) -> Path:
    """A shipped recipe's path (``converters/recipes/NAME``)."""
    return Path(str(resources.files("converters").joinpath("recipes").joinpath(name)))


@cache
def load_demo_spec(path: Path | None = None) -> DemoSpec:
    """Read the demo's model list (default ``converters/recipes/demo/models.yaml``).

    Example:
        >>> spec = load_demo_spec()
        >>> all(recipe_path(m.recipe).is_file() for m in spec.models)
        True

    Raises:
        ConfigError: naming the file and the key that is missing or of the wrong type.
    """
    p = path or recipe_path("demo/models.yaml")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{p}: cannot read the demo's model list ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("models"), list) or not data["models"]:
        raise ConfigError(f"{p}: expected a mapping with a non-empty 'models' list")
    models = []
    for i, entry in enumerate(data["models"]):
        if not isinstance(entry, dict):
            raise ConfigError(f"{p}: models[{i}]: expected a mapping with key, recipe and title")
        for key in ("key", "recipe", "title"):
            if not isinstance(entry.get(key), str) or not entry[key]:
                raise ConfigError(f"{p}: models[{i}].{key}: expected a non-empty string")
        unknown = set(entry) - {"key", "recipe", "title", "ensure"}
        if unknown:
            raise ConfigError(f"{p}: models[{i}]: unknown key(s) {', '.join(sorted(unknown))}; "
                              "allowed: key, recipe, title, ensure")
        if not isinstance(entry.get("ensure") or {}, dict):
            raise ConfigError(f"{p}: models[{i}].ensure: expected a mapping of recipe sections")
        models.append(DemoModel(entry["key"], entry["recipe"], entry["title"], dict(entry.get("ensure") or {})))
    rows = data.get("table_rows")
    if not isinstance(rows, list) or not all(isinstance(r, str) for r in rows):
        raise ConfigError(f"{p}: table_rows: expected a list of benchmark row names")
    return DemoSpec(tuple(models), tuple(rows))


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
        models: which demo models to run (keys of :func:`load_demo_spec`'s models).
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
    models: tuple[str, ...] = field(default_factory=lambda: tuple(m.key for m in load_demo_spec().models))
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

    spec = load_demo_spec()
    models = {m.key: m for m in spec.models}
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
    table = summary_table(results, {k: models[k].title for k in results}, spec.table_rows)
    lines = summary_lines(results)
    summary_path = out / "summary.md"
    _write_summary(summary_path, table, lines, reports, settings)
    return DemoResult(out, summary_path, reports, bundles, reused, lines, table)


def summary_table(results: dict[str, dict[str, Any]], titles: dict[str, str], rows: Sequence[str]) -> str:
    """The demo's table (markdown): per model the named benchmark rows, with the report's columns and
    formatting (:mod:`edge_runtime.bench.report`): accuracy, drop, batch-1 latency, speed-up, the throughput
    ratio at the largest batch size, energy and its source."""
    big = max(max(r["settings"]["batch_sizes"]) for r in results.values())
    headers = ["model", "configuration", "accuracy %", "drop pts", "mean ms (b=1)", "p95 ms (b=1)",
               "speed-up (b=1)", f"throughput x (b={big})", "energy mJ/inf", "energy source"]
    body = []
    for key, res in results.items():
        cells = _cells(res, big)
        body += [[titles[key], *cells[name]] for name in rows if name in cells]
    return render_markdown([("table", headers, body)]).rstrip("\n")


def _cells(res: dict[str, Any], big: int) -> dict[str, list[str]]:
    """Row name -> the demo table's cells after the model, taken from the report's own tables."""
    def by_row(table: tuple[list[str], list[list[str]]]) -> dict[str, dict[str, str]]:
        headers, rows = table
        return {row[0]: dict(zip(headers, row)) for row in rows}

    main, thr, energy = by_row(report.summary_table(res)), by_row(report.throughput_table(res)), \
        by_row(report.energy_table(res))
    return {name: [c["configuration"], c["accuracy %"], c["drop pts"], c["mean ms"], c["p95 ms"], c["speed-up x"],
                   thr.get(name, {}).get(f"b={big} x", "n/a"), energy[name]["energy mJ/inference"],
                   energy[name]["energy source"]]
            for name, c in main.items()}


def summary_lines(results: dict[str, dict[str, Any]]) -> list[str]:
    """The terminal summary: the report's summary lines of every model
    (:func:`edge_runtime.bench.report.summary_lines`), then the targets of all of them in one line."""
    lines = [line for res in results.values() for line in report.summary_lines(res)]
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
    body += ["", "```", *[line for line in lines if line], "```", ""]
    write_text_atomic(path, "\n".join(body))
