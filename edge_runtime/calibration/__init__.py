"""Exit-threshold calibration ("calibrate" means only this in the project): sweep a policy's thresholds on
held-out exit outputs, keep the accuracy-vs-cost Pareto front, choose an operating point — the point estimate, or
with a guarantee that holds on new data with a stated probability (:mod:`edge_runtime.calibration.risk`); plus the
oracle bound and the Pareto front every report uses (one definition each). Numpy only, so it runs on the device too.
"""

from edge_runtime.calibration.bounds import oracle_exits, pareto_front
from edge_runtime.calibration.risk import Guarantee, guaranteed_threshold
from edge_runtime.calibration.search import (
    Calibration,
    OperatingPoint,
    calibrate,
    evaluate_point,
    measure_segment_latency,
    oracle,
    threshold_candidates,
)

__all__ = ["oracle_exits", "pareto_front", "Guarantee", "guaranteed_threshold",
           "Calibration", "OperatingPoint", "calibrate", "evaluate_point",
           "measure_segment_latency", "oracle", "threshold_candidates"]
