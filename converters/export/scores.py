"""Exit decision scores inside the exported graphs: each score policy's ``score`` written as graph ops.

A segment graph that computes its exit's decision score (the ``exit.score`` output) lets the device compare one
number per sample instead of running the policy's numpy formula on the logits after every segment (a softmax and a
reduction: several microseconds per call on a small model, as much as the segment itself). Each entry of
:data:`SCORE_GRAPHS` is the torch twin of a registered :class:`edge_runtime.policies.ScorePolicy`'s ``score``, keyed
by the policy's registry name and taking its keyword arguments; a method adds its policy's twin from its folder
(``converters/methods/<name>/``). The export records which policy and arguments a graph's score follows
(``segments[i].score``) and checks it against the numpy score; the device uses it only for that policy.

Example:
    >>> import torch
    >>> fn = score_graph("confidence", {})
    >>> float(fn(torch.tensor([[0.0, 0.0]]))[0])
    0.5
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from converters.export.verify import max_abs_diff, model_feeds, staged_bundle
from edge_runtime.backends import create_backend
from edge_runtime.manifest import EXIT_OUTPUT, SCORE_OUTPUT
from edge_runtime.policies import ScorePolicy, create_policy
from edge_runtime.registry import Registry
from edge_runtime.runtime import Runtime

#: policy name -> ``fn(logits, **policy_kwargs) -> score (N,)``: the policy's numpy ``score`` as torch ops
SCORE_GRAPHS: Registry[Callable[..., torch.Tensor]] = Registry("in-graph exit score", plugins="converters.methods")


@SCORE_GRAPHS.register("entropy")
def entropy_score(logits: torch.Tensor, normalized: bool = False) -> torch.Tensor:
    """Softmax entropy (natural log), divided by log(num_classes) when ``normalized`` (``EntropyPolicy.score``)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    h = -(logp.exp() * logp).sum(dim=-1)
    return h / torch.log(torch.tensor(float(logits.shape[-1]))) if normalized else h


@SCORE_GRAPHS.register("confidence")
def confidence_score(logits: torch.Tensor) -> torch.Tensor:
    """Max softmax probability (``ConfidencePolicy.score``)."""
    return torch.softmax(logits.float(), dim=-1).max(dim=-1).values


def score_graph(policy: str, kwargs: dict[str, Any]) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The in-graph score of ``policy`` with its ``kwargs`` (None when the policy has no registered twin)."""
    if policy not in SCORE_GRAPHS:
        return None
    fn = SCORE_GRAPHS.get(policy)
    return lambda logits: fn(logits, **kwargs)


class ScoredSegment(nn.Module):
    """A segment graph module (returning ``(*hidden, exit, *extras)``) plus its exit's decision score as a last
    output; ``exit_at`` is the position of ``exit`` among the outputs (the last one unless the head adds extras)."""

    def __init__(self, segment: nn.Module, score: Callable[[torch.Tensor], torch.Tensor], exit_at: int = -1) -> None:
        super().__init__()
        self.segment = segment
        self.score = score
        self.exit_at = exit_at

    def forward(self, *h: Any) -> Any:
        out = self.segment(*h)
        return (*out, self.score(out[self.exit_at]))


def score_max_diffs(root: Any, manifest: dict[str, Any], inputs: list[Any]) -> dict[int, float]:
    """Per scored segment: the max abs difference between its ``exit.score`` output and the bundle policy's numpy
    score of its ``exit`` output (what the device would compute without it), over ``inputs`` run through the chain."""
    if not any(seg.get("score") for seg in manifest["segments"]):
        return {}
    rt = Runtime(staged_bundle(root, manifest), create_backend("onnxruntime", threads=1))
    spec = manifest["policy"]
    policy = create_policy(spec["name"], rt.num_exits, spec["thresholds"] or None, **spec["kwargs"])
    assert isinstance(policy, ScorePolicy), "only a score policy's segments output exit.score"
    diffs: dict[int, float] = {}
    for x in inputs:
        feeds = model_feeds(manifest, x)
        for i, runner in enumerate(rt.segments):
            outs = runner.run(feeds)
            if SCORE_OUTPUT in outs:
                ref = policy.score(outs[EXIT_OUTPUT])
                d = max_abs_diff(ref, outs[SCORE_OUTPUT])
                diffs[i] = max(diffs.get(i, 0.0), d)
            feeds = {**feeds, **{k: v for k, v in outs.items() if k not in (EXIT_OUTPUT, SCORE_OUTPUT)}}
    return diffs
