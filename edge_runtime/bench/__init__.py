"""``edge-runtime bench``: measure a bundle against its own one-graph model, interleaved, and write a report.

Device side: numpy + the inference backend (+ matplotlib for plots, tqdm for the progress bar, both from the
``bench`` extra); never torch unless the optional PyTorch-eager row is asked for.

Example:
    >>> from edge_runtime.bench import BenchSettings, run_bench, write_report
    >>> results = run_bench("out/tiny_cnn", BenchSettings(data="digits:test"))   # doctest: +SKIP
    >>> write_report(results, "out/report")                                      # doctest: +SKIP
"""

from edge_runtime.bench.configs import CONFIG_KINDS, BenchConfig, BenchContext, config_kind
from edge_runtime.bench.data import BenchData, load_bench_data
from edge_runtime.bench.measure import MeasureSettings, measure
from edge_runtime.bench.report import render_report, summary_lines, write_report
from edge_runtime.bench.results import compare_results, load_results, results_schema, validate_results
from edge_runtime.bench.run import BenchSettings, run_bench
from edge_runtime.bench.targets import TARGETS, evaluate_targets, target

__all__ = [
    "CONFIG_KINDS", "BenchConfig", "BenchContext", "config_kind",
    "BenchData", "load_bench_data", "MeasureSettings", "measure",
    "render_report", "summary_lines", "write_report",
    "compare_results", "load_results", "results_schema", "validate_results",
    "BenchSettings", "run_bench", "TARGETS", "evaluate_targets", "target",
]
