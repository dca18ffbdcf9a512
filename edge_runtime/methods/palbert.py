"""PALBERT (Balagansky & Gavrilov, NeurIPS 2022) on the device: the deterministic Q-exit and PonderNet's sampling
exit, as exit policies that read each exit's ``lambda`` output (the probability of halting there).

The exit distribution is p_i = lambda_i * prod_{j<i} (1 - lambda_j), so its CDF after exit i is
1 - prod_{j<=i} (1 - lambda_j): the per-sample state is the running product, kept by the executor for the samples
still running (:func:`edge_runtime.executor.decide_exits` slices it as the batch shrinks). The reference code runs
batch 1 only (``lambdas.item()``); here every sample decides from its own row, so a batch gives exactly the exits
of the batch-1 loop. Nothing here imports torch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_runtime.errors import ConfigError
from edge_runtime.policies.base import POLICIES, ExitPolicy, State

LAMBDA = "lambda"


def _lambda(output: Any) -> np.ndarray:
    try:
        lam = np.asarray(output[LAMBDA], dtype=np.float64)
    except (KeyError, TypeError, IndexError):
        raise ConfigError(f"this policy reads each exit's {LAMBDA!r} output (a PALBERT bundle's exits have it)") \
            from None
    return lam.reshape(lam.shape[0], -1)[:, 0]


@POLICIES.register("q_exit")
class QExitPolicy(ExitPolicy):
    """PALBERT's Q-exit: leave at the first exit whose exit-distribution CDF exceeds q (0.5 by default).

    ``thresholds`` are q per non-final exit (one number for all); the state is the running product
    prod_j (1 - lambda_j) per sample, in float64.

    Example:
        >>> pol = QExitPolicy(3)
        >>> state = pol.start(2)
        >>> pol.decide(0, {"exit": np.zeros((2, 2)), "lambda": np.array([0.6, 0.2])}, state).tolist()
        [True, False]
        >>> pol.decide(1, {"exit": np.zeros((1, 2)), "lambda": np.array([0.5])}, {"survive": state["survive"][1:]})
        array([ True])
    """

    reads = ("exit", LAMBDA)

    def default_threshold(self) -> float:
        return 0.5

    def start(self, batch_size: int) -> State:
        return {"survive": np.ones(batch_size, dtype=np.float64)}

    def decide(self, exit_index: int, output: Any, state: State) -> np.ndarray:
        state["survive"] = state["survive"] * (1.0 - _lambda(output))
        return (1.0 - state["survive"]) > self.thresholds[exit_index]


@POLICIES.register("ponder_sample")
class PonderSamplePolicy(ExitPolicy):
    """PonderNet's sampling exit: at exit i a sample leaves with probability lambda_i (a Bernoulli draw).

    Args:
        seed: seeds this policy object's generator (draws continue across calls; build a new policy to repeat).
    """

    uses_thresholds = False
    reads = ("exit", LAMBDA)

    def __init__(self, num_exits: int, thresholds: Any = None, *, seed: int = 0) -> None:
        if thresholds is not None and thresholds != []:
            raise ConfigError("policy 'ponder_sample' takes no thresholds")
        super().__init__(num_exits, None)
        self.seed = int(seed)
        self._rng = np.random.default_rng(self.seed)

    def decide(self, exit_index: int, output: Any, state: State) -> np.ndarray:
        lam = _lambda(output)
        return self._rng.random(lam.shape[0]) < lam

    def config(self) -> dict[str, Any]:
        return {"seed": self.seed}


def text_segment_outputs(runtime: Any, texts: Any, *, batch_size: int = 32,
                         names: tuple[str, ...] = ("exit", LAMBDA)) -> list[dict[str, np.ndarray]]:
    """Every exit's ``names`` outputs for every text of a text bundle (all segments run), in the texts' order.

    Texts run in length-sorted chunks of ``batch_size`` (each padded to its longest), so little is padded; this
    is what calibration and reports simulate exit rules on (:func:`edge_runtime.executor.simulate_exits`).
    """
    texts = list(texts)
    order = np.argsort([len(t) for t in texts], kind="stable")
    parts: list[list[dict[str, np.ndarray]]] = []
    for s in range(0, len(texts), batch_size):
        rows = order[s:s + batch_size]
        outs = runtime.segment_outputs(runtime.encode_text([texts[r] for r in rows]).feeds)
        parts.append([{k: o[k] for k in names if k in o} for o in outs])
    inv = np.argsort(order)
    return [{k: np.concatenate([p[i][k] for p in parts])[inv] for k in parts[0][i]} for i in range(len(parts[0]))]


def sweep_q(outputs: list[dict[str, np.ndarray]], y: np.ndarray, qs: Any) -> list[dict[str, Any]]:
    """Accuracy, mean layers and exit fractions of the Q-exit at each q (the device's decision loop)."""
    from edge_runtime.executor import simulate_exits
    from edge_runtime.policies import create_policy

    n_exits = len(outputs)
    preds = np.stack([o["exit"].argmax(-1) for o in outputs])
    out = []
    for q in qs:
        idx = simulate_exits(outputs, create_policy("q_exit", n_exits, float(q)))
        out.append({"q": float(q), "accuracy": float((preds[idx, np.arange(len(y))] == y).mean()),
                    "mean_layers": float((idx + 1).mean()),
                    "exit_fractions": (np.bincount(idx, minlength=n_exits) / len(y)).tolist()})
    return out
