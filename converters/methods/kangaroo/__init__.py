"""Kangaroo (Liu et al., NeurIPS 2024): self-speculative decoding with double early exit, on a small causal LM.

The workstation side: a Llama-style LM trained from scratch on the Python standard library's sources with a
byte-level BPE tokenizer (:mod:`.corpus`, :mod:`.model`), the adapter on its shallow layers trained on the LM's
soft labels (:mod:`.losses`), the recipe section ``kangaroo`` and its build (:mod:`.build`), the export of the
draft/verify/full graphs with key-value caches (:mod:`.export`) and the conversion stage that writes the bundle
(:mod:`.stage`). The device decodes with the ``kangaroo`` and
``autoregressive`` modes (:mod:`edge_runtime.methods.kangaroo`).
"""

from converters.methods.kangaroo import losses, stage  # noqa: F401  (register the losses and the stage)
from converters.methods.kangaroo.build import KEY, build_lm_bundle, kangaroo_section
from converters.methods.kangaroo.export import export_lm_bundle
from converters.methods.kangaroo.model import KangarooLM, LMConfig

__all__ = ["KEY", "KangarooLM", "LMConfig", "build_lm_bundle", "export_lm_bundle", "kangaroo_section"]
