"""Kangaroo vs autoregressive greedy decoding of the same exported LM, batch 1, in one interleaved run.

For every prompt (default: the held-out prompts the bundle keeps), autoregressive decoding (one full-model pass
per token) and Kangaroo at the bundle's eta/gamma run round-robin ``--repeats`` times; the report gives
tokens/s of each (all prompts' tokens over all prompts' wall time), their ratio, whether the tokens were identical
on every prompt (lossless greedy decoding), the mean accepted length and the compression rate, then where the
time goes (per-call cost of each graph, the share spent outside the graphs) and an eta x gamma sweep (each
configuration interleaved with its own autoregressive baseline, prompt by prompt).

Usage:
    python benchmarks/kangaroo_speedup.py BUNDLE [--max-new-tokens 128] [--repeats 3] [--threads 1]
        [--sweep-eta 0.2,0.4,0.6,0.8,0.9] [--sweep-gamma 1,2,4,6,8] [--out OUT_DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, interleaved  # noqa: E402

from edge_runtime.files import write_bytes_atomic, write_json_atomic  # noqa: E402


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def aggregate(results: list[Any]) -> dict[str, Any]:
    """Totals over a list of GenerationResults: tokens/s, compression rate, accepted lengths, time per graph."""
    tokens = sum(len(r.tokens) for r in results)
    seconds = sum(r.latency_s for r in results)
    calls: dict[str, int] = {}
    graph_s: dict[str, float] = {}
    for r in results:
        for k, v in r.graph_calls.items():
            calls[k] = calls.get(k, 0) + v
            graph_s[k] = graph_s.get(k, 0.0) + r.graph_s[k]
    accepted = [a for r in results for a in r.accepted]
    drafted = [d for r in results for d in r.drafted]
    passes = sum(r.large_model_passes for r in results)
    inside = sum(graph_s.values())
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds if seconds else 0.0,
            "compression_rate": tokens / passes if passes else 0.0,
            "mean_accepted_length": float(np.mean(accepted)) if accepted else None,
            "mean_drafted": float(np.mean(drafted)) if drafted else None,
            "acceptance_rate": float(sum(accepted) / sum(drafted)) if drafted and sum(drafted) else None,
            "graph_calls": calls, "graph_ms_per_call": {k: 1e3 * graph_s[k] / calls[k] for k in calls},
            "outside_graphs_fraction": 1.0 - inside / seconds if seconds else 0.0}


def run_pairs(rt: Any, prompts: list[str], configs: dict[str, dict[str, Any]], *, max_new_tokens: int,
              repeats: int) -> dict[str, list[Any]]:
    """Per configuration (``autoregressive`` included), the results over every prompt and repeat, run
    round-robin prompt by prompt."""
    out: dict[str, list[Any]] = {name: [] for name in configs}
    for prompt in prompts:
        fns = {name: (lambda name=name, kw=kw, prompt=prompt: out[name].append(
                   rt.generate(prompt, max_new_tokens=max_new_tokens, **kw)))
               for name, kw in configs.items()}
        interleaved(fns, warmup=0, repeats=repeats)
    return out


def lossless(results: dict[str, list[Any]], base: str = "autoregressive") -> dict[str, bool]:
    """Whether every run of each configuration produced the baseline's tokens for the same prompt."""
    ref = results[base]
    return {name: all(a.tokens == b.tokens for a, b in zip(runs, ref)) for name, runs in results.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", help="a Kangaroo LM bundle (edge-runtime convert converters/recipes/kangaroo_lm.yaml)")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3, help="round-robin runs of each prompt for the main table")
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (default 1)")
    ap.add_argument("--prompts", type=int, help="use only the first N of the bundle's prompts")
    ap.add_argument("--sweep-eta", default="0.2,0.4,0.6,0.8,0.9", help="eta values of the sweep ('' to skip)")
    ap.add_argument("--sweep-gamma", default="1,2,4,6,8", help="gamma values of the sweep")
    ap.add_argument("--out", help="write results.json and report.md here")
    args = ap.parse_args(argv)

    import edge_runtime

    rt = edge_runtime.load_bundle(args.bundle, threads=args.threads)
    rec = rt.manifest.extra["kangaroo"]
    prompts = list(rec.get("prompts") or [])[:args.prompts]
    if not prompts:
        raise SystemExit(f"{args.bundle}: the bundle keeps no prompts (extra.kangaroo.prompts)")
    eta, gamma = rt.manifest.policy.thresholds[0], int(rec["gamma"])
    rt.generate(prompts[0], mode="kangaroo", max_new_tokens=8)   # warm-up: sessions, tokenizer
    rt.generate(prompts[0], mode="autoregressive", max_new_tokens=8)

    main_runs = run_pairs(rt, prompts, {"autoregressive": {"mode": "autoregressive"}, "kangaroo": {"mode": "kangaroo"}},
                          max_new_tokens=args.max_new_tokens, repeats=args.repeats)
    agg = {k: aggregate(v) for k, v in main_runs.items()}
    same = lossless(main_runs)
    speedup = agg["kangaroo"]["tokens_per_s"] / agg["autoregressive"]["tokens_per_s"]
    per_prompt = [main_runs["kangaroo"][i].tokens_per_s / main_runs["autoregressive"][i].tokens_per_s
                  for i in range(len(main_runs["kangaroo"]))]

    sweep = []
    etas, gammas = _floats(args.sweep_eta), [int(g) for g in _floats(args.sweep_gamma)]
    if etas and gammas:
        configs = {"autoregressive": {"mode": "autoregressive"}}
        configs.update({f"eta={e:g},gamma={g}": {"mode": "kangaroo", "eta": e, "gamma": g}
                        for e in etas for g in gammas})
        runs = run_pairs(rt, prompts, configs, max_new_tokens=args.max_new_tokens, repeats=1)
        base = aggregate(runs["autoregressive"])
        ok = lossless(runs)
        for name, kw in configs.items():
            if name == "autoregressive":
                continue
            a = aggregate(runs[name])
            sweep.append({"eta": kw["eta"], "gamma": kw["gamma"], "speedup": a["tokens_per_s"] / base["tokens_per_s"],
                          "tokens_per_s": a["tokens_per_s"], "mean_accepted_length": a["mean_accepted_length"],
                          "compression_rate": a["compression_rate"], "acceptance_rate": a["acceptance_rate"],
                          "lossless": ok[name]})

    ms = agg["kangaroo"]["graph_ms_per_call"]
    full_ms = agg["autoregressive"]["graph_ms_per_call"].get("full")
    lm = rec["lm"]
    lines = [
        "# Kangaroo vs autoregressive greedy decoding",
        "",
        f"Bundle `{rt.name}`: {lm['layers']} layers x {lm['dim']}, vocabulary {lm['vocab_size']}, adapter after "
        f"layer {lm['exit_layer']}; eta {eta:g}, gamma {gamma}; {len(prompts)} held-out prompts, "
        f"{args.max_new_tokens} new tokens max, {args.repeats} interleaved repeats; onnxruntime, "
        f"{args.threads} thread(s), batch 1.",
        "",
        "| decoding | tokens/s | speed-up | mean accepted length | compression rate | identical tokens |",
        "|---|---:|---:|---:|---:|---|",
        f"| autoregressive | {agg['autoregressive']['tokens_per_s']:.1f} | 1.00x | - | 1.00 | - |",
        f"| kangaroo | {agg['kangaroo']['tokens_per_s']:.1f} | {speedup:.2f}x | "
        f"{agg['kangaroo']['mean_accepted_length']:.2f} | {agg['kangaroo']['compression_rate']:.2f} | "
        f"{'yes, every prompt' if same['kangaroo'] else 'NO'} |",
        "",
        f"Per-prompt speed-up: median {np.median(per_prompt):.2f}x, min {min(per_prompt):.2f}x, "
        f"max {max(per_prompt):.2f}x. Drafts per round {agg['kangaroo']['mean_drafted']:.2f}, "
        f"{100 * (agg['kangaroo']['acceptance_rate'] or 0):.1f}% of drafts accepted.",
        "",
        "Where the time goes (ms per call): "
        f"full {full_ms:.3f}, draft {ms.get('draft', 0):.3f} ({ms.get('draft', 0) / full_ms:.2f} of a full pass), "
        f"verify {ms.get('verify', 0):.3f}; outside the graphs (Python, numpy, cache trimming): "
        f"kangaroo {100 * agg['kangaroo']['outside_graphs_fraction']:.1f}%, "
        f"autoregressive {100 * agg['autoregressive']['outside_graphs_fraction']:.1f}% of wall time.",
    ]
    if sweep:
        lines += ["", "Sweep (each configuration against its own interleaved autoregressive run, 1 repeat):", "",
                  "| eta | gamma | speed-up | mean accepted length | compression rate | acceptance | identical |",
                  "|---:|---:|---:|---:|---:|---:|---|"]
        for s in sweep:
            lines.append(f"| {s['eta']:g} | {s['gamma']} | {s['speedup']:.2f}x | {s['mean_accepted_length']:.2f} | "
                         f"{s['compression_rate']:.2f} | {100 * (s['acceptance_rate'] or 0):.1f}% | "
                         f"{'yes' if s['lossless'] else 'NO'} |")
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        out = Path(args.out)
        write_json_atomic(out / "results.json", {"machine": header(), "bundle": str(args.bundle), "eta": eta,
                                          "gamma": gamma, "prompts": len(prompts),
                                          "max_new_tokens": args.max_new_tokens, "repeats": args.repeats,
                                          "threads": args.threads, "speedup": speedup, "lossless": same["kangaroo"],
                                          "per_prompt_speedup": per_prompt, "aggregate": agg, "sweep": sweep})
        write_bytes_atomic(out / "report.md", report.encode("utf-8"))
    return 0 if same["kangaroo"] and all(s["lossless"] for s in sweep) else 1


if __name__ == "__main__":
    sys.exit(main())
