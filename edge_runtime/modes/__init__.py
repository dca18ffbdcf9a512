"""Inference modes: one interface (:class:`Mode`), one registry (:data:`MODES`); built-in modes are modules here
(``early_exit``, ``full``), a method's mode lives in its folder under ``edge_runtime/methods/``. Modules are
found on the registry's first look-up."""

from edge_runtime.modes.base import MODES, InferenceResult, Mode, RuntimeView, TargetCheck, register_mode

__all__ = ["MODES", "InferenceResult", "Mode", "RuntimeView", "TargetCheck", "register_mode"]
