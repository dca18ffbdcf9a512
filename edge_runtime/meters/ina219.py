"""TI INA219 current/power monitor on an I²C bus (e.g. a Raspberry Pi's bus 1), sampled and integrated.

Reads the shunt-voltage and bus-voltage registers: current = V_shunt / R_shunt, power =
V_bus · current (independent of the current-scale register, which is still programmed so
the chip's own current/power registers agree). Register layout: see ``_i2c.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from edge_runtime.errors import ConfigError, EdgeRuntimeError
from edge_runtime.meters import _i2c
from edge_runtime.meters._i2c_meter import I2CSampledMeter

REG_CONFIG, REG_SHUNT, REG_BUS, REG_POWER, REG_CURRENT, REG_SCALE = range(6)


class INA219Meter(I2CSampledMeter):
    """Power from an INA219 on the I²C bus.

    Args:
        bus: I²C bus number (``/dev/i2c-N``, default 1 on a Pi) or a bus object
            (anything with smbus2's ``read_i2c_block_data``/``write_i2c_block_data``).
        address: the chip's 7-bit address (default 0x40).
        shunt_ohms: the shunt resistor (default 0.1 Ω, the common breakout boards').
        current_lsb_a: current register resolution used for the current-scale register (default 100 µA).
        rate_hz: samples per second (default 100; the chip converts every 532 µs at 12 bits).

    Example:
        >>> with INA219Meter(bus=1, address=0x40, shunt_ohms=0.1) as m:     # doctest: +SKIP
        ...     m.read_volts_amps_watts()
    """

    name: ClassVar[str] = "ina219"
    auto_priority: ClassVar[int | None] = 40

    def __init__(self, bus: int | _i2c.I2CBus = 1, *, address: int = 0x40, shunt_ohms: float = 0.1,
                 current_lsb_a: float = 100e-6, rate_hz: float = 100.0, dev_root: str | Path = "/dev",
                 program_scale: bool = True, **kwargs: Any) -> None:
        if shunt_ohms <= 0:
            raise ConfigError(f"ina219: shunt_ohms must be > 0, got {shunt_ohms}")
        super().__init__(bus, address=address, rate_hz=rate_hz, dev_root=dev_root, **kwargs)
        self.shunt_ohms = float(shunt_ohms)
        self.current_lsb_a = float(current_lsb_a)
        if program_scale:
            _i2c.write_register(self.bus, self.address, REG_SCALE,
                                _i2c.ina219_scale_register(self.current_lsb_a, self.shunt_ohms))

    @classmethod
    def probe(cls, bus: int | _i2c.I2CBus = 1, address: int = 0x40, dev_root: str | Path = "/dev",
              **_: Any) -> tuple[bool, str]:
        return _i2c.probe_device(bus, address, dev_root=dev_root)

    def read_volts_amps_watts(self) -> tuple[float, float, float]:
        """(bus volts, amps, watts) read now.

        Raises:
            EdgeRuntimeError: the chip flags an overflow (the shunt range is exceeded).
        """
        raw_bus = _i2c.read_register(self.bus, self.address, REG_BUS)
        if _i2c.ina219_overflow(raw_bus):
            raise EdgeRuntimeError(f"ina219 at 0x{self.address:02x}: math overflow flag set "
                                   "(current beyond the shunt range; use a larger PGA range or smaller shunt)")
        volts = _i2c.ina219_bus_volts(raw_bus)
        amps = _i2c.ina219_shunt_volts(_i2c.read_register(self.bus, self.address, REG_SHUNT)) / self.shunt_ohms
        return volts, amps, volts * amps

    def read_chip_current_power(self) -> tuple[float, float]:
        """(amps, watts) from the chip's own current and power registers (need the scale register programmed)."""
        cur = _i2c.read_register(self.bus, self.address, REG_CURRENT)
        pw = _i2c.read_register(self.bus, self.address, REG_POWER)
        return _i2c.ina219_current_amps(cur, self.current_lsb_a), _i2c.ina219_power_watts(pw, self.current_lsb_a)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "shunt_ohms": self.shunt_ohms}
