"""Export a Kangaroo LM as a bundle: the draft and verify graphs as the two segments (the adapter is the exit after
the shallow sub-network, the LM head the final one), the full graph as the one-graph baseline, and the tokenizer.

Every graph has past/present key-value caches with a dynamic positions axis and a dynamic tokens axis, and is
verified against PyTorch (logits and caches) by the one verifier (:func:`converters.export.verify.graph_max_diff`)
on a prefill (empty caches, batch 1 and 2), a single-token and a multi-token decode step on caches the PyTorch
graphs computed from real tokens.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

import edge_runtime
from converters.export.onnx import count_flops, count_params, export_onnx, file_entry, onnx_op_counts
from converters.export.verify import graph_max_diff
from converters.methods.kangaroo.corpus import EOS
from converters.methods.kangaroo.model import STACKS, CachedGraph, KangarooLM, empty_cache, graph_modules
from edge_runtime.errors import ExportError
from edge_runtime.files import sha256_file, write_bytes_atomic
from edge_runtime.manifest import EXIT_OUTPUT, FORMAT_NAME, FORMAT_VERSION

#: the method's record in the manifest: ``extra[METHOD]``
METHOD = "kangaroo"
TOKENIZER_FILE = "tokenizer.json"
#: where each graph goes: segment 0 (draft), segment 1 (verify), the one-graph model (full)
GRAPH_FILES = {"draft": "segments/segment_0.onnx", "verify": "segments/segment_1.onnx", "full": "full_model.onnx"}


def _dynamic_axes(module: CachedGraph) -> dict[str, dict[int, str]]:
    """Tokens axis on ids, hidden states and per-position logits; positions axis on every cache."""
    axes: dict[str, dict[int, str]] = {}
    for name in (*module.input_names, *module.output_names):
        if name.startswith("past_"):
            axes[name] = {3: "past_positions"}
        elif name.startswith("present_"):
            axes[name] = {3: "positions"}
        elif name in ("input_ids", "hidden"):
            axes[name] = {1: "tokens"}
    if type(module).__name__ == "VerifyGraph":
        axes[EXIT_OUTPUT] = {1: "tokens"}
    return axes


def _spec(name: str, t: torch.Tensor, axes: dict[int, str]) -> dict[str, Any]:
    """A manifest tensor record: batch and the named dynamic axes as null."""
    dtype = {torch.int64: "int64", torch.float32: "float32"}[t.dtype]
    shape = [None if (d == 0 or d in axes) else int(s) for d, s in enumerate(t.shape)]
    return {"name": name, "shape": shape, "dtype": dtype}


def _example(lm: KangarooLM, graph: str, batch: int, tokens: int, past: int,
             generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    cfg = lm.cfg
    ids = torch.randint(0, cfg.vocab_size, (batch, tokens), generator=generator)
    if graph == "verify":
        return torch.randn(batch, tokens, cfg.dim, generator=generator), empty_cache(cfg, "deep", batch, past)
    stacks = ("shallow", "adapter") if graph == "draft" else ("shallow", "deep")
    return (ids, *(empty_cache(cfg, s, batch, past) for s in stacks))


@torch.no_grad()
def verification_cases(lm: KangarooLM, *, prompt: int = 9, step: int = 4, seed: int = 0) -> dict[str, list[tuple]]:
    """Per graph, named cases ``(case, inputs)``: prefill at batch 1 and 2 (empty caches), then a single-token
    and a ``step``-token decode step on the caches (and shallow hidden states) PyTorch computed for the prompt."""
    cfg = lm.cfg
    g = torch.Generator().manual_seed(seed)
    graphs = graph_modules(lm)
    cases: dict[str, list[tuple]] = {name: [] for name in graphs}
    for batch in (1, 2):
        ids = torch.randint(0, cfg.vocab_size, (batch, prompt), generator=g)
        empty = {s: empty_cache(cfg, s, batch) for s in STACKS}
        hidden, _, pres_s, pres_a = graphs["draft"](ids, empty["shallow"], empty["adapter"])
        _, pres_d = graphs["verify"](hidden, empty["deep"])
        cases["draft"].append((f"prefill_b{batch}", (ids, empty["shallow"], empty["adapter"])))
        cases["verify"].append((f"prefill_b{batch}", (hidden, empty["deep"])))
        cases["full"].append((f"prefill_b{batch}", (ids, empty["shallow"], empty["deep"])))
        if batch != 1:
            continue
        for t in (1, step):
            new = torch.randint(0, cfg.vocab_size, (1, t), generator=g)
            h_new = graphs["draft"](new, pres_s, pres_a)[0]
            name = "decode_1" if t == 1 else f"decode_{t}"
            cases["draft"].append((name, (new, pres_s, pres_a)))
            cases["verify"].append((name, (h_new, pres_d)))
            cases["full"].append((name, (new, pres_s, pres_d)))
    return cases


def export_lm_bundle(lm: KangarooLM, tokenizer: Any, root: Path, *, name: str, eta: float, gamma: int,
                     tolerance: float = 1e-4, opset: int = 17, info: dict[str, Any] | None = None,
                     sections: dict[str, Any] | None = None, seed: int = 0) -> dict[str, Any]:
    """Write the bundle's files into ``root`` (an empty staging directory) and return its manifest (not written).

    Args:
        lm: the trained LM with its adapter.
        tokenizer: its ``tokenizers.Tokenizer`` (written as ``tokenizer.json``).
        eta, gamma: the default drafting stop (top-1 probability below ``eta``) and cap (``gamma`` tokens).
        tolerance: max abs difference allowed between PyTorch and ONNX (logits and caches).
        info: the method's record (training figures, corpus, prompts), kept in ``extra.kangaroo``.
        sections: other manifest sections (``recipe``).

    Raises:
        ExportError: export, check or verification failed (names the graph and case).
    """
    lm = lm.eval()
    cfg = lm.cfg
    g = torch.Generator().manual_seed(seed)
    graphs = graph_modules(lm)
    (root / "segments").mkdir(parents=True, exist_ok=True)
    specs: dict[str, dict[str, Any]] = {}
    for gname, module in graphs.items():
        path = root / GRAPH_FILES[gname]
        axes = _dynamic_axes(module)
        with torch.no_grad():
            example = _example(lm, gname, 1, 3, 2, g)
            outputs = module(*example)
            per_token = _example(lm, gname, 1, 1, cfg.context, g)
        export_onnx(module, example, path, input_names=module.input_names, output_names=module.output_names,
                    opset=opset, dynamic_axes=axes)
        specs[gname] = {
            "files": [file_entry(path, root)],
            "inputs": [_spec(n, t, axes.get(n, {})) for n, t in zip(module.input_names, example)],
            "outputs": [_spec(n, t, axes.get(n, {})) for n, t in zip(module.output_names, outputs)],
            "flops": count_flops(module, per_token),
            "params": _graph_params(lm, gname),
            "op_counts": onnx_op_counts(path),
        }
    verification = _verify(lm, root, specs, tolerance, seed)
    tok_path = root / TOKENIZER_FILE
    write_bytes_atomic(tok_path, tokenizer.to_str().encode("utf-8"))
    vocab = [tokenizer.id_to_token(i) for i in range(cfg.vocab_size)]
    inputs = [_spec("input_ids", torch.zeros(1, 1, dtype=torch.long), {1: "tokens"})]
    inputs += [_spec(f"past_{s}", empty_cache(cfg, s, 1, 1), {3: "positions"}) for s in STACKS]
    for spec in inputs:
        spec["layout"] = "NT" if spec["name"] == "input_ids" else "N,2L,H,T,D"
    draft, verify = specs["draft"], specs["verify"]
    manifest: dict[str, Any] = {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "name": name, "labels": vocab, "inputs": inputs,
        "segments": [{"index": 0, **draft}, {"index": 1, **verify}],
        "exits": [{"index": 0, "segment": 0, "head_type": "kangaroo_adapter", "output_kind": "next_token_logits",
                   "cumulative_flops": draft["flops"]},
                  {"index": 1, "segment": 1, "head_type": "lm_head", "output_kind": "next_token_logits",
                   "cumulative_flops": draft["flops"] + verify["flops"]}],
        # the drafting stop is the confidence rule on the adapter's exit: keep drafting while max p >= eta
        "policy": {"name": "confidence", "kwargs": {}, "thresholds": [float(eta)]},
        "verification": verification,
        "full_model": {**{k: v for k, v in specs["full"].items() if k != "op_counts"}, "output": EXIT_OUTPUT},
        "created": {"tool_version": edge_runtime.__version__, "torch_version": torch.__version__, "onnx_opset": opset,
                    "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
    }
    record = {"tokenizer": {"path": TOKENIZER_FILE, "sha256": sha256_file(tok_path), "bytes": tok_path.stat().st_size,
                            "kind": "tokenizers"},
              "eos_token_id": int(tokenizer.token_to_id(EOS)), "gamma": int(gamma), "eta": float(eta),
              "lm": cfg.to_dict(), "params": {"lm": count_params(lm) - count_params(lm.adapter),
                                              "adapter": count_params(lm.adapter)},
              **(info or {})}
    manifest["extra"] = {METHOD: record}
    for key, value in (sections or {}).items():
        manifest[key] = value
    return manifest


def _graph_params(lm: KangarooLM, graph: str) -> int:
    emb = lm.embed.weight.numel()  # the embedding, shared with the head
    layers = lm.shallow if graph == "draft" else lm.deep if graph == "verify" else lm.layers
    extra = count_params(lm.adapter) if graph == "draft" else count_params(lm.norm)
    return emb + count_params(layers) + extra


def _verify(lm: KangarooLM, root: Path, specs: dict[str, dict[str, Any]], tolerance: float,
            seed: int) -> dict[str, Any]:
    """Every graph against PyTorch on every case; the per-exit record the manifest keeps, with the cases."""
    graphs = graph_modules(lm)
    detail: dict[str, dict[str, float]] = {}
    for gname, cases in verification_cases(lm, seed=seed).items():
        detail[gname] = {case: graph_max_diff(graphs[gname], root, specs[gname], [inputs], field=gname)
                         for case, inputs in cases}
    worst = {k: max(v.values()) for k, v in detail.items()}
    bad = [f"{k} {case}: {d:.3g}" for k, v in detail.items() for case, d in v.items() if d > tolerance]
    if bad:
        raise ExportError(f"verification failed: max abs difference above tolerance {tolerance:g} ({', '.join(bad)})")
    return {"tolerance": tolerance, "batch_sizes": [1, 2], "passed": True,
            "exits": [{"index": 0, "max_abs_diff": worst["draft"], "format": "onnx", "precision": "fp32"},
                      {"index": 1, "max_abs_diff": worst["verify"], "format": "onnx", "precision": "fp32"}],
            "full_model_max_abs_diff": worst["full"],
            "compared": "logits and key-value caches", "cases": detail}


def graph_names() -> Sequence[str]:
    """The exported graphs, in the order :data:`GRAPH_FILES` lists them."""
    return tuple(GRAPH_FILES)
