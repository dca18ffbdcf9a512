"""The shared part of the I²C power-monitor meters (INA219, INA260): bus ownership and sampling."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.meters import _i2c
from edge_runtime.meters.base import SampledMeter


class I2CSampledMeter(SampledMeter):
    """A sampled meter reading one chip at ``address`` on an I²C bus it may own.

    Subclasses implement ``read_volts_amps_watts()``; ``read()`` returns its watts.
    """

    def __init__(self, bus: int | _i2c.I2CBus, *, address: int, rate_hz: float, dev_root: str | Path,
                 **kwargs: Any) -> None:
        super().__init__(rate_hz=rate_hz, **kwargs)
        self.address = int(address)
        self._bus: _i2c.I2CBus | None
        self._bus, self._owned = _i2c.open_bus(bus, dev_root)
        self._bus_arg, self._dev_root = bus, dev_root
        self.bus_id = bus if isinstance(bus, int) else type(bus).__name__

    def read_volts_amps_watts(self) -> tuple[float, float, float]:
        """(bus volts, amps, watts) read now."""
        raise NotImplementedError

    @property
    def bus(self) -> _i2c.I2CBus:
        """The open bus (``start()`` reopens one this meter owns after ``stop()``)."""
        if self._bus is None:
            raise EdgeRuntimeError(f"meter {self.name!r}: the I2C bus is closed; start() the meter again")
        return self._bus

    def read(self) -> float:
        return self.read_volts_amps_watts()[2]

    def start(self) -> SampledMeter:
        if self._bus is None:  # reopened after stop()
            self._bus, self._owned = _i2c.open_bus(self._bus_arg, self._dev_root)
        return super().start()

    def _close(self) -> None:
        if self._owned:
            self._bus.close()  # type: ignore[union-attr]  # an owned bus is an smbus2.SMBus: it has close()
            self._bus, self._owned = None, False

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "bus": self.bus_id, "address": hex(self.address)}
