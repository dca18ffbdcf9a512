"""DeeDiff (Tang et al., arXiv 2309.17074): uncertainty-aware layer exits inside a diffusion model's sampling loop.

A small U-ViT denoiser (:mod:`.model`) with an output head and an uncertainty module after every block; its
losses (:mod:`.losses`: the paper's joint loss, and the frozen-backbone probe variant); and the conversion stage
(:mod:`.stage`: the recipe's ``deediff`` section) that trains the digits classifier of the quality measure, exports
it, and chooses the uncertainty threshold on a quality-vs-layers sweep. The device side is
:mod:`edge_runtime.methods.deediff` (the ``sample`` mode).
"""

from converters.methods.deediff import losses, model, stage  # noqa: F401  (registers the model, losses, stage)
from converters.methods.deediff.model import DeeDiffUViT, deediff_uvit

__all__ = ["DeeDiffUViT", "deediff_uvit"]
