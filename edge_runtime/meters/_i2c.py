"""The small I²C bus interface the INA219/INA260 meters use, and TI's register conversions.

Any object with smbus2's two block methods is a bus: ``smbus2.SMBus(1)`` on a Raspberry
Pi, or a test object that answers register reads the way the datasheet defines them.
INA2xx registers are 16 bits, sent most-significant byte first.

Register maps (Texas Instruments datasheets):
  INA219 (SBOS448): 0x00 config (reset 0x399F), 0x01 shunt voltage (signed, 10 µV/bit),
    0x02 bus voltage (bits 15..3, 4 mV/bit; bit 1 CNVR, bit 0 OVF), 0x03 power
    (20 x current LSB), 0x04 current (signed, current LSB), 0x05 current scale (the datasheet's "Calibration" register)
    (trunc(0.04096 / (current_LSB x R_shunt))).
  INA260 (SBOS656): 0x00 config (reset 0x6127), 0x01 current (signed, 1.25 mA/bit),
    0x02 bus voltage (1.25 mV/bit), 0x03 power (10 mW/bit), 0xFE manufacturer ID 0x5449,
    0xFF die ID 0x2270.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from edge_runtime.errors import EdgeRuntimeError


@runtime_checkable
class I2CBus(Protocol):
    """What a meter needs from an I²C bus (the subset of ``smbus2.SMBus`` it calls)."""

    def read_i2c_block_data(self, i2c_addr: int, register: int, length: int) -> list[int]: ...

    def write_i2c_block_data(self, i2c_addr: int, register: int, data: list[int]) -> None: ...


def read_register(bus: I2CBus, address: int, register: int) -> int:
    """One 16-bit register, MSB first, as an unsigned int."""
    data = bus.read_i2c_block_data(address, register, 2)
    return ((data[0] & 0xFF) << 8) | (data[1] & 0xFF)


def write_register(bus: I2CBus, address: int, register: int, value: int) -> None:
    """Write one 16-bit register, MSB first."""
    bus.write_i2c_block_data(address, register, [(value >> 8) & 0xFF, value & 0xFF])


def signed16(raw: int) -> int:
    """Two's complement of a 16-bit register value."""
    return raw - 0x10000 if raw & 0x8000 else raw


# -- INA219 -----------------------------------------------------------------------------
def ina219_shunt_volts(raw: int) -> float:
    """Shunt voltage register -> volts (signed, 10 µV per bit)."""
    return signed16(raw) * 10e-6


def ina219_bus_volts(raw: int) -> float:
    """Bus voltage register -> volts (bits 15..3, 4 mV per bit)."""
    return (raw >> 3) * 4e-3


def ina219_overflow(raw_bus: int) -> bool:
    """The bus voltage register's OVF bit: current/power out of range."""
    return bool(raw_bus & 0x1)


def ina219_scale_register(current_lsb_a: float, shunt_ohms: float) -> int:
    """The current-scale register value (datasheet: "Calibration", 0x05): trunc(0.04096 / (current_LSB · R_shunt)),
    bit 0 cleared."""
    return int(0.04096 / (current_lsb_a * shunt_ohms)) & 0xFFFE


def ina219_current_amps(raw: int, current_lsb_a: float) -> float:
    """Current register -> amps (signed, current_LSB per bit; needs the scale register set)."""
    return signed16(raw) * current_lsb_a


def ina219_power_watts(raw: int, current_lsb_a: float) -> float:
    """Power register -> watts (20 · current_LSB per bit)."""
    return raw * 20 * current_lsb_a


# -- INA260 -----------------------------------------------------------------------------
INA260_MANUFACTURER_ID = 0x5449
INA260_DIE_ID = 0x2270


def ina260_current_amps(raw: int) -> float:
    """Current register -> amps (signed, 1.25 mA per bit)."""
    return signed16(raw) * 1.25e-3


def ina260_bus_volts(raw: int) -> float:
    """Bus voltage register -> volts (1.25 mV per bit)."""
    return raw * 1.25e-3


def ina260_power_watts(raw: int) -> float:
    """Power register -> watts (10 mW per bit)."""
    return raw * 10e-3


# -- opening a real bus -----------------------------------------------------------------
def open_bus(bus: int | I2CBus, dev_root: str | Path = "/dev") -> tuple[I2CBus, bool]:
    """(bus object, whether we opened it): a number opens ``/dev/i2c-N`` with smbus2.

    Raises:
        EdgeRuntimeError: smbus2 missing, the device file missing or not permitted.
    """
    if not isinstance(bus, int):
        if not isinstance(bus, I2CBus):
            raise EdgeRuntimeError(f"I2C bus object {bus!r} lacks read_i2c_block_data/write_i2c_block_data")
        return bus, False
    dev = Path(dev_root) / f"i2c-{bus}"
    if not dev.exists():
        raise EdgeRuntimeError(f"{dev} does not exist (enable I2C: raspi-config > Interface Options > I2C)")
    try:
        import smbus2
    except ImportError:
        raise EdgeRuntimeError("I2C meters need smbus2: pip install 'edge-runtime[sensors]'") from None
    try:
        return smbus2.SMBus(bus), True
    except PermissionError:
        raise EdgeRuntimeError(f"{dev}: permission denied (add the user to the 'i2c' group)") from None
    except OSError as exc:
        raise EdgeRuntimeError(f"{dev}: cannot open ({exc})") from None


def probe_device(bus: int | I2CBus, address: int, check: Any = None, dev_root: str | Path = "/dev") \
        -> tuple[bool, str]:
    """Open the bus and read register 0 (and ``check(bus)`` if given) without writing anything."""
    try:
        obj, owned = open_bus(bus, dev_root)
    except EdgeRuntimeError as exc:
        return False, str(exc)
    try:
        config = read_register(obj, address, 0x00)
        if check is not None:
            ok, why = check(obj)
            if not ok:
                return False, why
        return True, f"device at 0x{address:02x} answers (config 0x{config:04x})"
    except OSError as exc:
        return False, f"no device answering at address 0x{address:02x} ({exc})"
    finally:
        if owned:
            obj.close()  # type: ignore[attr-defined]
