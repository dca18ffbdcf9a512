"""PALBERT (NeurIPS 2022) on the workstation: exits with a shared classifier and Lambda layers on a BERT-style
encoder (:mod:`.model`), the ponder loss (:mod:`.losses`), the q choice in ``convert`` (:mod:`.stage`)."""

from converters.methods.palbert import losses, stage  # noqa: F401  (registers the losses, section and stage)
from converters.methods.palbert.model import palbert_bert

__all__ = ["palbert_bert"]
