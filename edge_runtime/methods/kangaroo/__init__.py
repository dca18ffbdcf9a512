"""Kangaroo (Liu et al., NeurIPS 2024) on the device: self-speculative decoding with double early exit.

The ``kangaroo`` and ``autoregressive`` modes (:mod:`.modes`) generate text greedily from a causal-LM bundle
converted with a recipe ``kangaroo`` section (``converters/methods/kangaroo``); the decoding loops are in
:mod:`.decoding`, the ``edge-runtime generate`` command in :mod:`.cli`. Nothing here imports torch.
"""

from edge_runtime.methods.kangaroo.decoding import GenerationResult, LMGraphs, accepted_prefix, trim_cache
from edge_runtime.methods.kangaroo.modes import AutoregressiveMode, KangarooMode
from edge_runtime.methods.kangaroo.session import generate, lm_session

__all__ = ["AutoregressiveMode", "GenerationResult", "KangarooMode", "LMGraphs", "accepted_prefix", "generate",
           "lm_session", "trim_cache"]
