"""CBNet (2024): a converting autoencoder + the BranchyNet's first exit as a lightweight classifier.

The workstation side of the method: the recipe section ``cbnet``, exemplar choice, autoencoders,
training (its losses on the shared trainer), export of its parts and its conversion stage (``stage.py``).
The device runs the parts with the ``cbnet`` mode (:mod:`edge_runtime.methods.cbnet`).
"""

from converters.methods.cbnet import stage  # noqa: F401  (registers the ``cbnet`` conversion stage)
from converters.methods.cbnet.core import *  # noqa: F401,F403
from converters.methods.cbnet.core import __all__  # noqa: F401
