"""RAPL through the optional ``pyRAPL`` package (an alternative to the ``powercap`` meter where installed).

pyRAPL reads the same Intel RAPL counters; it is not a dependency of this project
(``pip install pyRAPL`` to use it). Each window is one ``pyRAPL.Measurement``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.meters.base import Meter


def _import() -> Any:
    try:
        import pyRAPL  # noqa: N813
    except ImportError:
        raise EdgeRuntimeError("pyRAPL is not installed (optional: pip install pyRAPL); "
                               "the 'powercap' meter reads the same counters without it") from None
    return pyRAPL


class PyRAPLMeter(Meter):
    """Package (+ DRAM) energy per window via pyRAPL.

    Example:
        >>> m = PyRAPLMeter()                                   # doctest: +SKIP
    """

    name: ClassVar[str] = "pyrapl"
    auto_priority: ClassVar[int | None] = 50

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._pyrapl = _import()
        try:
            self._pyrapl.setup()
        except Exception as exc:  # pyRAPL raises its own types for missing/forbidden counters
            raise EdgeRuntimeError(f"pyRAPL could not read RAPL: {exc}") from None

    @classmethod
    def probe(cls, **_: Any) -> tuple[bool, str]:
        try:
            cls()
        except EdgeRuntimeError as exc:
            return False, str(exc)
        return True, "pyRAPL set up"

    def start_window(self) -> Any:
        import time

        m = self._pyrapl.Measurement("edge-runtime")
        m.begin()
        return (time.perf_counter(), m)

    def energy_between(self, token: Any, end: Any) -> float:
        m = token[1]
        m.end()
        res = m.result
        return (sum(res.pkg or []) + sum(res.dram or [])) * 1e-6
