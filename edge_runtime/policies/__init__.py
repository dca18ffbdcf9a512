"""Exit policies: one registry; each policy is one module that registers itself."""

from edge_runtime.policies import confidence, entropy, never, patience  # noqa: F401  (registration)
from edge_runtime.policies.base import POLICIES, ExitPolicy, ScorePolicy, State, create_policy, softmax
from edge_runtime.policies.confidence import ConfidencePolicy
from edge_runtime.policies.entropy import EntropyPolicy
from edge_runtime.policies.never import NeverPolicy
from edge_runtime.policies.patience import PatiencePolicy

__all__ = [
    "POLICIES",
    "ExitPolicy",
    "ScorePolicy",
    "State",
    "create_policy",
    "softmax",
    "ConfidencePolicy",
    "EntropyPolicy",
    "NeverPolicy",
    "PatiencePolicy",
]
