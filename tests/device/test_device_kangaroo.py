"""Kangaroo's decoding loop on crafted draft/target models (numpy only, no torch): verification, acceptance,
the eta stop and gamma cap, cache trimming, end-of-text and length limits, and equality with autoregressive
decoding.

The fake graphs keep token ids in their caches (one number per position), so a test sees exactly which positions
a cache holds; the target model's next token depends on the whole prefix, so a rejected draft left in a cache
would change every later token.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge_runtime.errors import ConfigError
from edge_runtime.methods.kangaroo.decoding import LMGraphs, accepted_prefix, trim_cache

V = 17
EOS = 16


def target_next(prefix: list[int]) -> int:
    """The 'LM': next token from the whole prefix (never EOS unless the prefix is long enough)."""
    return (sum(prefix) * 7 + len(prefix)) % (V - 1)


def logits_for(token: int, p: float) -> np.ndarray:
    """(V,) logits whose softmax has top-1 ``token`` with probability ``p``."""
    z = np.zeros(V)
    z[token] = 60.0 if p >= 1.0 else math.log(p * (V - 1) / (1 - p))
    return z


class FakeRunner:
    """A graph runner over caches of shape (1, 2, 1, P, 1) holding token ids."""

    def __init__(self, fn, name: str, log: list):
        self.fn, self.name, self.log = fn, name, log
        self.calls: list[dict] = []

    def run(self, feeds):
        self.calls.append({k: np.array(v) for k, v in feeds.items()})
        self.log.append((self.name, self.calls[-1]))
        return self.fn(feeds)


def _append(past: np.ndarray, ids: np.ndarray) -> np.ndarray:
    new = np.broadcast_to(ids.reshape(1, 1, 1, -1, 1).astype(np.float32), (1, 2, 1, ids.size, 1))
    return np.concatenate([past, new], axis=3)


def _tokens(cache: np.ndarray) -> list[int]:
    return [int(t) for t in cache[0, 0, 0, :, 0]]


class Scripted:
    """Fake draft/verify/full graphs: the target is :func:`target_next`; the draft agrees except where
    ``wrong(prefix)`` says, with top-1 probability ``conf(prefix)``; ``eos_after`` makes the target say EOS once
    the sequence has that many tokens."""

    def __init__(self, wrong=lambda p: False, conf=lambda p: 1.0, eos_after: int | None = None):
        self.wrong, self.conf, self.eos_after = wrong, conf, eos_after

    def target(self, prefix):
        if self.eos_after is not None and len(prefix) >= self.eos_after:
            return EOS
        return target_next(prefix)

    def draft_fn(self, feeds):
        shallow = _append(feeds["past_shallow"], feeds["input_ids"])
        adapter = _append(feeds["past_adapter"], feeds["input_ids"])
        assert _tokens(feeds["past_shallow"]) == _tokens(feeds["past_adapter"])  # the two caches stay aligned
        prefix = _tokens(shallow)
        tok = self.target(prefix)
        if self.wrong(prefix):
            tok = (tok + 1) % (V - 1)
        return {"hidden": feeds["input_ids"].astype(np.float32)[..., None],
                "exit": logits_for(tok, self.conf(prefix))[None],
                "present_shallow": shallow, "present_adapter": adapter}

    def verify_fn(self, feeds):
        ids = feeds["hidden"][0, :, 0].astype(np.int64)
        deep = _append(feeds["past_deep"], ids)
        full = _tokens(deep)
        p0 = feeds["past_deep"].shape[3]
        logits = np.stack([logits_for(self.target(full[:p0 + j + 1]), 1.0) for j in range(ids.size)])
        return {"exit": logits[None], "present_deep": deep}

    def full_fn(self, feeds):
        shallow = _append(feeds["past_shallow"], feeds["input_ids"])
        deep = _append(feeds["past_deep"], feeds["input_ids"])
        return {"exit": logits_for(self.target(_tokens(deep)), 1.0)[None], "present_shallow": shallow,
                "present_deep": deep}

    def graphs(self, with_full: bool = True) -> LMGraphs:
        self.log: list = []
        self.draft = FakeRunner(self.draft_fn, "draft", self.log)
        self.verify = FakeRunner(self.verify_fn, "verify", self.log)
        self.full = FakeRunner(self.full_fn, "full", self.log) if with_full else None
        shapes = {s: (2, 1, 1) for s in ("shallow", "adapter", "deep")}
        return LMGraphs(self.draft, self.verify, self.full, shapes, EOS)


def _keep(eta: float):
    return lambda q: float(np.exp(q - q.max()).max() / np.exp(q - q.max()).sum()) >= eta


def reference(prompt, n, model: Scripted) -> list[int]:
    seq, out = list(prompt), []  # type: list[int], list[int]
    while len(out) < n:
        tok = model.target(seq)
        out.append(tok)
        seq.append(tok)
        if tok == EOS:
            break
    return out


PROMPT = [3, 1, 4, 1, 5]


def test_accepted_prefix_counts_leading_matches_only():
    assert accepted_prefix([], [4]) == 0
    assert accepted_prefix([4, 5, 6], [4, 5, 6, 7]) == 3
    assert accepted_prefix([9, 5, 6], [4, 5, 6, 7]) == 0
    assert accepted_prefix([4, 9, 6], [4, 5, 6, 7]) == 1


def test_trim_cache_cuts_positions_and_keeps_them_contiguous():
    c = np.arange(2 * 4 * 3 * 6 * 2, dtype=np.float32).reshape(2, 4, 3, 6, 2)
    t = trim_cache(c, 4)
    assert t.shape == (2, 4, 3, 4, 2) and t.flags.c_contiguous
    np.testing.assert_array_equal(t, c[:, :, :, :4])
    assert trim_cache(c, 6) is c
    with pytest.raises(ValueError):
        trim_cache(c, 7)


@pytest.mark.parametrize("gamma", [0, 1, 3, 6])
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_kangaroo_equals_autoregressive_greedy(eta, gamma):
    model = Scripted(wrong=lambda p: len(p) % 3 == 0, conf=lambda p: 0.9 if len(p) % 2 else 0.4)
    ar, _ = model.graphs().autoregressive(PROMPT, 25)
    kg, facts = model.graphs().kangaroo(PROMPT, 25, keep_drafting=_keep(eta), gamma=gamma)
    assert ar == kg == reference(PROMPT, 25, model)
    assert sum(facts["accepted"]) + len(facts["accepted"]) + 1 >= len(kg)   # every round gives accepted + 1
    assert all(0 <= a <= d <= gamma for a, d in zip(facts["accepted"], facts["drafted"]))


def test_a_perfect_confident_draft_fills_every_round_up_to_gamma():
    model = Scripted()
    tokens, facts = model.graphs().kangaroo(PROMPT, 1 + 4 * 4, keep_drafting=_keep(0.6), gamma=3)
    assert tokens == reference(PROMPT, 17, model)
    assert facts["drafted"] == [3, 3, 3, 3] and facts["accepted"] == [3, 3, 3, 3]
    assert facts["graph_calls"] == {"draft": 1 + 4 * 4, "verify": 1 + 4}     # prefill + (x + 3 drafts) per round


def test_a_rejected_draft_is_trimmed_from_every_cache():
    model = Scripted(wrong=lambda p: len(p) == len(PROMPT) + 2)     # round 1: the 2nd draft is wrong
    graphs = model.graphs()
    tokens, facts = graphs.kangaroo(PROMPT, 12, keep_drafting=_keep(0.0), gamma=4)
    truth = PROMPT + reference(PROMPT, 12, model)
    assert tokens == truth[len(PROMPT):]
    assert facts["accepted"][0] == 1 and facts["drafted"][0] == 4
    # after every verification, the next round starts from caches holding the true sequence and nothing rejected:
    # the first draft call of a round sees exactly what the next verification's deep cache holds
    log = model.log
    for i, (kind, _) in enumerate(log[:-1]):
        if kind == "verify" and i + 1 < len(log) and log[i + 1][0] == "draft":
            start = log[i + 1][1]["past_shallow"]
            nxt = next(c for k, c in log[i + 1:] if k == "verify")["past_deep"]
            assert _tokens(start) == _tokens(nxt) == truth[:start.shape[3]]
            assert _tokens(log[i + 1][1]["past_adapter"]) == _tokens(start)
    second = model.verify.calls[2]      # round 2 starts at prompt + x + the accepted draft
    assert second["past_deep"].shape[3] == len(PROMPT) + 2


def test_eta_stops_after_the_first_unconfident_draft_which_is_still_verified():
    model = Scripted(conf=lambda p: 0.3)
    tokens, facts = model.graphs().kangaroo(PROMPT, 9, keep_drafting=_keep(0.6), gamma=6)
    assert tokens == reference(PROMPT, 9, model)
    assert facts["drafted"] == [1, 1, 1, 1] and facts["accepted"] == [1, 1, 1, 1]
    model = Scripted(conf=lambda p: 0.3)
    _, facts = model.graphs().kangaroo(PROMPT, 9, keep_drafting=_keep(0.2), gamma=6)
    assert facts["drafted"][0] == 6          # eta below the draft's confidence: only gamma stops it


def test_gamma_zero_verifies_one_token_per_round():
    model = Scripted()
    tokens, facts = model.graphs().kangaroo(PROMPT, 6, keep_drafting=_keep(0.0), gamma=0)
    assert tokens == reference(PROMPT, 6, model)
    assert facts["drafted"] == [0] * 5 and facts["graph_calls"]["verify"] == 6
    with pytest.raises(ConfigError):
        model.graphs().kangaroo(PROMPT, 6, keep_drafting=_keep(0.0), gamma=-1)


def test_end_of_text_stops_both_modes_at_the_same_token():
    model = Scripted(eos_after=len(PROMPT) + 7)
    ar, _ = model.graphs().autoregressive(PROMPT, 50)
    kg, _ = model.graphs().kangaroo(PROMPT, 50, keep_drafting=_keep(0.0), gamma=6)
    assert ar == kg and kg[-1] == EOS and len(kg) == 8


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_max_new_tokens_is_exact_even_mid_round(n):
    model = Scripted()
    kg, _ = model.graphs().kangaroo(PROMPT, n, keep_drafting=_keep(0.0), gamma=6)
    assert kg == reference(PROMPT, n, model)


def test_autoregressive_without_a_one_graph_model_uses_the_segments():
    model = Scripted()
    tokens, facts = model.graphs(with_full=False).autoregressive(PROMPT, 5)
    assert tokens == reference(PROMPT, 5, model)
    assert facts["graph_calls"] == {"draft": 5, "verify": 5}
