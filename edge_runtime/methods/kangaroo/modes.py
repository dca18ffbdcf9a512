"""The ``kangaroo`` and ``autoregressive`` modes: greedy text generation from a causal-LM bundle.

``Runtime.generate(prompt, mode="kangaroo" | "autoregressive", max_new_tokens=, eta=, gamma=)`` returns a
:class:`~edge_runtime.methods.kangaroo.decoding.GenerationResult`; the daemon serves KServe v2 requests with a
``BYTES`` prompt (:meth:`LMMode.serve_request`); ``edge-runtime generate`` streams tokens to the terminal
(:mod:`edge_runtime.methods.kangaroo.cli`). ``Runtime.infer`` on a batch of token ids and caches answers the
next token of each sample (the LM as a next-token classifier). The tokenizer (``tokenizers``, an optional
dependency: ``pip install edge-runtime[generate]``) ships in the bundle and is hash-checked on first use.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_runtime.bundle import resolve_inside
from edge_runtime.errors import BundleError, ConfigError, InputError
from edge_runtime.executor import OnExit, Tensors
from edge_runtime.files import sha256_file
from edge_runtime.manifest import Manifest
from edge_runtime.methods.kangaroo.decoding import STACKS, GenerationResult, LMGraphs, OnToken
from edge_runtime.modes import InferenceResult, Mode, register_mode
from edge_runtime.policies import ExitPolicy, create_policy

METHOD = "kangaroo"
#: what a request or a call may set, with its default when the bundle does not record one
DEFAULT_MAX_NEW_TOKENS = 64


@dataclass
class LMSession:
    """A runtime's decoding state: the graphs, the tokenizer and the bundle's decoding defaults."""

    graphs: LMGraphs
    tokenizer: Any
    eta: float
    gamma: int

    def encode(self, prompt: str) -> list[int]:
        ids = list(self.tokenizer.encode(prompt).ids)
        if not ids:
            raise InputError("the prompt is empty (it encodes to no tokens)")
        return ids

    def decode(self, tokens: list[int]) -> str:
        return str(self.tokenizer.decode(tokens, skip_special_tokens=True))


def record(manifest: Manifest) -> dict[str, Any] | None:
    """The method's record (``extra.kangaroo``), or None when the bundle is not a Kangaroo LM."""
    rec = (manifest.extra or {}).get(METHOD)
    return rec if isinstance(rec, dict) else None


def _load_tokenizer(runtime: Any, rec: dict[str, Any]) -> Any:
    field = f"extra.{METHOD}.tokenizer"
    spec = rec.get("tokenizer") or {}
    root, manifest_path = runtime.bundle.root, runtime.bundle.manifest_path
    if not isinstance(spec.get("path"), str) or not isinstance(spec.get("sha256"), str):
        raise BundleError("expected {path, sha256} of the tokenizer file", path=manifest_path, field=field)
    path = resolve_inside(root, spec["path"], field=f"{field}.path", manifest_path=manifest_path)
    if not path.is_file():
        raise BundleError("the tokenizer file is missing", path=path, field=field)
    if sha256_file(path) != spec["sha256"]:
        raise BundleError("sha256 mismatch with the manifest", path=path, field=f"{field}.sha256")
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise ConfigError("generating text needs the 'tokenizers' package: pip install 'edge-runtime[generate]'") \
            from None
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises its own exception type
        raise BundleError(f"not a readable tokenizer ({exc})", path=path, field=field) from None


def lm_session(runtime: Any) -> LMSession:
    """The runtime's :class:`LMSession`, created (tokenizer checked and loaded) on first use."""

    def build() -> LMSession:
        m: Manifest = runtime.manifest
        rec = record(m)
        if rec is None:
            raise ConfigError(f"{runtime.bundle.root}: bundle {m.name!r} is not a Kangaroo language model")
        shapes = {}
        for j, spec in enumerate(m.inputs):
            if spec.name.startswith("past_"):
                dims = spec.shape
                if len(dims) != 5 or not all(isinstance(d, int) for d in (dims[1], dims[2], dims[4])):
                    raise BundleError(f"a cache must be (batch, 2 * layers, heads, positions, head_dim), got {dims}",
                                      path=runtime.bundle.manifest_path, field=f"inputs.{j}.shape")
                shapes[spec.name.removeprefix("past_")] = (int(dims[1] or 0), int(dims[2] or 0), int(dims[4] or 0))
        eos = rec.get("eos_token_id")
        graphs = LMGraphs(runtime.segments[0], runtime.segments[1], runtime.full_model_runner, shapes,
                          None if eos is None else int(eos))
        thresholds = m.policy.thresholds
        eta = float(thresholds[0]) if thresholds else float(rec.get("eta", 0.6))
        return LMSession(graphs, _load_tokenizer(runtime, rec), eta, int(rec.get("gamma", 6)))

    return runtime.mode_state(METHOD, build)


def _unsupported(manifest: Manifest) -> str | None:
    if record(manifest) is None:
        return "it is not a Kangaroo language model (no extra.kangaroo record)"
    names = {s.name for s in manifest.inputs}
    missing = sorted({"input_ids", *(f"past_{s}" for s in STACKS)} - names)
    if missing or len(manifest.segments) != 2:
        return f"its inputs lack {missing} or it has {len(manifest.segments)} segments (expected draft, verify)"
    return None


def generate(runtime: Any, prompt: str | list[int], *, mode: str = METHOD,
             max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, eta: float | None = None, gamma: int | None = None,
             on_token: OnToken | None = None) -> GenerationResult:
    """Greedy generation from ``prompt`` (text, or token ids) in one of the two modes.

    Args:
        mode: ``kangaroo`` (self-speculative) or ``autoregressive`` (one full-model pass per token).
        max_new_tokens: stop after this many generated tokens (or at the end-of-text token).
        eta: drafting stops once the newest draft's top-1 probability is below this (default: the bundle's).
        gamma: at most this many drafts per round (default: the bundle's).
        on_token: ``on_token(token_ids, seconds)`` as tokens become final (streaming).

    Raises:
        InputError: an empty prompt, max_new_tokens < 1, eta outside [0, 1], gamma < 0.
    """
    if int(max_new_tokens) < 1:
        raise InputError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    s = lm_session(runtime)
    eta = s.eta if eta is None else float(eta)
    gamma = s.gamma if gamma is None else int(gamma)
    if not 0.0 <= eta <= 1.0:
        raise InputError(f"eta must be in [0, 1], got {eta}")
    if gamma < 0:
        raise InputError(f"gamma must be >= 0, got {gamma}")
    ids = s.encode(prompt) if isinstance(prompt, str) else [int(t) for t in prompt]
    if not ids:
        raise InputError("the prompt has no tokens")
    meter = getattr(runtime, "meter", None)
    window = meter.start_window() if meter is not None else None
    if mode == METHOD:
        policy = create_policy("confidence", 2, [eta])      # keep drafting while max p >= eta: the exit-0 rule
        state = policy.start(1)
        tokens, facts = s.graphs.kangaroo(ids, int(max_new_tokens), gamma=gamma, on_token=on_token,
                                          keep_drafting=lambda q: bool(policy.decide(0, q, state)[0]))
    elif mode == "autoregressive":
        tokens, facts = s.graphs.autoregressive(ids, int(max_new_tokens), on_token=on_token)
    else:
        raise ConfigError(f"mode {mode!r} does not generate text; use kangaroo or autoregressive")
    result = GenerationResult(text=s.decode(tokens), tokens=tokens, prompt_tokens=len(ids), mode=mode,
                              stop="eos" if tokens and tokens[-1] == s.graphs.eos else "length",
                              eta=eta if mode == METHOD else None, gamma=gamma if mode == METHOD else None, **facts)
    if meter is not None:
        result.energy_j, _ = meter.window_energy(window)
        result.energy_source = meter.source
    return result


class LMMode(Mode):
    """A greedy-generation mode of a Kangaroo LM bundle (shared by ``kangaroo`` and ``autoregressive``)."""

    handles_requests = True
    generates = True

    def unsupported(self, manifest: Manifest) -> str | None:
        return _unsupported(manifest)

    def generate(self, runtime: Any, prompt: str | list[int], **options: Any) -> GenerationResult:
        """Generate greedily from ``prompt`` (see :func:`generate` for the options)."""
        return generate(runtime, prompt, mode=self.name, **options)

    def run(self, runtime: Any, feeds: Tensors, policy: ExitPolicy | None, *,
            on_exit: OnExit | None = None) -> InferenceResult:
        """The next token after each sample's ids (with the caches given): one pass, the LM as a classifier."""
        start = time.perf_counter()
        n = int(feeds["input_ids"].shape[0])
        seg_latency = np.zeros(runtime.num_exits)
        if self.name == "autoregressive" and runtime.full_model_runner is not None:
            logits = runtime.full_model_runner.run(feeds)["exit"]
            seg_latency[-1] = time.perf_counter() - start
        else:
            hidden = runtime.segments[0].run(feeds)["hidden"]
            t1 = time.perf_counter()
            logits = runtime.segments[1].run({**feeds, "hidden": hidden})["exit"][:, -1]
            seg_latency[:] = (t1 - start, time.perf_counter() - t1)
        elapsed = time.perf_counter() - start
        if on_exit is not None:
            on_exit(np.arange(n), runtime.num_exits - 1, logits, elapsed)
        return InferenceResult(
            predictions=logits.argmax(-1), exit_index=np.full(n, runtime.num_exits - 1, dtype=np.int64),
            outputs=logits, segment_latency_s=seg_latency, segment_batch_size=np.full(runtime.num_exits, n),
            sample_latency_s=np.full(n, elapsed), latency_s=elapsed, mode=self.name, labels=runtime.labels)

    def serve_request(self, runtime: Any, doc: dict[str, Any]) -> dict[str, Any]:
        """KServe v2: ``inputs[0]`` a ``BYTES`` prompt of shape [1]; ``parameters``: ``max_new_tokens``, ``eta``,
        ``gamma``. Answers ``outputs`` ``text`` (BYTES) and ``tokens`` (INT64), and the generation's figures."""
        prompt = _request_prompt(doc)
        params = doc.get("parameters") or {}
        options: dict[str, Any] = {}
        for key, kind in (("max_new_tokens", int), ("eta", float), ("gamma", int)):
            if params.get(key) is None:
                continue
            value = params[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
                raise _field_error(f"{key} must be {'an integer' if kind is int else 'a number'}, got {value!r}",
                                   f"parameters.{key}")
            options[key] = kind(value)
        try:
            res = self.generate(runtime, prompt, **options)
        except InputError as exc:
            raise _field_error(str(exc), "parameters") from None
        out = {"outputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [res.text]},
                           {"name": "tokens", "datatype": "INT64", "shape": [len(res.tokens)], "data": res.tokens}],
               "parameters": {k: v for k, v in res.to_dict().items() if k not in ("text", "tokens")}}
        if doc.get("id") is not None:
            out["id"] = str(doc["id"])
        return out

    def describe(self, manifest: Manifest) -> list[str]:
        return []


def _field_error(message: str, field: str) -> InputError:
    err = InputError(message)
    err.field = field  # type: ignore[attr-defined]  # the daemon's 422 names it
    return err


def _request_prompt(doc: dict[str, Any]) -> str:
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise _field_error("expected one input: the prompt", "inputs")
    t = inputs[0]
    if t.get("datatype") not in (None, "BYTES"):
        raise _field_error(f"the prompt must be BYTES, got {t.get('datatype')!r}", "inputs[0].datatype")
    data = t.get("data")
    if isinstance(data, list) and len(data) == 1:
        data = data[0]
    if not isinstance(data, str) or not data:
        raise _field_error("expected one non-empty string", "inputs[0].data")
    return data


@register_mode
class KangarooMode(LMMode):
    """Kangaroo: draft with the shallow layers + adapter, verify with the remaining layers in one pass."""

    name = METHOD
    description = "Kangaroo self-speculative greedy decoding (shallow layers + adapter draft, one-pass verify)"

    def describe(self, manifest: Manifest) -> list[str]:
        return describe_lines(manifest)

    def register_commands(self, sub: Any) -> None:
        from edge_runtime.methods.kangaroo import cli

        cli.register(sub)


@register_mode
class AutoregressiveMode(LMMode):
    """The baseline: greedy decoding with one pass of the full (one-graph) model per token."""

    name = "autoregressive"
    description = "greedy decoding, one full-model pass per token (the baseline Kangaroo is measured against)"


def describe_lines(manifest: Manifest) -> list[str]:
    """``inspect`` lines of a Kangaroo LM bundle: the LM, the adapter, the drafting defaults, held-out figures."""
    rec = record(manifest) or {}
    lm, params = rec.get("lm") or {}, rec.get("params") or {}
    draft, verify = manifest.segments[0].flops, manifest.segments[1].flops
    full = manifest.full_model_flops or draft + verify
    lines = [f"kangaroo LM: {lm.get('layers')} layers x {lm.get('dim')}, vocabulary {lm.get('vocab_size')}, "
             f"adapter after layer {lm.get('exit_layer')} ({params.get('adapter', 0) / 1e6:.2f}M params, "
             f"{100 * params.get('adapter', 0) / max(1, params.get('lm', 1)):.1f}% of the LM's "
             f"{params.get('lm', 0) / 1e6:.2f}M)",
             f"  per token: draft {100 * draft / max(1, full):.1f}% of the full model's FLOPs, verify "
             f"{100 * verify / max(1, full):.1f}%; defaults eta {rec.get('eta')} gamma {rec.get('gamma')}"]
    ev = (rec.get("training") or {}).get("heldout") or {}
    if ev:
        lines.append(f"  held out: LM loss {ev.get('lm_loss', float('nan')):.3f}, adapter top-1 = LM's "
                     f"{100 * ev.get('adapter_agreement', 0):.1f}% of tokens")
    return lines

