"""The human report: report.md and a self-contained report.html, rendered from results.json only.

Both are drawn from one list of blocks (headings, paragraphs, tables, images), so the two never disagree
with each other or with the JSON they came from.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from edge_runtime.bench.results import load_results, results_csv
from edge_runtime.files import write_text_atomic

Block = tuple  # ("h", level, text) | ("p", text) | ("list", items) | ("table", headers, rows) | ("img", file, title)

REPORT_FILES = ("report.md", "report.html", "results.json", "results.csv")


def _f(v: Any, spec: str, scale: float = 1.0) -> str:
    return "n/a" if v is None else format(v * scale, spec)


def _lat(r: dict[str, Any], key: str) -> str:
    return _f((r.get("latency_ms") or {}).get(key), ".3f")


def _variant(r: dict[str, Any]) -> str:
    return f"{r['backend']}/{r['precision']}"


def summary_table(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The main table: one line per row; accuracy in %, latency in ms at batch 1, speed-up vs the full model."""
    headers = ["row", "configuration", "variant", "accuracy %", "drop pts", "mean ms", "p50 ms", "p95 ms", "p99 ms",
               "speed-up x", "mean FLOPs %"]
    rows = []
    for r in results["configs"]:
        rows.append([r["name"], r["label"], _variant(r), _f(r["accuracy"], ".2f", 100),
                     _f(r["accuracy_drop_pts"], ".2f"), _lat(r, "mean"), _lat(r, "p50"), _lat(r, "p95"),
                     _lat(r, "p99"), _f(r["speedup_vs_full"], ".2f"), _f(r["mean_flops_fraction"], ".1f", 100)])
    return headers, rows


def throughput_table(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Throughput (samples/s) and its ratio to the full model's at each batch size."""
    sizes = results["settings"]["batch_sizes"]
    headers = ["row"] + [f"b={b} /s" for b in sizes] + [f"b={b} x" for b in sizes]
    rows = []
    for r in results["configs"]:
        if not r["throughput"]:
            continue
        t = {e["batch_size"]: e for e in r["throughput"]}
        rows.append([r["name"]] + [_f(t.get(b, {}).get("samples_per_s"), ".1f") for b in sizes]
                    + [_f(t.get(b, {}).get("speedup_vs_full"), ".2f") for b in sizes])
    return headers, rows


def energy_table(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Energy per inference (batch 1) with its source, and peak resident memory."""
    headers = ["row", "energy mJ/inference", "energy source", "peak RSS MB"]
    rows = [[r["name"], _f(r["energy"]["per_inference_j"], ".4f", 1e3), r["energy"]["source"] or "not measured",
             _f(r["peak_rss_mb"], ".1f")] for r in results["configs"]]
    return headers, rows


def _segments_table(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    n = results["header"]["bundle"].get("num_segments") or 0
    headers = ["row"] + [f"segment {i} ms" for i in range(n)] + ["exits answered (0..last)"]
    rows = []
    for r in results["configs"]:
        segs = r.get("per_segment_ms")
        cells = [_f(v, ".3f") for v in segs] if segs else ["–"] * n
        parts = r.get("per_part_ms")
        if parts and not segs:  # a method's mode: its parts instead of segments
            cells = [", ".join(f"{k} {v:.3f}" for k, v in parts.items())] + ["–"] * (n - 1)
        rows.append([r["name"]] + cells + [" / ".join(str(c) for c in r["exit_histogram"])])
    return headers, rows


def document(results: dict[str, Any]) -> list[Block]:
    """The report as blocks, built from ``results`` alone."""
    h, b, d, s = results["header"], results["header"]["bundle"], results["data"], results["settings"]
    m = h["machine"]
    meter = h.get("meter")
    pkgs = ", ".join(f"{k} {v}" for k, v in h["packages"].items() if v)
    blocks: list[Block] = [
        ("h", 1, f"Benchmark report: {b['name']}"),
        ("table", ["", ""], [
            ["machine", f"{m['cpu']} ({m['arch']}, {m['logical_cpus']} logical CPUs, "
                        f"{m.get('memory_gb', 'n/a')} GB), {m['system']}, Python {m.get('python', '?')}"],
            ["profile", h["profile"] or "none"],
            ["backend", f"{h['backend']} (variants: {', '.join(h.get('variants') or [])})"],
            ["threads", str(h["threads"]) if h["threads"] else "backend default"],
            ["energy meter", f"{meter['name']} ({meter['source']})" if meter else "none: energy not measured"],
            ["packages", pkgs],
            ["bundle", f"{b['path']} — manifest sha256 {b['manifest_sha256']}"],
            ["data", f"{d['spec']}: {d['source']}, {d['n_samples']} samples, split check: {d['split_check']}"],
            ["run", f"{results['created']}; batch sizes {s['batch_sizes']}, warm-up {s['warmup']}, "
                    f"repeats {s['repeats']}, sweep: {s['sweep_source']}"],
        ]),
        ("h", 2, "Targets"),
        ("table", ["target", "status", "value", "goal", "detail"],
         [[t["name"], f"**{t['status']}**", _f(t["value"], ".2f"), t["goal"], t["detail"]]
          for t in results["targets"]]),
        ("h", 2, "Accuracy and batch-1 latency"),
        ("p", "Speed-up = the one-graph full model's mean latency / the row's (same backend and precision); "
              "drop = full-model accuracy minus the row's, in percentage points. The oracle row is estimated, "
              "not measured (see Methods)."),
        ("table", *summary_table(results)),
        ("p", "Pareto front (accuracy vs mean latency): "
              + (", ".join(results["pareto_front"]["latency"] or []) or "n/a")),
        ("img", "accuracy_vs_latency.png", "Accuracy vs latency"),
        ("h", 2, "Throughput at each batch size"),
        ("table", *throughput_table(results)),
        ("img", "speedup_vs_batch.png", "Speed-up vs batch size"),
        ("h", 2, "Energy and memory"),
        ("table", *energy_table(results)),
        ("img", "accuracy_vs_energy.png", "Accuracy vs energy"),
        ("h", 2, "Per-segment latency and exits"),
        ("table", *_segments_table(results)),
        ("img", "segment_latency.png", "Per-segment latency"),
        ("img", "exit_histogram.png", "Exit histogram"),
        ("h", 2, "Sweep thresholds"),
        ("table", ["row", "policy", "thresholds"],
         [[r["name"], r["policy"] or "", ", ".join(f"{t:.4g}" for t in r["thresholds"])]
          for r in results["configs"] if r["thresholds"]]),
        *_recommendation_blocks(results),
        ("h", 2, "Methods"),
        ("list", [f"**{k}**: {v}" for k, v in results["methods"].items()]),
        ("h", 2, "Notes"),
        ("list", d.get("notes", []) + results["notes"] + [f"{r['name']}: {r['notes']}" for r in results["configs"]
                                                           if r["notes"]]),
    ]
    return blocks


def _recommendation_blocks(results: dict[str, Any]) -> list[Block]:
    """What to deploy: the measured configurations within the budget, the fastest first."""
    rec = results.get("recommendation")
    if not rec:
        return [("h", 2, "Recommendation"), ("p", "n/a: no fp32 one-graph row to compare against")]
    thr = rec.get("thresholds")
    blocks: list[Block] = [
        ("h", 2, "Recommendation"),
        ("p", "Thresholds: " + (results["header"]["bundle"].get("guarantee") or "no calibration recorded")),
        ("p", f"**Deploy {rec['mode']} on {rec['format']}/{rec['precision']}**"
              + (f" (thresholds {', '.join(f'{t:.4g}' for t in thr)})" if thr else "") + f": {rec['why']}."),
        ("table", ["configuration", "accuracy %", "drop pts", "mean ms", "within budget"],
         [[c["name"], _f(c["accuracy"], ".2f", 100), _f(c["drop_pts"], ".2f"), _f(c["latency_s"], ".3f", 1e3),
           "yes" if c["eligible"] else f"no: {c['note']}"]
          for c in sorted(rec["candidates"], key=lambda c: (c["latency_s"] is None, c["latency_s"] or 0.0))]),
    ]
    default = rec.get("bundle_default")
    if default:
        same = "the same as" if rec.get("matches_bundle_default") else "differs from"
        blocks.append(("p", f"This {same} the bundle's recorded default ({default['mode']} on "
                            f"{default['format']}/{default['precision']}: {default.get('why', '')})."))
    return blocks


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: list[Block]) -> str:
    out: list[str] = []
    for blk in blocks:
        if blk[0] == "h":
            out += ["#" * blk[1] + " " + blk[2], ""]
        elif blk[0] == "p":
            out += [blk[1], ""]
        elif blk[0] == "list":
            out += [f"- {item}" for item in blk[1]] + [""]
        elif blk[0] == "table":
            headers, rows = blk[1], blk[2]
            out.append("| " + " | ".join(_md_cell(c) for c in headers) + " |")
            out.append("|" + "|".join("---" for _ in headers) + "|")
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
            out.append("")
        elif blk[0] == "img":
            out += [f"![{blk[2]}]({blk[1]})", ""]
    return "\n".join(out)


def _inline(text: str) -> str:
    esc = html.escape(str(text))
    parts = esc.split("**")
    return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))


def render_html(blocks: list[Block], image_dir: Path) -> str:
    """Self-contained HTML: the PNGs are embedded as base64 data URIs."""
    body: list[str] = []
    for blk in blocks:
        if blk[0] == "h":
            body.append(f"<h{blk[1]}>{_inline(blk[2])}</h{blk[1]}>")
        elif blk[0] == "p":
            body.append(f"<p>{_inline(blk[1])}</p>")
        elif blk[0] == "list":
            body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in blk[1]) + "</ul>")
        elif blk[0] == "table":
            head = "".join(f"<th>{_inline(c)}</th>" for c in blk[1])
            rows = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in blk[2])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif blk[0] == "img":
            path = image_dir / blk[1]
            if path.is_file():
                data = base64.b64encode(path.read_bytes()).decode("ascii")
                body.append(f'<figure><img alt="{html.escape(blk[2])}" src="data:image/png;base64,{data}">'
                            f"<figcaption>{html.escape(blk[2])}</figcaption></figure>")
            else:
                body.append(f"<p><i>{html.escape(blk[2])}: plot not drawn (matplotlib missing)</i></p>")
    title = html.escape(blocks[0][2]) if blocks and blocks[0][0] == "h" else "edge-runtime benchmark"
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:1em 0;font-size:13px}"
             "td,th{border:1px solid #ccc;padding:3px 7px;text-align:left}th{background:#f2f2f2}"
             "img{max-width:100%}figure{margin:1em 0}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title><style>{style}</style>"
            f"</head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def write_report(results: dict[str, Any], out_dir: str | Path) -> Path:
    """Write results.json, then render everything else from the file just written.

    Files: results.json, results.csv, the PNG plots, report.md, report.html. Returns report.md's path.

    Example:
        >>> write_report(run_bench("out/b", BenchSettings(data="digits:test")), "out/report")  # doctest: +SKIP
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "results.json", json.dumps(results, indent=2) + "\n")
    return render_report(out / "results.json", out)


def render_report(results_json: str | Path, out_dir: str | Path) -> Path:
    """Render report.md, report.html, results.csv and the plots from a results.json file."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = load_results(results_json)
    blocks = document(results)
    try:
        from edge_runtime.bench.plots import draw_all

        draw_all(results, out)
    except ImportError as exc:
        blocks.append(("p", f"Plots not drawn: {exc} (install the 'bench' extra: pip install edge-runtime[bench])"))
    write_text_atomic(out / "results.csv", results_csv(results))
    write_text_atomic(out / "report.md", render_markdown(blocks))
    write_text_atomic(out / "report.html", render_html(blocks, out))
    return out / "report.md"


_CORE_KINDS = ("full", "never", "early_exit", "sweep", "oracle", "torch_eager")


def summary_lines(results: dict[str, Any]) -> list[str]:
    """Six lines for a terminal: model, calibrated point, throughput at the largest batch, other modes and the
    oracle, targets, what to deploy."""
    rows = {r["name"]: r for r in results["configs"]}
    full, ee = rows.get("full"), rows.get("early_exit")
    big = max(results["settings"]["batch_sizes"])
    name = results["header"]["bundle"]["name"]

    def thr(r: dict[str, Any] | None) -> str:
        t = next((e for e in (r or {}).get("throughput", []) if e["batch_size"] == big), None)
        return "n/a" if not t else f"{t['samples_per_s']:.0f}/s ({_f(t['speedup_vs_full'], '.2f')}x)"

    lines = [
        f"{name}: full model {_f(full and full['accuracy'], '.2f', 100)}% at {_lat(full or {}, 'mean')} ms (batch 1)",
        f"{name}: early exit {_f(ee and ee['accuracy'], '.2f', 100)}% at {_lat(ee or {}, 'mean')} ms: "
        f"speed-up {_f(ee and ee['speedup_vs_full'], '.2f')}x, drop {_f(ee and ee['accuracy_drop_pts'], '.2f')} pts",
        f"{name}: batch {big}: early exit {thr(ee)} vs full {thr(full)}",
    ]
    orc = rows.get("oracle")
    extra = []
    for r in results["configs"]:  # the rows of a method's mode (primary variant)
        if r["kind"] not in _CORE_KINDS and "@" not in r["name"]:
            extra.append(f"{r['label']} {_f(r['accuracy'], '.2f', 100)}% at {_lat(r, 'mean')} ms "
                         f"({_f(r['speedup_vs_full'], '.2f')}x)")
    if orc:
        extra.append(f"oracle {_f(orc['accuracy'], '.2f', 100)}% at ~{_lat(orc, 'mean')} ms (estimated)")
    lines.append(f"{name}: " + "; ".join(extra))
    lines.append(f"{name}: targets " + ", ".join(f"{t['name']} {t['status']}" for t in results["targets"]
                                                 if t["status"] != "N/A"))
    rec = results.get("recommendation")
    if rec:
        lines.append(f"{name}: recommended: {rec['mode']} on {rec['format']}/{rec['precision']} ({rec['why']})")
    return lines
