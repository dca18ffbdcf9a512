"""The ``kangaroo`` and ``autoregressive`` modes: greedy text generation from a causal-LM bundle.

``Runtime.generate(prompt, mode="kangaroo" | "autoregressive", max_new_tokens=, eta=, gamma=)`` returns a
:class:`~edge_runtime.methods.kangaroo.decoding.GenerationResult` (:func:`~.session.generate`); the daemon serves
KServe v2 requests with a ``BYTES`` prompt (:meth:`LMMode.serve_request`); ``edge-runtime generate`` streams tokens
to the terminal (:mod:`edge_runtime.methods.kangaroo.cli`). ``Runtime.infer`` on a batch of token ids and caches
answers the next token of each sample (the LM as a next-token classifier).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from edge_runtime.errors import InputError
from edge_runtime.executor import OnExit, Tensors
from edge_runtime.manifest import Manifest
from edge_runtime.methods.kangaroo.decoding import GenerationResult
from edge_runtime.methods.kangaroo.session import METHOD, generate, record, unsupported_reason
from edge_runtime.modes import InferenceResult, Mode, register_mode
from edge_runtime.policies import ExitPolicy

#: the most tokens one daemon request may ask for (``parameters.max_new_tokens``): a request cannot tie a worker
#: thread up for long
MAX_REQUEST_NEW_TOKENS = 4096


class LMMode(Mode):
    """A greedy-generation mode of a Kangaroo LM bundle (shared by ``kangaroo`` and ``autoregressive``)."""

    handles_requests = True
    generates = True

    def unsupported(self, manifest: Manifest) -> str | None:
        return unsupported_reason(manifest)

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
        ``gamma``. Answers ``outputs`` ``text`` (BYTES) and ``tokens`` (INT64), and the generation's figures.

        Raises:
            InputError: naming the field; ``max_new_tokens`` outside 1..:data:`MAX_REQUEST_NEW_TOKENS` among them.
        """
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
        n = options.get("max_new_tokens")
        if n is not None and not 1 <= n <= MAX_REQUEST_NEW_TOKENS:
            raise _field_error(f"max_new_tokens must be in 1..{MAX_REQUEST_NEW_TOKENS} for a daemon request, got {n}",
                               "parameters.max_new_tokens")
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
    return InputError(message, field=field)  # the daemon's 422 names it


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

