"""TI INA260 (integrated 2 mΩ shunt) power monitor on an I²C bus, sampled and integrated.

power = bus voltage (1.25 mV/bit) · current (1.25 mA/bit); the chip's own power register
(10 mW/bit) is coarser and only read on request. Register layout: see ``_i2c.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.meters import _i2c
from edge_runtime.meters._i2c_meter import I2CSampledMeter

REG_CONFIG, REG_CURRENT, REG_BUS, REG_POWER = range(4)
REG_MANUFACTURER, REG_DIE = 0xFE, 0xFF


def _is_ina260(bus: _i2c.I2CBus, address: int) -> tuple[bool, str]:
    man = _i2c.read_register(bus, address, REG_MANUFACTURER)
    die = _i2c.read_register(bus, address, REG_DIE)
    if man != _i2c.INA260_MANUFACTURER_ID or die != _i2c.INA260_DIE_ID:
        return False, (f"device at 0x{address:02x} is not an INA260 (manufacturer 0x{man:04x}, die 0x{die:04x}; "
                       f"expected 0x{_i2c.INA260_MANUFACTURER_ID:04x}, 0x{_i2c.INA260_DIE_ID:04x})")
    return True, "INA260"


class INA260Meter(I2CSampledMeter):
    """Power from an INA260 on the I²C bus.

    Args:
        bus: I²C bus number (default 1) or a bus object with smbus2's block read/write methods.
        address: 7-bit address (default 0x40).
        rate_hz: samples per second (default 100).

    Example:
        >>> with INA260Meter(bus=1) as m:                    # doctest: +SKIP
        ...     m.power_now()
    """

    name: ClassVar[str] = "ina260"
    auto_priority: ClassVar[int | None] = 30

    def __init__(self, bus: int | _i2c.I2CBus = 1, *, address: int = 0x40, rate_hz: float = 100.0,
                 dev_root: str | Path = "/dev", **kwargs: Any) -> None:
        super().__init__(bus, address=address, rate_hz=rate_hz, dev_root=dev_root, **kwargs)
        ok, why = _is_ina260(self.bus, self.address)
        if not ok:
            self._close()
            raise EdgeRuntimeError(why)

    @classmethod
    def probe(cls, bus: int | _i2c.I2CBus = 1, address: int = 0x40, dev_root: str | Path = "/dev",
              **_: Any) -> tuple[bool, str]:
        return _i2c.probe_device(bus, address, check=lambda b: _is_ina260(b, address), dev_root=dev_root)

    def read_volts_amps_watts(self) -> tuple[float, float, float]:
        """(bus volts, amps, watts) read now."""
        amps = _i2c.ina260_current_amps(_i2c.read_register(self.bus, self.address, REG_CURRENT))
        volts = _i2c.ina260_bus_volts(_i2c.read_register(self.bus, self.address, REG_BUS))
        return volts, amps, volts * amps

    def read_chip_power(self) -> float:
        """Watts from the chip's power register (10 mW resolution)."""
        return _i2c.ina260_power_watts(_i2c.read_register(self.bus, self.address, REG_POWER))
