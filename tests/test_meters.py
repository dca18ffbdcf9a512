"""Energy meters against their real interfaces built in temp dirs: sysfs powercap, hwmon/iio rails, an
I²C bus answering INA219/INA260 registers per the datasheets, a power-log CSV; the estimator; attribution."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import edge_runtime
from edge_runtime.errors import ConfigError, EdgeRuntimeError
from edge_runtime.meters import METERS, _i2c, attribute, auto_meter, create_meter, meter_status, parse_meter_spec
from edge_runtime.meters.estimate import EstimateMeter
from edge_runtime.meters.ina219 import INA219Meter
from edge_runtime.meters.ina260 import INA260Meter
from edge_runtime.meters.jetson import JetsonMeter
from edge_runtime.meters.powercap import PowercapMeter
from edge_runtime.meters.powerlog import PowerLogMeter


def _meter_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("meter-")]


@pytest.fixture(autouse=True)
def no_leaked_threads():
    before = len(_meter_threads())
    yield
    assert len(_meter_threads()) == before, "a meter's sampling thread was left running"


class _Result:
    def __init__(self, exit_index, batch, latency):
        self.exit_index = np.asarray(exit_index)
        self.segment_batch_size = np.asarray(batch)
        self.segment_latency_s = np.asarray(latency, dtype=float)


# -- attribution ---------------------------------------------------------------------------
def test_attribution_charges_each_sample_only_for_segments_it_ran():
    # 4 samples enter seg 0; 2 leave at exit 0, 1 at exit 1, 1 at exit 2. Latencies 2:1:1 s, 8 J total
    r = _Result([0, 1, 0, 2], [4, 2, 1], [2.0, 1.0, 1.0])
    e = attribute(r, 8.0)
    # seg energies 4, 2, 2 J; seg0 share 1 J each, seg1 1 J each (2 samples), seg2 2 J (1 sample)
    assert e.tolist() == [1.0, 2.0, 1.0, 4.0]
    assert e.sum() == pytest.approx(8.0)


def test_attribution_with_measured_segment_energy_and_batch_one():
    r = _Result([1, 1], [2, 2], [1.0, 1.0])
    assert attribute(r, 6.0, np.array([2.0, 4.0])).tolist() == [3.0, 3.0]
    assert attribute(_Result([0], [1, 0], [1.0, 0.0]), 0.5).tolist() == [0.5]


# -- powercap ------------------------------------------------------------------------------
def _zone(root: Path, dirname: str, name: str, uj: int, max_uj: int) -> Path:
    d = root / dirname
    d.mkdir(parents=True)
    (d / "name").write_text(name + "\n")
    (d / "energy_uj").write_text(f"{uj}\n")
    (d / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return d


@pytest.fixture()
def rapl(tmp_path: Path) -> Path:
    root = tmp_path / "powercap"
    _zone(root, "intel-rapl:0", "package-0", 998_000_000, 1_000_000_000)
    _zone(root, "intel-rapl:0:0", "core", 5, 1_000_000_000)       # inside the package: not added
    _zone(root, "intel-rapl:0:1", "dram", 100, 2_000_000)
    _zone(root, "intel-rapl:1", "psys", 7, 1_000_000_000)         # covers the package: not added
    _zone(root, "intel-rapl-mmio:0", "package-0", 9, 1_000_000_000)  # duplicate interface: skipped
    return root


def _set(root: Path, zone: str, uj: int) -> None:
    (root / zone / "energy_uj").write_text(f"{uj}\n")


def test_powercap_selects_packages_and_dram_and_unwraps(rapl):
    m = PowercapMeter(rapl)
    assert [z.name for z in m.zones] == ["package-0", "dram"]
    assert m.read() == 0.0
    _set(rapl, "intel-rapl:0", 999_500_000)      # +1.5 J
    _set(rapl, "intel-rapl:0:1", 600_100)        # +0.6 J
    assert m.read() == pytest.approx(2.1)
    _set(rapl, "intel-rapl:0", 500_000)          # wrapped: +0.5 J to the max, +0.5 J after
    _set(rapl, "intel-rapl:0:1", 100)            # dram wrapped: 2_000_000 - 600_100 + 100 uJ
    assert m.read() == pytest.approx(2.1 + 1.0 + 1.4)
    m.stop()


def test_powercap_window_energy_from_sampled_counter(rapl):
    m = PowercapMeter(rapl, rate_hz=50)
    m.sample()
    _set(rapl, "intel-rapl:0", 999_000_000)      # +1.0 J
    m.sample()
    _set(rapl, "intel-rapl:0", 999_250_000)      # +0.25 J
    m.sample()
    t = m._t
    assert m.energy_between(t[0], t[2]) == pytest.approx(1.25)
    assert m.energy_between(t[1], t[2]) == pytest.approx(0.25)
    mid = (t[0] + t[1]) / 2                      # linear between samples
    assert m.energy_between(t[0], mid) == pytest.approx(0.5)
    m.stop()


def test_powercap_background_thread_integrates_a_steady_counter(rapl):
    m = PowercapMeter(rapl, rate_hz=200).start()
    stop = threading.Event()

    def writer():  # 20 W on the package counter
        t0, base = time.perf_counter(), 998_000_000
        while not stop.is_set():
            uj = base + int((time.perf_counter() - t0) * 20e6)
            _set(rapl, "intel-rapl:0", uj % 1_000_000_000)
            time.sleep(0.002)

    w = threading.Thread(target=writer)
    w.start()
    try:
        time.sleep(0.05)
        token = m.start_window()
        time.sleep(0.3)
        joules, end = m.window_energy(token)
    finally:
        stop.set()
        w.join()
        m.stop()
    assert not m.running
    assert joules / (end - token) == pytest.approx(20.0, rel=0.2)


def test_powercap_errors_name_the_file(tmp_path, rapl):
    with pytest.raises(EdgeRuntimeError, match="no powercap sysfs directory"):
        PowercapMeter(tmp_path / "missing")
    f = rapl / "intel-rapl:0" / "energy_uj"
    f.unlink()
    f.mkdir()  # unreadable as a counter
    with pytest.raises(EdgeRuntimeError, match=r"intel-rapl:0/energy_uj: unreadable"):
        PowercapMeter(rapl)
    ok, why = PowercapMeter.probe(rapl)
    assert not ok and "energy_uj" in why


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files regardless of their mode")
def test_powercap_permission_error_explains_the_fix(rapl):
    f = rapl / "intel-rapl:0" / "energy_uj"
    f.chmod(0o000)
    with pytest.raises(EdgeRuntimeError, match="permission denied.*root-only since Linux 5.10"):
        PowercapMeter(rapl)


# -- Jetson INA3221 --------------------------------------------------------------------------
def _hwmon(root: Path, rails: dict[str, tuple[int, int]]) -> Path:
    d = root / "hwmon3"
    d.mkdir(parents=True)
    (d / "name").write_text("ina3221\n")
    for k, (label, (mv, ma)) in enumerate(rails.items(), start=1):
        (d / f"in{k}_label").write_text(label + "\n")
        (d / f"in{k}_input").write_text(f"{mv}\n")
        (d / f"curr{k}_input").write_text(f"{ma}\n")
    return d


def test_jetson_hwmon_uses_the_total_input_rail(tmp_path):
    _hwmon(tmp_path / "hwmon", {"VDD_IN": (5000, 1200), "VDD_CPU_GPU_CV": (5000, 400), "VDD_SOC": (5000, 300)})
    m = JetsonMeter(tmp_path / "hwmon")
    assert m.all_rails == ["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"]
    assert m.read() == pytest.approx(6.0)            # 5.000 V x 1.200 A
    assert m.describe()["total_rail"] is True
    m.stop()
    both = JetsonMeter(tmp_path / "hwmon", rails=["VDD_CPU_GPU_CV", "VDD_SOC"])
    assert both.read_rails() == pytest.approx({"VDD_CPU_GPU_CV": 2.0, "VDD_SOC": 1.5})
    both.stop()
    with pytest.raises(EdgeRuntimeError, match=r"rails \['GPU'\] not found"):
        JetsonMeter(tmp_path / "hwmon", rails=["GPU"])


def test_jetson_iio_layout_in_power_milliwatts(tmp_path):
    d = tmp_path / "ina3221x" / "6-0040" / "iio:device0"
    d.mkdir(parents=True)
    for k, (name, mw) in enumerate([("POM_5V_IN", 4200), ("POM_5V_GPU", 800), ("POM_5V_CPU", 1500)]):
        (d / f"rail_name_{k}").write_text(name + "\n")
        (d / f"in_power{k}_input").write_text(f"{mw}\n")
    m = JetsonMeter(tmp_path / "ina3221x")
    assert [r.name for r in m.rails] == ["POM_5V_IN"]
    assert m.read() == pytest.approx(4.2)
    m.stop()


def test_jetson_sampled_window_energy_and_clean_stop(tmp_path):
    _hwmon(tmp_path / "hwmon", {"VDD_IN": (5000, 1000)})   # 5 W steady
    m = JetsonMeter(tmp_path / "hwmon", rate_hz=100).start()
    assert m.running and m.rate_hz == 100
    token = m.start_window()
    time.sleep(0.1)
    joules, end = m.window_energy(token)
    m.stop()
    assert not m.running
    assert joules == pytest.approx(5.0 * (end - token), rel=1e-6)
    with m:  # a stopped meter starts again and reads the sensor again
        assert m.running and m.read() == pytest.approx(5.0)
    assert not m.running
    ok, why = JetsonMeter.probe(tmp_path / "nothing")
    assert not ok and "no INA3221 power rails" in why


# -- INA219 / INA260 on an I2C bus -----------------------------------------------------------
class INA219Chip:
    """An I2C bus with one INA219 behind it: registers computed as the datasheet (SBOS448) defines them."""

    def __init__(self, bus_volts: float, shunt_volts: float, address: int = 0x40) -> None:
        self.address = address
        self.regs = {0x00: 0x399F, 0x05: 0x0000}
        self.set(bus_volts, shunt_volts)
        self.writes: list[tuple[int, list[int]]] = []

    def set(self, bus_volts: float, shunt_volts: float) -> None:
        self.regs[0x01] = round(shunt_volts / 10e-6) & 0xFFFF              # 10 uV/bit, two's complement
        self.regs[0x02] = (round(bus_volts / 4e-3) << 3) | 0b10            # 4 mV/bit at bit 3, CNVR set

    def _derived(self, reg: int) -> int:
        shunt = _i2c.signed16(self.regs[0x01])
        current = shunt * self.regs[0x05] // 4096                          # datasheet eq. 4
        if reg == 0x04:
            return current & 0xFFFF
        return (current * (self.regs[0x02] >> 3) // 5000) & 0xFFFF         # datasheet eq. 5

    def read_i2c_block_data(self, addr: int, register: int, length: int) -> list[int]:
        if addr != self.address:
            raise OSError(121, "Remote I/O error")
        value = self._derived(register) if register in (0x03, 0x04) else self.regs[register]
        return [value >> 8, value & 0xFF][:length]

    def write_i2c_block_data(self, addr: int, register: int, data: list[int]) -> None:
        self.writes.append((register, list(data)))
        self.regs[register] = (data[0] << 8) | data[1]


def test_ina219_register_conversions_hand_computed():
    assert _i2c.ina219_bus_volts(0x2710 | 0b10) == pytest.approx(5.0)       # 1250 x 4 mV
    assert _i2c.ina219_shunt_volts(0x1388) == pytest.approx(0.05)           # 5000 x 10 uV
    assert _i2c.ina219_shunt_volts(0xFC18) == pytest.approx(-0.01)          # -1000 x 10 uV
    assert _i2c.ina219_scale_register(100e-6, 0.1) == 4096                     # 0.04096 / (1e-4 x 0.1)
    assert _i2c.ina219_scale_register(50e-6, 0.5) == 1638                      # trunc(1638.4)
    assert _i2c.ina219_current_amps(5000, 100e-6) == pytest.approx(0.5)
    assert _i2c.ina219_power_watts(1250, 100e-6) == pytest.approx(2.5)      # 20 x current LSB per bit
    assert _i2c.ina219_overflow(0x2711) and not _i2c.ina219_overflow(0x2712)


def test_ina219_meter_reads_volts_amps_watts_from_the_bus():
    chip = INA219Chip(bus_volts=5.0, shunt_volts=0.05)                      # 0.5 A through 0.1 ohm
    m = INA219Meter(bus=chip, shunt_ohms=0.1, current_lsb_a=100e-6)
    assert chip.writes == [(0x05, [0x10, 0x00])]                            # calibration 4096 programmed
    v, a, w = m.read_volts_amps_watts()
    assert (v, a, w) == pytest.approx((5.0, 0.5, 2.5))
    assert m.read_chip_current_power() == pytest.approx((0.5, 2.5))         # the chip's own registers agree
    chip.set(bus_volts=5.1, shunt_volts=-0.01)                              # reverse current
    assert m.read_volts_amps_watts() == pytest.approx((5.1, -0.1, -0.51))
    chip.regs[0x02] |= 0x1                                                  # OVF
    with pytest.raises(EdgeRuntimeError, match="overflow"):
        m.read()
    m.stop()
    ok, why = INA219Meter.probe(bus=chip, address=0x41)
    assert not ok and "0x41" in why
    assert INA219Meter.probe(bus=chip)[0]


def test_ina219_sampled_energy_over_a_window():
    chip = INA219Chip(bus_volts=5.0, shunt_volts=0.04)                      # 0.4 A -> 2.0 W
    with INA219Meter(bus=chip, rate_hz=200) as m:
        token = m.start_window()
        time.sleep(0.08)
        joules, end = m.window_energy(token)
    assert joules == pytest.approx(2.0 * (end - token), rel=1e-6)
    m.subtract_idle = True
    with m:
        assert m.measure_idle(0.05) == pytest.approx(2.0)
        token = m.start_window()
        time.sleep(0.02)
        assert m.window_energy(token)[0] == pytest.approx(0.0, abs=1e-9)   # nothing above idle


class INA260Chip:
    """An I2C bus with one INA260 (SBOS656): 1.25 mA, 1.25 mV, 10 mW per bit; ID registers."""

    def __init__(self, volts: float, amps: float, manufacturer: int = 0x5449) -> None:
        self.regs = {0x00: 0x6127, 0x01: round(amps / 1.25e-3) & 0xFFFF, 0x02: round(volts / 1.25e-3),
                     0x03: round(abs(volts * amps) / 10e-3), 0xFE: manufacturer, 0xFF: 0x2270}

    def read_i2c_block_data(self, addr: int, register: int, length: int) -> list[int]:
        v = self.regs[register]
        return [v >> 8, v & 0xFF]

    def write_i2c_block_data(self, addr: int, register: int, data: list[int]) -> None:
        self.regs[register] = (data[0] << 8) | data[1]


def test_ina260_meter_and_conversions():
    assert _i2c.ina260_current_amps(0x0320) == pytest.approx(1.0)           # 800 x 1.25 mA
    assert _i2c.ina260_current_amps(0xFF38) == pytest.approx(-0.25)         # -200 x 1.25 mA
    assert _i2c.ina260_bus_volts(0x2580) == pytest.approx(12.0)             # 9600 x 1.25 mV
    assert _i2c.ina260_power_watts(1200) == pytest.approx(12.0)             # 1200 x 10 mW
    m = INA260Meter(bus=INA260Chip(volts=12.0, amps=1.0))
    assert m.read_volts_amps_watts() == pytest.approx((12.0, 1.0, 12.0))
    assert m.read_chip_power() == pytest.approx(12.0)
    m.stop()
    with pytest.raises(EdgeRuntimeError, match="not an INA260"):
        INA260Meter(bus=INA260Chip(12.0, 1.0, manufacturer=0x1234))


def test_i2c_bus_number_without_device_file(tmp_path):
    with pytest.raises(EdgeRuntimeError, match=r"i2c-7 does not exist"):
        INA219Meter(bus=7, dev_root=tmp_path)


# -- power log -------------------------------------------------------------------------------
def test_powerlog_window_energy_hand_computed(tmp_path):
    t0 = float(int(time.time()) - 5)
    log = tmp_path / "usb.csv"
    log.write_text("timestamp,watts\n" + "".join(f"{t0 + i:.3f},{2.0 + i}\n" for i in range(4)))
    m = PowerLogMeter(log)
    assert m.rate_hz == pytest.approx(1.0)
    # power ramps 2 -> 5 W over 3 s; [t0+0.5, t0+2.5]: trapezoid of the ramp = 2 s x mean(2.5, 4.5) = 7 J
    assert m.energy_between(t0 + 0.5, t0 + 2.5) == pytest.approx(7.0)
    with (log.open("a")) as fh:                                              # the log grows
        fh.write(f"{t0 + 4:.3f},5.0\n")
    assert m.energy_between(t0 + 3.0, t0 + 4.0) == pytest.approx(5.0)      # re-read on demand
    res = type("R", (), {})()
    res.exit_index, res.segment_batch_size, res.segment_latency_s = np.array([0]), np.array([1]), np.array([1.0])
    m.finish_window(t0 - 1000, res)                                          # far outside the log
    assert res.energy_j is None and res.energy_source.startswith("unavailable:powerlog")


def test_powerlog_volts_amps_and_iso_timestamps(tmp_path):
    log = tmp_path / "um25c.csv"
    log.write_text("Time,Voltage,Current\n2026-01-01T00:00:00Z,5.0,0.5\n2026-01-01T00:00:02Z,5.0,0.5\n")
    m = PowerLogMeter(log)
    from datetime import datetime, timezone

    t = datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp()
    assert m.energy_between(t, t + 2) == pytest.approx(5.0)
    bad = tmp_path / "bad.csv"
    bad.write_text("when,amps\n1,2\n2,3\n")
    with pytest.raises(ConfigError, match="timestamp column"):
        PowerLogMeter(bad)


# -- estimator -------------------------------------------------------------------------------
def test_estimator_applies_the_profile_power_model_and_labels_itself():
    m = EstimateMeter("rpi4")                     # idle 2.5 W, active 5.6 W, 4 cores
    assert m.source == "estimated:rpi4" and not m.measured
    # 2 s wall, 1 s of CPU: 2.5 x 2 + (5.6 - 2.5) / 4 x 1
    assert m.energy_between((0.0, 0.0), (2.0, 1.0)) == pytest.approx(5.775)
    assert m.energy_between((0.0, 0.0), (1.0, 9.0)) == pytest.approx(2.5 + 3.1)   # CPU capped at 4 cores x wall
    quiet = EstimateMeter("rpi4", subtract_idle=True)
    token = (time.perf_counter() - 2.0, time.process_time() - 1.0)
    energy, _ = quiet.window_energy(token)
    assert 0.775 <= energy < 0.775 + 0.1


def test_registry_specs_and_status():
    assert set(METERS.names()) == {"estimate", "powercap", "pyrapl", "jetson", "ina219", "ina260", "powerlog"}
    assert parse_meter_spec("ina219:bus=1,address=0x41,shunt_ohms=0.05") == \
        ("ina219", {"bus": 1, "address": 0x41, "shunt_ohms": 0.05})
    with pytest.raises(ConfigError, match="bad item 'bus'"):
        parse_meter_spec("ina219:bus")
    status = {s.name: s for s in meter_status({"powercap": {"root": "/nonexistent"}})}
    assert status["estimate"].available and not status["powercap"].available
    assert all(s.reason for s in status.values())


def test_auto_selection_prefers_a_real_meter(tmp_path):
    _hwmon(tmp_path / "hwmon", {"VDD_IN": (5000, 1000)})
    m = auto_meter(profile="rpi4", options={"jetson": {"roots": [tmp_path / "hwmon"]},
                                            "powercap": {"root": tmp_path / "none"}})
    try:
        assert m.source == "measured:jetson"
    finally:
        m.stop()
    fallback = create_meter("auto", profile="rpi4", options={"jetson": {"roots": [tmp_path / "none"]},
                                                             "powercap": {"root": tmp_path / "none"}})
    assert fallback.source == "estimated:rpi4"


# -- the runtime hook ------------------------------------------------------------------------
def test_load_bundle_with_meter_fills_every_result(cnn_bundle, tmp_path):
    _hwmon(tmp_path / "hwmon", {"VDD_IN": (5000, 2000)})  # 10 W
    rt = edge_runtime.load_bundle(cnn_bundle, threads=1, meter=JetsonMeter(tmp_path / "hwmon", rate_hz=500))
    try:
        x = np.random.default_rng(0).standard_normal((6, 1, 16, 16)).astype(np.float32)
        outs = rt.exit_outputs(x)
        pol = edge_runtime.create_policy("entropy", rt.num_exits, 1.0)
        thr = [float(np.median(pol.score(o))) for o in outs[:-1]]
        res = rt.infer(x, policy="entropy", thresholds=thr)
        assert res.energy_source == "measured:jetson"
        assert 10.0 * res.latency_s * 0.99 <= res.energy_j <= 10.0 * (res.latency_s + 0.2)  # 10 W over the window
        assert res.sample_energy_j.sum() == pytest.approx(res.energy_j)
        early, late = res.exit_index.min(), res.exit_index.max()
        assert early < late
        assert res.sample_energy_j[res.exit_index == early].max() < res.sample_energy_j[res.exit_index == late].min()
        d = res.to_dict()
        assert d["energy_source"] == "measured:jetson" and "energy_j" in d["samples"][0]
    finally:
        rt.close()


def test_load_bundle_estimator_and_profile_threads(cnn_bundle):
    rt = edge_runtime.load_bundle(cnn_bundle, profile="rpi4", meter="estimate")
    try:
        assert rt.backend.threads == 4 and rt.profile.name == "rpi4"     # the profile's preference
        res = rt.infer(np.zeros((2, 1, 16, 16), np.float32))
        assert res.energy_source == "estimated:rpi4" and res.energy_j > 0
    finally:
        rt.close()
    assert edge_runtime.load_bundle(cnn_bundle, profile="rpi4", threads=2).backend.threads == 2  # override wins
