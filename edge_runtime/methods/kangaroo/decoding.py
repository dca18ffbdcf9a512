"""Greedy decoding of a causal-LM bundle on the device: autoregressive, and Kangaroo's self-speculative decoding
with double early exit (Liu et al., NeurIPS 2024). numpy + the bundle's backend; no torch.

A Kangaroo bundle (``converters/methods/kangaroo``) has two segments: ``draft`` (the shallow layers with the
adapter as their exit: token ids + shallow/adapter caches -> shallow hidden states, next-token logits) and
``verify`` (the remaining layers with the LM head: shallow hidden states + deep cache -> logits at every
position), and the one-graph ``full`` model (token ids + shallow/deep caches -> next-token logits). Caches are
``(batch, 2 * layers, heads, positions, head_dim)`` arrays; a graph appends the positions it is fed.

Kangaroo, one round: the last emitted token ``x`` and then each draft go through the draft graph; drafting stops
once the newest draft's top-1 probability is below ``eta`` (the bundle's confidence policy on exit 0; the
low-confidence draft is still verified) or after ``gamma`` drafts. The verify graph then runs once over the
shallow hidden states of ``x`` and every draft, reusing them; the longest prefix of drafts equal to the LM's own
greedy tokens is accepted, plus the LM's token after it, and every cache is trimmed back to the accepted
positions. Under greedy decoding the output equals autoregressive decoding's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from edge_runtime.errors import ConfigError
from edge_runtime.executor import Tensors

#: ``on_token(token_ids, seconds)``: called as soon as tokens are final (one or several at a time)
OnToken = Callable[[list[int], float], None]
STACKS = ("shallow", "adapter", "deep")


class Graph(Protocol):
    """What decoding needs of a graph: named inputs -> named outputs (a :class:`~edge_runtime.executor.GraphRunner`)."""

    def run(self, feeds: Mapping[str, np.ndarray]) -> Tensors: ...


def accepted_prefix(drafts: Sequence[int], targets: Sequence[int]) -> int:
    """How many leading drafts equal the LM's greedy tokens at the same positions (``targets[i]`` is the LM's
    token after the position that drafts[i] fills).

    Example:
        >>> accepted_prefix([5, 7, 9], [5, 7, 2, 4])
        2
    """
    n = 0
    for d, t in zip(drafts, targets):
        if int(d) != int(t):
            break
        n += 1
    return n


def trim_cache(cache: np.ndarray, positions: int) -> np.ndarray:
    """The cache's first ``positions`` positions (axis 3), contiguous (a no-op when nothing is cut)."""
    if cache.shape[3] == positions:
        return cache
    if cache.shape[3] < positions:
        raise ValueError(f"cannot trim a cache of {cache.shape[3]} positions to {positions}")
    return np.ascontiguousarray(cache[:, :, :, :positions])


@dataclass
class GenerationResult:
    """What one greedy generation returns.

    Attributes:
        text: the generated text (special tokens left out).
        tokens: the generated token ids (the end-of-text token included when it ended the generation).
        prompt_tokens: how many tokens the prompt had.
        mode: ``kangaroo`` or ``autoregressive``.
        accepted: per verification round, how many drafts were accepted (kangaroo; empty otherwise).
        drafted: per round, how many tokens were drafted.
        latency_s: wall time of the whole call (prefill + decoding).
        prefill_s: wall time until the first generated token.
        stop: ``eos`` (the end-of-text token) or ``length`` (``max_new_tokens``).
        eta, gamma: the drafting stop and cap used (kangaroo).
        graph_calls, graph_s: per graph (``draft``, ``verify``, ``full``), calls and seconds inside them.
        energy_j, energy_source: energy of the call when the runtime has a meter.
    """

    text: str
    tokens: list[int]
    prompt_tokens: int
    mode: str
    accepted: list[int] = field(default_factory=list)
    drafted: list[int] = field(default_factory=list)
    latency_s: float = 0.0
    prefill_s: float = 0.0
    stop: str = "length"
    eta: float | None = None
    gamma: int | None = None
    graph_calls: dict[str, int] = field(default_factory=dict)
    graph_s: dict[str, float] = field(default_factory=dict)
    energy_j: float | None = None
    energy_source: str | None = None

    @property
    def tokens_per_s(self) -> float:
        """Generated tokens per second of the whole call."""
        return len(self.tokens) / self.latency_s if self.latency_s > 0 else 0.0

    @property
    def large_model_passes(self) -> int:
        """Passes of the remaining layers (kangaroo: verify calls; autoregressive: full-model calls)."""
        return int(self.graph_calls.get("verify", 0) + self.graph_calls.get("full", 0))

    @property
    def compression_rate(self) -> float:
        """Generated tokens per pass of the large model (1.0 for autoregressive decoding)."""
        return len(self.tokens) / self.large_model_passes if self.large_model_passes else 0.0

    @property
    def mean_accepted_length(self) -> float | None:
        """Mean drafts accepted per verification round (None without rounds)."""
        return float(np.mean(self.accepted)) if self.accepted else None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(tokens_per_s=self.tokens_per_s, compression_rate=self.compression_rate,
                   mean_accepted_length=self.mean_accepted_length, large_model_passes=self.large_model_passes)
        return out


class _Clock:
    """Calls and seconds per graph."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.seconds: dict[str, float] = {}

    def run(self, name: str, runner: Graph, feeds: Tensors) -> Tensors:
        t0 = time.perf_counter()
        out = runner.run(feeds)
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
        self.calls[name] = self.calls.get(name, 0) + 1
        return out


class LMGraphs:
    """A loaded LM bundle's graphs and cache shapes, ready to decode (one prompt at a time: batch 1).

    Args:
        draft, verify: the two segments' runners; full: the one-graph model's (None: decode through the segments).
        cache_shapes: per stack, ``(2 * layers, heads, head_dim)``.
        eos: the end-of-text token id (None: generate until ``max_new_tokens``).
    """

    def __init__(self, draft: Graph, verify: Graph, full: Graph | None,
                 cache_shapes: dict[str, tuple[int, int, int]], eos: int | None) -> None:
        self.draft, self.verify, self.full = draft, verify, full
        self.cache_shapes = cache_shapes
        self.eos = eos

    def empty(self, stack: str) -> np.ndarray:
        layers2, heads, head_dim = self.cache_shapes[stack]
        return np.zeros((1, layers2, heads, 0, head_dim), dtype=np.float32)

    # -- autoregressive ---------------------------------------------------------------------
    def autoregressive(self, prompt: Sequence[int], max_new_tokens: int, *,
                       on_token: OnToken | None = None) -> tuple[list[int], dict[str, Any]]:
        """Greedy decoding one token per pass of the full model (the baseline). Returns (tokens, facts)."""
        clock = _Clock()
        start = time.perf_counter()
        ids = _ids(prompt)
        caches = {s: self.empty(s) for s in STACKS}
        out: list[int] = []
        prefill_s = 0.0
        while len(out) < max_new_tokens:
            if self.full is not None:
                res = clock.run("full", self.full, {"input_ids": ids, "past_shallow": caches["shallow"],
                                                    "past_deep": caches["deep"]})
                logits = res["exit"][0]
                caches["shallow"], caches["deep"] = res["present_shallow"], res["present_deep"]
            else:  # no one-graph file: the two segments, the adapter's output unused
                d = clock.run("draft", self.draft, {"input_ids": ids, "past_shallow": caches["shallow"],
                                                    "past_adapter": caches["adapter"]})
                v = clock.run("verify", self.verify, {"hidden": d["hidden"], "past_deep": caches["deep"]})
                logits = v["exit"][0, -1]
                caches.update(shallow=d["present_shallow"], adapter=d["present_adapter"], deep=v["present_deep"])
            tok = int(np.argmax(logits))
            out.append(tok)
            if len(out) == 1:
                prefill_s = time.perf_counter() - start
            if on_token is not None:
                on_token([tok], time.perf_counter() - start)
            if tok == self.eos:
                break
            ids = _ids([tok])
        return out, {"prefill_s": prefill_s, "latency_s": time.perf_counter() - start, "graph_calls": clock.calls,
                     "graph_s": clock.seconds, "accepted": [], "drafted": []}

    # -- kangaroo ---------------------------------------------------------------------------
    def kangaroo(self, prompt: Sequence[int], max_new_tokens: int, *, keep_drafting: Callable[[np.ndarray], bool],
                 gamma: int, on_token: OnToken | None = None) -> tuple[list[int], dict[str, Any]]:
        """Kangaroo's greedy self-speculative decoding. Returns (tokens, facts).

        Args:
            keep_drafting: ``keep_drafting(logits (1, vocab)) -> bool``: whether the adapter's newest draft is
                confident enough to draft another token after it (top-1 probability >= eta).
            gamma: at most this many drafts per round (0: every round verifies one token).
        """
        if gamma < 0:
            raise ConfigError(f"gamma must be >= 0, got {gamma}")
        clock = _Clock()
        start = time.perf_counter()
        empty = {s: self.empty(s) for s in STACKS}
        d = clock.run("draft", self.draft, {"input_ids": _ids(prompt), "past_shallow": empty["shallow"],
                                            "past_adapter": empty["adapter"]})
        v = clock.run("verify", self.verify, {"hidden": d["hidden"], "past_deep": empty["deep"]})
        shallow, adapter, deep = d["present_shallow"], d["present_adapter"], v["present_deep"]
        tok = int(np.argmax(v["exit"][0, -1]))
        out = [tok]
        prefill_s = time.perf_counter() - start
        if on_token is not None:
            on_token([tok], prefill_s)
        accepted: list[int] = []
        drafted: list[int] = []
        while tok != self.eos and len(out) < max_new_tokens:
            committed = deep.shape[3]          # positions every cache holds before this round (x excluded)
            hidden: list[np.ndarray] = []
            drafts: list[int] = []
            cur, stop_after = tok, False
            while True:  # the first pass processes x; each later pass one draft
                d = clock.run("draft", self.draft, {"input_ids": _ids([cur]), "past_shallow": shallow,
                                                    "past_adapter": adapter})
                hidden.append(d["hidden"])
                shallow, adapter = d["present_shallow"], d["present_adapter"]
                if len(drafts) == gamma or (drafts and (stop_after or drafts[-1] == self.eos)):
                    break
                q = d["exit"]
                cur = int(np.argmax(q[0]))
                drafts.append(cur)
                stop_after = not keep_drafting(q)
            v = clock.run("verify", self.verify, {"hidden": np.concatenate(hidden, axis=1), "past_deep": deep})
            targets = np.argmax(v["exit"][0], axis=-1)
            n = accepted_prefix(drafts, targets)
            new = [int(t) for t in drafts[:n]] + [int(targets[n])]
            keep = committed + n + 1          # x and the accepted drafts; the bonus token is not processed yet
            shallow, adapter, deep = (trim_cache(c, keep) for c in (shallow, adapter, v["present_deep"]))
            accepted.append(n)
            drafted.append(len(drafts))
            new = new[:max_new_tokens - len(out)]
            if self.eos in new:
                new = new[:new.index(self.eos) + 1]
            out += new
            tok = new[-1]
            if on_token is not None:
                on_token(new, time.perf_counter() - start)
        return out, {"prefill_s": prefill_s, "latency_s": time.perf_counter() - start, "graph_calls": clock.calls,
                     "graph_s": clock.seconds, "accepted": accepted, "drafted": drafted}


def _ids(tokens: Sequence[int]) -> np.ndarray:
    return np.asarray([list(tokens)], dtype=np.int64)
